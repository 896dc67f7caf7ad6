//! The payout plugin against the Lark stand-in on loopback: one withdrawal per delivery whatever
//! fails in between (HTTP 500, slow answers, a crash between withdraw and result, repeats), token
//! caching and refresh, skips, classification of errors.

#[path = "../../../tests/standins/lark_api.rs"]
mod lark_api;

mod common;

use std::time::Duration;

use common::{again, delivery, plugin, raw_delivery, row};
use gateway_plugin::{Outcome, Plugin};
use lark_api::LarkApi;
use payout::api::LarkClient;
use payout::external_order_id;
use payout::ledger::{ForwardStatus, Ledger, Plan, Status};
use serde_json::json;

const ACCOUNT: &str = "7147998241542539527";

fn is_retry(o: &Outcome) -> bool {
    matches!(o, Outcome::Retry { .. })
}

#[test]
fn one_event_one_token_call_one_withdraw() {
    let api = LarkApi::start();
    api.set_balance(ACCOUNT, 100, &[("CNY", "100")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let p = plugin(&api, dir.path(), json!({}));
    let d = delivery(
        "evt-1:payout",
        1,
        ACCOUNT,
        100,
        &[("CNY", "100")],
        1_685_431_415_036,
    );

    assert_eq!(p.handle(&d), Outcome::Ok);

    assert_eq!(api.token_calls(), 1);
    let token_req = &api.requests_to(lark_api::TOKEN_PATH)[0];
    assert_eq!(
        token_req.json(),
        json!({"app_id": "cli_test", "app_secret": "secret_test"})
    );
    let calls = api.withdraw_calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(
        call.path,
        format!("/open-apis/hire/v1/referral_account/{ACCOUNT}/withdraw")
    );
    assert_eq!(call.header("authorization"), Some("Bearer t-standin-1"));
    let order_id = external_order_id("evt-1:payout");
    assert!(order_id.starts_with("gw-") && order_id.len() == 35);
    assert_eq!(
        call.json(),
        json!({"withdraw_bonus_type": [1, 2], "external_order_id": order_id})
    );
    assert_eq!(api.withdrawals().len(), 1);
    assert_eq!(api.balance(ACCOUNT), lark_api::Assets::default());

    let r = row(dir.path(), "evt-1:payout");
    assert_eq!(r.status, Status::Withdrawn);
    assert_eq!(r.external_order_id, order_id);
    assert_eq!(r.points, 100);
    assert_eq!(r.cash.len(), 1);
    assert_eq!(
        (r.cash[0].currency.as_str(), r.cash[0].amount.to_string()),
        ("CNY", "100.00".to_owned())
    );
    assert_eq!(r.log_id.as_deref(), Some(call.log_id.as_str()));
    assert!(r.trans_time.is_some());
    assert_eq!(r.forward_status, ForwardStatus::None);

    // A second account reuses the cached token.
    api.set_balance("acct-2", 5, &[]);
    let d2 = delivery("evt-2:payout", 1, "acct-2", 5, &[], 1_685_431_415_037);
    assert_eq!(p.handle(&d2), Outcome::Ok);
    assert_eq!(api.token_calls(), 1);
    assert_eq!(
        api.withdraw_calls()[1].json()["withdraw_bonus_type"],
        json!([1])
    );
}

#[test]
fn http_500_twice_then_ok_withdraws_once_with_one_order_id() {
    let api = LarkApi::start();
    api.set_balance(ACCOUNT, 10, &[("CNY", "1.5")]);
    api.faults(|f| f.fail_withdraws = 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let p = plugin(&api, dir.path(), json!({}));
    let d = delivery("evt-500", 1, ACCOUNT, 10, &[("CNY", "1.5")], 10);

    let first = p.handle(&d);
    assert!(is_retry(&first), "{first:?}");
    assert_eq!(row(dir.path(), "evt-500").status, Status::Pending);
    let second = p.handle(&again(&d));
    assert!(is_retry(&second), "{second:?}");
    assert_eq!(p.handle(&again(&again(&d))), Outcome::Ok);

    let calls = api.withdraw_calls();
    assert_eq!(calls.len(), 3);
    let ids: Vec<String> = calls
        .iter()
        .map(|c| {
            c.json()["external_order_id"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert!(
        ids.iter().all(|i| *i == external_order_id("evt-500")),
        "{ids:?}"
    );
    assert_eq!(api.withdrawals().len(), 1);
    let r = row(dir.path(), "evt-500");
    assert_eq!(
        (r.status, r.points, r.withdraw_attempts),
        (Status::Withdrawn, 10, 3)
    );
    assert_eq!(r.cash[0].amount.to_string(), "1.50");
}

#[test]
fn slow_answer_past_timeout_retries_and_still_withdraws_once() {
    let api = LarkApi::start();
    api.set_balance(ACCOUNT, 7, &[("USD", "2.25")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let p = plugin(&api, dir.path(), json!({"timeout": "300ms"}));
    // Fetch the token first so only the withdraw is slow.
    let warm = delivery("evt-warm", 1, "nobody", 1, &[], 1);
    assert_eq!(p.handle(&warm), Outcome::Ok);
    api.faults(|f| f.delay_next_withdraw = Some(Duration::from_millis(1_200)));
    let d = delivery("evt-slow", 1, ACCOUNT, 7, &[("USD", "2.25")], 10);

    let first = p.handle(&d);
    assert!(is_retry(&first), "{first:?}");
    // Lark did withdraw; only its answer was late.
    assert_eq!(api.withdrawals().len(), 2);
    assert_eq!(p.handle(&again(&d)), Outcome::Ok);

    let slow: Vec<_> = api
        .withdraw_calls()
        .into_iter()
        .filter(|c| c.path.contains(ACCOUNT))
        .collect();
    assert_eq!(slow.len(), 2);
    assert_eq!(slow[0].body, slow[1].body);
    assert_eq!(api.withdrawals().len(), 2);
    // The ledger has the original withdrawal's amounts, not the now-empty balance.
    let r = row(dir.path(), "evt-slow");
    assert_eq!(r.points, 7);
    assert_eq!(r.cash[0].amount.to_string(), "2.25");
}

#[test]
fn repeated_delivery_after_ok_does_not_call_withdraw_again() {
    let api = LarkApi::start();
    api.set_balance(ACCOUNT, 3, &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let p = plugin(&api, dir.path(), json!({}));
    let d = delivery("evt-dup", 1, ACCOUNT, 3, &[], 10);
    assert_eq!(p.handle(&d), Outcome::Ok);
    assert_eq!(p.handle(&d), Outcome::Ok);
    assert_eq!(p.handle(&again(&d)), Outcome::Ok);
    // Even from a fresh instance (after a restart).
    let p2 = plugin(&api, dir.path(), json!({}));
    assert_eq!(p2.handle(&again(&d)), Outcome::Ok);
    assert_eq!(api.withdraw_calls().len(), 1);
}

#[test]
fn zero_balance_is_skipped_without_any_call() {
    let api = LarkApi::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let p = plugin(&api, dir.path(), json!({}));
    let d = delivery("evt-zero", 1, ACCOUNT, 0, &[("CNY", "0")], 10);
    assert_eq!(p.handle(&d), Outcome::Ok);
    assert!(api.requests().is_empty());
    let r = row(dir.path(), "evt-zero");
    assert_eq!(
        (r.status, r.skip_reason.as_deref()),
        (Status::Skipped, Some("zero_balance"))
    );

    // Points only, but only cash is withdrawn: nothing to do either.
    let p = plugin(&api, dir.path(), json!({"withdraw": ["cash"]}));
    assert_eq!(
        p.handle(&delivery("evt-pts", 1, ACCOUNT, 9, &[], 11)),
        Outcome::Ok
    );
    assert!(api.requests().is_empty());
}

#[test]
fn older_snapshot_after_newer_one_is_skipped() {
    let api = LarkApi::start();
    api.set_balance(ACCOUNT, 20, &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let p = plugin(&api, dir.path(), json!({}));
    assert_eq!(
        p.handle(&delivery("evt-new", 1, ACCOUNT, 20, &[], 2_000)),
        Outcome::Ok
    );
    api.set_balance(ACCOUNT, 10, &[]);
    assert_eq!(
        p.handle(&delivery("evt-old", 1, ACCOUNT, 10, &[], 1_000)),
        Outcome::Ok
    );
    // Equally old but another delivery: stale too.
    assert_eq!(
        p.handle(&delivery("evt-same", 1, ACCOUNT, 10, &[], 2_000)),
        Outcome::Ok
    );
    assert_eq!(api.withdraw_calls().len(), 1);
    assert_eq!(
        row(dir.path(), "evt-old").skip_reason.as_deref(),
        Some("stale")
    );
    assert_eq!(
        row(dir.path(), "evt-same").skip_reason.as_deref(),
        Some("stale")
    );
    // A newer one is acted on.
    assert_eq!(
        p.handle(&delivery("evt-newer", 1, ACCOUNT, 10, &[], 3_000)),
        Outcome::Ok
    );
    assert_eq!(api.withdraw_calls().len(), 2);
}

#[test]
fn invalid_token_code_refreshes_once_and_retries() {
    let api = LarkApi::start();
    api.set_balance(ACCOUNT, 4, &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let p = plugin(&api, dir.path(), json!({}));
    assert_eq!(
        p.handle(&delivery("evt-a", 1, "other", 1, &[], 1)),
        Outcome::Ok
    );
    api.faults(|f| f.invalid_token_once = true);
    assert_eq!(
        p.handle(&delivery("evt-b", 1, ACCOUNT, 4, &[], 5)),
        Outcome::Ok
    );

    assert_eq!(api.token_calls(), 2);
    let calls: Vec<_> = api
        .withdraw_calls()
        .into_iter()
        .filter(|c| c.path.contains(ACCOUNT))
        .collect();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].header("authorization"), Some("Bearer t-standin-1"));
    assert_eq!(calls[1].header("authorization"), Some("Bearer t-standin-2"));
    assert_eq!(calls[0].body, calls[1].body);
    assert_eq!(row(dir.path(), "evt-b").points, 4);
}

#[test]
fn token_is_not_reused_within_five_minutes_of_its_expiry() {
    let api = LarkApi::start();
    api.set_token_expire(300); // expires in 5 minutes: never cached
    let dir = tempfile::tempdir().expect("tempdir");
    let p = plugin(&api, dir.path(), json!({}));
    assert_eq!(p.handle(&delivery("t1", 1, "a1", 1, &[], 1)), Outcome::Ok);
    assert_eq!(p.handle(&delivery("t2", 1, "a2", 1, &[], 1)), Outcome::Ok);
    assert_eq!(api.token_calls(), 2);
    api.set_token_expire(3_600); // cached for 55 minutes
    assert_eq!(p.handle(&delivery("t3", 1, "a3", 1, &[], 1)), Outcome::Ok);
    assert_eq!(p.handle(&delivery("t4", 1, "a4", 1, &[], 1)), Outcome::Ok);
    assert_eq!(api.token_calls(), 3);
}

#[test]
fn business_error_rejects_with_code_msg_and_log_id_and_a_replay_can_succeed() {
    let api = LarkApi::start();
    api.set_balance(ACCOUNT, 4, &[]);
    api.faults(|f| f.business_error = Some((1_254_001, "referral account is disabled".into())));
    let dir = tempfile::tempdir().expect("tempdir");
    let p = plugin(&api, dir.path(), json!({}));
    let d = delivery("evt-biz", 1, ACCOUNT, 4, &[], 5);
    let outcome = p.handle(&d);
    let log_id = api.withdraw_calls()[0].log_id.clone();
    match &outcome {
        Outcome::Reject { reason } => {
            assert!(reason.contains("1254001"), "{reason}");
            assert!(reason.contains("referral account is disabled"), "{reason}");
            assert!(reason.contains(&log_id), "{reason}");
            assert!(!reason.contains("secret_test") && !reason.contains("t-standin"));
        }
        other => panic!("expected Reject, got {other:?}"),
    }
    let r = row(dir.path(), "evt-biz");
    assert_eq!(r.status, Status::Rejected);
    assert_eq!(r.log_id.as_deref(), Some(log_id.as_str()));

    // The operator fixes the account and replays the dead letter: same order id, one withdrawal.
    api.faults(|f| f.business_error = None);
    assert_eq!(p.handle(&again(&d)), Outcome::Ok);
    assert_eq!(api.withdrawals().len(), 1);
    assert_eq!(
        api.withdrawals()[0].external_order_id,
        external_order_id("evt-biz")
    );
}

#[test]
fn rate_limit_retries_after_what_lark_says() {
    let api = LarkApi::start();
    api.set_balance(ACCOUNT, 4, &[]);
    api.faults(|f| {
        f.rate_limit_withdraws = 1;
        f.retry_after_s = 7;
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let p = plugin(&api, dir.path(), json!({}));
    let d = delivery("evt-rl", 1, ACCOUNT, 4, &[], 5);
    match p.handle(&d) {
        Outcome::Retry { retry_after, .. } => assert_eq!(retry_after, Some(Duration::from_secs(7))),
        other => panic!("expected Retry, got {other:?}"),
    }
    assert_eq!(p.handle(&again(&d)), Outcome::Ok);
    assert_eq!(api.withdrawals().len(), 1);
}

#[test]
fn crash_between_withdraw_and_result_reuses_the_order_id() {
    let api = LarkApi::start();
    api.set_balance(ACCOUNT, 50, &[("CNY", "12.34")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = delivery("evt-crash", 1, ACCOUNT, 50, &[("CNY", "12.34")], 99);
    let order_id = external_order_id("evt-crash");
    {
        // The crashed process: intent recorded, withdraw performed at Lark, no result recorded.
        let ledger = Ledger::open(&dir.path().join("data/payout.db")).expect("ledger");
        let event = lark_core::AssetsUpdateV1::from_envelope(d.event_json()).expect("event");
        let intent = ledger
            .admit(
                "evt-crash",
                &order_id,
                &event,
                &Plan::Withdraw(vec![1, 2]),
                || 1,
            )
            .expect("intent");
        assert_eq!(intent.status, Status::Pending);
        let client = LarkClient::new(
            &api.base_url(),
            "cli_test",
            "secret_test",
            Duration::from_secs(2),
        );
        client
            .withdraw(ACCOUNT, &[1, 2], &order_id)
            .expect("withdrawn at Lark");
    }
    assert_eq!(api.balance(ACCOUNT), lark_api::Assets::default());

    // After the restart the gateway redelivers the unfinished delivery.
    let p = plugin(&api, dir.path(), json!({}));
    assert_eq!(p.handle(&again(&d)), Outcome::Ok);

    let calls = api.withdraw_calls();
    assert_eq!(calls.len(), 2);
    assert!(calls
        .iter()
        .all(|c| c.json()["external_order_id"] == order_id.as_str()));
    assert_eq!(api.withdrawals().len(), 1);
    let r = row(dir.path(), "evt-crash");
    assert_eq!((r.status, r.points), (Status::Withdrawn, 50));
    assert_eq!(r.cash[0].amount.to_string(), "12.34");
}

#[test]
fn attempt_while_an_earlier_one_still_runs_is_retried() {
    let api = LarkApi::start();
    api.set_balance(ACCOUNT, 4, &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let p = std::sync::Arc::new(plugin(&api, dir.path(), json!({})));
    assert_eq!(
        p.handle(&delivery("evt-w", 1, "warm", 1, &[], 1)),
        Outcome::Ok
    );
    api.faults(|f| f.delay_next_withdraw = Some(Duration::from_millis(600)));
    let d = delivery("evt-busy", 1, ACCOUNT, 4, &[], 5);
    let (p2, d2) = (p.clone(), d.clone());
    let slow = std::thread::spawn(move || p2.handle(&d2));
    std::thread::sleep(Duration::from_millis(200));
    let meanwhile = p.handle(&again(&d));
    assert!(is_retry(&meanwhile), "{meanwhile:?}");
    assert_eq!(slow.join().expect("thread"), Outcome::Ok);
    assert_eq!(api.withdrawals().len(), 2);
}

/// A minimum written in lower case holds for the event's upper-case code (it was skipped, and
/// the balance below it withdrawn).
#[test]
fn a_minimum_s_currency_code_matches_whatever_its_case() {
    let api = LarkApi::start();
    api.set_balance(ACCOUNT, 0, &[("CNY", "100.00")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let p = plugin(
        &api,
        dir.path(),
        json!({"withdraw": ["cash"], "min_cash": {"cny": "1000.00"}}),
    );
    assert_eq!(
        p.handle(&delivery("case-1", 1, ACCOUNT, 0, &[("CNY", "100.00")], 1)),
        Outcome::Ok
    );
    // And an event's code in lower case meets the minimum written in upper case.
    assert_eq!(
        p.handle(&delivery("case-2", 1, ACCOUNT, 0, &[("cny", "100.00")], 2)),
        Outcome::Ok
    );
    assert!(api.requests().is_empty(), "{:?}", api.requests());
    for id in ["case-1", "case-2"] {
        assert_eq!(
            row(dir.path(), id).skip_reason.as_deref(),
            Some("below_minimum")
        );
    }
}

#[test]
fn minimums_skip_small_balances() {
    let api = LarkApi::start();
    api.set_balance(ACCOUNT, 40, &[("CNY", "9.99")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let p = plugin(
        &api,
        dir.path(),
        json!({"min_points": 50, "min_cash": {"CNY": "10.00"}}),
    );
    assert_eq!(
        p.handle(&delivery("m1", 1, ACCOUNT, 40, &[("CNY", "9.99")], 1)),
        Outcome::Ok
    );
    assert!(api.requests().is_empty());
    assert_eq!(
        row(dir.path(), "m1").skip_reason.as_deref(),
        Some("below_minimum")
    );
    // Cash reaches its minimum, points do not: only cash is withdrawn.
    api.set_balance(ACCOUNT, 40, &[("CNY", "10")]);
    assert_eq!(
        p.handle(&delivery("m2", 1, ACCOUNT, 40, &[("CNY", "10")], 2)),
        Outcome::Ok
    );
    assert_eq!(
        api.withdraw_calls()[0].json()["withdraw_bonus_type"],
        json!([2])
    );
    assert_eq!(api.balance(ACCOUNT).points, 40);
}

#[test]
fn other_events_are_ignored_and_bad_events_rejected() {
    let api = LarkApi::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let p = plugin(&api, dir.path(), json!({}));
    let other = raw_delivery(
        "x",
        1,
        "im.message.receive_v1",
        r#"{"schema":"2.0","event":{}}"#,
    );
    assert_eq!(p.handle(&other), Outcome::Ok);
    let bad = delivery("y", 1, ACCOUNT, 1, &[("CNY", "1.005")], 1);
    assert!(matches!(p.handle(&bad), Outcome::Reject { .. }));
    assert!(api.requests().is_empty());
}

#[test]
fn wrong_app_secret_is_a_reject_without_the_secret() {
    let api = LarkApi::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let p = plugin(&api, dir.path(), json!({"app_secret": "not-the-secret"}));
    match p.handle(&delivery("s", 1, ACCOUNT, 1, &[], 1)) {
        Outcome::Reject { reason } => {
            assert!(reason.contains("10014"), "{reason}");
            assert!(!reason.contains("not-the-secret"), "{reason}");
        }
        other => panic!("expected Reject, got {other:?}"),
    }
    assert!(api.withdraw_calls().is_empty());
}

#[test]
fn network_error_is_a_retry() {
    let api = LarkApi::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing listens on port 1 of the loopback.
    let p = plugin(&api, dir.path(), json!({"base_url": "http://127.0.0.1:1"}));
    let outcome = p.handle(&delivery("n", 1, ACCOUNT, 1, &[], 1));
    assert!(is_retry(&outcome), "{outcome:?}");
}
