//! A panic in a plugin ends only the delivery that panicked, in process and isolated alike
//! (ARCHITECTURE's "When a plugin fails": the instance is re-created, each delivery of a batch
//! that panicked is handled alone, and calls running beside the panic finish). With
//! `max_attempts = 1`, an innocent delivery that lost an attempt would show as a dead letter.
//! Isolated, the child that panicked used to be killed: its batch-mates and the calls running
//! beside it died with it (a retry each), and the engine's restart killed the new child too.
//! And a log line too long for the frame protocol's log frame (1 MiB) is cut by the child, not
//! taken by the gateway as a protocol error that kills it; and a child that dies while a
//! process it forked holds its output open is noticed all the same.

use std::time::Duration;

use gateway_e2e::harness::{base_config, binaries, wait_until, TestGateway};

const TOKEN: &str = "tok";
const WAIT: Duration = Duration::from_secs(30);

/// A gateway config with one app and one plugin instance named `name` (`plugin`: its keys after
/// `name`), routed every event type matching `events`; `delivery`: keys of `[delivery]` after
/// the fast backoff every test here uses.
fn config(base: &str, delivery: &str, name: &str, plugin: &str, events: &str) -> String {
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
name = "{name}"
{plugin}

[[routes]]
events = ["{events}"]
plugins = ["{name}"]
"#
    )
}

/// `kit` (testkit): `test.gate` sleeps 3 s (past the 2 s a child whose input closed waits for its calls once the gateway is gone), `test.poison` panics, anything else is `Ok`.
fn start(dir: &std::path::Path, isolation: &str, max_concurrency: u32) -> TestGateway {
    let cfg = config(
        &base_config(),
        "max_batch = 16\nmax_attempts = 1",
        "kit",
        &format!(
            r#"library = "{}"
config = {{ record = "data/kit.jsonl", sleep_ms = 3000, modes = {{ "test.gate" = "slow", "test.poison" = "panic_handle" }} }}
max_concurrency = {max_concurrency}
isolation = "{isolation}""#,
            binaries().testkit.display()
        ),
        "test.*",
    );
    TestGateway::spawn(dir, &cfg)
}

fn state(gw: &TestGateway, id: &str) -> (String, String) {
    let d = gw.delivery(id, "kit");
    (
        d["state"].as_str().unwrap_or_default().to_owned(),
        d["last_error"].as_str().unwrap_or_default().to_owned(),
    )
}

fn settled(gw: &TestGateway, ids: &[&str]) -> bool {
    ids.iter()
        .all(|id| matches!(state(gw, id).0.as_str(), "done" | "dead"))
}

/// A batch [ok1, poison, ok2] (queued behind a slow call, so handed over together) whose batch
/// call panics: only the poison delivery ends dead.
fn batch_panic(isolation: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start(dir.path(), isolation, 1);
    gw.send_plain(TOKEN, "gate", "test.gate");
    gw.wait_running("gate", "kit");
    for (id, t) in [
        ("p-ok1", "test.ok"),
        ("p-poison", "test.poison"),
        ("p-ok2", "test.ok"),
    ] {
        gw.send_plain(TOKEN, id, t);
    }
    let ids = ["gate", "p-ok1", "p-poison", "p-ok2"];
    assert!(
        wait_until(WAIT, || settled(&gw, &ids)),
        "{:?}",
        gw.calls("kit")
    );
    let states: Vec<_> = ids.iter().map(|id| (*id, state(&gw, id))).collect();
    assert_eq!(state(&gw, "p-poison").0, "dead", "{states:?}");
    for id in ["gate", "p-ok1", "p-ok2"] {
        assert_eq!(state(&gw, id).0, "done", "[{isolation}] {id}: {states:?}");
    }
}

#[test]
fn a_panic_in_a_batch_ends_only_the_poison_in_process() {
    batch_panic("none");
}

#[test]
fn a_panic_in_a_batch_ends_only_the_poison_isolated() {
    batch_panic("process");
}

/// A slow call runs while another call of the same instance panics (max_concurrency = 2): the
/// slow one finishes.
fn panic_beside_a_running_call(isolation: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start(dir.path(), isolation, 2);
    gw.send_plain(TOKEN, "slow", "test.gate");
    gw.wait_running("slow", "kit");
    gw.send_plain(TOKEN, "poison", "test.poison");
    let ids = ["slow", "poison"];
    assert!(
        wait_until(WAIT, || settled(&gw, &ids)),
        "{:?}",
        gw.calls("kit")
    );
    let states: Vec<_> = ids.iter().map(|id| (*id, state(&gw, id))).collect();
    assert_eq!(state(&gw, "poison").0, "dead", "{states:?}");
    assert_eq!(state(&gw, "slow").0, "done", "[{isolation}] {states:?}");
    // The next delivery runs (in a new process, when isolated).
    gw.send_plain(TOKEN, "after", "test.ok");
    assert!(
        wait_until(WAIT, || state(&gw, "after").0 == "done"),
        "{:?}",
        state(&gw, "after")
    );
}

#[test]
fn a_panic_beside_a_running_call_leaves_it_alone_in_process() {
    panic_beside_a_running_call("none");
}

#[test]
fn a_panic_beside_a_running_call_leaves_it_alone_isolated() {
    panic_beside_a_running_call("process");
}

/// A log line over 1 MiB (testkit's "handling <event_id>" line for an event whose id is
/// 1.1 MB, accepted with `max_body_bytes` = 4 MiB): in process just a long line; isolated, it
/// used to be framed whole, refused by the gateway, and the child killed at every attempt.
#[test]
fn a_log_line_too_long_for_a_frame_does_not_kill_the_isolated_plugin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        &base_config(),
        "max_attempts = 2",
        "kit",
        &format!(
            r#"library = "{}"
config = {{ record = "data/kit.jsonl", log = true, pad_log = 1100000 }}
isolation = "process""#,
            binaries().testkit.display()
        ),
        "test.*",
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    // Each call logs a line of 1.1 MB (event ids are capped at 256 bytes: the plugin pads it).
    gw.send_plain(TOKEN, "first", "test.ok");
    gw.send_plain(TOKEN, "small", "test.ok");
    assert!(wait_until(WAIT, || state(&gw, "small").0 == "done"
        && state(&gw, "first").0 == "done"));
    std::thread::sleep(Duration::from_millis(500)); // a second attempt would show by now
    assert_eq!(gw.calls("kit").len(), 2, "one call each");
    let log = gw.log();
    assert!(
        !log.contains("not a frame") && !log.contains("process died"),
        "the long line broke the protocol"
    );
    assert!(
        log.contains("[truncated"),
        "the line was cut, with a marker"
    );
}

/// A gateway whose instance `native` is the C fixture in `fork_helper` mode, isolated, one call
/// at a time, with `delivery` in `[delivery]`. Its environment carries `MARK=<dir>`, which every
/// process it starts inherits (see [`orphans`]).
fn fork_helper_gateway(dir: &std::path::Path, delivery: &str) -> TestGateway {
    let c = gateway_e2e::c_fixture(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")));
    let cfg = config(
        &base_config(),
        delivery,
        "native",
        &format!(
            r#"library = "{}"
config = {{ mode = "fork_helper" }}
isolation = "process"
max_concurrency = 1"#,
            c.display()
        ),
        "*",
    );
    let mark = dir.display().to_string();
    TestGateway::spawn_with_env(dir, &cfg, &[(MARK, mark.as_str())])
}

const MARK: &str = "GATEWAY_TEST_MARK";

/// The processes started under the gateway of `dir` (see [`fork_helper_gateway`]) whose parent
/// is neither the gateway nor one of its plugin processes: the helpers a dead plugin process
/// left behind.
fn orphans(gw: &TestGateway, dir: &std::path::Path) -> Vec<u32> {
    let mut parents = gateway_e2e::harness::children(gw.pid());
    parents.push(gw.pid());
    let needle = format!("{MARK}={}", dir.display());
    gateway_e2e::harness::processes()
        .into_iter()
        .filter(|&pid| {
            let marked = std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == needle.as_bytes()));
            let parent = gateway_e2e::harness::parent_of(pid);
            marked && pid != gw.pid() && parent.is_some_and(|p| !parents.contains(&p))
        })
        .collect()
}

/// The C fixture with `fork_helper`: its init forks a helper (no exec) that holds the protocol
/// pipes 20 s. The child then segfaults: its output does not end (the helper holds it), so the
/// death must be noticed by its pid. It used to go unnoticed: the call hung to its timeout, the
/// timeout's SIGKILL hit a zombie, and every later call was written to the dead child.
#[test]
fn a_child_that_dies_while_a_process_it_forked_holds_its_output_is_noticed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = fork_helper_gateway(dir.path(), "timeout = \"10s\"\nmax_attempts = 2");
    gw.send_plain(TOKEN, "segv", "crash_segv");
    gw.send_plain(TOKEN, "ok-after", "ok");
    let of = |id: &str| gw.delivery(id, "native");
    assert!(
        wait_until(WAIT, || of("segv")["state"] == "dead"),
        "{}",
        of("segv")
    );
    // The crash itself, not the 10 s timeout's kill.
    let error = of("segv")["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains("signal 11"), "{error}");
    assert!(wait_until(WAIT, || of("ok-after")["state"] == "done"));
    // The helpers of the dead processes went with them (they slept 20 s, holding the pipes).
    assert!(
        wait_until(Duration::from_secs(5), || orphans(&gw, dir.path())
            .is_empty()),
        "left behind: {:?}",
        orphans(&gw, dir.path())
    );
    // Counted when noticed (it was only once the helper let the output end, 20 s later), once.
    let exits = || -> f64 {
        let text = gateway_e2e::harness::get(&gw.admin_url("/metrics"))
            .map(|a| a.body)
            .unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with("gateway_plugin_process_exits_total{plugin=\"native\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(exits(), 2.0, "the segfault at both attempts");
}

/// The same, dying in `init` of a restart (after forking the helper): the start failed only at
/// its one-minute limit, every call in the meantime waiting for it. Now the exit watcher fails
/// the start at once, the next call starts another, and once `init` works again the delivery
/// is made.
#[test]
fn a_child_that_dies_in_init_while_a_process_it_forked_holds_its_output_fails_its_start_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = fork_helper_gateway(dir.path(), "timeout = \"2s\"\nmax_attempts = 20");
    let marker = dir.path().join("die-in-init");
    std::fs::write(&marker, "").expect("marker");
    gateway_e2e::harness::kill_the_plugin_process(&gw);
    gw.send_plain(TOKEN, "ok-1", "ok");
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .log()
            .contains("died while starting")),
        "{}",
        gw.log()
    );
    assert!(
        wait_until(Duration::from_secs(5), || orphans(&gw, dir.path())
            .is_empty()),
        "left behind: {:?}",
        orphans(&gw, dir.path())
    );
    std::fs::remove_file(&marker).expect("remove marker");
    assert!(
        wait_until(Duration::from_secs(20), || gw.delivery("ok-1", "native")
            ["state"]
            == "done"),
        "{}\n{}",
        gw.delivery("ok-1", "native"),
        gw.log()
    );
}

/// A `Panicked` outcome that comes back as a normal answer (a 1.0 plugin's `handle`, looped in
/// the child; here the hand-written raw fixture answering code 3) replaces the isolated
/// instance too: the process that served it is retired and a new one serves the next call.
#[test]
fn a_panicked_outcome_of_a_1_0_plugin_replaces_its_isolated_process() {
    let raw = gateway_e2e::raw_fixtures(std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))).legacy;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        &base_config(),
        "max_attempts = 3",
        "native",
        &format!(
            "library = \"{}\"\nisolation = \"process\"\nmax_concurrency = 1",
            raw.display()
        ),
        "*",
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    let of = |id: &str| gw.delivery(id, "native")["state"].clone();
    gw.send_plain(TOKEN, "ok-1", "ok");
    assert!(wait_until(WAIT, || of("ok-1") == "done"));
    let before = gateway_e2e::harness::children(gw.pid());
    assert_eq!(before.len(), 1, "one plugin process: {before:?}");
    gw.send_plain(TOKEN, "p-1", "panicked");
    assert!(wait_until(WAIT, || of("p-1") == "dead"));
    gw.send_plain(TOKEN, "ok-2", "ok");
    assert!(wait_until(WAIT, || of("ok-2") == "done"));
    assert!(
        wait_until(Duration::from_secs(10), || !gateway_e2e::harness::children(
            gw.pid()
        )
        .contains(&before[0])),
        "the process whose instance panicked still serves: now {:?}, before {:?}",
        gateway_e2e::harness::children(gw.pid()),
        before
    );
}

/// The raw 1.0 fixture as `native`, isolated, one permit, `max_batch = 8` and `delivery`'s keys,
/// for every event; it records each call's pid in `<dir>/raw-calls.txt` (`env`: more of its
/// variables).
fn legacy_isolated(dir: &std::path::Path, delivery: &str, env: &[(&str, &str)]) -> TestGateway {
    let raw = gateway_e2e::raw_fixtures(std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))).legacy;
    let cfg = config(
        &base_config(),
        &format!("max_batch = 8\n{delivery}"),
        "native",
        &format!(
            "library = \"{}\"\nisolation = \"process\"\nmax_concurrency = 1",
            raw.display()
        ),
        "*",
    );
    let record = dir.join("raw-calls.txt").display().to_string();
    let mut vars = vec![("RAW_PLUGIN_CALLS", record.as_str())];
    vars.extend_from_slice(env);
    TestGateway::spawn_full(dir, &cfg, &vars, &[])
}

/// A 1.0 plugin's batch (no batch entry: `handle` looped) is sent to its child one delivery at
/// a time, so after a `Panicked` outcome the next delivery runs in a new process, never on the
/// instance that just panicked (as in process). Here `p-1` and `ok-2` queue behind a slow call
/// (one permit) and are taken as one batch; the raw fixture records which process served each.
#[test]
fn a_1_0_plugins_batch_mate_never_runs_on_the_instance_that_panicked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let record = dir.path().join("raw-calls.txt");
    let gw = legacy_isolated(dir.path(), "max_attempts = 3", &[]);
    // `(pid, event_type)` of each call, in order.
    let calls = || -> Vec<(String, String)> {
        std::fs::read_to_string(&record)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(pid, t)| (pid.to_owned(), t.to_owned()))
            .collect()
    };
    let of = |id: &str| gw.delivery(id, "native")["state"].clone();
    gw.send_plain(TOKEN, "gate", "slow");
    assert!(wait_until(WAIT, || calls()
        .iter()
        .any(|(_, t)| t == "slow")));
    gw.send_plain(TOKEN, "p-1", "panicked");
    gw.send_plain(TOKEN, "ok-2", "ok");
    assert!(wait_until(WAIT, || of("ok-2") == "done" && of("p-1") == "dead"));
    let calls = calls();
    let pid_of = |t: &str| {
        calls
            .iter()
            .find(|(_, c)| c == t)
            .map(|(pid, _)| pid.clone())
            .unwrap_or_else(|| panic!("no {t} call: {calls:?}"))
    };
    assert_ne!(
        pid_of("panicked"),
        pid_of("ok"),
        "ok-2 ran in the process whose instance had just panicked: {calls:?}"
    );
}

/// An isolated 1.0 plugin's batch goes one delivery at a time; when its child dies and no new
/// one can be started, the rest of the call fails at once as a batch's would: one start tried,
/// not one per delivery left (each after the start backoff, the call holding its permit).
#[test]
fn a_1_0_plugins_call_tries_one_start_when_no_child_can_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let record = dir.path().join("raw-calls.txt");
    let refuse = dir.path().join("refuse");
    // One attempt each: no retry tries another start while the test counts them.
    let refuse_env = refuse.display().to_string();
    let gw = legacy_isolated(
        dir.path(),
        "max_attempts = 1",
        &[("RAW_PLUGIN_REFUSE", &refuse_env)],
    );
    let lines = || std::fs::read_to_string(&record).unwrap_or_default();
    gw.send_plain(TOKEN, "gate", "slow");
    assert!(wait_until(WAIT, || lines().contains(" slow")));
    std::fs::write(&refuse, "").expect("refuse marker");
    let ids = ["x-1", "a-1", "a-2", "a-3"];
    for id in ids {
        gw.send_plain(TOKEN, id, if id == "x-1" { "crash_exit" } else { "ok" });
    }
    let ended = || {
        ids.iter()
            .all(|id| gw.delivery(id, "native")["state"] == "dead")
    };
    assert!(wait_until(WAIT, ended), "{}", gw.log());
    let refused = lines().matches("init_refused").count();
    assert_eq!(
        refused,
        1,
        "starts tried in the call: {}\n{}",
        lines(),
        gw.log()
    );
}
