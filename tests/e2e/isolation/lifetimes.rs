//! How long a plugin's process, and the processes it starts, live: a helper program a call
//! runs ends with the plugin process (a timeout's kill, the gateway's `kill -9`); a child
//! still loading or in `init` when the gateway dies ends at once; a stop waits for the
//! isolated instances' `shutdown` within `shutdown_grace` (kills and says what outlives it), as
//! does a reload for the instance it replaces, and a panic for the process it retires; and a call the timeout's kill ended beside a
//! hung one says the gateway killed its process.

use std::path::Path;
use std::time::{Duration, Instant};

use gateway_e2e::harness::{binaries, children, read_jsonl, wait_until, TestGateway};

use super::{config, send};

/// The warning of a plugin process killed for outliving the retire grace.
const OVERDUE: &str = "a plugin process told to leave (its instance replaced, the gateway stopping, or a call in it panicked) had not ended within shutdown_grace";

/// Whether `pid` is gone (or a zombie nobody reaped yet).
fn gone(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.contains(") Z "))
        .unwrap_or(true)
}

/// The `native` lines of a testkit instance with `kit` as its config table's contents.
fn testkit(kit: &str) -> String {
    format!(
        "library = \"{}\"\nconfig = {{ {kit} }}",
        binaries().testkit.display()
    )
}

/// The helper pids the testkit wrote, once it wrote `n` of them.
fn helpers(dir: &Path, n: usize) -> Vec<String> {
    let file = dir.join("data/helpers.txt");
    assert!(
        wait_until(Duration::from_secs(20), || std::fs::read_to_string(&file)
            .is_ok_and(|s| s.lines().count() >= n)),
        "no helper started"
    );
    std::fs::read_to_string(&file)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn end_all(pids: &[String]) {
    for pid in pids {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", pid])
            .status();
    }
}

/// A call waiting on a helper program it started outlives its timeout: the kill ends the
/// helper with the plugin process (it ran on, reparented, beside the call's retry).
#[test]
fn a_timeout_kill_ends_the_helper_processes_of_the_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let native = testkit(r#"mode = "helper", helper_pids = "data/helpers.txt""#);
    let gw = TestGateway::spawn(
        dir.path(),
        &config("timeout = \"1s\"\nmax_attempts = 2", &native),
    );
    send(&gw, "h-1", "test.helper");
    assert!(wait_until(Duration::from_secs(30), || gw
        .delivery("h-1", "native")["state"]
        == "dead"));
    let pids = helpers(dir.path(), 2);
    let ended = wait_until(Duration::from_secs(5), || pids.iter().all(|p| gone(p)));
    end_all(&pids);
    assert!(ended, "helpers {pids:?} outlived their plugin process");
}

/// `kill -9` of the gateway while a call waits on a helper: the helper ends with the plugin
/// process (it used to run on).
#[test]
fn kill_9_of_the_gateway_ends_the_helper_processes_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let native = testkit(r#"mode = "helper", helper_pids = "data/helpers.txt""#);
    let mut gw = TestGateway::spawn(dir.path(), &config("timeout = \"60s\"", &native));
    send(&gw, "h-2", "test.helper");
    let pids = helpers(dir.path(), 1);
    gw.kill9();
    let ended = wait_until(Duration::from_secs(5), || pids.iter().all(|p| gone(p)));
    end_all(&pids);
    assert!(ended, "helper {pids:?} outlived the gateway");
}

/// `kill -9` of the gateway while a reload's new plugin process is in `init` (nothing reads
/// its pipe then): the process ends at once, not when `init` returns.
#[test]
fn a_plugin_process_in_init_ends_with_a_gateway_killed_meanwhile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config("", &testkit(r#"tag = "a""#));
    let mut gw = TestGateway::spawn(dir.path(), &cfg);
    let before = children(gw.pid());
    assert_eq!(before.len(), 1, "{before:?}");
    let slow = cfg.replace(r#"tag = "a""#, r#"tag = "b", init_sleep_ms = 30000"#);
    std::fs::write(dir.path().join("gateway.toml"), slow).expect("write");
    gw.signal("HUP");
    let mut starting = Vec::new();
    assert!(wait_until(Duration::from_secs(10), || {
        starting = children(gw.pid())
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        !starting.is_empty()
    }));
    // Well inside its `init`'s 30 s.
    std::thread::sleep(Duration::from_millis(500));
    gw.kill9();
    let pids: Vec<String> = starting.iter().map(u32::to_string).collect();
    let ended = wait_until(Duration::from_secs(3), || pids.iter().all(|p| gone(p)));
    end_all(&pids);
    assert!(
        ended,
        "plugin process {pids:?} in init outlived its gateway"
    );
}

/// A stop waits for an isolated instance's `shutdown` (it used to exit at once, leaving the
/// process to finish alone, or be killed with the service); one that outlives the grace is
/// killed, said in the log.
#[test]
fn a_stop_waits_for_isolated_shutdown_within_the_grace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let native = testkit(r#"record = "data/kit.jsonl", shutdown_sleep_ms = 1500"#);
    let mut gw = TestGateway::spawn(dir.path(), &config("", &native));
    send(&gw, "s-1", "test.ok");
    assert!(wait_until(Duration::from_secs(10), || gw
        .delivery("s-1", "native")["state"]
        == "done"));
    let kids = children(gw.pid());
    gw.signal("TERM");
    let status = gw.wait(Duration::from_secs(20)).expect("stopped");
    assert!(status.success(), "{status:?}");
    let lines = read_jsonl(&dir.path().join("data/kit.jsonl"));
    assert!(
        lines.iter().any(|l| l["outcome"] == "shutdown"),
        "the plugin's shutdown had not run when the gateway exited: {lines:?}"
    );
    assert!(kids.iter().all(|k| gone(&k.to_string())), "{kids:?}");

    // Longer than the grace (5 s in these configs): killed at its end, said.
    let dir = tempfile::tempdir().expect("tempdir");
    let native = testkit(r#"record = "data/kit.jsonl", shutdown_sleep_ms = 60000"#);
    let cfg = config("", &native).replace("shutdown_grace = \"5s\"", "shutdown_grace = \"1s\"");
    assert!(cfg.contains("shutdown_grace = \"1s\""), "{cfg}");
    let mut gw = TestGateway::spawn(dir.path(), &cfg);
    let kids = children(gw.pid());
    let asked = Instant::now();
    gw.signal("TERM");
    let status = gw.wait(Duration::from_secs(20)).expect("stopped");
    assert!(status.success(), "{status:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert!(gw.log().contains(OVERDUE), "{}", gw.log());
    assert!(
        wait_until(Duration::from_secs(3), || kids
            .iter()
            .all(|k| gone(&k.to_string()))),
        "{kids:?}"
    );
}

/// A reload replacing an isolated instance gives the old process `shutdown_grace` for its
/// `shutdown`, then kills it, said (it was a silent kill after 5 s).
#[test]
fn a_replaced_isolated_instance_past_the_grace_is_killed_and_said() {
    let dir = tempfile::tempdir().expect("tempdir");
    let native = testkit(r#"record = "data/kit.jsonl", shutdown_sleep_ms = 60000, tag = "a""#);
    let cfg = config("", &native).replace("shutdown_grace = \"5s\"", "shutdown_grace = \"1s\"");
    let gw = TestGateway::spawn(dir.path(), &cfg);
    let old = children(gw.pid());
    std::fs::write(
        dir.path().join("gateway.toml"),
        cfg.replace(r#"tag = "a""#, r#"tag = "b""#),
    )
    .expect("write");
    gw.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(10), || { gw.log().contains(OVERDUE) }),
        "{}",
        gw.log()
    );
    assert!(
        wait_until(Duration::from_secs(3), || old
            .iter()
            .all(|k| gone(&k.to_string()))),
        "{old:?}"
    );
}

/// A process retired after a call in it panicked gets `shutdown_grace` for its `shutdown`
/// too, then is killed, said (it lived on until the instance was replaced or the gateway
/// stopped); the next call runs in a new process.
#[test]
fn a_process_retired_after_a_panic_past_the_grace_is_killed_and_said() {
    let dir = tempfile::tempdir().expect("tempdir");
    let native = testkit(
        r#"record = "data/kit.jsonl", shutdown_sleep_ms = 60000, modes = { "t.panic" = "panic_handle" }"#,
    );
    let cfg = config("max_attempts = 1", &native)
        .replace("shutdown_grace = \"5s\"", "shutdown_grace = \"1s\"");
    let gw = TestGateway::spawn(dir.path(), &cfg);
    let old = children(gw.pid());
    send(&gw, "p-panic", "t.panic");
    assert!(
        wait_until(Duration::from_secs(10), || gw.log().contains(OVERDUE)),
        "{}",
        gw.log()
    );
    assert!(
        wait_until(Duration::from_secs(3), || old
            .iter()
            .all(|k| gone(&k.to_string()))),
        "{old:?}"
    );
    send(&gw, "p-after", "t.ok");
    assert!(
        wait_until(Duration::from_secs(10), || gw.delivery("p-after", "native")
            ["state"]
            == "done"),
        "{}",
        gw.delivery("p-after", "native")
    );
}

/// A call the timeout's kill ended beside a hung one: its reason says the gateway killed the
/// process (it read as an outside kill).
#[test]
fn a_call_ended_by_a_timeout_kill_beside_it_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let native = testkit(
        r#"mode = "gate", gate = "data/gate", modes = { "test.hang" = "slow" }, sleep_ms = 60000"#,
    ) + "\nmax_concurrency = 2";
    let gw = TestGateway::spawn(
        dir.path(),
        &config(
            "timeout = \"2s\"\nmax_attempts = 10\nmax_batch = 1",
            &native,
        ),
    );
    send(&gw, "hang", "test.hang");
    gw.wait_running("hang", "native");
    // The second call starts a second into the first one's timeout, so its own timeout comes
    // a second after the kill (started together, either timeout could end it first).
    std::thread::sleep(Duration::from_secs(1));
    send(&gw, "beside", "test.wait");
    gw.wait_running("beside", "native");
    assert!(
        wait_until(Duration::from_secs(10), || gw.delivery("beside", "native")
            ["history"]
            .as_array()
            .is_some_and(|h| !h.is_empty())),
        "{}",
        gw.delivery("beside", "native")
    );
    let d = gw.delivery("beside", "native");
    let reason = d["history"][0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("killed by signal 9 (SIGKILL), by the gateway (a call in this process outlived [delivery] timeout"),
        "{d}"
    );
    std::fs::write(dir.path().join("data/gate"), "").expect("open the gate");
    assert!(wait_until(Duration::from_secs(10), || gw
        .delivery("beside", "native")["state"]
        == "done"));
}

/// `init_timeout` changed alone keeps an isolated instance; its restarts take the new value
/// (they kept the one it was started with).
#[test]
fn an_isolated_instances_restarts_take_a_reloaded_init_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let native = testkit(r#"record = "data/kit.jsonl", init_sleep_ms = 3000"#);
    let cfg = |t: &str| config("", &format!("{native}\ninit_timeout = \"{t}\""));
    let gw = TestGateway::spawn(dir.path(), &cfg("30s"));
    std::fs::write(dir.path().join("gateway.toml"), cfg("1s")).expect("write");
    gw.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .log()
            .contains("config reloaded")),
        "{}",
        gw.log()
    );
    let kids = children(gw.pid());
    assert_eq!(kids.len(), 1, "kept, one plugin process: {kids:?}");
    end_all(&[kids[0].to_string()]);
    assert!(wait_until(Duration::from_secs(5), || gone(
        &kids[0].to_string()
    )));
    send(&gw, "r-1", "test.ok");
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .log()
            .contains("the plugin process did not start in time")),
        "the restart waited for the whole 3 s init: {}",
        gw.log()
    );
}

/// `kill -9` of the gateway while an idle child would run a long `shutdown` (its input closed
/// with the gateway): the child ran the whole `shutdown` as an orphan (20 s here; a hung one
/// for ever), beside the next gateway's new child. It now ends with its gateway at once.
#[test]
fn a_child_ends_with_a_gateway_killed_while_it_would_run_its_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let native = testkit(r#"record = "data/kit.jsonl", shutdown_sleep_ms = 20000"#);
    let mut gw = TestGateway::spawn(dir.path(), &config("", &native));
    send(&gw, "k-1", "test.ok");
    assert!(wait_until(Duration::from_secs(10), || gw
        .delivery("k-1", "native")["state"]
        == "done"));
    let kids: Vec<String> = children(gw.pid()).iter().map(u32::to_string).collect();
    assert_eq!(kids.len(), 1, "{kids:?}");
    gw.kill9();
    let ended = wait_until(Duration::from_secs(3), || kids.iter().all(|k| gone(k)));
    end_all(&kids);
    assert!(
        ended,
        "the plugin process outlived its gateway in its shutdown"
    );
}

/// A stop while another plugin's call hangs past the grace: the isolated instances were told
/// to leave only after the calls drained, so with the grace spent each was killed before its
/// `shutdown`. They are told as soon as no new call starts, and a short `shutdown` completes.
#[test]
fn a_hung_call_elsewhere_does_not_cost_isolated_plugins_their_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let native = testkit(r#"record = "data/kit.jsonl", shutdown_sleep_ms = 300"#);
    let cfg = config("", &native)
        .replace("shutdown_grace = \"5s\"", "shutdown_grace = \"2s\"")
        .replace(
            "[[routes]]",
            &format!(
                "[[plugins]]\nname = \"hang\"\nlibrary = \"{}\"\nconfig = {{ mode = \"slow\", sleep_ms = 60000 }}\n\n[[routes]]\nevents = [\"test.hang\"]\nplugins = [\"hang\"]\n\n[[routes]]",
                binaries().testkit.display()
            ),
        );
    assert!(cfg.contains("name = \"hang\""), "{cfg}");
    let mut gw = TestGateway::spawn(dir.path(), &cfg);
    send(&gw, "h-1", "test.hang");
    gw.wait_running("h-1", "hang");
    gw.signal("TERM");
    let status = gw.wait(Duration::from_secs(20)).expect("stopped");
    assert!(status.success(), "{status:?}");
    let lines = read_jsonl(&dir.path().join("data/kit.jsonl"));
    assert!(
        lines.iter().any(|l| l["outcome"] == "shutdown"),
        "the isolated plugin's shutdown did not run: {lines:?}\n{}",
        gw.log()
    );
}

/// A refused reload whose config read a variable that is not set (a typo) made the next
/// reload, reading no new variable, replace every isolated plugin process, as if a new secret
/// had been read (reload review finding): an unset name holds nothing to keep out of a child.
#[test]
fn a_refused_reloads_unset_variable_replaces_no_plugin_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config("", &testkit(r#"tag = "a""#));
    let gw = TestGateway::spawn(dir.path(), &cfg);
    let before = children(gw.pid());
    assert_eq!(before.len(), 1, "{before:?}");
    let typo = cfg.replace(r#"tag = "a""#, r#"tag = "${GATEWAY_E2E_UNSET_TYPO}""#);
    assert_ne!(typo, cfg);
    std::fs::write(dir.path().join("gateway.toml"), typo).expect("write");
    gw.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .log()
            .contains("reload refused")),
        "{}",
        gw.log()
    );
    std::fs::write(dir.path().join("gateway.toml"), &cfg).expect("write");
    gw.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .log()
            .contains("config reloaded")),
        "{}",
        gw.log()
    );
    assert!(
        !gw.log().contains("reads a variable it did not read"),
        "{}",
        gw.log()
    );
    assert_eq!(
        children(gw.pid()),
        before,
        "the plugin process was replaced"
    );
}
