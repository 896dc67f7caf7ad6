//! An in-process instance that panicked is never handed another delivery: not while its
//! restart's `init` runs, and not when that `init` fails, neither the next deliveries nor the
//! rest of the batch it panicked in; they are retries ("plugin instance unavailable") until a
//! restart succeeds, and then they are delivered by the fresh instance. A call that returns
//! after its timeout restarts its instance only if it panicked.

use std::time::Duration;

use gateway_e2e::harness::{kit_config, wait_until, TestGateway};

const TOKEN: &str = "tok";
const WAIT: Duration = Duration::from_secs(15);

/// `kit` (one call at a time, up to 8 deliveries a call) panicking on `test.poison`, waiting
/// for `data/gate-open` on `test.gate`, and refusing to start while `data/refuse` exists.
fn start(dir: &std::path::Path) -> TestGateway {
    start_kit(
        dir,
        r#"gate = "data/gate-open", refuse_new_while = "data/refuse", modes = { "test.gate" = "gate", "test.poison" = "panic_handle" }"#,
        1,
    )
}

/// `kit` with these testkit settings (beside its record file) and `max_concurrency`, up to 8
/// deliveries a call, retried every 50–100 ms for as long as a test lasts, for `test.*`.
fn start_kit(dir: &std::path::Path, kit: &str, max_concurrency: u32) -> TestGateway {
    start_kit_with(dir, kit, max_concurrency, "")
}

/// [`start_kit`] with more `[delivery]` lines.
fn start_kit_with(
    dir: &std::path::Path,
    kit: &str,
    max_concurrency: u32,
    delivery: &str,
) -> TestGateway {
    let plugin =
        format!("{{ record = \"data/kit.jsonl\", {kit} }}\nmax_concurrency = {max_concurrency}");
    let cfg = format!(
        "{}\n[delivery]\ninitial_backoff = \"50ms\"\nmax_backoff = \"100ms\"\nmax_attempts = 10000\nmax_batch = 8\n{delivery}\n",
        kit_config(TOKEN, &plugin)
    );
    TestGateway::spawn(dir, &cfg)
}

fn send(gw: &TestGateway, id: &str, event_type: &str) {
    gw.send_plain(TOKEN, id, event_type);
}

/// The calls `kit` recorded for `id`.
fn calls_of(gw: &TestGateway, id: &str) -> Vec<serde_json::Value> {
    gw.calls("kit")
        .into_iter()
        .filter(|c| c["event_id"] == id)
        .collect()
}

fn state(gw: &TestGateway, id: &str) -> String {
    gw.delivery(id, "kit")["state"]
        .as_str()
        .unwrap_or("none")
        .to_owned()
}

/// Waits until `id`'s delivery has been retried at least once with the failed restart as its
/// reason, then checks that no call of it reached an instance.
fn retried_unavailable(gw: &TestGateway, id: &str) {
    assert!(
        wait_until(WAIT, || {
            let d = gw.delivery(id, "kit");
            d["attempts"].as_u64().unwrap_or(0) >= 2
                && d["last_error"].as_str().is_some_and(|e| {
                    e.contains("restart after a panic failed") && e.contains("refusing to start")
                })
        }),
        "{}\n{}",
        gw.delivery(id, "kit"),
        gw.log()
    );
    assert!(
        calls_of(gw, id).is_empty(),
        "{id} was handed to the instance that panicked: {:?}",
        gw.calls("kit")
    );
}

/// Regression: after a panic, a restart that failed left the instance that panicked in place,
/// and every later delivery went to it.
#[test]
fn after_a_panic_and_a_failed_restart_no_delivery_goes_to_the_panicked_instance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start(dir.path());
    std::fs::write(dir.path().join("data/refuse"), "").expect("refuse restarts");
    send(&gw, "p-1", "test.poison");
    assert!(
        wait_until(WAIT, || gw
            .log()
            .contains("plugin instance could not be restarted")),
        "{}",
        gw.log()
    );
    assert_eq!(state(&gw, "p-1"), "dead");
    send(&gw, "a-1", "test.ok");
    retried_unavailable(&gw, "a-1");
    std::fs::remove_file(dir.path().join("data/refuse")).expect("allow restarts");
    assert!(
        wait_until(WAIT, || state(&gw, "a-1") == "done"),
        "{}\n{}",
        gw.delivery("a-1", "kit"),
        gw.log()
    );
    assert_eq!(calls_of(&gw, "a-1").len(), 1, "{:?}", gw.calls("kit"));
}

/// Regression: when a batch panicked and its instance could not be restarted, its deliveries
/// were handed one by one to the instance that had just panicked (and each further panic tried
/// a restart at once). Now the whole batch is retried, none of it called, until a restart
/// succeeds.
#[test]
fn a_batch_that_panicked_is_not_handed_to_its_instance_when_the_restart_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start(dir.path());
    send(&gw, "gate", "test.gate");
    gw.wait_running("gate", "kit");
    for (id, event_type) in [
        ("b-ok1", "test.ok"),
        ("b-poison", "test.poison"),
        ("b-ok2", "test.ok"),
    ] {
        send(&gw, id, event_type);
    }
    std::fs::write(dir.path().join("data/refuse"), "").expect("refuse restarts");
    std::fs::write(dir.path().join("data/gate-open"), "").expect("open the gate");
    // The batch ran once: b-ok1 handled, then b-poison panicked (b-ok2 never reached).
    assert!(
        wait_until(WAIT, || calls_of(&gw, "b-poison").len() == 1),
        "{:?}\n{}",
        gw.calls("kit"),
        gw.log()
    );
    let batch = calls_of(&gw, "b-poison");
    assert_eq!(batch[0]["batch"], 3, "{:?}", gw.calls("kit"));
    for id in ["b-ok1", "b-ok2"] {
        let d = || gw.delivery(id, "kit");
        assert!(
            wait_until(WAIT, || d()["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("restart after a panic failed"))),
            "{}\n{:?}\n{}",
            d(),
            gw.calls("kit"),
            gw.log()
        );
    }
    // b-ok1's one call was the batch's; b-ok2 had none.
    assert_eq!(calls_of(&gw, "b-ok1").len(), 1, "{:?}", gw.calls("kit"));
    assert!(calls_of(&gw, "b-ok2").is_empty(), "{:?}", gw.calls("kit"));
    std::fs::remove_file(dir.path().join("data/refuse")).expect("allow restarts");
    assert!(
        wait_until(WAIT, || state(&gw, "b-ok1") == "done"
            && state(&gw, "b-ok2") == "done"
            && state(&gw, "b-poison") == "dead"),
        "{:?}\n{}",
        gw.calls("kit"),
        gw.log()
    );
}

/// Regression: between a panic and the end of the instance's restart (its `init` may take a
/// while), new calls were handed to the instance that had panicked. Now it is retired as the
/// panicking call returns: a call in that window waits for the fresh instance (as a retry).
/// testkit numbers its instances (`instance_no`): the next delivery's call must be on another.
#[test]
fn a_call_during_a_slow_restart_does_not_go_to_the_instance_that_panicked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start_kit(
        dir.path(),
        r#"restart_sleep_ms = 1500, modes = { "test.poison" = "panic_handle" }"#,
        2,
    );
    send(&gw, "s-poison", "test.poison");
    assert!(
        wait_until(WAIT, || state(&gw, "s-poison") == "dead"),
        "{}",
        gw.log()
    );
    // The restart's `init` now takes 1.5 s.
    send(&gw, "s-1", "test.ok");
    assert!(
        wait_until(WAIT, || state(&gw, "s-1") == "done"),
        "{}\n{}",
        gw.delivery("s-1", "kit"),
        gw.log()
    );
    let lines = gateway_e2e::harness::read_jsonl(&dir.path().join("data/kit.jsonl"));
    let of = |id: &str| {
        lines
            .iter()
            .find(|l| l["event_id"] == id)
            .unwrap_or_else(|| panic!("{id} never called: {lines:?}"))["instance_no"]
            .clone()
    };
    assert_ne!(
        of("s-poison"),
        of("s-1"),
        "s-1 ran on the instance that had panicked: {lines:?}"
    );
}

/// A call that panics on an instance a reload has replaced meanwhile does not restart that
/// instance: no call would go to it (the reload's instance takes them), and a fresh `init`
/// of the old config would run for nothing (a payout ledger opened beside the new one's).
/// testkit numbers its instances: 0 the first, 1 the reload's; a restart of the replaced one
/// would be 2, whose `shutdown` is recorded when its runner is let go.
#[test]
fn a_panic_on_an_instance_a_reload_replaced_does_not_restart_it() {
    panic_on_a_replaced_instance(false);
}

/// The same for a call that panics after its timeout (a late panic).
#[test]
fn a_late_panic_on_an_instance_a_reload_replaced_does_not_restart_it() {
    panic_on_a_replaced_instance(true);
}

fn panic_on_a_replaced_instance(late: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let kit = |tag: &str| {
        format!(
            r#"gate = "data/gate-open", gate_then = "panic", tag = "{tag}", modes = {{ "test.gate" = "gate" }}"#
        )
    };
    let timeout = if late { "timeout = \"300ms\"" } else { "" };
    let gw = start_kit_with(dir.path(), &kit("v1"), 1, timeout);
    send(&gw, "r-gate", "test.gate");
    gw.wait_running("r-gate", "kit");
    if late {
        assert!(
            wait_until(WAIT, || gw.delivery("r-gate", "kit")["attempts"] == 1),
            "the call did not time out: {}",
            gw.delivery("r-gate", "kit")
        );
    }
    let reloaded = std::fs::read_to_string(dir.path().join("gateway.toml"))
        .expect("read the config")
        .replace(r#"tag = "v1""#, r#"tag = "v2""#);
    std::fs::write(dir.path().join("gateway.toml"), reloaded).expect("write");
    gw.signal("HUP");
    assert!(
        wait_until(WAIT, || gw.log().contains("config reloaded")),
        "{}",
        gw.log()
    );
    std::fs::write(dir.path().join("data/gate-open"), "").expect("open the gate");
    assert!(
        wait_until(WAIT, || state(&gw, "r-gate") == "dead"),
        "{}\n{}",
        gw.delivery("r-gate", "kit"),
        gw.log()
    );
    send(&gw, "r-after", "test.ok");
    assert!(
        wait_until(WAIT, || state(&gw, "r-after") == "done"),
        "{}\n{}",
        gw.delivery("r-after", "kit"),
        gw.log()
    );
    let records = || gateway_e2e::harness::read_jsonl(&dir.path().join("data/kit.jsonl"));
    // The replaced instance (0) is let go once the call that panicked on it returned.
    assert!(
        wait_until(WAIT, || records()
            .iter()
            .any(|r| r["outcome"] == "shutdown" && r["instance_no"] == 0)),
        "{:?}\n{}",
        records(),
        gw.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    let lines = records();
    let after = lines
        .iter()
        .find(|r| r["event_id"] == "r-after")
        .expect("r-after recorded");
    assert_eq!(
        (after["instance_no"].clone(), after["tag"].clone()),
        (serde_json::json!(1), serde_json::json!("v2")),
        "{lines:?}"
    );
    assert!(
        lines.iter().all(|r| r["instance_no"].as_u64() < Some(2)),
        "the replaced instance was restarted after its panic: {lines:?}"
    );
}

/// Two calls that panic on one instance start two restarts: the second does not wait for the
/// first's `init` holding its permit, so a delivery arriving meanwhile gets a call (a retry:
/// "being restarted") instead of waiting for a permit the whole `init` long, and is delivered
/// by the fresh instance once it is in.
#[test]
fn a_second_restart_does_not_hold_its_permit_while_the_first_one_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start_kit(
        dir.path(),
        r#"gate = "data/gate-open", gate_then = "panic", restart_sleep_ms = 6000, modes = { "test.gate" = "gate" }"#,
        2,
    );
    for id in ["t-1", "t-2"] {
        send(&gw, id, "test.gate");
        gw.wait_running(id, "kit");
    }
    std::fs::write(dir.path().join("data/gate-open"), "").expect("open the gate");
    assert!(
        wait_until(WAIT, || state(&gw, "t-1") == "dead"
            && state(&gw, "t-2") == "dead"),
        "{}",
        gw.log()
    );
    // The first restart's `init` takes 6 s from here (room for the polls above on a starved
    // machine: t-ok must arrive while it runs).
    send(&gw, "t-ok", "test.ok");
    assert!(
        wait_until(WAIT, || state(&gw, "t-ok") == "done"),
        "{}\n{}",
        gw.delivery("t-ok", "kit"),
        gw.log()
    );
    let d = gw.delivery("t-ok", "kit");
    assert!(
        d["history"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("it is being restarted")),
        "t-ok waited for a permit until the restart ended: {d}\n{}",
        gw.log()
    );
    assert_eq!(calls_of(&gw, "t-ok").len(), 1, "{:?}", gw.calls("kit"));
}

/// A call past its timeout that then returns `Ok` leaves its instance in place (the next
/// delivery goes to the same one); one that then panics has it replaced at once, as an
/// in-time panic does, not only when the next call finds it gone: the instance that panicked
/// is let go (its `shutdown` recorded) before any other delivery comes. testkit numbers its
/// instances: 0 the first, 1 a restart's.
#[test]
fn a_late_outcome_restarts_the_instance_only_when_it_is_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kit = r#"{ record = "data/kit.jsonl", sleep_ms = 1000, gate = "data/gate-open", gate_then = "panic", modes = { "test.slow" = "slow", "test.gate" = "gate" } }"#;
    let cfg = format!(
        "{}\n[delivery]\ntimeout = \"300ms\"\ninitial_backoff = \"30s\"\nmax_backoff = \"30s\"\n",
        kit_config(TOKEN, kit)
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    let instance_of = |id: &str| {
        assert!(
            wait_until(WAIT, || state(&gw, id) != "pending"
                && !calls_of(&gw, id).is_empty()),
            "{}\n{}",
            gw.delivery(id, "kit"),
            gw.log()
        );
        calls_of(&gw, id)[0]["instance_no"].clone()
    };
    send(&gw, "late-ok", "test.slow");
    assert_eq!(instance_of("late-ok"), 0);
    assert_eq!(state(&gw, "late-ok"), "done");
    send(&gw, "next-1", "test.ok");
    assert_eq!(
        instance_of("next-1"),
        0,
        "a late success restarted the instance: {:?}",
        gw.calls("kit")
    );
    send(&gw, "late-panic", "test.gate");
    gw.wait_running("late-panic", "kit");
    assert!(
        wait_until(WAIT, || gw.delivery("late-panic", "kit")["attempts"] == 1),
        "the call did not time out: {}",
        gw.delivery("late-panic", "kit")
    );
    std::fs::write(dir.path().join("data/gate-open"), "").expect("open the gate");
    assert_eq!(instance_of("late-panic"), 0);
    assert_eq!(
        state(&gw, "late-panic"),
        "dead",
        "{}",
        gw.delivery("late-panic", "kit")
    );
    let records = || gateway_e2e::harness::read_jsonl(&dir.path().join("data/kit.jsonl"));
    assert!(
        wait_until(WAIT, || records()
            .iter()
            .any(|r| r["outcome"] == "shutdown" && r["instance_no"] == 0)),
        "the instance that panicked late was not restarted: {:?}\n{}",
        records(),
        gw.log()
    );
    send(&gw, "next-2", "test.ok");
    assert_eq!(
        instance_of("next-2"),
        1,
        "a late panic left the instance in place: {:?}",
        gw.calls("kit")
    );
}

/// Two calls on one instance (`max_concurrency = 2`) that both panic, the second after the
/// first's restart installed a fresh instance: the panicked instance is let go (its `shutdown`
/// recorded) once the second call returned. It used to wait in the retired list for the next
/// panic's restart, a reload or the stop, its threads, files and buffers kept meanwhile.
#[test]
fn an_instance_whose_second_call_panics_after_its_restart_is_let_go() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start_kit(
        dir.path(),
        r#"gate = "data/gate-open", gate_then = "panic", modes = { "test.gate" = "gate", "test.poison" = "panic_handle" }"#,
        2,
    );
    send(&gw, "second", "test.gate");
    gw.wait_running("second", "kit");
    send(&gw, "first", "test.poison");
    assert!(
        wait_until(WAIT, || state(&gw, "first") == "dead"),
        "{}",
        gw.log()
    );
    let records = || gateway_e2e::harness::read_jsonl(&dir.path().join("data/kit.jsonl"));
    // The first panic's restart: a fresh instance serves the next call.
    send(&gw, "between", "test.ok");
    assert!(
        wait_until(WAIT, || records().iter().any(|r| r["event_id"]
            == "between"
            && r["instance_no"].as_u64() >= Some(1))),
        "{:?}\n{}",
        records(),
        gw.log()
    );
    std::fs::write(dir.path().join("data/gate-open"), "").expect("open the gate");
    assert!(
        wait_until(WAIT, || state(&gw, "second") == "dead"),
        "{}\n{}",
        gw.delivery("second", "kit"),
        gw.log()
    );
    assert!(
        wait_until(Duration::from_secs(5), || records()
            .iter()
            .any(|r| r["outcome"] == "shutdown" && r["instance_no"] == 0)),
        "instance 0 was not let go after its last call panicked: {:?}\n{}",
        records(),
        gw.log()
    );
}
