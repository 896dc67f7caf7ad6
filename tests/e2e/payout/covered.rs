//! A snapshot whose balance a later snapshot's withdrawal took: the older snapshot's withdraw,
//! retried after a rate limit, finds the account empty and Lark refuses it. That is recorded as
//! skipped (`covered`), the delivery done, and `payout-report unfinished` does not list it (it
//! used to end as a dead letter, a false alarm on a payout that happened). Part of
//! `payout.rs`.

use std::process::Command;

use super::kit::*;

/// What the stand-in answers a withdraw that would take nothing.
const NOTHING: (i64, &str) = (1_002_100, "stand-in: nothing to withdraw");

#[test]
fn a_refused_withdraw_of_a_snapshot_a_later_withdrawal_took_is_skipped_as_covered() {
    let api = LarkApi::start();
    let account = "acc-covered";
    api.set_balance(account, 10, &[("CNY", "1.00")]);
    api.faults(|f| {
        f.rate_limit_withdraws = 1;
        f.retry_after_s = 2;
        f.refuse_empty = Some((NOTHING.0, NOTHING.1.into()));
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(&api, "5s", false).replace("max_backoff = \"200ms\"", "max_backoff = \"10s\"");
    let gw = spawn(dir.path(), &cfg);
    send(
        &gw,
        "po-older",
        account,
        10,
        r#"[{"currency_type":"CNY","amount":1}]"#,
        T0 + 1_000,
    );
    assert!(
        wait_until(Duration::from_secs(15), || api.withdraw_calls().len() == 1),
        "{}",
        gw.log()
    );
    // The balance grows before the older snapshot's retry (2 s later): Lark pushes the newer
    // snapshot, whose withdrawal takes the whole balance.
    api.set_balance(account, 25, &[("CNY", "3.50")]);
    send(
        &gw,
        "po-newer",
        account,
        25,
        r#"[{"currency_type":"CNY","amount":3.5}]"#,
        T0 + 2_000,
    );
    wait_done(&gw, "po-newer");
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
    let withdrawals = api.withdrawals();
    assert_eq!(withdrawals.len(), 1);
    assert_eq!(
        withdrawals[0].external_order_id,
        expected_order_id("po-newer")
    );
    assert_eq!(withdrawals[0].assets.points, 25);
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
    assert!(out.status.success(), "{stdout}");
    assert!(
        !stdout.contains(&expected_order_id("po-older")),
        "the covered snapshot is not unfinished:\n{stdout}"
    );
}

/// A refusal with no withdrawal of at least the snapshot's amounts after it stays a refusal
/// (a dead letter for an operator): here the later withdrawal took fewer points than the
/// snapshot had, so it cannot have taken that snapshot's balance.
#[test]
fn a_refusal_no_later_withdrawal_explains_stays_a_dead_letter() {
    let api = LarkApi::start();
    let account = "acc-not-covered";
    api.set_balance(account, 10, &[]);
    api.faults(|f| {
        f.rate_limit_withdraws = 1;
        f.retry_after_s = 2;
        f.refuse_empty = Some((NOTHING.0, NOTHING.1.into()));
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(&api, "5s", false).replace("max_backoff = \"200ms\"", "max_backoff = \"10s\"");
    let gw = spawn(dir.path(), &cfg);
    send(&gw, "po-big", account, 10, "[]", T0 + 1_000);
    assert!(wait_until(Duration::from_secs(15), || api
        .withdraw_calls()
        .len()
        == 1));
    // The newer snapshot says 5 (the balance went down: its withdrawal of 5 cannot have
    // taken the older snapshot's 10).
    api.set_balance(account, 5, &[]);
    send(&gw, "po-small", account, 5, "[]", T0 + 2_000);
    wait_done(&gw, "po-small");
    assert!(
        wait_until(Duration::from_secs(15), || delivery(&gw, "po-big")["state"]
            == "dead"),
        "{}",
        delivery(&gw, "po-big")
    );
    assert!(
        !gw.log().contains("nothing withdrawn (covered"),
        "{}",
        gw.log()
    );
}
