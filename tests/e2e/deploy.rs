//! The files in `deploy/`: the systemd unit passes `systemd-analyze verify` (with `ExecStart`
//! pointed at the binary the tests built; the check is skipped, saying so, on a machine without
//! systemd-analyze), and the logrotate file rotates a running logger's file.

use std::process::Command;
use std::time::Duration;

use gateway_e2e::harness::{base_config, binaries, status_field, wait_until, TestGateway};
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
        // An isolated plugin's child killed for memory does not stop the gateway.
        "OOMPolicy=continue",
    ] {
        assert!(unit.contains(needed), "the unit sets {needed}");
    }
    // Debian's `systemd` package (`.ci/run` installs it): the test fails without it, never
    // skips.
    let out = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .expect("systemd-analyze (Debian's systemd package) to verify the unit");
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

/// `deploy/logrotate/gateway` rotates a running logger's file: the lines before the rotation
/// stay in the renamed file, the next delivery goes to the new file logrotate created (no
/// signal to the gateway). Run with the shipped file, its path and user changed to the test's.
#[test]
fn the_shipped_logrotate_file_rotates_a_running_loggers_file() {
    let shipped = std::fs::read_to_string(workspace_root().join("deploy/logrotate/gateway"))
        .expect("deploy/logrotate/gateway");
    for needed in [
        "create 0600 gateway gateway",
        "delaycompress",
        "su gateway gateway",
    ] {
        assert!(shipped.contains(needed), "the file sets {needed}");
    }
    assert!(
        !shipped.lines().any(|l| l.trim() == "copytruncate"),
        "never copytruncate"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        r#"{base}
[[apps]]
name = "hire"
path = "/hook"
verification_token = "tok"

[[plugins]]
name = "audit"
library = "{logger}"
config = {{ path = "data/assets.jsonl" }}

[[routes]]
events = ["*"]
plugins = ["audit"]
"#,
        base = base_config(),
        logger = binaries().logger.display(),
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    let file = dir.path().join("data/assets.jsonl");
    let has = |path: &std::path::Path, id: &str| {
        std::fs::read_to_string(path).is_ok_and(|t| t.contains(&format!("\"event_id\":\"{id}\"")))
    };
    gw.send_plain("tok", "before-rotation", "test.x");
    assert!(wait_until(Duration::from_secs(10), || has(
        &file,
        "before-rotation"
    )));

    // Root's own user here (the test's); the same directives otherwise.
    let me = if status_field("self", "Uid") == "0" {
        "root root"
    } else {
        ""
    };
    let conf = shipped
        .replace("/var/lib/gateway/assets.jsonl", &file.display().to_string())
        .replace("su gateway gateway", &format!("su {me}"))
        .replace("create 0600 gateway gateway", &format!("create 0600 {me}"))
        .replace("su \n", "");
    let conf_path = dir.path().join("logrotate.conf");
    std::fs::write(&conf_path, conf).expect("write logrotate.conf");
    let out = Command::new("logrotate")
        .arg("-f")
        .arg("-s")
        .arg(dir.path().join("logrotate.state"))
        .arg(&conf_path)
        .output()
        .expect("run logrotate (Debian's `logrotate`, installed by .ci/run)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path().join("data"))
        .expect("read data")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("assets.jsonl-"))
        })
        .collect();
    assert_eq!(rotated.len(), 1, "{rotated:?}");
    assert!(
        has(&rotated[0], "before-rotation"),
        "renamed, not compressed yet"
    );
    assert!(!has(&file, "before-rotation"), "a new file at the path");

    gw.send_plain("tok", "after-rotation", "test.x");
    assert!(
        wait_until(Duration::from_secs(10), || has(&file, "after-rotation")),
        "the next delivery goes to the new file:\n{}",
        gw.log()
    );
    assert!(!has(&rotated[0], "after-rotation"));
}
