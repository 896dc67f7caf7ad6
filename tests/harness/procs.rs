//! A gateway's processes as `/proc` shows them: its children (isolated plugins' processes), and
//! the one plugin process killed with `SIGKILL` and waited for.

use std::process::Command;
use std::time::Duration;

use super::{wait_until, TestGateway};

/// SIGKILLs the one plugin process of `gw` (isolated instances: there must be exactly one) and
/// waits until it is gone (reaped); returns its pid.
pub fn kill_the_plugin_process(gw: &TestGateway) -> u32 {
    let kids = children(gw.pid());
    assert_eq!(kids.len(), 1, "one plugin process: {kids:?}");
    let status = Command::new("kill")
        .args(["-KILL", &kids[0].to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -KILL {}", kids[0]);
    assert!(
        wait_until(Duration::from_secs(10), || !children(gw.pid())
            .contains(&kids[0])),
        "plugin process {} outlived SIGKILL",
        kids[0]
    );
    kids[0]
}

/// The pids whose parent is `parent`.
pub fn children(parent: u32) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|&pid| parent_of(pid) == Some(parent))
        .collect()
}

/// Every pid in /proc now.
pub fn processes() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .collect()
}

/// The parent of `pid`, if it still exists.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": the comm may hold spaces; split after the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The first value of a `/proc/PID/status` line (`Uid`, `CapPrm`, ...); `pid` may be `self`.
/// Panics (with the file) if the process or the line is not there.
pub fn status_field(pid: &str, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status:\n{status}"))
        .to_owned()
}
