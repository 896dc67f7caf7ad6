//! Delivery end to end: retries with backoff, dead letters (reject, panic, exhaustion), a slow
//! plugin that slows neither the HTTP answers nor other plugins, and replay of dead letters.

use std::time::{Duration, Instant};

use gateway_e2e::harness::{base_config, binaries, read_jsonl, wait_until, TestGateway};

const TOKEN: &str = "tok";

fn start(dir: &std::path::Path) -> TestGateway {
    let testkit = binaries().testkit.display().to_string();
    let cfg = format!(
        r#"{base}
[[apps]]
name = "hire"
path = "/hook"
verification_token = "{TOKEN}"

[delivery]
max_attempts = 4
initial_backoff = "50ms"
max_backoff = "200ms"
timeout = "5s"

[[plugins]]
name = "audit"
library = "{logger}"
config = {{ path = "data/audit.jsonl", fsync = "never" }}

[[plugins]]
name = "flaky"
library = "{testkit}"
config = {{ mode = "retry_then_ok", retries = 2, record = "data/flaky.jsonl" }}

[[plugins]]
name = "refuser"
library = "{testkit}"
config = {{ mode = "reject", record = "data/refuser.jsonl" }}

[[plugins]]
name = "hopeless"
library = "{testkit}"
config = {{ mode = "retry_always", record = "data/hopeless.jsonl" }}

[[plugins]]
name = "panicky"
library = "{testkit}"
config = {{ mode = "panic_handle", only_event_types = ["test.panic"], record = "data/panicky.jsonl" }}

[[plugins]]
name = "sloth"
library = "{testkit}"
config = {{ mode = "slow", sleep_ms = 1500, record = "data/sloth.jsonl" }}
max_concurrency = 1

[[routes]]
events = ["test.*"]
plugins = ["audit"]

[[routes]]
events = ["test.flaky"]
plugins = ["flaky"]

[[routes]]
events = ["test.reject"]
plugins = ["refuser"]

[[routes]]
events = ["test.hopeless"]
plugins = ["hopeless"]

[[routes]]
events = ["test.panic", "test.after_panic"]
plugins = ["panicky"]

[[routes]]
events = ["test.slow"]
plugins = ["sloth"]
"#,
        base = base_config(),
        logger = binaries().logger.display(),
    );
    TestGateway::spawn(dir, &cfg)
}

/// A config with one app, the given `[delivery]` settings and one testkit instance `name`
/// (testkit config `plugin`, recording to `data/<name>.jsonl`) routed for `event_type`.
fn one_plugin(delivery: &str, name: &str, plugin: &str, event_type: &str) -> String {
    format!(
        r#"{base}
[[apps]]
name = "hire"
path = "/hook"
verification_token = "{TOKEN}"

[delivery]
{delivery}

[[plugins]]
name = "{name}"
library = "{testkit}"
config = {{ {plugin}, record = "data/{name}.jsonl" }}

[[routes]]
events = ["{event_type}"]
plugins = ["{name}"]
"#,
        base = base_config(),
        testkit = binaries().testkit.display(),
    )
}

fn send(gw: &TestGateway, id: &str, event_type: &str) {
    gw.send_plain(TOKEN, id, event_type);
}

fn record(gw: &TestGateway, name: &str) -> Vec<serde_json::Value> {
    read_jsonl(&gw.dir.join(format!("data/{name}.jsonl")))
}

fn deliveries(gw: &TestGateway, event_id: &str) -> serde_json::Value {
    let (code, out, err) = gw.cli(&["events", "show", event_id]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    v["deliveries"].clone()
}

#[test]
fn retries_dead_letters_panics_and_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start(dir.path());
    send(&gw, "e-flaky", "test.flaky");
    send(&gw, "e-reject", "test.reject");
    send(&gw, "e-hopeless", "test.hopeless");
    send(&gw, "e-panic", "test.panic");

    // Retry twice then Ok: delivered with 3 attempts, the same delivery id each time.
    assert!(wait_until(Duration::from_secs(10), || record(&gw, "flaky")
        .len()
        == 3));
    let flaky = record(&gw, "flaky");
    let attempts: Vec<u64> = flaky
        .iter()
        .map(|l| l["attempt"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(attempts, [1, 2, 3]);
    assert_eq!(flaky[2]["outcome"], "ok");
    assert!(flaky
        .iter()
        .all(|l| l["delivery_id"] == flaky[0]["delivery_id"]));

    // Reject: a dead letter at once, one call.
    // Retry forever: dead after max_attempts (4). Panic: dead, instance restarted.
    assert!(wait_until(Duration::from_secs(15), || {
        let (_, out, _) = gw.cli(&["dead-letters", "--json"]);
        out.lines().count() == 3
    }));
    let (_, out, _) = gw.cli(&["dead-letters", "--json"]);
    let dead: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let by = |p: &str| dead.iter().find(|d| d["plugin"] == p).cloned().expect(p);
    assert_eq!(by("refuser")["attempts"], 1);
    assert!(by("refuser")["last_error"]
        .as_str()
        .unwrap_or("")
        .contains("testkit: reject"));
    assert_eq!(by("hopeless")["attempts"], 4);
    assert!(by("hopeless")["last_error"]
        .as_str()
        .unwrap_or("")
        .contains("gave up after 4 attempts"));
    assert_eq!(record(&gw, "hopeless").len(), 4);
    assert!(by("panicky")["last_error"]
        .as_str()
        .unwrap_or("")
        .starts_with("panicked: testkit: panic in handle"));
    assert_eq!(record(&gw, "refuser").len(), 1);

    // The panicked instance was replaced: the next event to it is delivered.
    send(&gw, "e-after", "test.after_panic");
    assert!(wait_until(Duration::from_secs(10), || {
        deliveries(&gw, "e-after")[0]["state"] == "done"
    }));
    assert_eq!(deliveries(&gw, "e-flaky")[1]["state"], "done");

    // Replay one dead letter while the gateway runs: it is called again with fresh attempts.
    let (code, out, err) = gw.cli(&["replay", "e-reject", "--plugin", "refuser"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 deliveries queued again"), "{out}");
    assert!(wait_until(Duration::from_secs(10), || record(
        &gw, "refuser"
    )
    .len()
        == 2));
    assert_eq!(record(&gw, "refuser")[1]["attempt"], 1);

    // Every test.* event also reached the audit logger exactly once. Its deliveries run apart
    // from the other plugins' (e-after's may still be on its way when `panicky`'s is done): the
    // file is waited for, then checked for duplicates.
    let audit = || {
        let mut ids: Vec<String> = read_jsonl(&gw.dir.join("data/audit.jsonl"))
            .iter()
            .map(|l| l["event_id"].as_str().unwrap_or_default().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let want = ["e-after", "e-flaky", "e-hopeless", "e-panic", "e-reject"];
    assert!(
        wait_until(Duration::from_secs(10), || audit().len() >= want.len()),
        "{:?}",
        audit()
    );
    assert_eq!(audit(), want);
}

#[test]
fn slow_plugin_slows_neither_http_nor_other_plugins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start(dir.path());
    // Each slow call takes 1.5 s and the plugin allows one at a time: 4 events = 6 s of work.
    for i in 0..4 {
        send(&gw, &format!("slow-{i}"), "test.slow");
    }
    // Meanwhile, requests are answered at once and the audit logger keeps up.
    let started = Instant::now();
    for i in 0..20 {
        let t = Instant::now();
        send(&gw, &format!("fast-{i}"), "test.fast");
        assert!(
            t.elapsed() < Duration::from_millis(1200),
            "request {i} took {:?}",
            t.elapsed()
        );
    }
    // Well before the slow plugin's 6 s of work ends (a request stuck behind it takes 1.5 s).
    assert!(wait_until(Duration::from_secs(5), || {
        read_jsonl(&gw.dir.join("data/audit.jsonl")).len() == 24
    }));
    assert!(started.elapsed() < Duration::from_millis(5500));
    assert!(
        record(&gw, "sloth").len() <= 3,
        "the slow plugin is still busy"
    );
    assert!(wait_until(Duration::from_secs(15), || record(&gw, "sloth")
        .len()
        == 4));
}

/// Every plugin call takes a thread of the gateway's blocking pool until it returns, and so do
/// the store's reads and the kill of a timed-out isolated call: one plugin whose many calls
/// all hang (here 600, each waiting for a gate file) must leave threads for every other
/// plugin's calls. (With tokio's default pool of 512 threads, the other plugin's call waited
/// for one of them to return.)
#[test]
fn many_hung_calls_of_one_plugin_leave_threads_for_the_others() {
    const HUNG: usize = 600;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        r#"{base}
[[apps]]
name = "hire"
path = "/hook"
verification_token = "{TOKEN}"

[delivery]
max_batch = 1
timeout = "60s"

[[plugins]]
name = "audit"
library = "{logger}"
config = {{ path = "data/audit.jsonl", fsync = "never" }}

[[plugins]]
name = "stuck"
library = "{testkit}"
config = {{ mode = "gate", gate = "data/gate-open", record = "data/stuck.jsonl" }}
max_concurrency = {HUNG}

[[routes]]
events = ["test.stuck"]
plugins = ["stuck"]

[[routes]]
events = ["test.fast"]
plugins = ["audit"]
"#,
        base = base_config(),
        logger = binaries().logger.display(),
        testkit = binaries().testkit.display(),
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    std::thread::scope(|s| {
        for t in 0..8 {
            let gw = &gw;
            s.spawn(move || {
                for i in (t..HUNG).step_by(8) {
                    send(gw, &format!("stuck-{i}"), "test.stuck");
                }
            });
        }
    });
    let running = || {
        let s = gateway_e2e::harness::get(&gw.admin_url("/status")).expect("status");
        let v: serde_json::Value = serde_json::from_str(&s.body).expect("status json");
        v["plugins"]["stuck"]["calls_running"].as_u64().unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(20), || running() == HUNG as u64),
        "{} calls running",
        running()
    );
    send(&gw, "fast-1", "test.fast");
    let audited = wait_until(Duration::from_secs(5), || record(&gw, "audit").len() == 1);
    std::fs::write(gw.dir.join("data/gate-open"), "").expect("open the gate");
    assert!(audited, "the other plugin's call waited for a hung one");
    assert!(wait_until(Duration::from_secs(20), || record(&gw, "stuck")
        .len()
        == HUNG));
}

#[test]
fn retries_stop_at_max_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = one_plugin(
        "max_attempts = 1000\nmax_age = \"400ms\"\ninitial_backoff = \"50ms\"\nmax_backoff = \"100ms\"",
        "hopeless",
        "mode = \"retry_always\"",
        "test.hopeless",
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    send(&gw, "old-1", "test.hopeless");
    assert!(wait_until(Duration::from_secs(10), || {
        deliveries(&gw, "old-1")[0]["state"] == "dead"
    }));
    let d = deliveries(&gw, "old-1");
    assert!(
        d[0]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("max_age 400ms"),
        "{d}"
    );
    let calls = record(&gw, "hopeless").len();
    assert!(calls >= 2, "retried before giving up: {calls} calls");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        record(&gw, "hopeless").len(),
        calls,
        "no call after the dead letter"
    );
}

#[test]
fn a_timed_out_call_is_never_doubled_and_its_late_success_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = one_plugin(
        "max_attempts = 5\ninitial_backoff = \"50ms\"\nmax_backoff = \"100ms\"\ntimeout = \"300ms\"",
        "late",
        "mode = \"slow\", sleep_ms = 1000",
        "test.late",
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    send(&gw, "late-1", "test.late");
    // The call times out at 300 ms and the retry is due at 400 ms at the latest, but the next
    // attempt waits for the running call, which then succeeds at 1 s: one call, delivered.
    assert!(wait_until(Duration::from_secs(10), || {
        deliveries(&gw, "late-1")[0]["state"] == "done"
    }));
    std::thread::sleep(Duration::from_millis(500));
    let calls = record(&gw, "late");
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["outcome"], "ok");
    assert!(
        wait_until(Duration::from_secs(5), || gw
            .log()
            .contains("succeeded after all")),
        "{}",
        gw.log()
    );
}

/// A call that panics has its outcome recorded before its instance is restarted: a restart
/// that takes long (the plugin's `new` blocks) neither holds the delivery's outcome back nor
/// the other plugins (it held both, outside any timeout).
#[test]
fn a_panicked_calls_outcome_is_recorded_before_a_slow_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = one_plugin(
        "timeout = \"1s\"",
        "boom",
        "mode = \"panic_handle\", restart_sleep_ms = 20000",
        "test.boom",
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    send(&gw, "boom-1", "test.boom");
    assert!(
        wait_until(Duration::from_secs(5), || {
            deliveries(&gw, "boom-1")[0]["state"] == "dead"
        }),
        "{}\n{}",
        deliveries(&gw, "boom-1"),
        gw.log()
    );
    let d = &deliveries(&gw, "boom-1")[0];
    assert!(
        d["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("panicked")),
        "{d}"
    );
}

/// An outcome the store refused when the stop came is still recorded within `shutdown_grace`
/// once the store takes writes again: the next start sees a finished delivery, not a crashed
/// attempt to count and run again (it gave up on the first stop signal).
#[test]
fn an_outcome_the_store_refused_is_recorded_during_the_shutdown_grace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = one_plugin(
        "initial_backoff = \"50ms\"\nmax_backoff = \"100ms\"\ntimeout = \"10s\"",
        "slow",
        "mode = \"gate\", gate = \"data/open\"",
        "test.slow",
    );
    let mut gw = TestGateway::spawn(dir.path(), &cfg);
    send(&gw, "stop-1", "test.slow");
    // The call has started (its start mark is written; a fixed sleep could let the lock below
    // block the mark itself on a loaded machine) and waits for the gate.
    gw.wait_running("stop-1", "slow");
    // While the call runs another process takes the write lock, then the call returns: the
    // outcome waits in memory.
    let other = rusqlite::Connection::open(dir.path().join("data/gateway.db")).expect("open");
    other.execute_batch("BEGIN IMMEDIATE").expect("lock");
    std::fs::write(dir.path().join("data/open"), "").expect("open the gate");
    assert!(wait_until(Duration::from_secs(5), || gw
        .calls("slow")
        .len()
        == 1));
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .log()
            .contains("could not record delivery outcomes")),
        "{}",
        gw.log()
    );
    gw.signal("TERM");
    // Longer than one write's wait for the lock (2 s), shorter than the grace (5 s).
    std::thread::sleep(Duration::from_millis(2500));
    other.execute_batch("ROLLBACK").expect("unlock");
    let status = gw.wait(Duration::from_secs(15)).expect("stopped");
    assert!(status.success(), "{status:?}\n{}", gw.log());
    drop(gw);
    let gw = TestGateway::spawn(dir.path(), &cfg);
    let d = &deliveries(&gw, "stop-1")[0];
    assert_eq!(d["state"], "done", "{d}");
    assert_eq!(d["crashes"], 0, "{d}");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(gw.calls("slow").len(), 1, "called again after the restart");
}

/// One deadline for the whole stop: a request whose body is still arriving and a hung plugin
/// call each waited a full `shutdown_grace` in turn (the long connections a third), so a stop
/// took a multiple of it (past systemd's stop timeout).
#[test]
fn a_stop_ends_within_one_shutdown_grace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = one_plugin(
        "",
        "stuck",
        "mode = \"slow\", sleep_ms = 60000",
        "test.stuck",
    )
    .replace("shutdown_grace = \"5s\"", "shutdown_grace = \"2s\"");
    let mut gw = TestGateway::spawn(dir.path(), &cfg);
    send(&gw, "stuck-1", "test.stuck");
    gw.wait_running("stuck-1", "stuck");
    // A request whose body never finishes arriving (body_timeout is 30 s).
    let addr = gw
        .url("/")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut slow = std::net::TcpStream::connect(&addr).expect("connect");
    use std::io::Write;
    slow.write_all(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        .expect("half a request");
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    gw.signal("TERM");
    let status = gw.wait(Duration::from_secs(15)).expect("stopped");
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "the stop took {:?} with a 2 s grace\n{}",
        started.elapsed(),
        gw.log()
    );
    // The call left running is said, with how many: its delivery stays pending and the next
    // start counts a crashed attempt.
    let log = gw.log();
    assert!(
        log.lines()
            .any(|l| l.contains("plugin calls still running") && l.contains("running=1")),
        "{log}"
    );
}
