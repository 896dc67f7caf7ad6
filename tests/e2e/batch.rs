//! Batch delivery through the ABI (1.1) end to end: one plugin call takes every ready delivery
//! (up to `max_batch`), each delivery still gets its own outcome, retries and dead letters, a
//! panic inside a batch ends only the poison delivery, a batch that outlives its timeout is
//! waited for and its late outcomes count, and a replay of a delivery whose batch is running
//! waits for the batch, then reruns that delivery alone. Panics inside a batch: `batch/panics.rs`;
//! the bounds of a batch (`max_batch`, a retry never added): `batch/bounds.rs`.

use std::time::Duration;

use gateway_e2e::harness::{base_config, binaries, wait_until, TestGateway};

const TOKEN: &str = "tok";
const WAIT: Duration = Duration::from_secs(15);

#[path = "batch/panics.rs"]
mod panics;

#[path = "batch/bounds.rs"]
mod bounds;

/// One testkit instance `kit` (one call at a time, 16 deliveries per call at most) with
/// per-type `modes`, for every `test.*`; `test.gate` waits until [`open_gate`].
fn start(dir: &std::path::Path, delivery: &str, modes: &str) -> TestGateway {
    start_kit(dir, &format!("max_batch = 16\n{delivery}"), modes, 1, 800)
}

/// [`start`] with `max_concurrency` and the `slow` mode's sleep given (`delivery` must set
/// `max_batch`).
fn start_kit(
    dir: &std::path::Path,
    delivery: &str,
    modes: &str,
    max_concurrency: u32,
    sleep_ms: u64,
) -> TestGateway {
    TestGateway::spawn(dir, &kit_config(delivery, modes, max_concurrency, sleep_ms))
}

/// The config [`start_kit`] starts.
fn kit_config(delivery: &str, modes: &str, max_concurrency: u32, sleep_ms: u64) -> String {
    format!(
        r#"{base}
[[apps]]
name = "hire"
path = "/hook"
verification_token = "{TOKEN}"

[delivery]
initial_backoff = "50ms"
max_backoff = "100ms"
{delivery}

[[plugins]]
name = "kit"
library = "{testkit}"
config = {{ record = "data/kit.jsonl", sleep_ms = {sleep_ms}, gate = "data/gate-open", modes = {{ "test.gate" = "gate", {modes} }} }}
max_concurrency = {max_concurrency}

[[routes]]
events = ["test.*"]
plugins = ["kit"]
"#,
        base = base_config(),
        testkit = binaries().testkit.display(),
    )
}

fn send(gw: &TestGateway, id: &str, event_type: &str) {
    gw.send_plain(TOKEN, id, event_type);
}

fn calls(gw: &TestGateway) -> Vec<serde_json::Value> {
    gw.calls("kit")
}

fn calls_of(gw: &TestGateway, id: &str) -> Vec<serde_json::Value> {
    calls(gw)
        .into_iter()
        .filter(|c| c["event_id"] == id)
        .collect()
}

fn state(gw: &TestGateway, id: &str) -> (String, String) {
    let (code, out, err) = gw.cli(&["events", "show", id]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let d = &v["deliveries"][0];
    (
        d["state"].as_str().unwrap_or_default().to_owned(),
        d["last_error"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Lets the `gate` call return (testkit's gate file).
fn open_gate(gw: &TestGateway) {
    std::fs::write(gw.dir.join("data/gate-open"), "").expect("open the gate");
}

/// Sends a `gate` event and waits until its call holds a permit (a fixed sleep is no guarantee
/// on a loaded machine: the gate would then go in the batch).
fn start_the_gate(gw: &TestGateway) {
    send(gw, "gate", "test.gate");
    gw.wait_running("gate", "kit");
}

/// Sends a `gate` event, then `events` while it holds the only permit, then opens the gate:
/// they queued up and go to the plugin as one batch (the gate does not return before all of
/// them are stored, however slow the sending).
fn queue_behind_a_gate(gw: &TestGateway, events: &[(&str, &str)]) {
    start_the_gate(gw);
    for (id, event_type) in events {
        send(gw, id, event_type);
    }
    open_gate(gw);
}

#[test]
fn each_delivery_of_a_batch_gets_its_own_outcome_and_only_the_failed_one_is_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start(
        dir.path(),
        "",
        r#""test.bad" = "reject", "test.flaky" = "retry_then_ok""#,
    );
    let batch = [
        ("b-ok1", "test.ok"),
        ("b-bad", "test.bad"),
        ("b-flaky", "test.flaky"),
        ("b-ok2", "test.ok"),
    ];
    queue_behind_a_gate(&gw, &batch);
    assert!(
        wait_until(WAIT, || state(&gw, "b-flaky").0 == "done"),
        "{:?}",
        calls(&gw)
    );
    for id in ["b-ok1", "b-ok2"] {
        assert_eq!(state(&gw, id).0, "done");
        assert_eq!(calls_of(&gw, id).len(), 1, "{id} called once");
    }
    let (bad, reason) = state(&gw, "b-bad");
    assert_eq!(bad, "dead");
    assert!(reason.contains("testkit: reject"), "{reason}");
    assert_eq!(calls_of(&gw, "b-bad").len(), 1);
    // The four went to the plugin in one call; only the flaky one came back, alone.
    for (id, _) in batch {
        assert_eq!(calls_of(&gw, id)[0]["batch"], 4, "{:?}", calls(&gw));
    }
    let flaky = calls_of(&gw, "b-flaky");
    assert_eq!(flaky.len(), 2);
    assert_eq!(
        (flaky[1]["attempt"].as_u64(), flaky[1]["batch"].as_u64()),
        (Some(2), Some(1))
    );
    assert!(calls(&gw).iter().all(|c| c["in_flight"] == 1));
}

#[test]
fn a_batch_past_its_timeout_is_waited_for_and_its_late_successes_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start(
        dir.path(),
        "timeout = \"1s\"\nmax_attempts = 3",
        r#""test.slow" = "slow""#,
    );
    // Two 800 ms deliveries in one call: 1.6 s, past the 1 s timeout.
    queue_behind_a_gate(&gw, &[("t-1", "test.slow"), ("t-2", "test.slow")]);
    assert!(
        wait_until(WAIT, || {
            state(&gw, "t-1").0 == "done" && state(&gw, "t-2").0 == "done"
        }),
        "{:?}",
        calls(&gw)
    );
    std::thread::sleep(Duration::from_millis(500));
    for id in ["t-1", "t-2"] {
        assert_eq!(calls_of(&gw, id).len(), 1, "{id}: {:?}", calls(&gw));
    }
    assert!(
        gw.log().contains("the timed-out call succeeded after all"),
        "{}",
        gw.log()
    );
}

/// Two calls at once at most, four deliveries a call; a `gate` call holds one permit while the
/// test sends `events`, `gap` apart; returns once all of them are done (then opens the gate).
fn beside_a_gate(gw: &TestGateway, events: &[&str], gap: Duration) {
    start_the_gate(gw);
    for (i, id) in events.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(gap);
        }
        send(gw, id, "test.ok");
    }
    assert!(
        wait_until(WAIT, || events.iter().all(|id| state(gw, id).0 == "done")),
        "{:?}",
        calls(gw)
    );
    open_gate(gw);
}

/// `kit` with two permits, four deliveries a call, a `gate` and this `linger`.
fn two_permits(dir: &std::path::Path, linger: &str) -> TestGateway {
    start_kit(
        dir,
        &format!("max_batch = 4\nlinger = \"{linger}\""),
        r#""test.ok" = "ok""#,
        2,
        2000,
    )
}

fn batch_of(gw: &TestGateway, id: &str) -> serde_json::Value {
    calls_of(gw, id)[0]["batch"].clone()
}

#[test]
fn beside_a_running_call_a_new_call_lingers_for_a_full_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = two_permits(dir.path(), "1s");
    let ids = ["l-1", "l-2", "l-3", "l-4"];
    beside_a_gate(&gw, &ids, Duration::from_millis(100));
    // The second permit was free all along, yet the four went in one call.
    for id in ids {
        assert_eq!(batch_of(&gw, id), 4, "{id}: {:?}", calls(&gw));
        assert_eq!(calls_of(&gw, id).len(), 1);
    }
    assert_eq!(calls_of(&gw, "l-1")[0]["in_flight"], 2, "beside the gate");
}

#[test]
fn without_linger_a_free_permit_takes_what_is_ready_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = two_permits(dir.path(), "0ms");
    beside_a_gate(&gw, &["z-1", "z-2"], Duration::from_millis(300));
    assert_eq!(batch_of(&gw, "z-1"), 1, "{:?}", calls(&gw));
    assert_eq!(batch_of(&gw, "z-2"), 1, "{:?}", calls(&gw));
}

#[test]
fn linger_ends_at_its_deadline_and_an_idle_plugin_is_called_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = two_permits(dir.path(), "400ms");
    // Nothing else runs: the first delivery does not wait for the second.
    send(&gw, "i-1", "test.ok");
    std::thread::sleep(Duration::from_millis(150));
    send(&gw, "i-2", "test.ok");
    assert!(
        wait_until(WAIT, || state(&gw, "i-2").0 == "done"),
        "{:?}",
        calls(&gw)
    );
    assert_eq!(batch_of(&gw, "i-1"), 1, "{:?}", calls(&gw));
    // Beside the gate, one delivery waits 400 ms for mates, then goes alone, while the gate
    // still runs.
    beside_a_gate(&gw, &["d-1"], Duration::ZERO);
    let d1 = &calls_of(&gw, "d-1")[0];
    assert_eq!(
        (d1["batch"].as_u64(), d1["in_flight"].as_u64()),
        (Some(1), Some(2))
    );
}

#[test]
fn a_replay_while_a_batch_runs_waits_for_the_batch_and_reruns_only_the_replayed_delivery() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Two permits, both held by gate calls while the three slow deliveries queue (so they go
    // as one batch when the gate opens, however slow the sending; beside a free permit they
    // would depend on the 1 s linger). 2.5 s each, so the batch runs about 7.5 s: rb-2's call
    // outlasts the CLI runs below on a loaded machine. Once the gates are done a permit is
    // free, so a replay that did not wait for the running batch would start beside it.
    let gw = start_kit(
        dir.path(),
        "max_batch = 3\nlinger = \"1s\"\ntimeout = \"20s\"",
        r#""test.slow" = "slow""#,
        2,
        2500,
    );
    start_the_gate(&gw);
    send(&gw, "gate-2", "test.gate");
    gw.wait_running("gate-2", "kit");
    for id in ["rb-1", "rb-2", "rb-3"] {
        send(&gw, id, "test.slow");
    }
    open_gate(&gw);
    // rb-1 is handled: the batch is now in rb-2, and the gates have returned.
    assert!(
        wait_until(WAIT, || calls_of(&gw, "rb-1").len() == 1
            && calls_of(&gw, "gate").len() == 1
            && calls_of(&gw, "gate-2").len() == 1),
        "{:?}",
        calls(&gw)
    );
    assert!(calls_of(&gw, "rb-3").is_empty(), "{:?}", calls(&gw));
    // Its call runs: replayed only on purpose (the call's own success would be refused).
    let (code, out, err) = gw.cli(&["replay", "rb-2"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("rb-2:kit its call is running, or was when the gateway last stopped"),
        "{err}"
    );
    let (code, out, err) = gw.cli(&["replay", "rb-2", "--force"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        wait_until(WAIT, || calls_of(&gw, "rb-2").len() == 2
            && state(&gw, "rb-2").0 == "done"),
        "{:?}",
        calls(&gw)
    );
    let all = calls(&gw);
    let batch_ids = ["rb-1", "rb-2", "rb-3"];
    for id in batch_ids {
        assert_eq!(batch_of(&gw, id), 3, "{id}: {all:?}");
    }
    for id in ["rb-1", "rb-3"] {
        assert_eq!(state(&gw, id).0, "done");
        assert_eq!(calls_of(&gw, id).len(), 1, "{id} called once: {all:?}");
    }
    // The replay ran once the whole batch had returned, alone, with a fresh attempt count.
    let position = |id: &str, nth: usize| {
        all.iter()
            .enumerate()
            .filter(|(_, c)| c["event_id"] == id)
            .nth(nth)
            .map(|(i, _)| i)
    };
    assert!(position("rb-2", 1) > position("rb-3", 0), "{all:?}");
    let rerun = &calls_of(&gw, "rb-2")[1];
    assert_eq!(
        (rerun["attempt"].as_u64(), rerun["in_flight"].as_u64()),
        (Some(1), Some(1)),
        "{all:?}"
    );
}

/// `kit` (two permits, four deliveries a call, a 2 s `gate`, `linger = "1s"`) for `test.*`,
/// and, always, `other` for `keep.*` (so a config without `kit` still routes something).
fn lingering_config(with_kit: bool) -> String {
    let kit = if with_kit {
        format!(
            r#"
[[plugins]]
name = "kit"
library = "{testkit}"
config = {{ record = "data/kit.jsonl", sleep_ms = 2000, modes = {{ "test.gate" = "slow" }} }}
max_concurrency = 2

[[routes]]
events = ["test.*"]
plugins = ["kit"]
"#,
            testkit = binaries().testkit.display(),
        )
    } else {
        String::new()
    };
    format!(
        r#"{base}
[[apps]]
name = "hire"
path = "/hook"
verification_token = "{TOKEN}"

[delivery]
max_batch = 4
linger = "1s"

[[plugins]]
name = "other"
library = "{testkit}"
config = {{ record = "data/other.jsonl" }}

[[routes]]
events = ["keep.*"]
plugins = ["other"]
{kit}"#,
        base = base_config(),
        testkit = binaries().testkit.display(),
    )
}

/// A 2 s `gate` call holds one of `kit`'s two permits; `id` then takes the other and lingers
/// (up to 1 s) for batch-mates that never come. Returns once it lingers.
fn lingering(gw: &TestGateway, id: &str) {
    send(gw, "gate", "test.gate");
    gw.wait_running("gate", "kit");
    send(gw, id, "test.ok");
    std::thread::sleep(Duration::from_millis(100));
    assert!(calls_of(gw, id).is_empty(), "{:?}", calls(gw));
}

/// Regression: a dispatcher lingering for a fuller batch when a reload removed its plugin
/// instance went on to call the removed instance with what it held (the linger ends at the
/// removal, and nothing looked again), though a removed instance takes no new work: its
/// deliveries stay pending for the orphan rule (or an instance of that name coming back).
#[test]
fn a_batch_lingering_when_a_reload_removes_its_plugin_is_not_called() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &lingering_config(true));
    lingering(&gw, "lr-1");
    std::fs::write(dir.path().join("gateway.toml"), lingering_config(false)).expect("config");
    gw.signal("HUP");
    assert!(
        wait_until(WAIT, || gw.log().contains("config reloaded")),
        "{}",
        gw.log()
    );
    // Past the gate's end and the linger's deadline.
    std::thread::sleep(Duration::from_millis(2_500));
    assert!(calls_of(&gw, "gate").len() == 1, "{:?}", calls(&gw));
    assert!(calls_of(&gw, "lr-1").is_empty(), "{:?}", calls(&gw));
    assert_eq!(state(&gw, "lr-1").0, "pending");
}

/// Regression: likewise at a stop (SIGTERM), the lingering batch was called after the stop
/// began: a stop lets running calls finish and starts none (the delivery stays pending for the
/// next start).
#[test]
fn a_batch_lingering_when_the_gateway_stops_is_not_called() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = TestGateway::spawn(dir.path(), &lingering_config(true));
    lingering(&gw, "ls-1");
    gw.signal("TERM");
    assert!(gw.wait(Duration::from_secs(20)).is_some(), "{}", gw.log());
    assert_eq!(calls_of(&gw, "gate").len(), 1, "{:?}", calls(&gw));
    assert!(calls_of(&gw, "ls-1").is_empty(), "{:?}", calls(&gw));
    assert_eq!(state(&gw, "ls-1").0, "pending");
}
