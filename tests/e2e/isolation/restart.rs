//! Restarts of an isolated plugin's process whose `init` is slow or hangs: a call's timeout
//! never waits for the start, and never cuts a start short either, so a restart slower than
//! `[delivery] timeout` still completes and serves the calls after it.

use std::path::Path;
use std::time::{Duration, Instant};

use gateway_e2e::harness::{children, get, kill_the_plugin_process, wait_until, TestGateway};

use super::{config, delivery, send, WAIT};

/// `raw-plugins/slow_restart.rs` compiled once per process into
/// `<CARGO_TARGET_TMPDIR>/raw-plugins/` (named after a hash of its source, so a library another
/// process may have loaded is never overwritten).
fn slow_restart_fixture() -> std::path::PathBuf {
    use std::sync::OnceLock;
    static BUILT: OnceLock<Result<std::path::PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR"));
        gateway_e2e::compile_raw_plugin(out, "slow_restart.rs", "slow_restart", None)
    });
    match built {
        Ok(lib) => lib.clone(),
        Err(e) => panic!("compiling raw-plugins/slow_restart.rs failed: {e}"),
    }
}

/// A call that times out while its plugin process is being restarted (the crashed child's
/// successor hangs in `init`): killing it once waited, on an async worker, for the start to
/// finish (up to a minute), and with one worker the gateway stopped answering. The kill never
/// waits (and runs off the async workers): the attempt is a retry, the next attempts wait for
/// the same start within their own timeout, the gateway keeps answering and the other plugin
/// keeps delivering; a stop kills the child still starting and does not wait for it.
#[test]
fn a_timeout_during_a_hung_restart_does_not_stall_the_gateway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        "max_attempts = 3\ntimeout = \"500ms\"",
        &format!(
            "library = \"{}\"\nmax_concurrency = 1",
            slow_restart_fixture().display()
        ),
    )
    .replace("[server]\n", "[server]\nworkers = 1\n");
    let mut gw = TestGateway::spawn(dir.path(), &cfg);
    // The first start went through; every restart from now on hangs in `init`.
    std::fs::write(dir.path().join("slow-init"), "").expect("write slow-init");
    let sent = Instant::now();
    send(&gw, "die-1", "crash_exit");
    let healthy = || {
        let asked = Instant::now();
        let ok = get(&gw.admin_url("/healthz")).is_ok_and(|a| a.status == 200);
        ok && asked.elapsed() < Duration::from_secs(5)
    };
    let dead = wait_until(Duration::from_secs(30), || {
        assert!(healthy(), "/healthz stopped answering:\n{}", gw.log());
        delivery(&gw, "die-1", "native")["state"] == "dead"
    });
    assert!(dead, "{}\n{}", delivery(&gw, "die-1", "native"), gw.log());
    assert!(
        sent.elapsed() < Duration::from_secs(20),
        "the hung starts were killed at the timeout: {:?}",
        sent.elapsed()
    );
    // One restart for all three attempts (the hung one is still in `init`).
    let starts = gw.log().matches("plugin process started").count();
    assert_eq!(starts, 1, "{}", gw.log());
    send(&gw, "ok-1", "ok");
    assert!(
        wait_until(WAIT, || delivery(&gw, "ok-1", "audit")["state"] == "done"),
        "{}\n{}",
        delivery(&gw, "ok-1", "audit"),
        gw.log()
    );
    assert!(healthy());
    let kids = children(gw.pid());
    assert_eq!(kids.len(), 1, "the child in `init`: {kids:?}");
    let stopping = Instant::now();
    gw.signal("TERM");
    let status = gw.wait(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        gw.log()
    );
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "{:?}",
        stopping.elapsed()
    );
    let gone = wait_until(Duration::from_secs(5), || {
        !Path::new(&format!("/proc/{}", kids[0])).exists()
            || std::fs::read_to_string(format!("/proc/{}/stat", kids[0]))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)
    });
    assert!(gone, "the child still starting outlived the gateway");
}

/// A restart slower than `[delivery] timeout` (2.5 s against 1.5 s) completes: the call that
/// times out while it runs is a retry, and the next attempt runs in the new process. A call's
/// timeout killed the process being started, so each attempt started one more and killed it:
/// the plugin stayed down until a reload, every delivery a dead letter.
#[test]
fn a_restart_slower_than_the_timeout_completes_and_serves_the_next_attempt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        "max_attempts = 6\ntimeout = \"1500ms\"",
        &format!(
            "library = \"{}\"\nmax_concurrency = 1",
            slow_restart_fixture().display()
        ),
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    // Every start from now on takes 2.5 s; the running process is killed from outside.
    std::fs::write(dir.path().join("slow-init"), "2500").expect("write slow-init");
    kill_the_plugin_process(&gw);
    // A death with no call running is logged too, with its signal (README: "the death is
    // logged"; it was only counted).
    assert!(
        wait_until(WAIT, || gw.log().lines().any(|l| l
            .contains("plugin process died while no call was running")
            && l.contains("SIGKILL"))),
        "{}",
        gw.log()
    );
    send(&gw, "after-1", "ok");
    let done = wait_until(WAIT, || {
        let d = delivery(&gw, "after-1", "native");
        d["state"] == "done" || d["state"] == "dead"
    });
    let d = delivery(&gw, "after-1", "native");
    assert!(done, "{d}\n{}", gw.log());
    assert_eq!(d["state"], "done", "{d}\n{}", gw.log());
    // The second attempt waited for the restart the first one launched.
    assert!(d["attempts"].as_u64().is_some_and(|n| n <= 3), "{d}");
    let log = gw.log();
    assert_eq!(
        log.matches("plugin process started").count(),
        2,
        "{d}\n{log}"
    );
}

/// A batch whose child died is run again one delivery at a time; a call's timeout during that
/// (here: while the restart hangs in `init`) ends the call, and the deliveries not yet run are
/// retries at once. Each waited for the hung restart in turn, holding the call (and the
/// plugin's only permit) for as long as the restart took.
#[test]
fn a_timeout_ends_a_batch_run_again_one_by_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        "max_attempts = 20\ntimeout = \"1500ms\"\nmax_batch = 4",
        &format!(
            "library = \"{}\"\nmax_concurrency = 1",
            slow_restart_fixture().display()
        ),
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    // The next start takes 1 s: p-0's call waits for it while the batch queues up behind it.
    let marker = dir.path().join("slow-init");
    std::fs::write(&marker, "1000").expect("write slow-init");
    kill_the_plugin_process(&gw);
    send(&gw, "p-0", "ok");
    assert!(
        wait_until(Duration::from_secs(5), || !children(gw.pid()).is_empty()),
        "no restart"
    );
    // Once that child has read the marker (a fixed sleep could end first on a loaded machine,
    // and then that start hung too), every start after it hangs (30 s).
    let seen = dir.path().join("slow-init.seen");
    assert!(
        wait_until(WAIT, || seen.exists()),
        "the restart never read slow-init\n{}",
        gw.log()
    );
    std::fs::write(&marker, "").expect("write slow-init");
    for id in ["a-1", "a-2", "a-3", "x-1"] {
        send(&gw, id, if id == "x-1" { "crash_exit" } else { "ok" });
    }
    assert!(
        wait_until(WAIT, || delivery(&gw, "p-0", "native")["state"] == "done"),
        "{}",
        gw.log()
    );
    // The batch a-1..x-1 dies at x-1 and is run again one by one: a-1 waits for the hung
    // restart until the timeout; the rest are retries then, not after the restart.
    let retried = wait_until(Duration::from_secs(15), || {
        ["a-2", "a-3"].iter().all(|id| {
            let d = delivery(&gw, id, "native");
            d["attempts"].as_u64().is_some_and(|n| n >= 2)
        })
    });
    let log = gw.log();
    assert!(log.contains("batch{plugin=native deliveries=4}"), "{log}");
    assert!(retried, "{}\n{log}", delivery(&gw, "a-3", "native"));
}

/// README: on any problem a reload changes nothing. A refused reload still gave the running
/// isolated instance the `init_timeout` it asked for (1 s here against the running 20 s), so
/// every later restart of the process, whose `init` takes 1.5 s, was killed at 1 s and its
/// deliveries burned their attempts (reload review finding).
#[test]
fn a_refused_reload_leaves_the_running_init_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let native = |timeout: &str| {
        format!(
            "library = \"{}\"\nconfig = {{ mode = \"ok\", modes = {{ \"test.panic\" = \"panic_handle\" }}, init_sleep_ms = 1500 }}\ninit_timeout = \"{timeout}\"",
            gateway_e2e::harness::binaries().testkit.display()
        )
    };
    let cfg = config("max_attempts = 2", &native("20s"));
    let gw = TestGateway::spawn(dir.path(), &cfg);
    let refused = format!(
        "{}\n[[plugins]]\nname = \"missing\"\nlibrary = \"/nonexistent/libmissing.so\"\n",
        config("max_attempts = 2", &native("1s"))
    );
    std::fs::write(dir.path().join("gateway.toml"), refused).expect("write");
    gw.signal("HUP");
    assert!(
        wait_until(WAIT, || gw.log().contains("reload refused")),
        "{}",
        gw.log()
    );
    std::fs::write(dir.path().join("gateway.toml"), &cfg).expect("write");
    // The panic retires the process; the next call starts one, whose `init` takes 1.5 s.
    send(&gw, "p-1", "test.panic");
    assert!(
        wait_until(WAIT, || delivery(&gw, "p-1", "native")["state"] == "dead"),
        "{}",
        delivery(&gw, "p-1", "native")
    );
    send(&gw, "ok-1", "test.ok");
    assert!(
        wait_until(WAIT, || delivery(&gw, "ok-1", "native")["state"] == "done"),
        "{}\n{}",
        delivery(&gw, "ok-1", "native"),
        gw.log()
    );
    assert!(
        !gw.log().contains("within init_timeout"),
        "a restart was held to the refused reload's init_timeout:\n{}",
        gw.log()
    );
}
