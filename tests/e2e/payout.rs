//! End-to-end tests of the `payout` plugin (issue 5): the real `gateway` binary loads the real
//! `libpayout.so`, which talks to the Lark Open API stand-in (`standins/lark_api.rs`) on loopback;
//! the ledger is read back with the real `payout-report` binary. The app secret reaches the plugin
//! only through `${VAR}` expansion (the stand-in refuses any other secret).
//!
//! Covered: one event → one token call and one withdraw with the right path, body and bearer
//! token; two HTTP 500s → three attempts with one `external_order_id` and one withdrawal; a
//! withdraw answered after the plugin's timeout → retried, still one withdrawal; a duplicate push,
//! a zero-balance follow-up and an older snapshot → no call; `kill -9` of the gateway while the
//! withdraw is in flight → after a restart the same `external_order_id` is sent and the stand-in
//! (idempotent on it, like Lark) records one withdrawal; 0.1 + 0.2 CNY is exactly 0.30 in the
//! ledger and in what is forwarded to the payment platform.

#[path = "../standins/lark_api.rs"]
mod lark_api;

#[path = "payout_kit.rs"]
mod kit;

#[path = "payout/covered.rs"]
mod covered;

use gateway_e2e::harness::run_cli_with_env;
use kit::*;

#[test]
fn one_event_is_one_token_call_and_one_exact_withdraw() {
    let api = LarkApi::start();
    api.set_balance("7147998241542539527", 100, &[("CNY", "12.34")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = spawn(dir.path(), &config(&api, "5s", false));
    let written = std::fs::read_to_string(dir.path().join("gateway.toml")).expect("config");
    assert!(
        !written.contains(APP_SECRET),
        "the secret must not be in the file"
    );

    send(
        &gw,
        "po-one",
        "7147998241542539527",
        100,
        r#"[{"currency_type":"CNY","amount":12.34}]"#,
        T0,
    );
    let d = wait_done(&gw, "po-one");
    assert_eq!(d["attempts"], 1, "{d}");

    // One token call, with the app id and the secret expanded from the environment.
    let tokens = api.requests_to(TOKEN_PATH);
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].method, "POST");
    assert_eq!(
        tokens[0].json(),
        serde_json::json!({"app_id": APP_ID, "app_secret": APP_SECRET})
    );
    // One withdraw: the account in the path, both bonus types, the delivery's order id, and
    // the token just issued as the bearer.
    let calls = api.withdraw_calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.method, "POST");
    assert_eq!(
        call.path,
        "/open-apis/hire/v1/referral_account/7147998241542539527/withdraw"
    );
    assert_eq!(
        call.json(),
        serde_json::json!({
            "withdraw_bonus_type": [1, 2],
            "external_order_id": expected_order_id("po-one"),
        })
    );
    assert_eq!(call.header("authorization"), Some("Bearer t-standin-1"));
    assert!(call
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json")));
    assert_eq!(api.requests().len(), 2, "nothing else was called");

    let withdrawals = api.withdrawals();
    assert_eq!(withdrawals.len(), 1);
    assert_eq!(withdrawals[0].assets.points, 100);
    assert_eq!(withdrawals[0].assets.cash.get("CNY"), Some(&1234));

    // The ledger recorded exactly that.
    let listed = report(dir.path());
    assert!(listed.contains(&expected_order_id("po-one")), "{listed}");
    assert!(listed.contains("CNY 12.34"), "{listed}");
    assert!(listed.contains("withdrawals: 1\n"), "{listed}");
    assert!(listed.contains("total points: 100\n"), "{listed}");
    assert!(listed.contains("total CNY: 12.34\n"), "{listed}");
    assert!(
        !gw.log().contains(APP_SECRET),
        "the app secret leaked into the log"
    );
}

#[test]
fn duplicate_push_zero_balance_and_older_snapshot_make_no_call() {
    let api = LarkApi::start();
    let account = "acc-followups";
    api.set_balance(account, 50, &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = spawn(dir.path(), &config(&api, "5s", false));

    send(&gw, "po-first", account, 50, "[]", T0 + 2_000);
    wait_done(&gw, "po-first");
    assert_eq!(api.withdraw_calls().len(), 1);
    assert_eq!(api.withdrawals().len(), 1);

    // Lark pushes the same event again: acknowledged, stored once, not delivered again.
    send(&gw, "po-first", account, 50, "[]", T0 + 2_000);
    let metrics = get(&gw.admin_url("/metrics")).expect("metrics").body;
    assert_eq!(
        metric(&metrics, r#"gateway_duplicate_events_total{app="hire"}"#),
        1.0
    );
    let d = delivery(&gw, "po-first");
    assert_eq!(
        (d["state"].as_str(), d["attempts"].as_u64()),
        (Some("done"), Some(1))
    );

    // The withdrawal empties the account and Lark reports the zero balance: nothing to withdraw.
    send(
        &gw,
        "po-zero",
        account,
        0,
        r#"[{"currency_type":"CNY","amount":0}]"#,
        T0 + 3_000,
    );
    wait_done(&gw, "po-zero");

    // A snapshot older than the newest one seen arrives late (with a balance the stand-in would
    // pay out if asked): skipped as stale.
    api.set_balance(account, 70, &[]);
    send(&gw, "po-old", account, 70, "[]", T0 + 1_000);
    wait_done(&gw, "po-old");

    // Every delivery above has finished, so any call it made would have been recorded by now.
    assert_eq!(
        api.withdraw_calls().len(),
        1,
        "{:?}",
        withdraw_order_ids(&api)
    );
    assert_eq!(api.withdrawals().len(), 1);
    assert_eq!(api.token_calls(), 1);
    assert_eq!(
        api.balance(account).points,
        70,
        "the stale snapshot withdrew nothing"
    );
    let listed = report(dir.path());
    assert!(listed.contains("withdrawals: 1\n"), "{listed}");
    assert!(listed.contains("total points: 50\n"), "{listed}");
}

#[test]
fn two_http_500s_then_one_withdrawal_with_one_order_id() {
    let api = LarkApi::start();
    api.set_balance("acc-500", 30, &[("CNY", "5.00")]);
    api.faults(|f| f.fail_withdraws = 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = spawn(dir.path(), &config(&api, "5s", false));

    send(
        &gw,
        "po-500",
        "acc-500",
        30,
        r#"[{"currency_type":"CNY","amount":5}]"#,
        T0,
    );
    let d = wait_done(&gw, "po-500");
    assert_eq!(d["attempts"], 3, "{d}");
    assert_eq!(
        withdraw_order_ids(&api),
        vec![expected_order_id("po-500"); 3],
        "every attempt carries the same external_order_id"
    );
    let withdrawals = api.withdrawals();
    assert_eq!(withdrawals.len(), 1);
    assert_eq!(
        withdrawals[0].external_order_id,
        expected_order_id("po-500")
    );
    assert_eq!(withdrawals[0].assets.cash.get("CNY"), Some(&500));
    assert_eq!(api.token_calls(), 1, "the token is cached across attempts");
    let listed = report(dir.path());
    assert!(listed.contains("withdrawals: 1\n"), "{listed}");
    assert!(listed.contains("total CNY: 5.00\n"), "{listed}");
}

/// A Lark code the operator lists in `retry_codes` is retried (same order id) instead of ending
/// the delivery as a dead letter; an unlisted one stays final.
#[test]
fn a_code_listed_in_retry_codes_is_retried_and_an_unlisted_one_is_final() {
    let api = LarkApi::start();
    api.set_balance("acc-rc", 12, &[]);
    api.faults(|f| f.business_error = Some((1069, "stand-in: temporarily unavailable".into())));
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(&api, "5s", false)
        .replace("timeout = \"5s\"", "timeout = \"5s\", retry_codes = [1069]");
    let gw = spawn(dir.path(), &cfg);
    send(&gw, "po-rc", "acc-rc", 12, "[]", T0);
    assert!(
        wait_until(Duration::from_secs(15), || withdraw_order_ids(&api).len()
            >= 2),
        "{}",
        delivery(&gw, "po-rc")
    );
    assert_eq!(
        delivery(&gw, "po-rc")["state"],
        "pending",
        "retried, not dead"
    );
    api.faults(|f| f.business_error = None);
    let d = wait_done(&gw, "po-rc");
    assert!(d["attempts"].as_u64().unwrap_or(0) >= 3, "{d}");
    let ids = withdraw_order_ids(&api);
    assert!(
        ids.iter().all(|id| *id == expected_order_id("po-rc")),
        "{ids:?}"
    );
    assert_eq!(api.withdrawals().len(), 1);

    // Not listed: the first answer ends the delivery.
    api.set_balance("acc-rc2", 7, &[]);
    api.faults(|f| f.business_error = Some((1070, "stand-in: refused".into())));
    send(&gw, "po-rc2", "acc-rc2", 7, "[]", T0);
    assert!(
        wait_until(Duration::from_secs(15), || delivery(&gw, "po-rc2")["state"]
            == "dead"),
        "{}",
        delivery(&gw, "po-rc2")
    );
    assert_eq!(delivery(&gw, "po-rc2")["attempts"], 1);
}

#[test]
fn withdraw_answered_after_the_timeout_is_retried_and_paid_once() {
    let api = LarkApi::start();
    api.set_balance("acc-slow", 40, &[]);
    // The stand-in withdraws at once but answers 2 s later; the plugin gives up after 500 ms.
    api.faults(|f| f.delay_next_withdraw = Some(Duration::from_secs(2)));
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = spawn(dir.path(), &config(&api, "500ms", false));

    send(&gw, "po-slow", "acc-slow", 40, "[]", T0);
    let d = wait_done(&gw, "po-slow");
    assert_eq!(d["attempts"], 2, "{d}");
    assert_eq!(
        withdraw_order_ids(&api),
        vec![expected_order_id("po-slow"); 2]
    );
    let withdrawals = api.withdrawals();
    assert_eq!(
        withdrawals.len(),
        1,
        "Lark's idempotency made the retry harmless"
    );
    assert_eq!(withdrawals[0].assets.points, 40);
    let listed = report(dir.path());
    assert!(listed.contains("withdrawals: 1\n"), "{listed}");
    assert!(listed.contains("total points: 40\n"), "{listed}");
}

#[test]
fn kill_9_while_the_withdraw_is_in_flight_reuses_the_order_id() {
    let api = LarkApi::start();
    api.set_balance("acc-kill", 80, &[("CNY", "1.50")]);
    // Long enough to kill the gateway while the plugin waits for the answer.
    api.faults(|f| f.delay_next_withdraw = Some(Duration::from_secs(5)));
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(&api, "10s", false);
    let mut gw = spawn(dir.path(), &cfg);

    send(
        &gw,
        "po-kill",
        "acc-kill",
        80,
        r#"[{"currency_type":"CNY","amount":1.5}]"#,
        T0,
    );
    // The stand-in has the request (and has performed the withdrawal): the intent is in the
    // ledger, the result is not. Kill the gateway now.
    assert!(
        wait_until(Duration::from_secs(10), || api.withdraw_calls().len() == 1),
        "no withdraw call:\n{}",
        gw.log()
    );
    gw.kill9();
    assert_eq!(delivery(&gw, "po-kill")["state"], "pending");
    let listed = report(dir.path());
    assert!(
        listed.contains("withdrawals: 0\n"),
        "no result may be recorded before the kill:\n{listed}"
    );

    // Restarted on the same dir and config: the pending delivery runs again and resumes the
    // recorded intent with the same external_order_id.
    let gw = spawn(dir.path(), &cfg);
    wait_done(&gw, "po-kill");
    assert_eq!(
        withdraw_order_ids(&api),
        vec![expected_order_id("po-kill"); 2]
    );
    let withdrawals = api.withdrawals();
    assert_eq!(withdrawals.len(), 1, "the stand-in paid once");
    assert_eq!(withdrawals[0].assets.points, 80);
    assert_eq!(withdrawals[0].assets.cash.get("CNY"), Some(&150));
    let listed = report(dir.path());
    assert!(listed.contains(&expected_order_id("po-kill")), "{listed}");
    assert!(listed.contains("withdrawals: 1\n"), "{listed}");
    assert!(listed.contains("total points: 80\n"), "{listed}");
    assert!(listed.contains("total CNY: 1.50\n"), "{listed}");
}

#[test]
fn cash_amounts_stay_exact_through_the_ledger() {
    let api = LarkApi::start();
    let account = "acc-exact";
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = spawn(dir.path(), &config(&api, "5s", true));

    // 0.1 CNY, withdrawn; later 0.2 CNY more, withdrawn. In f64, 0.1 + 0.2 = 0.30000000000000004.
    api.set_balance(account, 0, &[("CNY", "0.1")]);
    send(
        &gw,
        "po-dime",
        account,
        0,
        r#"[{"currency_type":"CNY","amount":0.1}]"#,
        T0 + 1_000,
    );
    wait_done(&gw, "po-dime");
    api.set_balance(account, 0, &[("CNY", "0.2")]);
    send(
        &gw,
        "po-two-dimes",
        account,
        0,
        r#"[{"currency_type":"CNY","amount":0.2}]"#,
        T0 + 2_000,
    );
    wait_done(&gw, "po-two-dimes");

    let withdrawals = api.withdrawals();
    assert_eq!(withdrawals.len(), 2);
    let cash: Vec<Option<&i64>> = withdrawals
        .iter()
        .map(|w| w.assets.cash.get("CNY"))
        .collect();
    assert_eq!(cash, [Some(&10), Some(&20)]);

    let listed = report(dir.path());
    assert!(listed.contains("CNY 0.10"), "{listed}");
    assert!(listed.contains("CNY 0.20"), "{listed}");
    assert!(listed.contains("withdrawals: 2\n"), "{listed}");
    assert!(listed.contains("total CNY: 0.30\n"), "{listed}");
    assert!(!listed.contains("0.3000"), "{listed}");

    // Forwarded to the payment platform as exact decimal strings, once per withdrawal.
    let payments = api.payments();
    assert_eq!(payments.len(), 2);
    let amounts: Vec<serde_json::Value> =
        payments.iter().map(|p| p.json()["cash"].clone()).collect();
    assert_eq!(
        amounts,
        [
            serde_json::json!([{"currency": "CNY", "amount": "0.10"}]),
            serde_json::json!([{"currency": "CNY", "amount": "0.20"}]),
        ]
    );
    let orders: Vec<String> = payments
        .iter()
        .map(|p| p.header("idempotency-key").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        orders,
        [
            expected_order_id("po-dime"),
            expected_order_id("po-two-dimes")
        ]
    );
}

/// A new payout version installed at a new path and taken in by a reload (libraries are never
/// unloaded, so that is how one upgrades without a restart) runs a second copy of the library,
/// and of the SQLite built into it, in the gateway's process, beside the instance it replaces
/// until that one's last call returns. Regression: the replaced instance's SQLite, closing,
/// deleted the WAL the new instance wrote to, so every ledger write after the upgrade was lost
/// at the next `kill -9`. Here the replaced instance is still in a withdraw call when the next
/// event comes: the new instance waits for it, and every write survives.
#[test]
fn a_reload_to_a_new_payout_library_keeps_every_ledger_write() {
    let api = LarkApi::start();
    api.set_balance("acc-up2", 20, &[]);
    api.set_balance("acc-up3", 30, &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = upgraded_during_a_withdraw(&api, dir.path(), "po-up1", None);
    send(&gw, "po-up2", "acc-up2", 20, "[]", T0 + 1);
    wait_done(&gw, "po-up1");
    wait_done(&gw, "po-up2");
    // Once the replaced instance has surely closed its connection (its call returned), one
    // more: what the new instance writes now went to the deleted WAL.
    std::thread::sleep(Duration::from_millis(500));
    send(&gw, "po-up3", "acc-up3", 30, "[]", T0 + 2);
    wait_done(&gw, "po-up3");
    gw.kill9();
    let listed = report(dir.path());
    for id in ["po-up1", "po-up2", "po-up3"] {
        assert!(
            listed.contains(&expected_order_id(id)),
            "{id}'s ledger row was lost across the upgrade:\n{listed}"
        );
    }
    assert!(listed.contains("withdrawals: 3\n"), "{listed}");
}

/// The same upgrade with the instance renamed (`payout` → `payout2`): the replaced instance, a
/// removed name whose call still ran at the reload, was kept (and its ledger open) until the
/// next reload, so the new instance never opened the ledger and its deliveries became dead
/// letters. It goes once its last call returned.
#[test]
fn a_reload_to_a_new_payout_library_under_a_new_name_opens_the_ledger() {
    let api = LarkApi::start();
    api.set_balance("acc-rn2", 20, &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = upgraded_during_a_withdraw(&api, dir.path(), "po-rn1", Some("payout2"));
    send(&gw, "po-rn2", "acc-rn2", 20, "[]", T0 + 1);
    let state = |id: &str| {
        let (code, out, err) = gw.cli(&["events", "show", id]);
        assert_eq!(code, 0, "{err}");
        let event: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        event["deliveries"][0]["state"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    assert!(
        wait_until(Duration::from_secs(20), || state("po-rn1") == "done"
            && state("po-rn2") == "done"),
        "po-rn1 {}, po-rn2 {}\n{}",
        state("po-rn1"),
        state("po-rn2"),
        gw.log()
    );
    gw.kill9();
    let listed = report(dir.path());
    assert!(listed.contains("withdrawals: 2\n"), "{listed}");
}

/// A gateway with `payout` on `api`, upgraded by a reload to a copy of the library at a new
/// path (and, given one, under a new instance name) while `first`'s withdraw call, held 2 s by
/// the stand-in, runs on the instance the reload replaces.
fn upgraded_during_a_withdraw(
    api: &LarkApi,
    dir: &std::path::Path,
    first: &str,
    rename: Option<&str>,
) -> TestGateway {
    api.set_balance("acc-first", 10, &[]);
    api.faults(|f| f.delay_next_withdraw = Some(Duration::from_secs(2)));
    let cfg = config(api, "10s", false);
    let gw = spawn(dir, &cfg);
    send(&gw, first, "acc-first", 10, "[]", T0);
    assert!(
        wait_until(Duration::from_secs(10), || api.withdraw_calls().len() == 1),
        "no withdraw call:\n{}",
        gw.log()
    );
    let copy = dir.join("libpayout-2.so");
    std::fs::copy(binaries().payout.as_path(), &copy).expect("install the new version");
    let mut upgraded = cfg.replace(
        &binaries().payout.display().to_string(),
        &copy.display().to_string(),
    );
    if let Some(name) = rename {
        upgraded = upgraded.replace(&format!("\"{PLUGIN}\""), &format!("\"{name}\""));
        assert_eq!(upgraded.matches(name).count(), 2, "{upgraded}");
    }
    assert_ne!(upgraded, cfg);
    std::fs::write(dir.join("gateway.toml"), upgraded).expect("write");
    gw.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(15), || gw
            .log()
            .contains("config reloaded")),
        "{}",
        gw.log()
    );
    gw
}

/// Two `[[plugins]]` entries of payout on one ledger (say points to one payment platform, cash
/// to another): the second found every snapshot already taken by the first and skipped it as
/// stale, its withdrawals never made, while `check` said the config was valid. Refused now, by
/// `check` and at start, naming the entry that has the ledger; each with its own ledger is fine.
#[test]
fn two_payout_entries_sharing_one_ledger_are_refused() {
    let api = LarkApi::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let one = config(&api, "10s", false);
    let entry_at = one.find("[[plugins]]").expect("a plugins entry");
    let entry_end = one.find("[[routes]]").expect("a route");
    let second = one[entry_at..entry_end]
        .replace(&format!("name = \"{PLUGIN}\""), "name = \"payout-cash\"")
        .replace("app_secret =", "withdraw = [\"cash\"], app_secret =");
    let shared = format!("{}{second}{}", &one[..entry_end], &one[entry_end..]);
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, &shared).expect("write");
    let (code, out, err) = run_cli_with_env(&path, &["check"], &[(SECRET_VAR, APP_SECRET)]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("already used by the [[plugins]] entry `payout`"),
        "{out}{err}"
    );
    // The second entry's ledger (the last one named) of its own.
    let at = shared.rfind("data/payout.db").expect("the second ledger");
    let own = format!(
        "{}data/cash.db{}",
        &shared[..at],
        &shared[at + "data/payout.db".len()..]
    );
    std::fs::write(&path, &own).expect("write");
    let (code, out, err) = run_cli_with_env(&path, &["check"], &[(SECRET_VAR, APP_SECRET)]);
    assert_eq!(code, 0, "{out}{err}");
}
