//! Starting and stopping: SIGTERM during a burst (readiness flips, exit 0, everything
//! acknowledged delivered after a restart) and with a hung plugin (no waiting; the delivery
//! resumes), `check` reporting plugin problems that make `run` refuse to start, and a second
//! gateway refused on a store another one holds. Part of `operations.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway_e2e::harness::{
    self, base_config, binaries, get, metric, run_cli, wait_until, Lark, TestGateway,
};

use super::helpers::{app, recorded, route, send, sink_config, testkit, TOKEN};

#[test]
fn sigterm_during_a_burst_exits_0_and_restart_delivers_everything_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        "{}{}{}{}",
        base_config(),
        app(),
        testkit(
            "worker",
            "mode = \"slow\", sleep_ms = 5, record = \"data/worker.jsonl\""
        ),
        route("\"t.burst\"", "\"worker\""),
    ) + &testkit(
        "anchor",
        "mode = \"slow\", sleep_ms = 1500, record = \"data/anchor.jsonl\"",
    ) + &route("\"t.anchor\"", "\"anchor\"");
    let mut gw = TestGateway::spawn(dir.path(), &cfg);
    let url = gw.url("/hook");
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..8)
        .map(|_| {
            let (acked, next, url) = (acked.clone(), next.clone(), url.clone());
            std::thread::spawn(move || {
                let lark = Lark::plain(TOKEN);
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= 500 {
                        break;
                    }
                    let id = format!("burst-{i:03}");
                    let (body, headers) =
                        lark.wrap(&lark.event_v2(&id, "t.burst", serde_json::json!({})));
                    if let Ok(a) = harness::post(&url, &headers, &body) {
                        if a.status == 200 {
                            acked.lock().expect("lock").insert(id);
                        }
                    }
                }
            })
        })
        .collect();
    assert!(wait_until(Duration::from_secs(30), || acked
        .lock()
        .map(|a| a.len())
        .unwrap_or(0)
        >= 100));
    // A 1.5 s call in flight keeps the gateway draining long enough to watch readiness flip.
    assert_eq!(send(&gw, "anchor-1", "t.anchor"), 200);
    // Running before the signal: no call starts once a stop began.
    gw.wait_running("anchor-1", "anchor");
    assert_eq!(get(&gw.admin_url("/readyz")).expect("readyz").status, 200);
    gw.signal("TERM");
    let flipped = wait_until(Duration::from_secs(5), || {
        get(&gw.admin_url("/readyz")).is_ok_and(|r| r.status == 503)
    });
    let status = gw.wait(Duration::from_secs(20)).expect("exited");
    for s in senders {
        s.join().expect("sender");
    }
    assert!(status.success(), "exit status {status:?}\n{}", gw.log());
    assert!(flipped, "/readyz did not turn 503 during shutdown");
    // The in-flight call finished within the grace period and was recorded; then the plugin
    // instance was shut down.
    let anchor: Vec<String> = recorded(&gw, "anchor.jsonl")
        .iter()
        .map(|l| l["outcome"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(anchor, ["ok", "shutdown"]);
    let acked = acked.lock().expect("lock").clone();

    // Restart: everything acknowledged is delivered, without Lark re-sending anything.
    let gw = TestGateway::spawn(dir.path(), &cfg);
    assert!(
        wait_until(Duration::from_secs(30), || {
            let done: HashSet<String> = recorded(&gw, "worker.jsonl")
                .iter()
                .filter(|l| l["outcome"] == "ok")
                .filter_map(|l| l["event_id"].as_str().map(str::to_owned))
                .collect();
            acked.is_subset(&done)
        }),
        "acknowledged events missing after restart"
    );
    let mut calls: HashMap<String, usize> = HashMap::new();
    for l in recorded(&gw, "worker.jsonl") {
        if let Some(id) = l["event_id"].as_str() {
            *calls.entry(id.to_owned()).or_default() += 1;
        }
    }
    // A graceful stop finishes or abandons calls cleanly: every call is recorded once.
    let repeated: Vec<_> = calls.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "repeated calls after a graceful stop: {repeated:?}"
    );
    let metrics = get(&gw.admin_url("/metrics")).expect("metrics").body;
    assert!(
        wait_until(Duration::from_secs(5), || {
            metric(
                &get(&gw.admin_url("/metrics")).expect("m").body,
                "gateway_pending_deliveries",
            ) == 0.0
        }),
        "{metrics}"
    );
}

#[test]
fn sigterm_does_not_wait_for_a_hung_plugin_and_the_delivery_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = format!(
        "{}{}",
        base_config().replace("shutdown_grace = \"5s\"", "shutdown_grace = \"300ms\""),
        app()
    );
    let hung = format!(
        "{base}{}{}",
        testkit(
            "stuck",
            "mode = \"slow\", sleep_ms = 60000, record = \"data/stuck.jsonl\""
        ),
        route("\"t.h\"", "\"stuck\""),
    );
    let mut gw = TestGateway::spawn(dir.path(), &hung);
    assert_eq!(send(&gw, "hung-1", "t.h"), 200);
    gw.wait_running("hung-1", "stuck");
    let started = std::time::Instant::now();
    gw.signal("TERM");
    let status = gw
        .wait(Duration::from_secs(10))
        .expect("exited despite the hung call");
    assert!(status.success(), "{status:?}\n{}", gw.log());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        wait_until(Duration::from_secs(5), || gw
            .log()
            .contains("their deliveries stay pending")),
        "{}",
        gw.log()
    );

    // Restarted with the plugin fixed, the acknowledged delivery is made.
    let fixed = hung.replace("mode = \"slow\", sleep_ms = 60000, ", "");
    let gw = TestGateway::spawn(dir.path(), &fixed);
    assert!(wait_until(Duration::from_secs(10), || {
        recorded(&gw, "stuck.jsonl")
            .iter()
            .any(|l| l["event_id"] == "hung-1")
    }));
}

#[test]
fn check_reports_plugin_problems_and_run_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = dir.path().join("libfake.so");
    std::fs::write(&fake, "not a library").expect("write");
    let cfg = format!(
        "{}{}\n[[plugins]]\nname = \"fake\"\nlibrary = \"libfake.so\"\n\n[[plugins]]\nname = \"gone\"\nlibrary = \"missing/libgone.so\"\n{}",
        base_config(),
        app(),
        route("\"t.x\"", "\"fake\", \"gone\""),
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, &cfg).expect("write");
    let (code, out, err) = harness::run_cli(&path, &["check"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains("plugins[0] (fake)"), "{err}");
    assert!(err.contains(&fake.display().to_string()), "{err}");
    assert!(
        err.contains("plugins[1] (gone)") && err.contains("does not exist"),
        "{err}"
    );
    let run = std::process::Command::new(&binaries().gateway)
        .arg("--config")
        .arg(&path)
        .arg("run")
        .output()
        .expect("run");
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("plugins failed to start"));

    // A good config passes and prints the route table.
    let good = format!(
        "{}{}{}{}",
        base_config(),
        app(),
        testkit("ok", ""),
        route("\"t.*\"", "\"ok\"")
    );
    std::fs::write(&path, good).expect("write");
    let (code, out, err) = harness::run_cli(&path, &["check"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("plugin ok") && out.contains("testkit"),
        "{out}"
    );
    assert!(out.contains("t.* (any app) -> ok"), "{out}");
}

#[test]
fn a_second_gateway_on_the_same_store_refuses_to_start_and_check_names_the_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &sink_config());
    // The same config again (its listeners would take other ports): the store is taken.
    let mut second = std::process::Command::new(&binaries().gateway)
        .arg("--config")
        .arg(dir.path().join("gateway.toml"))
        .arg("run")
        .env_remove("GATEWAY_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start a second gateway");
    let exited = wait_until(Duration::from_secs(20), || {
        matches!(second.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = second.kill();
        panic!("a second gateway started on the same store");
    }
    let out = second.wait_with_output().expect("its output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("in use by another running gateway"), "{err}");
    // The operator commands still open it, and the first gateway goes on serving.
    let (code, out, err) = gw.cli(&["store", "check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(send(&gw, "after-refusal", "t.s"), 200);
    drop(gw);
    // A lock path that cannot be opened as a file is a `check` error, with its location.
    let lock = dir.path().join("data/gateway.db.lock");
    std::fs::remove_file(&lock).expect("the lock file stays behind, unlocked");
    std::fs::create_dir(&lock).expect("a folder in its place");
    let (code, out, err) = run_cli(&dir.path().join("gateway.toml"), &["check"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("store.path:") && err.contains("gateway.db.lock"),
        "{err}"
    );
    // So is a folder of id runs that is a file.
    std::fs::remove_dir(&lock).expect("remove the folder");
    let runs = dir.path().join("data/gateway.db.ids");
    std::fs::remove_dir_all(&runs).expect("the runs folder the gateway made");
    std::fs::write(&runs, b"not a folder").expect("a file in its place");
    let (code, out, err) = run_cli(&dir.path().join("gateway.toml"), &["check"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("store.path:") && err.contains("gateway.db.ids is not a folder"),
        "{err}"
    );
}

/// A start that cannot bind its admin port fails (exit 1, naming the address) before its
/// delivery engine starts: no plugin call is made, so none is cut off by the exit and no start
/// mark is left for the next start to count as a crash. (The engine used to start first, with
/// its sweeper calling the backlog while the ports were still being bound.)
#[test]
fn a_start_that_cannot_bind_its_admin_port_fails_before_any_plugin_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        "{}{}{}{}",
        base_config(),
        app(),
        testkit(
            "kit",
            "mode = \"retry_always\", record = \"data/kit.jsonl\""
        ),
        route("\"t.s\"", "\"kit\""),
    )
    .replace("initial_backoff = \"50ms\"", "initial_backoff = \"1s\"")
    .replace("max_backoff = \"100ms\"", "max_backoff = \"1s\"")
    .replace("max_attempts = 3", "max_attempts = 100");
    let mut gw = TestGateway::spawn(dir.path(), &cfg);
    for n in 0..20 {
        assert_eq!(send(&gw, &format!("backlog-{n}"), "t.s"), 200);
    }
    assert!(wait_until(Duration::from_secs(20), || recorded(
        &gw,
        "kit.jsonl"
    )
    .len()
        >= 20));
    gw.signal("TERM");
    assert!(gw.wait(Duration::from_secs(20)).is_some(), "{}", gw.log());
    let calls = || {
        recorded(&gw, "kit.jsonl")
            .iter()
            .filter(|r| r["outcome"] != "shutdown")
            .count()
    };
    let before = calls();
    // Their retries are due by the next start, whose admin port is taken.
    std::thread::sleep(Duration::from_millis(1_200));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = taken.local_addr().expect("addr").port();
    let blocked = cfg.replacen(
        "[admin]\nlisten = \"127.0.0.1:0\"",
        &format!("[admin]\nlisten = \"127.0.0.1:{port}\""),
        1,
    );
    let log =
        TestGateway::try_spawn(dir.path(), &blocked).expect_err("a start on a taken port fails");
    assert!(
        log.contains(&format!("binding admin listener 127.0.0.1:{port}")),
        "{log}"
    );
    assert_eq!(calls(), before, "the failed start called the plugin");
    drop(taken);
    let gw = TestGateway::spawn(dir.path(), &cfg);
    for n in 0..20 {
        let d = gw.delivery(&format!("backlog-{n}"), "kit");
        assert_eq!(d["crashes"], 0, "backlog-{n}: {d}");
    }
}

/// A stop shuts in-process plugin instances down within its grace, before the store closes and
/// "stopped" is logged (a `shutdown` that flushes or commits takes time: 1.5 s here). The
/// admin listener's state kept the instances alive past the stop, to the runtime's teardown.
#[test]
fn a_stop_runs_in_process_instances_shutdown_before_it_says_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        "{}{}{}{}",
        base_config(),
        app(),
        testkit(
            "kit",
            "record = \"data/kit.jsonl\", shutdown_sleep_ms = 1500"
        ),
        route("\"t.s\"", "\"kit\""),
    );
    let mut gw = TestGateway::spawn(dir.path(), &cfg);
    assert_eq!(send(&gw, "one", "t.s"), 200);
    assert!(wait_until(Duration::from_secs(10), || !recorded(
        &gw,
        "kit.jsonl"
    )
    .is_empty()));
    gw.signal("TERM");
    let status = gw.wait(Duration::from_secs(20)).expect("exited");
    assert!(status.success(), "{}", gw.log());
    let shut = recorded(&gw, "kit.jsonl")
        .iter()
        .filter(|r| r["outcome"] == "shutdown")
        .count();
    assert_eq!(shut, 1, "{}", gw.log());
    let log = gw.log();
    let (done, stopped) = (log.find("plugin instances shut down"), log.find("stopped"));
    assert!(
        matches!((done, stopped), (Some(d), Some(s)) if d < s),
        "{log}"
    );
}

/// Runs `gateway run` on `cfg` in `dir` without waiting for it to be ready; its log (stderr)
/// goes to `dir/run.log`.
fn start_unwaited(dir: &std::path::Path, cfg: &str) -> std::process::Child {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, cfg).expect("write gateway.toml");
    let log = std::fs::File::create(dir.join("run.log")).expect("log file");
    std::process::Command::new(&binaries().gateway)
        .arg("--config")
        .arg(&path)
        .arg("run")
        .env("RUST_LOG", "info,gateway=debug")
        .env_remove("GATEWAY_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start gateway")
}

fn kill(child: &std::process::Child, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal}");
}

/// Waits up to `timeout` for `child` to exit; its exit code.
fn exited_within(child: &mut std::process::Child, timeout: Duration) -> Option<i32> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status.code().unwrap_or(-1));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// While a plugin's `init` takes 20 s: a second SIGTERM ends the gateway at once (exit 1,
/// said in the log); a single one waits for the start-up, then stops as a stop does (exit 0,
/// nothing served in between).
#[test]
fn a_second_signal_during_start_up_exits_at_once() {
    let cfg = |init_ms: u64| {
        format!(
            "{}{}{}{}",
            base_config(),
            app(),
            testkit("slow", &format!("init_sleep_ms = {init_ms}")),
            route("\"t.a\"", "\"slow\"")
        )
    };
    let started = |dir: &std::path::Path| {
        wait_until(Duration::from_secs(15), || {
            std::fs::read_to_string(dir.join("run.log"))
                .is_ok_and(|l| l.contains("event id index loaded"))
        })
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = start_unwaited(dir.path(), &cfg(20_000));
    assert!(started(dir.path()));
    std::thread::sleep(Duration::from_millis(500));
    kill(&gw, "TERM");
    std::thread::sleep(Duration::from_millis(300));
    kill(&gw, "TERM");
    let code = exited_within(&mut gw, Duration::from_secs(5));
    let log = std::fs::read_to_string(dir.path().join("run.log")).unwrap_or_default();
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("second signal during start-up: exiting now"),
        "{log}"
    );

    // One signal: the start-up (here 2 s of `init`) ends, then the gateway stops at once.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = start_unwaited(dir.path(), &cfg(2_000));
    assert!(started(dir.path()));
    kill(&gw, "TERM");
    let code = exited_within(&mut gw, Duration::from_secs(15));
    let log = std::fs::read_to_string(dir.path().join("run.log")).unwrap_or_default();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("stopping as soon as the start-up ends"),
        "{log}"
    );
}
