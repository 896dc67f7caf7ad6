//! A `path` that is a FIFO (`fsync = "never"`, as the README says for a pipe): with no reader
//! it is refused at once (the open used to wait for one for ever, hanging `gateway check` and
//! the start); with one, lines reach it.

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::{Duration, Instant};

use gateway_plugin::{Delivery, Host, Outcome, Plugin};
use logger::Logger;
use serde_json::json;

fn fifo(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("out.fifo");
    let made = Command::new("mkfifo").arg(&path).status().expect("mkfifo");
    assert!(made.success(), "mkfifo");
    path
}

fn delivery() -> Delivery {
    serde_json::from_value(json!({
        "delivery_id": "d1", "attempt": 1, "plugin": "audit", "app": "hire",
        "event_id": "e1", "event_type": "t", "received_at": 5,
        "event": {"schema": "2.0", "header": {"event_id": "e1"}}
    }))
    .expect("delivery")
}

#[test]
fn a_fifo_without_a_reader_is_refused_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    fifo(dir.path());
    let started = Instant::now();
    let e = Logger::new(
        json!({"path": "out.fifo", "fsync": "never"}),
        Host::for_tests(dir.path(), "audit"),
    )
    .expect_err("no reader");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(e.contains("no process has open for reading"), "{e}");
}

#[test]
fn a_fifo_with_a_reader_gets_the_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = fifo(dir.path());
    let reader = std::thread::spawn(move || {
        // Blocks until the logger opens the other end.
        let mut line = String::new();
        BufReader::new(std::fs::File::open(&path).expect("open for reading"))
            .read_line(&mut line)
            .expect("read");
        line
    });
    // The reader's open may not have happened yet: try until it has.
    let deadline = Instant::now() + Duration::from_secs(10);
    let logger = loop {
        match Logger::new(
            json!({"path": "out.fifo", "fsync": "never"}),
            Host::for_tests(dir.path(), "audit"),
        ) {
            Ok(l) => break l,
            Err(e) if Instant::now() < deadline => {
                assert!(e.contains("no process has open for reading"), "{e}");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(logger.handle(&delivery()), Outcome::Ok);
    let line = reader.join().expect("reader");
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(v["delivery_id"], "d1");
}
