//! Forwarding to the payment platform, exact ledger totals, and the `payout-report` CLI (`list`,
//! `unfinished` and `reconcile`) against the Lark stand-in.

#[path = "../../../tests/standins/lark_api.rs"]
mod lark_api;

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::{again, delivery, ledger, plugin, row};
use gateway_plugin::{Outcome, Plugin};
use lark_api::LarkApi;
use payout::api::LarkClient;
use payout::external_order_id;
use payout::forward::signature;
use payout::ledger::ForwardStatus;
use payout::report;
use serde_json::json;

#[test]
fn forwarding_failure_then_success_withdraws_once_with_one_idempotency_key() {
    let api = LarkApi::start();
    api.set_balance("acct", 100, &[("CNY", "0.1")]);
    api.set_trans_time(1_700_000_000_000);
    api.faults(|f| f.fail_payments = 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let p = plugin(
        &api,
        dir.path(),
        json!({"forward_url": api.payments_url(), "forward_secret": "fwd-secret"}),
    );
    let d = delivery("evt-fwd", 1, "acct", 100, &[("CNY", "0.1")], 5);

    let first = p.handle(&d);
    assert!(matches!(first, Outcome::Retry { .. }), "{first:?}");
    assert_eq!(
        row(dir.path(), "evt-fwd").forward_status,
        ForwardStatus::Pending
    );
    assert_eq!(p.handle(&again(&d)), Outcome::Ok);

    assert_eq!(api.withdraw_calls().len(), 1);
    assert_eq!(api.withdrawals().len(), 1);
    let payments = api.payments();
    assert_eq!(payments.len(), 2);
    let order_id = external_order_id("evt-fwd");
    for pay in &payments {
        assert_eq!(pay.header("idempotency-key"), Some(order_id.as_str()));
        assert_eq!(
            pay.header("x-gateway-signature"),
            Some(signature("fwd-secret", pay.body.as_bytes()).as_str())
        );
    }
    assert_eq!(payments[0].body, payments[1].body);
    assert_eq!(
        payments[0].json(),
        json!({
            "external_order_id": order_id,
            "account_id": "acct",
            "trans_time": "1700000000000",
            "points": 100,
            "cash": [{"currency": "CNY", "amount": "0.10"}],
        })
    );
    let r = row(dir.path(), "evt-fwd");
    assert_eq!(
        (r.forward_status, r.forward_attempts),
        (ForwardStatus::Done, 2)
    );
    // Done: a repeat neither withdraws nor forwards again.
    assert_eq!(p.handle(&again(&d)), Outcome::Ok);
    assert_eq!(api.payments().len(), 2);
}

#[test]
fn a_forward_left_pending_when_forward_url_is_removed_is_a_dead_letter_not_done() {
    let api = LarkApi::start();
    api.set_balance("acct", 100, &[]);
    api.faults(|f| f.fail_payments = 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let with = json!({"forward_url": api.payments_url()});
    let d = delivery("evt-strand", 1, "acct", 100, &[], 5);
    let first = plugin(&api, dir.path(), with.clone()).handle(&d);
    assert!(matches!(first, Outcome::Retry { .. }), "{first:?}");
    // The operator reloads without forward_url while the forward is pending.
    let without = plugin(&api, dir.path(), json!({}));
    match without.handle(&again(&d)) {
        Outcome::Reject { reason } => {
            assert!(reason.contains("no forward_url is configured"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        row(dir.path(), "evt-strand").forward_status,
        ForwardStatus::Pending
    );
    // Restored, a replay forwards it (and never withdraws again).
    assert_eq!(
        plugin(&api, dir.path(), with).handle(&again(&d)),
        Outcome::Ok
    );
    assert_eq!(api.withdraw_calls().len(), 1);
    assert_eq!(
        row(dir.path(), "evt-strand").forward_status,
        ForwardStatus::Done
    );
}

#[test]
fn nothing_withdrawn_means_nothing_forwarded() {
    let api = LarkApi::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let p = plugin(&api, dir.path(), json!({"forward_url": api.payments_url()}));
    // The snapshot says 3 points, but Lark's balance is already empty (taken by another withdrawal).
    assert_eq!(p.handle(&delivery("e", 1, "acct", 3, &[], 5)), Outcome::Ok);
    assert_eq!(
        row(dir.path(), "e").forward_status,
        ForwardStatus::NotNeeded
    );
    assert!(api.payments().is_empty());
}

/// Two accounts paid 0.1 and 0.2 CNY; returns the stand-in and the ledger folder.
fn paid_point_one_and_point_two() -> (LarkApi, tempfile::TempDir) {
    let api = LarkApi::start();
    api.set_trans_time(1_700_000_000_000);
    api.set_balance("a1", 1, &[("CNY", "0.1")]);
    api.set_balance("a2", 2, &[("CNY", "0.2"), ("USD", "100.25")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let p = plugin(&api, dir.path(), json!({}));
    assert_eq!(
        p.handle(&delivery("d1", 1, "a1", 1, &[("CNY", "0.1")], 1)),
        Outcome::Ok
    );
    assert_eq!(
        p.handle(&delivery(
            "d2",
            1,
            "a2",
            2,
            &[("CNY", "0.2"), ("USD", "100.25")],
            1
        )),
        Outcome::Ok
    );
    (api, dir)
}

#[test]
fn point_one_plus_point_two_is_exactly_point_three() {
    let (_api, dir) = paid_point_one_and_point_two();
    let totals = report::totals(&ledger(dir.path()), None, None).expect("totals");
    assert_eq!(totals.withdrawals, 2);
    assert_eq!(totals.points, 3);
    let shown: BTreeMap<&str, String> = totals
        .cash
        .iter()
        .map(|(c, m)| (c.as_str(), m.to_string()))
        .collect();
    assert_eq!(shown["CNY"], "0.30");
    assert_eq!(shown["USD"], "100.25");
    // Ranges use Lark's trans_time (d1 at ...000, d2 at ...001), inclusive.
    let only_second =
        report::totals(&ledger(dir.path()), Some(1_700_000_000_001), None).expect("totals");
    assert_eq!(only_second.cash["CNY"].to_string(), "0.20");
    let none = report::totals(&ledger(dir.path()), None, Some(1_699_999_999_999)).expect("t");
    assert_eq!(none.withdrawals, 0);

    // Stored as text and integer hundredths, never REAL.
    let conn = rusqlite_types(dir.path());
    assert_eq!(conn, vec![("text".to_owned(), "integer".to_owned())]);
}

/// The distinct SQLite storage types of `payout_cash.amount` and `amount_minor`.
fn rusqlite_types(dir: &std::path::Path) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(dir.join("data/payout.db")).expect("open");
    let mut st = conn
        .prepare("SELECT DISTINCT typeof(amount), typeof(amount_minor) FROM payout_cash")
        .expect("prepare");
    let rows = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query");
    rows.collect::<Result<_, _>>().expect("rows")
}

#[test]
fn cli_list_prints_rows_and_exact_totals() {
    let (_api, dir) = paid_point_one_and_point_two();
    let db = dir.path().join("data/payout.db");
    let out = Command::new(env!("CARGO_BIN_EXE_payout-report"))
        .args(["list", "--ledger"])
        .arg(&db)
        .args(["--from", "2023-11-14T22:13:20Z", "--to", "1700000000001"])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&external_order_id("d1")), "{text}");
    assert!(text.contains("withdrawals: 2"), "{text}");
    assert!(text.contains("total points: 3"), "{text}");
    assert!(text.contains("total CNY: 0.30"), "{text}");
    assert!(text.contains("total USD: 100.25"), "{text}");

    let bad = Command::new(env!("CARGO_BIN_EXE_payout-report"))
        .args(["list", "--ledger"])
        .arg(&db)
        .args(["--from", "last tuesday"])
        .output()
        .expect("runs");
    assert_eq!(bad.status.code(), Some(2));
}

/// `unfinished` lists what nothing will finish unless it is retried or replayed: a withdrawal
/// not known to be done (here Lark's 500), one withdrawn but not forwarded (the platform's
/// 500), and one Lark refused; not what was paid and forwarded, nor a skip. Exit code 1 while
/// any is listed (for a cron alert); `--older-than` leaves out the recent ones.
#[test]
fn cli_unfinished_lists_withdrawals_and_forwards_not_done() {
    let api = LarkApi::start();
    for acct in ["paid", "unforwarded", "unwithdrawn", "refused"] {
        api.set_balance(acct, 10, &[("CNY", "1.00")]);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let p = plugin(&api, dir.path(), json!({"forward_url": api.payments_url()}));
    let d = |id: &str, acct: &str| delivery(id, 1, acct, 10, &[("CNY", "1.00")], 5);
    assert_eq!(p.handle(&d("u-paid", "paid")), Outcome::Ok);
    assert_eq!(
        p.handle(&delivery("u-zero", 1, "zero", 0, &[], 5)),
        Outcome::Ok
    );
    api.faults(|f| f.fail_payments = 1);
    assert!(matches!(
        p.handle(&d("u-fwd", "unforwarded")),
        Outcome::Retry { .. }
    ));
    api.faults(|f| f.fail_withdraws = 1);
    assert!(matches!(
        p.handle(&d("u-wd", "unwithdrawn")),
        Outcome::Retry { .. }
    ));
    api.faults(|f| f.business_error = Some((1_002_001, "account disabled".into())));
    assert!(matches!(
        p.handle(&d("u-ref", "refused")),
        Outcome::Reject { .. }
    ));
    api.faults(|f| f.business_error = None);

    let db = dir.path().join("data/payout.db");
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_payout-report"))
            .args(["unfinished", "--ledger"])
            .arg(&db)
            .args(extra)
            .output()
            .expect("runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (
            out.status.code(),
            text,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, text, err) = run(&[]);
    assert_eq!(code, Some(1), "{text} {err}");
    let line = |id: &str| {
        text.lines()
            .find(|l| l.contains(id))
            .unwrap_or_else(|| panic!("{id} not listed: {text}"))
            .to_owned()
    };
    assert!(
        line("u-fwd").contains("forward") && line("u-fwd").contains("HTTP 500"),
        "{text}"
    );
    assert!(line("u-wd").contains(" withdraw "), "{text}");
    assert!(line("u-ref").contains("withdraw (refused)"), "{text}");
    assert!(line("u-ref").contains("account disabled"), "{text}");
    assert!(
        !text.contains("u-paid") && !text.contains("u-zero"),
        "{text}"
    );
    assert!(text.contains("unfinished: 3"), "{text}");
    // Recorded just now: none is a day old.
    let (code, text, err) = run(&["--older-than", "1d"]);
    assert_eq!(code, Some(0), "{text} {err}");
    assert!(text.contains("unfinished: 0"), "{text}");
    let (code, _, err) = run(&["--older-than", "soon"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--older-than"), "{err}");
}

#[test]
fn reconcile_reports_mismatches_only() {
    let (api, dir) = paid_point_one_and_point_two();
    let client = LarkClient::new(
        &api.base_url(),
        "cli_test",
        "secret_test",
        Duration::from_secs(2),
    );
    let l = ledger(dir.path());
    let (from, to) = (1_700_000_000_000, 1_700_000_000_100);
    let mut out = Vec::new();
    let mismatches = report::reconcile(&l, &client, from, to, &mut out).expect("reconciles");
    assert!(mismatches.is_empty(), "{mismatches:?}");

    let req = api.requests_to(lark_api::RECONCILIATION_PATH).remove(0);
    assert_eq!(req.json()["start_trans_time"], "1700000000000");
    assert_eq!(req.json()["end_trans_time"], "1700000000100");
    assert!(
        req.body.contains(r#""amount":0.30"#) || req.body.contains(r#""amount":0.10"#),
        "{}",
        req.body
    );
    assert_eq!(
        req.json()["trade_details"].as_array().map(Vec::len),
        Some(2)
    );

    // Lark knows a withdrawal the ledger does not.
    api.inject_withdrawal(lark_api::Withdrawal {
        external_order_id: "elsewhere".into(),
        account_id: "a1".into(),
        trans_time: 1_700_000_000_050,
        assets: lark_api::Assets {
            points: 5,
            cash: BTreeMap::new(),
        },
    });
    let mismatches = report::reconcile(&l, &client, from, to, &mut out).expect("reconciles");
    assert_eq!(mismatches.len(), 1);
    assert_eq!(mismatches[0].account_id, "a1");
    let lark_side = mismatches[0]
        .total_withdraw_reward_info
        .clone()
        .expect("lark totals");
    assert_eq!(lark_side.point_bonus, 6);
    assert_eq!(lark_side.cash_bonus[0].amount.to_string(), "0.10");

    // The CLI exits 1 on mismatches.
    let out = Command::new(env!("CARGO_BIN_EXE_payout-report"))
        .arg("reconcile")
        .arg("--ledger")
        .arg(dir.path().join("data/payout.db"))
        .args(["--base-url", &api.base_url(), "--app-id", "cli_test"])
        .args(["--app-secret-env", "PAYOUT_TEST_SECRET"])
        .args(["--from", &from.to_string(), "--to", &to.to_string()])
        .env("PAYOUT_TEST_SECRET", "secret_test")
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("MISMATCH account a1"), "{text}");
    assert!(!text.contains("secret_test"));
}

#[test]
fn reconcile_takes_a_range_of_one_instant_and_refuses_a_reversed_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("payout.db");
    drop(payout::ledger::Ledger::open(&db).expect("ledger"));
    let reconcile = |from: &str, to: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_payout-report"))
            .args(["reconcile", "--ledger"])
            .arg(&db)
            .args(["--from", from, "--to", to])
            .output()
            .expect("runs");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // The same instant at both ends is a range: it gets as far as the missing credentials.
    let same = reconcile("1700000000000", "1700000000000");
    assert!(same.contains("--app-secret-env"), "{same}");
    assert!(!same.contains("after"), "{same}");
    let forward = reconcile("1700000000000", "1700000000001");
    assert!(forward.contains("--app-secret-env"), "{forward}");
    let reversed = reconcile("1700000000001", "1700000000000");
    assert!(reversed.contains("--from is after --to"), "{reversed}");
}

/// Lark carried out a withdrawal whose answer the plugin never got (a timeout; then, say, the
/// delivery's retries ran out): the row stays `pending`. `reconcile` submitted only accounts
/// with `withdrawn` rows, and Lark answers only for those submitted, so it said "no
/// mismatches" over money Lark paid out and nobody forwarded. The account is submitted now,
/// with nothing withdrawn on the ledger's side, and Lark reports it.
#[test]
fn reconcile_submits_accounts_with_withdrawals_not_known_done() {
    let api = LarkApi::start();
    api.set_trans_time(1_700_000_000_000);
    api.set_balance("acct-lost", 40, &[("CNY", "250.00")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let p = plugin(&api, dir.path(), json!({"timeout": "300ms"}));
    // The token first, so only the withdraw is slow.
    assert_eq!(
        p.handle(&delivery("warm", 1, "nobody", 1, &[], 1)),
        Outcome::Ok
    );
    api.faults(|f| f.delay_next_withdraw = Some(Duration::from_millis(1_200)));
    let out = p.handle(&delivery(
        "lost",
        1,
        "acct-lost",
        40,
        &[("CNY", "250.00")],
        10,
    ));
    assert!(matches!(out, Outcome::Retry { .. }), "{out:?}");
    assert!(api
        .withdrawals()
        .iter()
        .any(|w| w.account_id == "acct-lost"));
    let l = ledger(dir.path());
    let client = LarkClient::new(
        &api.base_url(),
        "cli_test",
        "secret_test",
        Duration::from_secs(2),
    );
    let mut text = Vec::new();
    let mismatches =
        report::reconcile(&l, &client, 1_699_999_999_000, 1_700_000_001_000, &mut text)
            .expect("reconciles");
    let text = String::from_utf8_lossy(&text);
    assert_eq!(mismatches.len(), 1, "{text}");
    assert_eq!(mismatches[0].account_id, "acct-lost", "{text}");
    assert!(text.contains("MISMATCH account acct-lost"), "{text}");
}
