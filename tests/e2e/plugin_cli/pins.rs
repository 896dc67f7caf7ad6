//! `sha256` pins: a malformed one is a config error at its key; another file than the one pinned
//! is refused by `check`, at start, at reload, and when an isolated plugin's process restarts.
//! Part of `plugin_cli.rs`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gateway_e2e::harness::{base_config, binaries, run_cli, wait_until, TestGateway};

use super::helpers::{sha256, write};

fn pinned(library: &Path, sha: &str, extra: &str) -> String {
    format!(
        r#"{}
[[apps]]
name = "a"
path = "/hook"
verification_token = "t"

[delivery]
initial_backoff = "50ms"
max_backoff = "100ms"

[[plugins]]
name = "kit"
library = "{}"
sha256 = "{sha}"
{extra}

[[routes]]
events = ["*"]
plugins = ["kit"]
"#,
        base_config(),
        library.display()
    )
}

#[test]
fn a_malformed_sha256_is_a_config_error_with_its_location() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kit = &binaries().testkit;
    for (pin, says) in [
        ("abc".to_owned(), "got 3 digits"),
        (
            format!("sha256:{}", "a".repeat(57)),
            "'s' is not a hexadecimal digit",
        ),
        ("g".repeat(64), "'g' is not a hexadecimal digit"),
    ] {
        let config = write(&dir.path().join("gateway.toml"), &pinned(kit, &pin, ""));
        let (code, _, err) = run_cli(&config, &["check"]);
        assert_eq!(code, 2, "{pin}: {err}");
        assert!(
            err.contains(
                "plugins[0].sha256: must be the library's SHA-256 as 64 hexadecimal digits"
            ),
            "{err}"
        );
        assert!(err.contains(says), "{says:?} in {err}");
    }
    // Either case is accepted.
    let config = write(
        &dir.path().join("gateway.toml"),
        &pinned(kit, &sha256(kit).to_ascii_uppercase(), ""),
    );
    let (code, out, err) = run_cli(&config, &["check"]);
    assert_eq!(code, 0, "{out}\n{err}");
}

/// Another file than the one pinned is never loaded: `check` shows both digests, `run` does
/// not start, a reload to a wrong pin is refused (the running config stays).
#[test]
fn a_sha256_mismatch_is_refused_by_check_at_start_and_at_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kit = &binaries().testkit;
    let right = sha256(kit);
    let wrong = sha256(&binaries().logger);
    let config = write(&dir.path().join("gateway.toml"), &pinned(kit, &wrong, ""));
    let (code, out, err) = run_cli(&config, &["check"]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(
        err.contains(&format!(
            "plugins[0] (kit): {} does not match its pinned sha256: expected {wrong}, found {right}",
            kit.display()
        )),
        "{err}"
    );
    assert!(!out.contains("is valid"), "{out}");

    // `run` refuses to start.
    let mut child = Command::new(&binaries().gateway)
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env_remove("GATEWAY_CONFIG")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start gateway");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the gateway started with a mismatched pin");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("does not match its pinned sha256"), "{err}");

    // With the right pin it runs; a reload to a wrong pin is refused and the old instance
    // keeps serving.
    let gw_dir = tempfile::tempdir().expect("tempdir");
    let good = pinned(kit, &right, "config = { record = \"data/kit.jsonl\" }");
    let gw = TestGateway::spawn(gw_dir.path(), &good);
    gw.send_plain("t", "ev-1", "t.one");
    assert!(wait_until(Duration::from_secs(10), || gw
        .calls("kit")
        .len()
        == 1));
    let bad = pinned(
        kit,
        &wrong,
        "config = { record = \"data/kit.jsonl\", tag = \"new\" }",
    );
    std::fs::write(gw_dir.path().join("gateway.toml"), bad).expect("write config");
    gw.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .log()
            .contains("reload refused")),
        "{}",
        gw.log()
    );
    assert!(
        gw.log()
            .contains(&format!("expected {wrong}, found {right}")),
        "{}",
        gw.log()
    );
    gw.send_plain("t", "ev-2", "t.two");
    assert!(wait_until(Duration::from_secs(10), || gw
        .calls("kit")
        .len()
        == 2));
    assert!(gw.calls("kit")[1].get("tag").is_none_or(|t| t.is_null()));
}

/// An isolated instance's process loads the library anew whenever it restarts (after a crash):
/// the pin is checked again then, so a file swapped in behind a running gateway never runs.
#[test]
fn an_isolated_plugin_is_not_restarted_from_a_file_that_no_longer_matches_its_pin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = dir.path().join("libkit.so");
    std::fs::copy(&binaries().testkit, &lib).expect("copy");
    let cfg = pinned(
        &lib,
        &sha256(&lib),
        "isolation = \"process\"\n\
         config = { record = \"data/kit.jsonl\", modes = { \"t.poison\" = \"panic_handle\" } }",
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    gw.send_plain("t", "ev-1", "t.ok");
    assert!(wait_until(Duration::from_secs(10), || gw
        .calls("kit")
        .len()
        == 1));
    // Replace the file the way deploy tools do (a new inode renamed over the path: the running
    // mappings keep the old one), then make the child restart: a panic replaces the instance.
    let swap = dir.path().join("libkit.so.new");
    std::fs::copy(&binaries().logger, &swap).expect("copy");
    std::fs::rename(&swap, &lib).expect("rename");
    gw.send_plain("t", "ev-2", "t.poison");
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .log()
            .contains("plugin panicked: dead letter")),
        "{}",
        gw.log()
    );
    // The next call needs a new process.
    gw.send_plain("t", "ev-3", "t.ok");
    assert!(
        wait_until(Duration::from_secs(15), || gw
            .log()
            .contains("does not match its pinned sha256")),
        "{}",
        gw.log()
    );
    assert!(
        gw.log().contains("plugin `kit` cannot be started"),
        "{}",
        gw.log()
    );
    // Nothing was called from the swapped file: only the first call and the poison one ran.
    std::thread::sleep(Duration::from_millis(300));
    let calls = gw.calls("kit");
    assert!(
        calls.iter().all(|c| c["event_id"] != "ev-3"),
        "{calls:?}\n{}",
        gw.log()
    );
}
