//! A plugin that kills the process (abort, segfault, exit: what native code does and no
//! `catch_unwind` stops) takes the gateway down with it, but not forever: every attempt is marked
//! started before the call, so the next start counts the crash, and after `max_crashes` the
//! poison delivery is a dead letter while every other delivery has been made. The test restarts
//! the gateway the way systemd would.

use std::path::Path;
use std::time::Duration;

use gateway_e2e::harness::{base_config, binaries, read_jsonl, wait_until, Lark, TestGateway};
use gateway_e2e::raw_fixtures;

const TOKEN: &str = "tok";

/// `native` is the `[[plugins]]` body (library, config) of the plugin under test.
fn config(native: &str) -> String {
    format!(
        r#"{base}
[[apps]]
name = "hire"
path = "/hook"
verification_token = "{TOKEN}"

[delivery]
max_crashes = 3
initial_backoff = "50ms"
max_backoff = "100ms"

[[plugins]]
name = "native"
{native}

[[plugins]]
name = "audit"
library = "{logger}"
config = {{ path = "data/audit.jsonl", fsync = "never" }}

[[routes]]
events = ["*"]
plugins = ["native", "audit"]
"#,
        base = base_config(),
        logger = binaries().logger.display(),
    )
}

fn delivery(gw: &TestGateway, event_id: &str, plugin: &str) -> serde_json::Value {
    gw.delivery(event_id, plugin)
}

fn raw_plugin() -> String {
    let raw = raw_fixtures(Path::new(env!("CARGO_TARGET_TMPDIR"))).legacy;
    format!("library = \"{}\"", raw.display())
}

fn poison_delivery_ends_after_max_crashes(crash: &str) {
    poison_ends(&raw_plugin(), crash);
}

fn poison_ends(native: &str, crash: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(native);
    let lark = Lark::plain(TOKEN);
    let mut gw = TestGateway::spawn(dir.path(), &cfg);
    for (id, event_type) in [("ok-a", "ok"), ("ok-b", "ok"), ("poison", crash)] {
        let a = lark.send(
            &gw.url("/hook"),
            &lark.event_v2(id, event_type, serde_json::json!({})),
        );
        assert_eq!(a.status, 200, "{id}: {}", a.body);
    }
    let mut starts = 1;
    // Dies on the poison call (or is done with it).
    while gw.wait(Duration::from_secs(10)).is_some() {
        assert!(
            starts <= 3,
            "still crashing after {starts} crashes:\n{}",
            gw.log()
        );
        // A restart recovers the poison delivery at once and may die in it before it prints
        // its listening line: that start counts the same.
        gw = loop {
            starts += 1;
            match TestGateway::try_spawn(dir.path(), &cfg) {
                Ok(gw) => break gw,
                Err(log) => assert!(starts <= 3, "still crashing after {starts} crashes:\n{log}"),
            }
        };
    }
    // Three starts died in the poison call (max_crashes = 3); the fourth counted the third
    // crash, dead-lettered the poison delivery and stays up.
    assert_eq!(starts, 4);
    let poison = delivery(&gw, "poison", "native");
    assert_eq!(poison["state"], "dead", "{poison}");
    assert_eq!(poison["crashes"], 3);
    assert_eq!(
        poison["last_error"],
        "the gateway died during this call 3 times"
    );
    // Counted as a dead letter by the start that made it one (the crash rule's dead letters
    // were in no count: the dead-letters alert missed a crash loop).
    let metrics = gateway_e2e::harness::get(&gw.admin_url("/metrics"))
        .expect("metrics")
        .body;
    assert_eq!(
        gateway_e2e::harness::metric(&metrics, r#"gateway_dead_letters_total{plugin="native"}"#),
        1.0,
        "{metrics}"
    );
    for id in ["ok-a", "ok-b"] {
        assert!(
            wait_until(Duration::from_secs(10), || delivery(&gw, id, "native")
                ["state"]
                == "done"),
            "{id}: {}",
            delivery(&gw, id, "native")
        );
    }
    // The other plugin got every event, the poison one included: its deliveries were in flight
    // at the first crash at most (after it, a suspect delivery runs with nothing beside it).
    for id in ["ok-a", "ok-b", "poison"] {
        assert!(
            wait_until(Duration::from_secs(10), || delivery(&gw, id, "audit")
                ["state"]
                == "done"),
            "{id}: {}",
            delivery(&gw, id, "audit")
        );
        let crashes = delivery(&gw, id, "audit")["crashes"].as_u64().unwrap_or(0);
        assert!(crashes <= 1, "{id}: audit counted {crashes} crashes");
    }
    let audit = dir.path().join("data/audit.jsonl");
    assert!(wait_until(Duration::from_secs(10), || {
        let ids: std::collections::HashSet<String> = read_jsonl(&audit)
            .iter()
            .filter_map(|l| l["event_id"].as_str().map(str::to_owned))
            .collect();
        ["ok-a", "ok-b", "poison"]
            .iter()
            .all(|id| ids.contains(*id))
    }));
    assert!(
        gw.log()
            .contains("the gateway died during plugin calls last time"),
        "{}",
        gw.log()
    );
}

#[test]
fn an_aborting_plugin_call_is_dead_lettered_after_max_crashes() {
    poison_delivery_ends_after_max_crashes("crash_abort");
}

#[test]
fn a_segfaulting_plugin_call_is_dead_lettered_after_max_crashes() {
    poison_delivery_ends_after_max_crashes("crash_segv");
}

#[test]
fn an_exiting_plugin_call_is_dead_lettered_after_max_crashes() {
    poison_delivery_ends_after_max_crashes("crash_exit");
}

#[test]
fn a_stack_overflow_in_a_c_plugin_is_dead_lettered_after_max_crashes() {
    let c = gateway_e2e::c_fixture(Path::new(env!("CARGO_TARGET_TMPDIR")));
    poison_ends(&format!("library = \"{}\"", c.display()), "crash_stack");
}

#[test]
fn a_panic_in_a_plugin_built_with_panic_abort_is_dead_lettered_after_max_crashes() {
    let kit = gateway_e2e::testkit_panic_abort();
    poison_ends(
        &format!(
            "library = \"{}\"\nconfig = {{ mode = \"panic_handle\", only_event_types = [\"boom\"] }}",
            kit.display()
        ),
        "boom",
    );
}

/// The two configs of the hung-call test: `suspect` (testkit, `suspect_mode`) gets `suspect`
/// events, `hang` (testkit, waits for the file `data/open`) gets `hang` events, the logger
/// `audit` gets `after` events; calls time out after 1 s.
fn hang_config(suspect_mode: &str) -> String {
    let kit = binaries().testkit.display().to_string();
    format!(
        r#"{base}
[[apps]]
name = "hire"
path = "/hook"
verification_token = "{TOKEN}"

[delivery]
timeout = "1s"
max_crashes = 5
initial_backoff = "50ms"
max_backoff = "100ms"

[[plugins]]
name = "suspect"
library = "{kit}"
config = {{ {suspect_mode}, record = "data/suspect.jsonl" }}

[[plugins]]
name = "hang"
library = "{kit}"
config = {{ mode = "gate", gate = "data/open" }}

[[plugins]]
name = "audit"
library = "{logger}"
config = {{ path = "data/audit.jsonl", fsync = "never" }}

[[routes]]
events = ["suspect"]
plugins = ["suspect"]

[[routes]]
events = ["hang"]
plugins = ["hang"]

[[routes]]
events = ["after"]
plugins = ["audit"]
"#,
        base = base_config(),
        logger = binaries().logger.display(),
    )
}

#[test]
fn a_call_hung_past_its_timeout_does_not_stop_every_plugin_behind_a_suspect_delivery() {
    // A delivery with a crash behind it runs alone (the engine-wide gate, taken exclusively);
    // a native call hung past its timeout cannot be stopped. The hung call once kept its share
    // of the gate until it returned: the suspect's next call waited for it, and every other
    // call of every plugin queued behind that one.
    let dir = tempfile::tempdir().expect("tempdir");
    let lark = Lark::plain(TOKEN);
    // The suspect's first call outlasts the wait for its start mark: with a 900 ms call and a
    // fixed 300 ms sleep before the kill, a loaded machine could kill the gateway before the
    // call started or after it returned, and no crash was counted.
    let first = hang_config(r#"mode = "slow", sleep_ms = 60000"#)
        .replace("timeout = \"1s\"", "timeout = \"120s\"");
    let mut gw = TestGateway::spawn(dir.path(), &first);
    let send = |gw: &TestGateway, id: &str, event_type: &str| {
        let a = lark.send(
            &gw.url("/hook"),
            &lark.event_v2(id, event_type, serde_json::json!({})),
        );
        assert_eq!(a.status, 200, "{id}: {}", a.body);
    };
    send(&gw, "s-1", "suspect");
    gw.wait_running("s-1", "suspect");
    gw.kill9(); // during the suspect's call: the next start counts a crash
    let gw = TestGateway::spawn(dir.path(), &hang_config(r#"mode = "retry_always""#));
    let suspect_calls = || read_jsonl(&dir.path().join("data/suspect.jsonl")).len();
    assert!(
        wait_until(Duration::from_secs(10), || suspect_calls() >= 1),
        "the suspect delivery runs again (alone, retrying)\n{}",
        gw.log()
    );
    assert_eq!(delivery(&gw, "s-1", "suspect")["crashes"], 1);
    send(&gw, "h-1", "hang");
    // The hang call starts, times out after 1 s and stays hung (no `data/open`).
    assert!(
        wait_until(Duration::from_secs(10), || delivery(&gw, "h-1", "hang")
            ["attempts"]
            == 1),
        "{}",
        delivery(&gw, "h-1", "hang")
    );
    let before = suspect_calls();
    send(&gw, "a-1", "after");
    assert!(
        wait_until(Duration::from_secs(10), || delivery(&gw, "a-1", "audit")
            ["state"]
            == "done"),
        "another plugin's delivery waits behind the hung call: {}\n{}",
        delivery(&gw, "a-1", "audit"),
        gw.log()
    );
    assert!(
        wait_until(Duration::from_secs(10), || suspect_calls() > before),
        "the suspect delivery goes on retrying beside the hung call"
    );
    std::fs::write(dir.path().join("data/open"), b"").expect("open the gate");
}

#[test]
fn a_call_that_hangs_past_its_timeout_and_dies_with_the_process_counts_as_a_crash() {
    // The timeout records a retry at once while the native call still runs; should the process
    // then die (here `kill -9`; a plugin that aborts after hanging does the same), the next
    // start counts the crash against that delivery: a hang-then-crash ends after max_crashes.
    let dir = tempfile::tempdir().expect("tempdir");
    let lark = Lark::plain(TOKEN);
    let cfg = hang_config(r#"mode = "ok""#);
    let mut gw = TestGateway::spawn(dir.path(), &cfg);
    let a = lark.send(
        &gw.url("/hook"),
        &lark.event_v2("h-1", "hang", serde_json::json!({})),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        wait_until(Duration::from_secs(10), || delivery(&gw, "h-1", "hang")
            ["attempts"]
            == 1),
        "the timeout is recorded: {}",
        delivery(&gw, "h-1", "hang")
    );
    gw.kill9();
    std::fs::write(dir.path().join("data/open"), b"").expect("open the gate");
    let gw = TestGateway::spawn(dir.path(), &cfg);
    assert!(
        wait_until(Duration::from_secs(10), || delivery(&gw, "h-1", "hang")
            ["state"]
            == "done"),
        "{}",
        delivery(&gw, "h-1", "hang")
    );
    let d = delivery(&gw, "h-1", "hang");
    assert_eq!(d["crashes"], 1, "{d}");
    assert_eq!(
        d["attempts"], 2,
        "attempt 1 timed out (and crashed), attempt 2 ok: {d}"
    );
}
