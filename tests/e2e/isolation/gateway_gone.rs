//! A gateway killed with `kill -9` while a call runs in its plugin's child: the child ends at
//! once, its call cut short (the next gateway calls that delivery again, as a crashed attempt),
//! whatever the plugin's library does at exit.

use std::path::Path;
use std::time::Duration;

use gateway_e2e::harness::{binaries, children, wait_until, TestGateway};
use gateway_e2e::raw_fixtures;

use super::{config, send};

#[test]
fn kill_9_of_the_gateway_leaves_no_plugin_process_behind() {
    let native = format!(
        "library = \"{}\"\nconfig = {{ mode = \"slow\", sleep_ms = 30000 }}",
        binaries().testkit.display()
    );
    child_ends_with_its_gateway(&native, "test.hang");
}

/// A library whose destructor waits for a lock a running call holds (as native code's exit
/// handlers may) does not keep the child, and its call, alive once the gateway is gone: the
/// child leaves by a signal to itself, not by an exit that runs them. (An exit waited here
/// for the call's 30 s.)
#[test]
fn a_library_destructor_waiting_for_a_call_does_not_keep_the_child_alive() {
    let raw = raw_fixtures(Path::new(env!("CARGO_TARGET_TMPDIR"))).legacy;
    child_ends_with_its_gateway(
        &format!("library = \"{}\"", raw.display()),
        "holds_exit_lock",
    );
}

/// kill -9 of a gateway whose `native` plugin (`native`: its config lines) has a call of
/// `event_type` running: the child process ends at once, its call cut short.
fn child_ends_with_its_gateway(native: &str, event_type: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config("timeout = \"60s\"", native);
    let mut gw = TestGateway::spawn(dir.path(), &cfg);
    let kids = children(gw.pid());
    assert_eq!(kids.len(), 1, "one plugin process: {kids:?}");
    // A call hangs in the child when the gateway dies.
    send(&gw, "hang-1", event_type);
    gw.wait_running("hang-1", "native");
    gw.kill9();
    let killed = std::time::Instant::now();
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
    // At once, its call cut short: a gateway restarted meanwhile calls that delivery again
    // (a crashed attempt), and the old call must not run beside the new one. (A child once
    // waited 2 s for its calls; that version fails this bound every time.)
    assert!(
        killed.elapsed() < Duration::from_millis(1800),
        "plugin process {child} lingered {:?} behind its call",
        killed.elapsed()
    );
}
