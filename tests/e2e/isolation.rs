//! `isolation = "process"`: a plugin instance in a child process. Native code that segfaults,
//! aborts, exits or hangs ends only its child: the gateway keeps answering, the poison delivery
//! is retried and then dead-lettered, everything else is delivered, a hung call is killed at the
//! timeout, and a gateway killed with `kill -9` leaves no child behind.

use std::path::Path;
use std::time::{Duration, Instant};

use gateway_e2e::harness::{
    base_config, binaries, get, metric, read_jsonl, wait_until, TestGateway,
};
use gateway_e2e::raw_fixtures;

const TOKEN: &str = "tok";
const WAIT: Duration = Duration::from_secs(60);

fn config(delivery: &str, native: &str) -> String {
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
name = "native"
{native}
isolation = "process"

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

fn send(gw: &TestGateway, id: &str, event_type: &str) {
    gw.send_plain(TOKEN, id, event_type);
}

fn delivery(gw: &TestGateway, event_id: &str, plugin: &str) -> serde_json::Value {
    gw.delivery(event_id, plugin)
}

/// The pids whose parent is `parent`.
fn children(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": the comm may hold spaces; split after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn native_crashes_end_only_the_plugin_process_and_the_poison_delivery() {
    let raw = raw_fixtures(Path::new(env!("CARGO_TARGET_TMPDIR"))).legacy;
    let dir = tempfile::tempdir().expect("tempdir");
    // One call at a time, so each poison dies of its own crash.
    let cfg = config(
        "max_attempts = 3",
        &format!("library = \"{}\"\nmax_concurrency = 1", raw.display()),
    );
    let mut gw = TestGateway::spawn(dir.path(), &cfg);
    let crashes = [
        ("p-segv", "crash_segv"),
        ("p-abort", "crash_abort"),
        ("p-exit", "crash_exit"),
    ];
    send(&gw, "ok-a", "ok");
    for (id, crash) in crashes {
        send(&gw, id, crash);
    }
    send(&gw, "ok-b", "ok");
    for (id, _) in crashes {
        assert!(
            wait_until(WAIT, || delivery(&gw, id, "native")["state"] == "dead"),
            "{id}: {}",
            delivery(&gw, id, "native")
        );
    }
    let reasons: Vec<String> = crashes
        .iter()
        .map(|(id, _)| {
            delivery(&gw, id, "native")["last_error"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert!(
        reasons[0].contains("killed by signal 11 (SIGSEGV)"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("killed by signal 6 (SIGABRT)"),
        "{reasons:?}"
    );
    // exit(3) from a call thread runs the process's exit handlers while other threads still
    // run; the C runtime may turn that into an abort. Either way the child ended, alone.
    assert!(
        reasons[2].contains("exited with code 3") || reasons[2].contains("SIGABRT"),
        "{reasons:?}"
    );
    for id in ["ok-a", "ok-b"] {
        assert!(
            wait_until(WAIT, || delivery(&gw, id, "native")["state"] == "done"),
            "{id}"
        );
    }
    // The gateway never went down: it still answers, and the other plugin got every event.
    assert!(
        gw.wait(Duration::from_millis(10)).is_none(),
        "the gateway died"
    );
    send(&gw, "ok-c", "ok");
    assert!(wait_until(WAIT, || delivery(&gw, "ok-c", "native")
        ["state"]
        == "done"));
    let audit = read_jsonl(&dir.path().join("data/audit.jsonl"));
    assert!(audit.len() >= 6, "{audit:?}");
    let m = get(&gw.admin_url("/metrics")).expect("metrics").body;
    let segv = metric(
        &m,
        r#"gateway_plugin_process_exits_total{plugin="native",reason="killed by signal 11 (SIGSEGV)"}"#,
    );
    assert!(segv >= 3.0, "one death per attempt: {segv}\n{m}");
}

#[test]
fn a_hung_call_is_killed_at_the_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        "max_attempts = 2\ntimeout = \"500ms\"",
        &format!(
            "library = \"{}\"\nconfig = {{ mode = \"slow\", sleep_ms = 30000, record = \"data/hung.jsonl\" }}",
            binaries().testkit.display()
        ),
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    let sent = Instant::now();
    send(&gw, "hung-1", "test.hung");
    assert!(
        wait_until(WAIT, || delivery(&gw, "hung-1", "native")["state"]
            == "dead"),
        "{}",
        delivery(&gw, "hung-1", "native")
    );
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "not killed at the timeout: {:?}",
        sent.elapsed()
    );
    let d = delivery(&gw, "hung-1", "native");
    assert_eq!(d["attempts"], 2, "{d}");
    assert!(
        gw.log().contains("killing the plugin process"),
        "{}",
        gw.log()
    );
}

#[test]
fn kill_9_of_the_gateway_leaves_no_plugin_process_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        "timeout = \"60s\"",
        &format!(
            "library = \"{}\"\nconfig = {{ mode = \"slow\", sleep_ms = 30000 }}",
            binaries().testkit.display()
        ),
    );
    let mut gw = TestGateway::spawn(dir.path(), &cfg);
    let kids = children(gw.pid());
    assert_eq!(kids.len(), 1, "one plugin process: {kids:?}");
    // A call hangs in the child when the gateway dies.
    send(&gw, "hang-1", "test.hang");
    std::thread::sleep(Duration::from_millis(300));
    gw.kill9();
    let child = kids[0];
    assert!(
        wait_until(Duration::from_secs(10), || !Path::new(&format!(
            "/proc/{child}"
        ))
        .exists()
            || std::fs::read_to_string(format!("/proc/{child}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)),
        "plugin process {child} outlived the gateway"
    );
}

#[test]
fn check_warns_about_a_library_whose_crashes_are_not_contained_unless_isolated() {
    let raw = raw_fixtures(Path::new(env!("CARGO_TARGET_TMPDIR"))).legacy;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    let cfg = |isolation: &str| {
        format!(
            "{}\n[[apps]]\nname = \"hire\"\npath = \"/hook\"\n\n[[plugins]]\nname = \"native\"\nlibrary = \"{}\"\nisolation = \"{isolation}\"\n\n[[plugins]]\nname = \"kit\"\nlibrary = \"{}\"\n",
            base_config(),
            raw.display(),
            binaries().testkit.display()
        )
    };
    std::fs::write(&path, cfg("none")).expect("write");
    let (code, out, err) = gateway_e2e::harness::run_cli(&path, &["check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("warning: plugin native") && out.contains("isolation = \"process\""),
        "{out}"
    );
    assert!(
        !out.contains("warning: plugin kit"),
        "the SDK build unwinds: {out}"
    );
    assert!(
        out.contains("; panic=unwind]"),
        "the SDK tag says how it was built: {out}"
    );
    std::fs::write(&path, cfg("process")).expect("write");
    let (code, out, _) = gateway_e2e::harness::run_cli(&path, &["check"]);
    assert_eq!(code, 0);
    assert!(!out.contains("warning:"), "{out}");
    std::fs::write(&path, cfg("sandbox")).expect("write");
    let (code, _, err) = gateway_e2e::harness::run_cli(&path, &["check"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("plugins[0].isolation: \"sandbox\" is neither"),
        "{err}"
    );
}

#[test]
fn a_c_plugin_that_crashes_every_way_native_code_can_ends_only_its_process() {
    let c = gateway_e2e::c_fixture(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        "max_attempts = 3\ntimeout = \"3s\"",
        &format!("library = \"{}\"\nmax_concurrency = 1", c.display()),
    );
    let mut gw = TestGateway::spawn(dir.path(), &cfg);
    let crashes = [
        ("c-segv", "crash_segv", "plugin process died"),
        ("c-abort", "crash_abort", "plugin process died"),
        ("c-exit", "crash_exit", "plugin process died"),
        ("c-stack", "crash_stack", "plugin process died"),
        ("c-loop", "crash_loop", "timed out after 3000ms"),
    ];
    send(&gw, "c-ok-1", "ok");
    for (id, crash, _) in crashes {
        send(&gw, id, crash);
    }
    send(&gw, "c-ok-2", "ok");
    for (id, _, reason) in crashes {
        assert!(
            wait_until(WAIT, || delivery(&gw, id, "native")["state"] == "dead"),
            "{id}: {}",
            delivery(&gw, id, "native")
        );
        let error = delivery(&gw, id, "native")["last_error"].clone();
        assert!(
            error.as_str().is_some_and(|e| e.contains(reason)),
            "{id}: {error}\n{}",
            gw.log()
        );
    }
    for id in ["c-ok-1", "c-ok-2"] {
        assert!(
            wait_until(WAIT, || delivery(&gw, id, "native")["state"] == "done"),
            "{id}"
        );
    }
    assert!(
        gw.wait(Duration::from_millis(10)).is_none(),
        "the gateway died"
    );
}

#[test]
fn a_rust_plugin_built_with_panic_abort_is_contained_when_isolated_and_flagged_by_check() {
    let kit = gateway_e2e::testkit_panic_abort();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        "max_attempts = 2",
        &format!(
            "library = \"{}\"\nconfig = {{ mode = \"panic_handle\", only_event_types = [\"test.boom\"] }}",
            kit.display()
        ),
    );
    let mut gw = TestGateway::spawn(dir.path(), &cfg);
    send(&gw, "boom-1", "test.boom");
    send(&gw, "calm-1", "test.calm");
    assert!(wait_until(WAIT, || delivery(&gw, "boom-1", "native")
        ["state"]
        == "dead"));
    let error = delivery(&gw, "boom-1", "native")["last_error"].clone();
    assert!(
        error.as_str().is_some_and(|e| e.contains("SIGABRT")),
        "a panic under panic = \"abort\" aborts the child: {error}"
    );
    assert!(wait_until(WAIT, || delivery(&gw, "calm-1", "native")
        ["state"]
        == "done"));
    assert!(
        gw.wait(Duration::from_millis(10)).is_none(),
        "the gateway died"
    );
    // Not isolated, `check` warns about it.
    let (code, out, err) = gw.cli(&["check"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("warning: plugin native"), "isolated: {out}");
    std::fs::write(
        dir.path().join("gateway.toml"),
        cfg.replace("isolation = \"process\"", "isolation = \"none\""),
    )
    .expect("write");
    let (code, out, _) = gw.cli(&["check"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("warning: plugin native") && out.contains("panic=abort"),
        "{out}"
    );
}
