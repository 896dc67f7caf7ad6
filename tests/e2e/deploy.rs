//! The files in `deploy/`: the systemd unit passes `systemd-analyze verify` (with `ExecStart`
//! pointed at the binary the tests built; the check is skipped, saying so, on a machine without
//! systemd-analyze).

use std::process::Command;

use gateway_e2e::harness::binaries;
use gateway_e2e::workspace_root;

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(workspace_root().join("deploy/systemd/gateway.service"))
        .expect("deploy/systemd/gateway.service");
    for needed in [
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/gateway",
        "PrivateTmp=yes",
        "User=gateway",
        // SIGTERM to the gateway alone: its isolated plugins' children finish their calls.
        "KillMode=mixed",
        // A plugin's exit(0) ends the process too: restarted.
        "Restart=always",
    ] {
        assert!(unit.contains(needed), "the unit sets {needed}");
    }
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not found: the unit's syntax was not verified here");
        return;
    };
    assert!(out.status.success());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.service");
    let gateway = binaries().gateway.display().to_string();
    std::fs::write(&path, unit.replace("/usr/local/bin/gateway", &gateway)).expect("write");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze verify");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(
        !said.contains("gateway.service"),
        "no warning about the unit: {said}"
    );
}
