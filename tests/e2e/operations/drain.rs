//! The stop's drain and its end. Once a stop began, no plugin call starts: an event whose
//! request was still arriving when the signal came is stored and answered 200 during the
//! drain, and delivered at the next start (a call started then could be cut off by the exit at
//! the end of `shutdown_grace`: its plugin may have acted with no outcome recorded, and the
//! next start would count a crash for a graceful stop). And a stop that ends while an
//! in-process plugin's code still runs exits without the C runtime's exit handlers and the
//! libraries' destructors, which would run beside it. Part of `operations.rs`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use gateway_e2e::harness::{base_config, wait_until, Lark, TestGateway};
use gateway_e2e::raw_fixtures;

use super::helpers::{app, route, testkit, TOKEN};

#[test]
fn an_event_taken_during_the_drain_is_not_called_until_the_next_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        "{}{}{}{}",
        base_config().replace("shutdown_grace = \"5s\"", "shutdown_grace = \"3s\""),
        app(),
        testkit(
            "late",
            "mode = \"slow\", sleep_ms = 2000, record = \"data/late.jsonl\""
        ),
        route("\"t.late\"", "\"late\""),
    );
    let mut gw = TestGateway::spawn(dir.path(), &cfg);
    let lark = Lark::plain(TOKEN);
    let (body, headers) = lark.wrap(&lark.event_v2("drain-1", "t.late", serde_json::json!({})));
    let mut conn = TcpStream::connect(gw.addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut head = format!(
        "POST /hook HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        gw.addr,
        body.len()
    );
    for (name, value) in &headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let (first, rest) = body.split_at(body.len() / 2);
    conn.write_all(head.as_bytes()).expect("head");
    conn.write_all(first.as_bytes()).expect("half the body");
    std::thread::sleep(Duration::from_millis(300));
    gw.signal("TERM");
    // The request ends 1.5 s into the stop: a 2 s call started then would outlast the grace.
    std::thread::sleep(Duration::from_millis(1500));
    conn.write_all(rest.as_bytes()).expect("the rest");
    let mut answer = String::new();
    conn.read_to_string(&mut answer).expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}\n{}", gw.log());
    let status = gw.wait(Duration::from_secs(20)).expect("exited");
    assert!(status.success(), "{status:?}\n{}", gw.log());
    assert!(gw.calls("late").is_empty(), "{:?}", gw.calls("late"));
    assert!(!gw.log().contains("after the grace period"), "{}", gw.log());

    let gw = TestGateway::spawn(dir.path(), &cfg);
    assert!(
        wait_until(Duration::from_secs(15), || gw.delivery("drain-1", "late")
            ["state"]
            == "done"),
        "{}\n{}",
        gw.delivery("drain-1", "late"),
        gw.log()
    );
    let d = gw.delivery("drain-1", "late");
    assert_eq!(
        (d["attempts"].as_u64(), d["crashes"].as_u64()),
        (Some(1), Some(0)),
        "{d}"
    );
    assert_eq!(gw.calls("late").len(), 1, "{:?}", gw.calls("late"));
}

/// An in-process call hung past its timeout holds the lock the library's destructor takes at
/// the process's exit: the stop ends within its grace all the same (a normal exit waited for
/// the call's 30 s there, or would have freed what the call uses).
#[test]
fn a_stop_beside_a_hung_in_process_call_exits_without_the_librarys_destructor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = hung_in_process(dir.path(), "2s", "held-1");
    let asked = std::time::Instant::now();
    gw.signal("TERM");
    let status = gw.wait(Duration::from_secs(60)).expect("exited");
    let took = asked.elapsed();
    assert!(status.success(), "{status:?}\n{}", gw.log());
    assert!(
        took < Duration::from_secs(10),
        "the stop took {took:?}\n{}",
        gw.log()
    );
    assert!(
        gw.log().contains("in-process plugin code still running"),
        "{}",
        gw.log()
    );
}

/// The same hung call, a long grace, and a second signal: the exit it asks for is at once too,
/// without the library's destructor (a normal exit waited for the call's 30 s there).
#[test]
fn a_second_signal_beside_a_hung_in_process_call_exits_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = hung_in_process(dir.path(), "60s", "held-2");
    gw.signal("TERM");
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .log()
            .contains("shutting down")),
        "{}",
        gw.log()
    );
    let asked = std::time::Instant::now();
    gw.signal("TERM");
    let status = gw.wait(Duration::from_secs(60)).expect("exited");
    let took = asked.elapsed();
    assert_eq!(status.code(), Some(1), "{status:?}\n{}", gw.log());
    assert!(
        took < Duration::from_secs(10),
        "the second signal's exit took {took:?}\n{}",
        gw.log()
    );
}

/// A gateway with `shutdown_grace` `grace` whose in-process raw fixture runs event `id`'s call,
/// hung past its 1 s timeout holding the lock the library's destructor takes at exit; returned
/// once that call runs.
fn hung_in_process(dir: &std::path::Path, grace: &str, id: &str) -> TestGateway {
    let raw = raw_fixtures(std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))).legacy;
    let cfg = format!(
        "{}{}\n[[plugins]]\nname = \"raw\"\nlibrary = \"{}\"\n{}",
        base_config().replace(
            "shutdown_grace = \"5s\"",
            &format!("shutdown_grace = \"{grace}\"")
        ),
        app().replace("timeout = \"10s\"", "timeout = \"1s\""),
        raw.display(),
        route("\"holds_exit_lock\"", "\"raw\""),
    );
    let gw = TestGateway::spawn(dir, &cfg);
    assert_eq!(super::helpers::send(&gw, id, "holds_exit_lock"), 200);
    gw.wait_running(id, "raw");
    gw
}
