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

/// A stop (SIGTERM) retires every plugin process while its calls still run: a call hung in one
/// is still killed at `[delivery] timeout`, its attempt recorded as a retry, and the stop ends
/// then, not when `shutdown_grace` runs out (the timeout once logged "killing the plugin
/// process" and killed nothing: the stop waited the whole grace, then killed the process, and
/// the next start counted the delivery as crashed: "the gateway died during this call").
#[test]
fn a_hung_call_is_killed_at_the_timeout_during_a_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        "timeout = \"1s\"",
        &format!(
            "library = \"{}\"\nconfig = {{ mode = \"slow\", sleep_ms = 60000 }}",
            binaries().testkit.display()
        ),
    )
    .replace("shutdown_grace = \"5s\"", "shutdown_grace = \"30s\"");
    let mut gw = TestGateway::spawn(dir.path(), &cfg);
    send(&gw, "hang-stop-1", "test.hang");
    gw.wait_running("hang-stop-1", "native");
    let stopped = Instant::now();
    gw.signal("TERM");
    let status = gw.wait(Duration::from_secs(60)).expect("the gateway exits");
    assert!(status.success(), "{status:?}\n{}", gw.log());
    assert!(
        stopped.elapsed() < Duration::from_secs(15),
        "the stop waited {:?} (shutdown_grace 30s) for a call past its 1s timeout\n{}",
        stopped.elapsed(),
        gw.log()
    );
    assert!(!gw.log().contains("after the grace period"), "{}", gw.log());
    // The next start finds the timed-out attempt recorded, and no crash to count.
    let gw = TestGateway::spawn(dir.path(), &cfg);
    let d = delivery(&gw, "hang-stop-1", "native");
    assert_eq!(d["crashes"], 0, "{d}\n{}", gw.log());
    assert!(
        !gw.log().contains("the gateway died during plugin calls"),
        "{}",
        gw.log()
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
        !out.contains("warning: plugin kit (") && !out.contains("kit was not built"),
        "the SDK build unwinds: {out}"
    );
    assert!(
        out.contains("; panic=unwind]"),
        "the SDK tag says how it was built: {out}"
    );
    std::fs::write(&path, cfg("process")).expect("write");
    let (code, out, _) = gateway_e2e::harness::run_cli(&path, &["check"]);
    assert_eq!(code, 0);
    // (Both are in no route: that is warned about, not their crashes.)
    assert!(!out.contains("was not built by the Rust SDK"), "{out}");
    assert!(
        out.contains("warning: plugin native is in no route"),
        "{out}"
    );
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

/// A gateway started by hand, its stdout and stderr kept apart: the harness merges them.
struct SplitGateway {
    child: std::process::Child,
    url: String,
    admin: String,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    stdout: std::sync::Arc<std::sync::Mutex<String>>,
}

impl SplitGateway {
    fn spawn(config_path: &Path) -> SplitGateway {
        use std::io::BufRead;
        use std::sync::{Arc, Mutex};
        let mut child = std::process::Command::new(&binaries().gateway)
            .arg("--config")
            .arg(config_path)
            .arg("run")
            .env("RUST_LOG", "info,gateway=debug")
            .env_remove("GATEWAY_CONFIG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start gateway");
        let stderr = Arc::new(Mutex::new(String::new()));
        let stdout = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let streams: [(Box<dyn std::io::Read + Send>, _, _); 2] = [
            (
                Box::new(child.stderr.take().expect("stderr")),
                stderr.clone(),
                Some(tx),
            ),
            (
                Box::new(child.stdout.take().expect("stdout")),
                stdout.clone(),
                None,
            ),
        ];
        for (stream, text, tx) in streams {
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stream)
                    .lines()
                    .map_while(Result::ok)
                {
                    if let Ok(mut t) = text.lock() {
                        t.push_str(&line);
                        t.push('\n');
                    }
                    if let Some(tx) = &tx {
                        let _ = tx.send(line);
                    }
                }
            });
        }
        let addr = |line: &str, marker: &str| {
            line.find(marker).map(|at| {
                line[at + marker.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | ':'))
                    .collect::<String>()
            })
        };
        let (mut url, mut admin) = (None, None);
        while url.is_none() || admin.is_none() {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("the gateway did not start ({e}):\n{stderr:?}"));
            if let Some(a) = addr(&line, "admin listening on http://") {
                admin = Some(format!("http://{a}"));
            }
            if let Some(a) = addr(&line, "gateway listening on http://") {
                url = Some(format!("http://{a}"));
            }
        }
        SplitGateway {
            child,
            url: url.unwrap_or_default(),
            admin: admin.unwrap_or_default(),
            stderr,
            stdout,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn stdout(&self) -> String {
        self.stdout.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for SplitGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An isolated plugin that prints to its stdout (testkit's `print`; any `printf` or `println!`,
/// and the shipped logger with `stdout = true` before it refused that when isolated) once
/// corrupted the frames its child sends on the same stream, and the gateway stalled behind the
/// broken child. Plugin output now goes to the gateway's stderr, the protocol is untouched, and
/// the gateway keeps answering.
#[test]
fn an_isolated_plugin_writing_to_stdout_neither_breaks_the_protocol_nor_stalls_the_gateway() {
    use gateway_e2e::harness::{run_cli, Lark};
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        "max_attempts = 5\ntimeout = \"2s\"",
        &format!(
            "library = \"{}\"\nconfig = {{ print = true }}",
            binaries().testkit.display()
        ),
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, cfg).expect("write gateway.toml");
    let gw = SplitGateway::spawn(&path);
    let lark = Lark::plain(TOKEN);
    let ids: Vec<String> = (0..5).map(|i| format!("out-{i}")).collect();
    for id in &ids {
        let a = lark.send(
            &format!("{}/hook", gw.url),
            &lark.event_v2(id, "test.out", serde_json::json!({ "n": id })),
        );
        assert_eq!(a.status, 200, "{id}: {}", a.body);
    }
    let state = |id: &str| {
        let (code, out, err) = run_cli(&path, &["events", "show", id]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("events show prints JSON");
        v["deliveries"]
            .as_array()
            .and_then(|ds| ds.iter().find(|d| d["plugin"] == "native").cloned())
            .unwrap_or_default()
    };
    let healthy = || {
        let asked = Instant::now();
        let ok = get(&format!("{}/healthz", gw.admin)).is_ok_and(|a| a.status == 200);
        ok && asked.elapsed() < Duration::from_secs(5)
    };
    for id in &ids {
        let done = wait_until(Duration::from_secs(30), || {
            assert!(healthy(), "/healthz stopped answering:\n{}", gw.stderr());
            state(id)["state"] == "done"
        });
        assert!(done, "{id}: {}\n{}", state(id), gw.stderr());
    }
    assert!(healthy(), "{}", gw.stderr());
    let log = gw.stderr();
    for id in &ids {
        assert!(
            log.contains(&format!("\"event_id\":\"{id}\"")),
            "the plugin's output for {id} is on the gateway's stderr:\n{log}"
        );
        assert!(!gw.stdout().contains(id.as_str()), "{}", gw.stdout());
    }
    for wrong in [
        "bad frame",
        "plugin process died",
        "killing the plugin process",
    ] {
        assert!(!log.contains(wrong), "{wrong}:\n{log}");
    }
}

#[path = "isolation/restart.rs"]
mod restart;

#[path = "isolation/gateway_gone.rs"]
mod gateway_gone;

#[path = "isolation/privileges.rs"]
mod privileges;

#[path = "isolation/logger_config.rs"]
mod logger_config;

#[path = "isolation/lifetimes.rs"]
mod lifetimes;
