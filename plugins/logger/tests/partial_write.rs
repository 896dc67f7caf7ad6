//! A write that fails part-way (the disk full: here the file-size limit, lowered with
//! `prlimit`) leaves a fragment; the next batch must not be glued to it. Reruns itself in a
//! child that ignores SIGXFSZ (so the write fails with EFBIG instead of killing the process).

use std::process::Command;

use gateway_plugin::{Delivery, Host, Outcome, Plugin};
use logger::Logger;
use serde_json::json;

fn delivery(i: u32) -> Delivery {
    serde_json::from_value(json!({
        "delivery_id": format!("d{i}"), "attempt": 1, "plugin": "audit", "app": "hire",
        "event_id": format!("e{i}"), "event_type": "t", "received_at": 5,
        "event": {"schema": "2.0", "header": {"event_id": format!("e{i}")},
                  "pad": "x".repeat(200), "n": i}
    }))
    .expect("delivery")
}

#[test]
fn a_partial_write_does_not_corrupt_the_next_line() {
    if std::env::var_os("LOGGER_PARTIAL_WRITE_CHILD").is_none() {
        let exe = std::env::current_exe().expect("exe");
        // Its output through pipes: the lowered file-size limit would make writes to a regular
        // file fail (a test run's output redirected to one, as CI does).
        let out = Command::new("sh")
            .arg("-c")
            .arg("trap '' XFSZ; exec \"$0\" a_partial_write_does_not_corrupt_the_next_line --exact --nocapture --test-threads=1")
            .arg(exe)
            .env("LOGGER_PARTIAL_WRITE_CHILD", "1")
            .output()
            .expect("spawn child");
        assert!(
            out.status.success(),
            "the child run failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let logger = Logger::new(
        json!({"path": "out.jsonl"}),
        Host::for_tests(dir.path(), "audit"),
    )
    .expect("config");
    let pid = std::process::id().to_string();
    let fsize = |soft: &str| {
        let ok = Command::new("prlimit")
            .args(["--pid", &pid, &format!("--fsize={soft}:unlimited")])
            .status()
            .expect("prlimit")
            .success();
        assert!(ok, "prlimit");
    };
    fsize("100"); // the "disk" fills up after 100 bytes
    let failed = logger.handle_batch(&[delivery(1), delivery(2)]);
    fsize("unlimited"); // space freed
    assert!(
        failed.iter().all(|o| matches!(o, Outcome::Retry { .. })),
        "{failed:?}"
    );
    assert_eq!(logger.handle(&delivery(3)), Outcome::Ok);
    let text = std::fs::read_to_string(dir.path().join("out.jsonl")).expect("file");
    let parsed: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        parsed.iter().any(|v| v["delivery_id"] == "d3"),
        "d3 was reported Ok but no line of the file parses as its record:\n{text}"
    );
}
