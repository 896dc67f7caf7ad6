//! Panics inside a batch: only the poison delivery ends, each batch-mate is handed over
//! again on its own on a fresh instance (never the one that just panicked), and each history
//! shows the run whose outcome the panic discarded — in process, isolated and on PostgreSQL.

use super::*;

/// The delivery's history: (attempt, outcome, reason) oldest first.
fn history(gw: &TestGateway, id: &str) -> Vec<(u64, String, String)> {
    let (code, out, err) = gw.cli(&["events", "show", id]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    v["deliveries"][0]["history"]
        .as_array()
        .expect("a history")
        .iter()
        .map(|a| {
            (
                a["attempt"].as_u64().unwrap_or_default(),
                a["outcome"].as_str().unwrap_or_default().to_owned(),
                a["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The config of [`poison_batch`].
fn poison_config() -> String {
    kit_config(
        "max_batch = 16",
        r#""test.poison" = "panic_handle""#,
        1,
        800,
    )
}

/// `kit` panicking on `test.poison`, and `<prefix>-ok1`, `<prefix>-poison`, `<prefix>-ok2`
/// queued behind a gate (one batch).
fn poison_batch(dir: &std::path::Path, prefix: &str) -> TestGateway {
    queue_poison_batch(TestGateway::spawn(dir, &poison_config()), prefix)
}

fn queue_poison_batch(gw: TestGateway, prefix: &str) -> TestGateway {
    let ids = ["ok1", "poison", "ok2"].map(|s| format!("{prefix}-{s}"));
    let types = ["test.ok", "test.poison", "test.ok"];
    let events: Vec<(&str, &str)> = ids.iter().map(String::as_str).zip(types).collect();
    queue_behind_a_gate(&gw, &events);
    gw
}

#[test]
fn a_panic_inside_a_batch_ends_only_the_poison_delivery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = poison_batch(dir.path(), "p");
    assert!(
        wait_until(WAIT, || {
            ["p-ok1", "p-ok2"]
                .iter()
                .all(|id| state(&gw, id).0 == "done")
                && state(&gw, "p-poison").0 == "dead"
        }),
        "{:?}",
        calls(&gw)
    );
    let (_, reason) = state(&gw, "p-poison");
    assert!(
        reason.contains("panicked: testkit: panic in handle for p-poison"),
        "{reason}"
    );
    // Handled in the batch until the panic, then each on its own after the restart.
    for id in ["p-ok1", "p-ok2"] {
        let n = calls_of(&gw, id).len();
        assert!((1..=2).contains(&n), "{id}: {n} calls");
    }
    assert!(
        gw.log().contains("plugin panicked in a batch"),
        "{}",
        gw.log()
    );
    // Where it panicked is one line of the plugin's log, not std's raw "thread ... panicked
    // at" text between the gateway's lines.
    assert!(!gw.log().contains("thread '"), "{}", gw.log());
    assert!(
        gw.log()
            .contains("panicked at tests/fixture-plugins/testkit/src/lib.rs:"),
        "{}",
        gw.log()
    );
    each_history_shows_the_discarded_run(&gw, "p");
}

/// After [`queue_poison_batch`] with `prefix`: each history shows the run whose outcome the
/// batch's panic discarded, then the delivery's own run (until then the plugin's double call
/// was in no history).
fn each_history_shows_the_discarded_run(gw: &TestGateway, prefix: &str) {
    let ids = ["ok1", "poison", "ok2"].map(|s| format!("{prefix}-{s}"));
    assert!(
        wait_until(WAIT, || ids
            .iter()
            .all(|id| ["done", "dead"].contains(&state(gw, id).0.as_str()))),
        "{:?}",
        calls(gw)
    );
    let panic =
        format!("its batch panicked as a whole (testkit: panic in handle for {prefix}-poison)");
    for (id, last) in ids.iter().zip(["ok", "panicked", "ok"]) {
        let h = history(gw, id);
        assert_eq!(h.len(), 2, "{id}: {h:?}");
        assert_eq!((h[0].0, h[0].1.as_str()), (1, "discarded"), "{id}: {h:?}");
        assert!(
            h[0].2.starts_with(&panic) && h[0].2.contains("handed over again on its own"),
            "{id}: {h:?}"
        );
        assert_eq!((h[1].0, h[1].1.as_str()), (1, last), "{id}: {h:?}");
    }
}

#[test]
fn an_isolated_batch_that_panicked_shows_its_discarded_run_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = poison_config().replacen(
        "max_concurrency = 1",
        "max_concurrency = 1\nisolation = \"process\"",
        1,
    );
    let gw = queue_poison_batch(TestGateway::spawn(dir.path(), &cfg), "i");
    each_history_shows_the_discarded_run(&gw, "i");
}

#[test]
fn on_postgresql_a_panicked_batchs_discarded_run_is_in_the_history_too() {
    let pg = gateway_e2e::pgkit::PgCluster::start();
    let url = pg.create_database("discarded");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = poison_config().replacen(
        "[store]\npath = \"data/gateway.db\"",
        "[store]\nurl = \"${PG_URL}\"",
        1,
    );
    assert!(cfg.contains("PG_URL"), "{cfg}");
    let gw = TestGateway::spawn_with_env(dir.path(), &cfg, &[("PG_URL", &url)]);
    let gw = queue_poison_batch(gw, "g");
    each_history_shows_the_discarded_run(&gw, "g");
}

/// Regression: in process, after a batch panicked, its deliveries are handed one by one to a
/// fresh instance; when one of them panicked again, the deliveries after it were handed to
/// that same instance, which had just panicked (an isolated instance starts a new process for
/// each). testkit numbers its instances (`instance_no`): the batch-mate's last call must be on
/// another instance than the poison delivery's last panic.
#[test]
fn after_a_panic_in_a_batch_no_batch_mate_runs_on_the_instance_that_panicked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = poison_batch(dir.path(), "q");
    assert!(
        wait_until(WAIT, || state(&gw, "q-ok2").0 == "done"
            && state(&gw, "q-poison").0 == "dead"),
        "{:?}",
        calls(&gw)
    );
    let lines = gateway_e2e::harness::read_jsonl(&dir.path().join("data/kit.jsonl"));
    let last = |id: &str| {
        lines
            .iter()
            .rposition(|l| l["event_id"] == id)
            .unwrap_or_else(|| panic!("{id} never called: {lines:?}"))
    };
    let (panic, mate) = (last("q-poison"), last("q-ok2"));
    assert_eq!(lines[panic]["outcome"], "panic", "{lines:?}");
    assert!(panic < mate, "{lines:?}");
    assert_ne!(
        lines[panic]["instance_no"], lines[mate]["instance_no"],
        "q-ok2 ran on the instance q-poison had just panicked in: {lines:?}"
    );
}

/// A batch entry that panics whatever it is given (`panic_batch`), isolated: after the batch
/// panicked, each delivery is handed to `handle` on its own, as in process and as the ABI
/// docs say. The child sent each one to the batch entry again, so every delivery panicked and
/// was dead-lettered (a plugin author's walkthrough found it).
#[test]
fn an_isolated_batch_entry_broken_as_a_whole_leaves_each_delivery_to_handle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = kit_config("max_batch = 16", r#""test.ok" = "ok""#, 1, 800)
        .replacen("sleep_ms = 800", "sleep_ms = 800, panic_batch = true", 1)
        .replacen(
            "max_concurrency = 1",
            "max_concurrency = 1\nisolation = \"process\"",
            1,
        );
    assert!(cfg.contains("panic_batch = true") && cfg.contains("isolation = \"process\""));
    let gw = TestGateway::spawn(dir.path(), &cfg);
    let events = [("w-1", "test.ok"), ("w-2", "test.ok"), ("w-3", "test.ok")];
    queue_behind_a_gate(&gw, &events);
    assert!(
        wait_until(WAIT, || events
            .iter()
            .all(|(id, _)| state(&gw, id).0 == "done")),
        "{:?}\n{}",
        events.map(|(id, _)| state(&gw, id)),
        gw.log()
    );
    for (id, _) in events {
        let h = history(&gw, id);
        assert_eq!(h.len(), 2, "{id}: {h:?}");
        assert_eq!(h[0].1, "discarded", "{id}: {h:?}");
        assert_eq!(h[1].1, "ok", "{id}: {h:?}");
    }
}

/// An isolated batch that panicked as a whole is handed over one delivery at a time; when the
/// first of those runs past its timeout, the kill ends the call and the others are not run
/// again: their history's `discarded` entry says so (it said "handed over again on its own").
#[test]
fn isolated_batch_mates_a_kill_stopped_are_not_said_to_be_handed_over_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = kit_config(
        "max_batch = 16\ntimeout = \"1s\"\nmax_attempts = 2",
        r#""test.slow" = "slow""#,
        1,
        4000,
    )
    .replacen(
        "max_concurrency = 1",
        "max_concurrency = 1\nisolation = \"process\"",
        1,
    )
    .replacen(
        "config = { record",
        "config = { panic_batch = true, record",
        1,
    );
    assert!(
        cfg.contains("panic_batch = true") && cfg.contains("isolation"),
        "{cfg}"
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    queue_behind_a_gate(
        &gw,
        &[
            ("k-slow", "test.slow"),
            ("k-ok1", "test.ok"),
            ("k-ok2", "test.ok"),
        ],
    );
    assert!(
        wait_until(Duration::from_secs(30), || state(&gw, "k-ok1").0 == "done"
            && state(&gw, "k-ok2").0 == "done"
            && state(&gw, "k-slow").0 == "dead"),
        "{:?}",
        calls(&gw)
    );
    // The slow one's entry comes with the late answer of its call, after the timeout's.
    let slow = history(&gw, "k-slow");
    assert!(
        slow.iter()
            .any(|h| h.1 == "discarded" && h.2.ends_with("; handed over again on its own")),
        "{slow:?}"
    );
    // The others were in the call the timeout ended (their outcome: its timeout), never
    // handed over again in it; each succeeds at its retry.
    for id in ["k-ok1", "k-ok2"] {
        let h = history(&gw, id);
        let discarded: Vec<_> = h.iter().filter(|h| h.1 == "discarded").collect();
        assert_eq!(discarded.len(), 1, "{id}: {h:?}");
        assert!(
            discarded[0].2.starts_with(
                "its batch panicked as a whole (testkit: the whole batch of 3 panics)"
            ) && discarded[0]
                .2
                .ends_with("; not handed over again (the call ended first)"),
            "{id}: {h:?}"
        );
        assert_eq!(
            h.last().map(|h| (h.0, h.1.as_str())),
            Some((2, "ok")),
            "{id}: {h:?}"
        );
        assert!(h.iter().any(|h| h.1 == "timeout"), "{id}: {h:?}");
    }
}

/// An isolated batch that panicked as a whole, whose deliveries then find no plugin process
/// (its start refused): none was handed over again, and the history says so for each (the
/// first was said to be).
#[test]
fn batch_mates_no_process_took_are_not_said_to_be_handed_over_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = kit_config("max_batch = 16", r#""test.ok" = "ok""#, 1, 800)
        .replacen(
            "sleep_ms = 800",
            "sleep_ms = 800, panic_batch = true, refuse_new_while = \"data/refuse\"",
            1,
        )
        .replacen(
            "max_concurrency = 1",
            "max_concurrency = 1\nisolation = \"process\"",
            1,
        );
    assert!(
        cfg.contains("refuse_new_while") && cfg.contains("isolation"),
        "{cfg}"
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    start_the_gate(&gw);
    send(&gw, "u-1", "test.ok");
    send(&gw, "u-2", "test.ok");
    std::fs::write(gw.dir.join("data/refuse"), "").expect("refuse");
    open_gate(&gw);
    let has_discarded = |id: &str| {
        let (_, out, _) = gw.cli(&["events", "show", id]);
        serde_json::from_str::<serde_json::Value>(&out)
            .ok()
            .and_then(|v| v["deliveries"][0]["history"].as_array().cloned())
            .is_some_and(|h| h.iter().any(|a| a["outcome"] == "discarded"))
    };
    assert!(
        wait_until(WAIT, || has_discarded("u-1") && has_discarded("u-2")),
        "{}",
        gw.log()
    );
    for id in ["u-1", "u-2"] {
        let h = history(&gw, id);
        let discarded: Vec<_> = h.iter().filter(|h| h.1 == "discarded").collect();
        assert!(
            discarded[0]
                .2
                .ends_with("; not handed over again (the call ended first)"),
            "{id}: {h:?}"
        );
    }
}
