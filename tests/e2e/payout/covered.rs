//! A snapshot whose balance a later snapshot's withdrawal took: the older snapshot's withdraw,
//! retried after a rate limit, finds the account empty and Lark refuses it with a code the
//! operator listed in `covered_codes`. That is recorded as skipped (`covered`), the delivery
//! done, and `payout-report unfinished` does not list it (it used to end as a dead letter, a
//! false alarm on a payout that happened). Unlisted, or with no withdrawal made after the
//! snapshot of at least its amounts, the refusal stays a dead letter. Part of `payout.rs`.

use std::process::Command;

use super::kit::*;

/// What the stand-in answers a withdraw that would take nothing.
const NOTHING: (i64, &str) = (1_002_100, "stand-in: nothing to withdraw");
const ACCOUNT: &str = "acc-covered";

/// The older snapshot (10 points, 1.00 CNY) is rate-limited at its first withdraw (retried 2 s
/// later); meanwhile the balance changes and the newer snapshot (`newer_points`, 3.50 CNY) is
/// withdrawn whole, at `newer_trans_time` when given (else the stand-in's clock); the older
/// one's retry then finds the account empty. `listed`: `covered_codes` lists the refusal's
/// code.
fn older_retried_after_newer_took_all(
    dir: &std::path::Path,
    listed: bool,
    newer_trans_time: Option<u64>,
    newer_points: u64,
) -> (LarkApi, TestGateway) {
    let api = LarkApi::start();
    api.set_balance(ACCOUNT, 10, &[("CNY", "1.00")]);
    api.faults(|f| {
        f.rate_limit_withdraws = 1;
        f.retry_after_s = 2;
        f.refuse_empty = Some((NOTHING.0, NOTHING.1.into()));
    });
    let mut cfg =
        config(&api, "5s", false).replace("max_backoff = \"200ms\"", "max_backoff = \"10s\"");
    if listed {
        cfg = cfg.replace(
            "timeout = \"5s\"",
            &format!("timeout = \"5s\", covered_codes = [{}]", NOTHING.0),
        );
    }
    let gw = spawn(dir, &cfg);
    let older = r#"[{"currency_type":"CNY","amount":1}]"#;
    send(&gw, "po-older", ACCOUNT, 10, older, T0 + 1_000);
    assert!(
        wait_until(Duration::from_secs(15), || api.withdraw_calls().len() == 1),
        "{}",
        gw.log()
    );
    api.set_balance(ACCOUNT, newer_points, &[("CNY", "3.50")]);
    if let Some(ms) = newer_trans_time {
        api.set_trans_time(ms);
    }
    let newer = r#"[{"currency_type":"CNY","amount":3.5}]"#;
    send(&gw, "po-newer", ACCOUNT, newer_points, newer, T0 + 2_000);
    wait_done(&gw, "po-newer");
    let withdrawals = api.withdrawals();
    assert_eq!(withdrawals.len(), 1);
    assert_eq!(
        withdrawals[0].external_order_id,
        expected_order_id("po-newer")
    );
    assert_eq!(withdrawals[0].assets.points, newer_points);
    (api, gw)
}

fn waits_dead(gw: &TestGateway) {
    assert!(
        wait_until(Duration::from_secs(15), || delivery(gw, "po-older")
            ["state"]
            == "dead"),
        "{}",
        delivery(gw, "po-older")
    );
    assert!(
        !gw.log().contains("nothing withdrawn (covered"),
        "{}",
        gw.log()
    );
}

#[test]
fn a_listed_refusal_of_a_snapshot_a_later_withdrawal_took_is_skipped_as_covered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (api, gw) = older_retried_after_newer_took_all(dir.path(), true, None, 25);
    let older = wait_done(&gw, "po-older");
    assert_eq!(older["attempts"], 2, "{older}");
    assert_eq!(
        withdraw_order_ids(&api),
        [
            expected_order_id("po-older"),
            expected_order_id("po-newer"),
            expected_order_id("po-older"),
        ]
    );
    assert_eq!(api.withdrawals().len(), 1, "nothing more withdrawn");
    let log = gw.log();
    let line = log
        .lines()
        .find(|l| l.contains("nothing withdrawn (covered"))
        .unwrap_or_else(|| panic!("no covered line:\n{log}"));
    assert!(
        line.contains(&expected_order_id("po-newer")) && line.contains(&NOTHING.0.to_string()),
        "{line}"
    );
    let out = Command::new(payout_report())
        .args(["unfinished", "--ledger"])
        .arg(dir.path().join("data/payout.db"))
        .output()
        .expect("run payout-report");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "nothing unfinished: {stdout}");
}

/// Without the code in `covered_codes`, the same refusal is a dead letter as before.
#[test]
fn an_unlisted_refusal_stays_a_dead_letter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_api, gw) = older_retried_after_newer_took_all(dir.path(), false, None, 25);
    waits_dead(&gw);
}

/// A withdrawal Lark made before the snapshot's time cannot have taken that snapshot's
/// balance: the listed refusal stays a dead letter (someone else emptied the account).
#[test]
fn a_refusal_no_withdrawal_after_the_snapshot_explains_stays_a_dead_letter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_api, gw) = older_retried_after_newer_took_all(dir.path(), true, Some(T0 + 500), 25);
    waits_dead(&gw);
}

/// A withdrawal made after the snapshot but of fewer points than it had cannot have taken its
/// balance (the balance went down in between: taken by someone else): the listed refusal stays
/// a dead letter.
#[test]
fn a_refusal_a_smaller_later_withdrawal_cannot_explain_stays_a_dead_letter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_api, gw) = older_retried_after_newer_took_all(dir.path(), true, None, 5);
    waits_dead(&gw);
}
