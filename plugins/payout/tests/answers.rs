//! Answers and events the payout plugin must not take at face value: a withdraw answer
//! without the amounts it was asked for (not a zero payout), a token lifetime past the clock's
//! range (no panic), a forwarding failure (never shows the platform's password), an event
//! whose numbers the ledger cannot hold (a bad event, not a retry).

#[path = "../../../tests/standins/lark_api.rs"]
mod lark_api;

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use common::{delivery, plugin, row};
use gateway_plugin::{Outcome, Plugin};
use lark_api::LarkApi;
use payout::ledger::{ForwardStatus, Status};
use serde_json::json;

const ACCOUNT: &str = "7147998241542539527";

/// A tiny Open API: a token, and every withdraw answered with `withdraw_body` (HTTP 200); any
/// other path (the payment platform) answers 200 `{}`. Returns the base URL and the paths asked.
fn tiny_lark(withdraw_body: String) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut stream) = conn else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.trim().eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            log.lock().expect("lock").push(path.clone());
            let answer = if path.ends_with("/tenant_access_token/internal") {
                r#"{"code":0,"msg":"ok","tenant_access_token":"t-1","expire":7200}"#.to_owned()
            } else if path.ends_with("/withdraw") {
                withdraw_body.clone()
            } else {
                "{}".to_owned()
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                answer.len(),
                answer
            );
        }
    });
    (base, seen)
}

/// A withdraw answer whose `withdrawal_details` names neither `point_bonus` nor `cash_bonus`
/// (an empty object, or the fields under other names) was taken as a withdrawal of nothing:
/// the row `withdrawn` with 0 points and no cash, forwarding `not_needed`, the delivery `Ok`,
/// the money Lark moved never forwarded. It is retried instead (the same order id).
/// A payout instance whose Lark and payment platform are the stand-in at `base`, its ledger
/// in `dir`.
fn payout_against(base: &str, dir: &std::path::Path) -> payout::Payout {
    let config = json!({
        "base_url": base, "app_id": "cli_test", "app_secret": "secret_test",
        "ledger": "data/payout.db", "timeout": "2s",
        "forward_url": format!("{base}/pay"),
    });
    payout::Payout::new(config, gateway_plugin::Host::for_tests(dir, "payout")).expect("config")
}

#[test]
fn a_withdraw_answer_without_the_requested_amounts_is_not_a_zero_payout() {
    for details in [
        json!({}),
        json!({"pointBonus": 100, "cashBonus": [{"currency_type": "CNY", "amount": 100}]}),
    ] {
        let order = payout::external_order_id("evt-shape:payout");
        let body = json!({"code": 0, "msg": "ok", "data": {
            "external_order_id": order, "trans_time": "1685431415036",
            "withdrawal_details": details}})
        .to_string();
        let (base, seen) = tiny_lark(body);
        let dir = tempfile::tempdir().expect("tempdir");
        let p = payout_against(&base, dir.path());
        let d = delivery(
            "evt-shape:payout",
            1,
            ACCOUNT,
            100,
            &[("CNY", "100")],
            1_000,
        );
        let outcome = p.handle(&d);
        let r = row(dir.path(), "evt-shape:payout");
        let paid = seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|p| p.ends_with("/pay"))
            .count();
        assert!(
            matches!(outcome, Outcome::Retry { .. }) && r.status == Status::Pending,
            "details {details}: outcome {outcome:?}, row {:?} with {} points, forward {:?}, {paid} payment(s) sent",
            r.status,
            r.points,
            r.forward_status
        );
        assert_ne!(r.forward_status, ForwardStatus::NotNeeded);
    }
}

/// Finding: a token answer with an absurd `expire` panics in `Instant + Duration` (the
/// instance is replaced and the delivery dead-lettered as `Panicked`).
#[test]
fn a_huge_token_expire_does_not_panic() {
    let api = LarkApi::start();
    api.set_balance(ACCOUNT, 100, &[]);
    api.set_token_expire(u64::MAX);
    let dir = tempfile::tempdir().expect("tempdir");
    let p = plugin(&api, dir.path(), json!({}));
    let d = delivery("evt-exp:payout", 1, ACCOUNT, 100, &[], 1_000);
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.handle(&d)));
    assert!(
        got.is_ok(),
        "handle panicked on a token reply with expire = u64::MAX"
    );
}

/// Finding: the payment platform URL's password ends up in the outcome reason (stored in the
/// gateway's history, shown by the console and the API, and logged), through ureq's transport
/// error text. The gateway does not redact plugin reasons (`delivery/detail.rs`).
#[test]
fn a_forwarding_failure_never_shows_the_platform_password() {
    let api = LarkApi::start();
    api.set_balance(ACCOUNT, 100, &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    // Port 1 on loopback: connection refused, a transient forwarding failure.
    let p = plugin(
        &api,
        dir.path(),
        json!({"forward_url": "http://payout:pw-s3cret@127.0.0.1:1/pay"}),
    );
    let d = delivery("evt-fwd:payout", 1, ACCOUNT, 100, &[], 1_000);
    let outcome = p.handle(&d);
    let reason = match &outcome {
        Outcome::Retry { reason, .. } | Outcome::Reject { reason } => reason.clone(),
        Outcome::Ok => panic!("forwarding to a closed port succeeded"),
    };
    assert!(!reason.contains("pw-s3cret"), "{reason}");
    let r = row(dir.path(), "evt-fwd:payout");
    let stored =
        payout::ledger::Ledger::open_read_only(&dir.path().join("data/payout.db")).expect("ledger");
    drop(stored);
    assert_eq!(r.forward_status, ForwardStatus::Pending);
}

/// Finding: an event whose `modify_time` does not fit the ledger's signed 64-bit column is
/// answered `Retry` (a ledger error) on every attempt instead of `Reject` (bad event).
#[test]
fn a_modify_time_beyond_i64_is_rejected_not_retried() {
    let api = LarkApi::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let p = plugin(&api, dir.path(), json!({}));
    let d = delivery("evt-big:payout", 1, ACCOUNT, 100, &[], u64::MAX);
    let outcome = p.handle(&d);
    assert!(matches!(outcome, Outcome::Reject { .. }), "{outcome:?}");
}

/// A `modify_time` in microseconds (or far ahead) is refused: kept as the account's newest
/// snapshot, it made every real snapshot after it a `stale` skip, for good (nothing withdrawn,
/// nothing unfinished). The next real snapshot is withdrawn as usual.
#[test]
fn a_modify_time_that_is_no_unix_millisecond_is_rejected_and_the_account_still_paid() {
    let api = LarkApi::start();
    api.set_balance(ACCOUNT, 100, &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let p = plugin(&api, dir.path(), json!({}));
    let micro = delivery("evt-us:payout", 1, ACCOUNT, 100, &[], 1_685_431_415_036_000);
    let outcome = p.handle(&micro);
    assert!(
        matches!(&outcome, Outcome::Reject { reason } if reason.contains("not a time in Unix milliseconds")),
        "{outcome:?}"
    );
    let real = delivery("evt-ms:payout", 1, ACCOUNT, 100, &[], 1_685_431_415_036);
    assert_eq!(p.handle(&real), Outcome::Ok);
    assert_eq!(row(dir.path(), "evt-ms:payout").status, Status::Withdrawn);
}

/// An account id that is a path step (`..`: the URL parser resolves it, encoded or not, and the
/// withdraw would go to another path) is a bad event.
#[test]
fn an_account_id_that_is_a_path_step_is_rejected() {
    let api = LarkApi::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let p = plugin(&api, dir.path(), json!({}));
    for id in ["..", "."] {
        let d = delivery(&format!("evt-{id}:payout"), 1, id, 100, &[], 1_000);
        let outcome = p.handle(&d);
        assert!(
            matches!(outcome, Outcome::Reject { .. }),
            "{id}: {outcome:?}"
        );
    }
}

/// Finding: a `trans_time` that parses as `u64` but exceeds the SQLite ledger's signed 64-bit
/// column (`"9223372036854775808"`) failed `record_withdrawn` (rusqlite refuses a `u64` above
/// `i64::MAX`): the money Lark moved was never recorded, every attempt answered `Retry` (a
/// ledger error), Lark was asked again and again, and the delivery ended a dead letter that a
/// replay could not fix either. The PostgreSQL ledger already kept the text and no parsed time.
#[test]
fn a_trans_time_beyond_i64_is_kept_as_text_and_the_withdrawal_recorded() {
    let order = payout::external_order_id("evt-tt:payout");
    let body = json!({"code": 0, "msg": "ok", "data": {
        "external_order_id": order, "trans_time": "9223372036854775808",
        "withdrawal_details": {"point_bonus": 100}}})
    .to_string();
    let (base, seen) = tiny_lark(body);
    let dir = tempfile::tempdir().expect("tempdir");
    let p = payout_against(&base, dir.path());
    let d = delivery("evt-tt:payout", 1, ACCOUNT, 100, &[], 1_000);
    let outcome = p.handle(&d);
    let r = row(dir.path(), "evt-tt:payout");
    assert_eq!(outcome, Outcome::Ok, "row {:?}", r.status);
    assert_eq!(r.status, Status::Withdrawn);
    assert_eq!(r.points, 100);
    assert_eq!(r.trans_time.as_deref(), Some("9223372036854775808"));
    assert_eq!(r.trans_time_ms, None);
    assert_eq!(r.forward_status, ForwardStatus::Done);
    let paths = seen.lock().expect("lock").clone();
    let withdraws = paths.iter().filter(|p| p.ends_with("/withdraw")).count();
    let paid = paths.iter().filter(|p| p.ends_with("/pay")).count();
    assert_eq!((withdraws, paid), (1, 1), "{paths:?}");
}

/// A snapshot listing one currency in two entries (the withdraw answer's entries are added up
/// per currency too): CNY 6.00 + cny 6.00 = 12.00 reaches `min_cash = { CNY = "10.00" }`. Each
/// entry was compared with the minimum alone, and the balance skipped as below it.
#[test]
fn the_minimum_applies_to_a_currencys_entries_added_up() {
    let api = LarkApi::start();
    api.set_balance("acct-dup", 0, &[("CNY", "12.00")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let p = plugin(&api, dir.path(), json!({"min_cash": {"CNY": "10.00"}}));
    let d = delivery(
        "dup",
        1,
        "acct-dup",
        0,
        &[("CNY", "6.00"), ("cny", "6.00")],
        10,
    );
    assert_eq!(p.handle(&d), Outcome::Ok);
    let r = common::ledger(dir.path())
        .get("dup")
        .expect("read")
        .expect("a row");
    assert_eq!(r.status, Status::Withdrawn, "{:?}", r.skip_reason);
    // Below it in total: skipped.
    let d = delivery(
        "dup-2",
        1,
        "acct-dup",
        0,
        &[("CNY", "4.00"), ("CNY", "5.99")],
        20,
    );
    assert_eq!(p.handle(&d), Outcome::Ok);
    let r = common::ledger(dir.path())
        .get("dup-2")
        .expect("read")
        .expect("a row");
    assert_eq!(r.status, Status::Skipped, "{r:?}");
}
