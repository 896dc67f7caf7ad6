//! A snapshot whose balance another snapshot's withdrawal took: two snapshots of one account
//! arrive before either is paid; the first withdrawal takes the whole balance, and Lark refuses
//! the other one's withdraw with a code the operator listed in `covered_codes`. That is
//! recorded as skipped (`covered`), the delivery done, and `payout-report unfinished` does not
//! list it (it used to end as a dead letter, a false alarm on a payout that happened). The
//! refusal stays a dead letter when its code is not listed, when no recorded withdrawal made
//! after the snapshot took at least its amounts, and when an earlier call of the delivery is in
//! doubt (an HTTP 500: it may have been executed after all); it is taken as covered after an
//! earlier call the rate limit turned away. Part of `payout.rs`.

use std::process::Command;

use super::kit::*;

/// What the stand-in answers a withdraw that would take nothing.
const NOTHING: (i64, &str) = (1_002_100, "stand-in: nothing to withdraw");
const ACCOUNT: &str = "acc-covered";
/// The two snapshots: (event id, points, cash, modify time).
const OLDER: (&str, u64, &str, u64) = (
    "po-older",
    10,
    r#"[{"currency_type":"CNY","amount":1}]"#,
    T0 + 1_000,
);
const NEWER: (&str, u64, &str, u64) = (
    "po-newer",
    25,
    r#"[{"currency_type":"CNY","amount":3.5}]"#,
    T0 + 2_000,
);

/// A gateway whose payout instance runs one call at a time (the second snapshot's check sees
/// the first's withdrawal recorded), with the refusal's code in `covered_codes` when `listed`.
fn gateway(dir: &std::path::Path, api: &LarkApi, listed: bool) -> TestGateway {
    spawn(dir, &config_for(api, listed))
}

fn config_for(api: &LarkApi, listed: bool) -> String {
    let mut cfg = config(api, "5s", false)
        .replace("max_backoff = \"200ms\"", "max_backoff = \"10s\"")
        .replace(
            &format!("name = \"{PLUGIN}\"\n"),
            &format!("name = \"{PLUGIN}\"\nmax_concurrency = 1\n"),
        );
    if listed {
        cfg = cfg.replace(
            "timeout = \"5s\"",
            &format!("timeout = \"5s\", covered_codes = [{}]", NOTHING.0),
        );
    }
    cfg
}

fn state(gw: &TestGateway, id: &str) -> String {
    delivery(gw, id)["state"].as_str().unwrap_or("").to_owned()
}

/// Both snapshots sent at once with the account's balance at `balance` points (and 3.50 CNY);
/// the first handled withdraws it all (at `trans_time` when given, else the stand-in's clock),
/// the other's withdraw is refused. Returns once both deliveries ended, with their states in
/// order (older, newer).
fn two_snapshots(
    dir: &std::path::Path,
    listed: bool,
    trans_time: Option<u64>,
    balance: u64,
) -> (LarkApi, TestGateway, [String; 2]) {
    let api = LarkApi::start();
    api.set_balance(ACCOUNT, balance, &[("CNY", "3.50")]);
    api.faults(|f| f.refuse_empty = Some((NOTHING.0, NOTHING.1.into())));
    if let Some(ms) = trans_time {
        api.set_trans_time(ms);
    }
    let gw = gateway(dir, &api, listed);
    for (id, points, cash, at) in [OLDER, NEWER] {
        send(&gw, id, ACCOUNT, points, cash, at);
    }
    let ended = |s: &str| s == "done" || s == "dead";
    assert!(
        wait_until(Duration::from_secs(15), || ended(&state(&gw, OLDER.0))
            && ended(&state(&gw, NEWER.0))),
        "{}",
        gw.log()
    );
    let withdrawals = api.withdrawals();
    assert_eq!(withdrawals.len(), 1, "one withdrawal took the balance");
    assert_eq!(withdrawals[0].assets.points, balance);
    let states = [state(&gw, OLDER.0), state(&gw, NEWER.0)];
    (api, gw, states)
}

/// Exactly one of the two ended as a dead letter, and nothing was taken as covered.
fn one_dead(gw: &TestGateway, states: &[String; 2]) {
    let dead = states.iter().filter(|s| *s == "dead").count();
    assert_eq!(dead, 1, "{states:?}\n{}", gw.log());
    assert!(
        !gw.log().contains("nothing withdrawn (covered"),
        "{}",
        gw.log()
    );
}

#[test]
fn a_listed_refusal_of_a_snapshot_another_withdrawal_took_is_skipped_as_covered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (api, gw, states) = two_snapshots(dir.path(), true, None, 25);
    assert_eq!(states, ["done", "done"], "{}", gw.log());
    assert_eq!(api.withdraw_calls().len(), 2, "one call each");
    let log = gw.log();
    let line = log
        .lines()
        .find(|l| l.contains("nothing withdrawn (covered"))
        .unwrap_or_else(|| panic!("no covered line:\n{log}"));
    let took = &api.withdrawals()[0].external_order_id;
    assert!(
        line.contains(took.as_str()) && line.contains(&NOTHING.0.to_string()),
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

/// Without the code in `covered_codes`, the refusal is a dead letter as before.
#[test]
fn an_unlisted_refusal_stays_a_dead_letter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_api, gw, states) = two_snapshots(dir.path(), false, None, 25);
    one_dead(&gw, &states);
}

/// A withdrawal Lark made before the snapshots' times cannot have taken their balance: the
/// listed refusal stays a dead letter.
#[test]
fn a_refusal_no_withdrawal_after_the_snapshot_explains_stays_a_dead_letter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_api, gw, states) = two_snapshots(dir.path(), true, Some(T0 + 500), 25);
    one_dead(&gw, &states);
}

/// A withdrawal of fewer points than the refused snapshot had (5 against 10 or 25) cannot
/// have taken its balance (someone else took the rest): the listed refusal stays a dead letter.
#[test]
fn a_refusal_a_smaller_withdrawal_cannot_explain_stays_a_dead_letter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_api, gw, states) = two_snapshots(dir.path(), true, None, 5);
    one_dead(&gw, &states);
}

/// The older snapshot's first withdraw call fails (`first`: the stand-in's fault knobs), its
/// second comes 2 s later; the newer one's withdrawal takes everything meanwhile; the older
/// one's second call is refused with the listed code. Returns the older delivery's end state
/// and the gateway.
fn refused_after(dir: &std::path::Path, first: impl FnOnce(&mut Faults)) -> (String, TestGateway) {
    let api = LarkApi::start();
    api.set_balance(ACCOUNT, 10, &[("CNY", "1.00")]);
    api.faults(|f| {
        first(f);
        f.retry_after_s = 2;
        f.refuse_empty = Some((NOTHING.0, NOTHING.1.into()));
    });
    let cfg = config_for(&api, true);
    let slow = cfg.replace("initial_backoff = \"50ms\"", "initial_backoff = \"2s\"");
    assert_ne!(cfg, slow, "the backoff set");
    let gw = spawn(dir, &slow);
    let (id, points, cash, at) = OLDER;
    send(&gw, id, ACCOUNT, points, cash, at);
    assert!(
        wait_until(Duration::from_secs(15), || api.withdraw_calls().len() == 1),
        "{}",
        gw.log()
    );
    api.set_balance(ACCOUNT, 25, &[("CNY", "3.50")]);
    let (id, points, cash, at) = NEWER;
    send(&gw, id, ACCOUNT, points, cash, at);
    wait_done(&gw, NEWER.0);
    let ended = |s: &str| s == "done" || s == "dead";
    assert!(
        wait_until(Duration::from_secs(15), || ended(&state(&gw, OLDER.0))),
        "{}",
        delivery(&gw, OLDER.0)
    );
    assert_eq!(
        withdraw_order_ids(&api),
        [
            expected_order_id(OLDER.0),
            expected_order_id(NEWER.0),
            expected_order_id(OLDER.0),
        ]
    );
    (state(&gw, OLDER.0), gw)
}

/// A first call turned away by the rate limit (HTTP 429) withdrew nothing: the second call's
/// listed refusal is taken as covered.
#[test]
fn a_refusal_after_a_rate_limited_call_is_skipped_as_covered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (state, gw) = refused_after(dir.path(), |f| f.rate_limit_withdraws = 1);
    assert_eq!(state, "done", "{}", gw.log());
    assert!(
        gw.log().contains("nothing withdrawn (covered"),
        "{}",
        gw.log()
    );
}

/// A first call answered with HTTP 500 may have been executed (or may still be): the second
/// call's refusal is never taken as covered. A dead letter, as before.
#[test]
fn a_refusal_after_a_call_in_doubt_stays_a_dead_letter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (state, gw) = refused_after(dir.path(), |f| f.fail_withdraws = 1);
    assert_eq!(state, "dead", "{}", gw.log());
    assert!(
        !gw.log().contains("nothing withdrawn (covered"),
        "{}",
        gw.log()
    );
}
