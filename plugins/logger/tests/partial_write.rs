//! A write that fails part-way (the disk full: here the file-size limit, lowered with
//! `prlimit`) leaves a fragment; the next batch must not be glued to it, and the lines written
//! whole before the error are not written again. Each test reruns itself in a child that
//! ignores SIGXFSZ (so the write fails with EFBIG instead of killing the process); the stdout
//! sink's test writes to a file its child's standard output is redirected to.

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

/// Whether this is the child run; if not, runs `test` in a child that ignores SIGXFSZ and
/// checks that it passed.
fn in_child(test: &str) -> bool {
    if std::env::var_os("LOGGER_PARTIAL_WRITE_CHILD").is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("exe");
    // Its output through pipes: the lowered file-size limit would make writes to a regular
    // file fail (a test run's output redirected to one, as CI does).
    let out = Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; exec \"$0\" \"$1\" --exact --nocapture --test-threads=1")
        .arg(exe)
        .arg(test)
        .env("LOGGER_PARTIAL_WRITE_CHILD", "1")
        .output()
        .expect("spawn child");
    assert!(
        out.status.success(),
        "the child run failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    false
}

/// Sets this process's file-size limit (its soft value; "unlimited" frees the "disk").
fn fsize(soft: &str) {
    let ok = Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--fsize={soft}:unlimited"),
        ])
        .status()
        .expect("prlimit")
        .success();
    assert!(ok, "prlimit");
}

/// The records of the file's lines that parse, and how many do not.
fn records(path: &std::path::Path) -> (Vec<serde_json::Value>, usize) {
    let text = std::fs::read_to_string(path).expect("file");
    let parsed: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let fragments = text.lines().count() - parsed.len();
    (parsed, fragments)
}

/// The disk fills in the middle of a batch's third line: the two lines written whole are
/// reported written (synced), only the third is retried, and each delivery is in the file once
/// (review finding: the whole batch was retried, its first two lines written twice).
#[test]
fn lines_written_whole_before_a_full_disk_are_not_written_again() {
    if !in_child("lines_written_whole_before_a_full_disk_are_not_written_again") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("out.jsonl");
    let logger = Logger::new(
        json!({"path": "out.jsonl"}),
        Host::for_tests(dir.path(), "audit"),
    )
    .expect("config");
    assert_eq!(logger.handle(&delivery(0)), Outcome::Ok);
    let line = std::fs::metadata(&path).expect("file").len();
    // Room for two more lines and half of a third (the lines are all of one length).
    fsize(&(line * 3 + line / 2).to_string());
    let outcomes = logger.handle_batch(&[delivery(1), delivery(2), delivery(3)]);
    fsize("unlimited");
    assert_eq!(outcomes[..2], [Outcome::Ok, Outcome::Ok], "{outcomes:?}");
    assert!(matches!(outcomes[2], Outcome::Retry { .. }), "{outcomes:?}");
    // The gateway retries what was retried.
    assert_eq!(logger.handle(&delivery(3)), Outcome::Ok);
    let (parsed, fragments) = records(&path);
    let ids: Vec<&str> = parsed
        .iter()
        .map(|v| v["delivery_id"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(ids, ["d0", "d1", "d2", "d3"], "each once, in order");
    assert_eq!(
        fragments, 1,
        "the cut third line stays, as a line of its own"
    );
}

#[test]
fn a_partial_write_does_not_corrupt_the_next_line() {
    if !in_child("a_partial_write_does_not_corrupt_the_next_line") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let logger = Logger::new(
        json!({"path": "out.jsonl"}),
        Host::for_tests(dir.path(), "audit"),
    )
    .expect("config");
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

/// The same with `stdout = true`, standard output redirected to a file: the lines written whole
/// are reported written, the fragment is ended before the next line, and nothing is written
/// twice (review finding: every line of the batch was retried, and the next delivery's line was
/// glued to the fragment: d1 and d2 twice, d4 unreadable though reported Ok).
#[test]
fn stdout_lines_written_whole_before_a_full_disk_are_not_written_again() {
    const TEST: &str = "stdout_lines_written_whole_before_a_full_disk_are_not_written_again";
    let Some(out) = std::env::var_os("LOGGER_STDOUT_FILE") else {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("stdout.jsonl");
        let child = Command::new("sh")
            .arg("-c")
            .arg("trap '' XFSZ; exec \"$0\" \"$1\" --exact --nocapture --test-threads=1 > \"$2\"")
            .arg(std::env::current_exe().expect("exe"))
            .arg(TEST)
            .arg(&out)
            .env("LOGGER_STDOUT_FILE", &out)
            .output()
            .expect("spawn child");
        let text = std::fs::read_to_string(&out).expect("stdout file");
        assert!(
            child.status.success(),
            "{text}\n{}",
            String::from_utf8_lossy(&child.stderr)
        );
        // The test runner's own lines are there too: only lines of deliveries count.
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("delivery_id")).collect();
        let ids: Vec<String> = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| v["delivery_id"].as_str().unwrap_or("?").to_owned())
            .collect();
        assert_eq!(ids, ["d0", "d1", "d2", "d4", "d3"], "each once:\n{text}");
        assert_eq!(lines.len(), 6, "one fragment, a line of its own:\n{text}");
        return;
    };
    let len = || std::fs::metadata(&out).expect("stdout file").len();
    // The runner's "test ... " has no line break yet.
    {
        use std::io::Write;
        let mut o = std::io::stdout().lock();
        o.write_all(b"\n").expect("write");
        o.flush().expect("flush");
    }
    let logger =
        Logger::new(json!({"stdout": true}), Host::for_tests("/", "audit")).expect("config");
    let before = len();
    assert_eq!(logger.handle(&delivery(0)), Outcome::Ok);
    let (after, line) = (len(), len() - before);
    // Room for two more lines and half of a third.
    fsize(&(after + 2 * line + line / 2).to_string());
    let outcomes = logger.handle_batch(&[delivery(1), delivery(2), delivery(3)]);
    fsize("unlimited");
    assert_eq!(outcomes[..2], [Outcome::Ok, Outcome::Ok], "{outcomes:?}");
    assert!(matches!(outcomes[2], Outcome::Retry { .. }), "{outcomes:?}");
    assert_eq!(logger.handle(&delivery(4)), Outcome::Ok);
    assert_eq!(
        logger.handle(&delivery(3)),
        Outcome::Ok,
        "the gateway's retry"
    );
}

/// Two instances with `stdout = true` (two entries, or one and the instance a reload makes)
/// writing lines longer than a pipe holds at once: each line whole (each instance had its own
/// lock, and the lines of the two were spliced into each other in the review's run).
#[test]
fn two_stdout_instances_never_splice_their_lines() {
    const TEST: &str = "two_stdout_instances_never_splice_their_lines";
    if std::env::var_os("LOGGER_SPLICE_CHILD").is_none() {
        let child = Command::new(std::env::current_exe().expect("exe"))
            .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env("LOGGER_SPLICE_CHILD", "1")
            .output()
            .expect("spawn child");
        assert!(
            child.status.success(),
            "{}",
            String::from_utf8_lossy(&child.stderr)
        );
        let text = String::from_utf8_lossy(&child.stdout);
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("delivery_id")).collect();
        let whole = lines
            .iter()
            .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
            .count();
        assert_eq!((lines.len(), whole), (40, 40), "spliced lines");
        return;
    }
    let big = |i: u32| {
        serde_json::from_value::<Delivery>(json!({
            "delivery_id": format!("d{i}"), "attempt": 1, "plugin": "audit", "app": "hire",
            "event_id": format!("e{i}"), "event_type": "t", "received_at": 5,
            "event": {"schema": "2.0", "header": {"event_id": format!("e{i}")},
                      "pad": "y".repeat(100_000)}
        }))
        .expect("delivery")
    };
    // The runner's "test ... " has no line break yet.
    {
        use std::io::Write;
        let mut o = std::io::stdout().lock();
        o.write_all(b"\n").expect("write");
        o.flush().expect("flush");
    }
    let threads: Vec<_> = (0..2u32)
        .map(|t| {
            std::thread::spawn(move || {
                let logger = Logger::new(json!({"stdout": true}), Host::for_tests("/", "audit"))
                    .expect("config");
                for i in 0..20 {
                    assert_eq!(logger.handle(&big(t * 100 + i)), Outcome::Ok);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer");
    }
}
