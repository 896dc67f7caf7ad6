//! Traffic and what it shows: the metrics after known traffic, `gateway send` signing and
//! encrypting like Lark, a store that cannot write answering 503 and claiming nothing, and
//! connections past `max_connections` (or one client's past `max_connections_per_client`)
//! closed while service continues, and a soft open-file limit too low for them raised at
//! start. Part of `operations.rs`.

use std::time::Duration;

use gateway_e2e::harness::{
    self, base_config, binaries, connect_from, get, metric, wait_until, Lark, TestGateway,
};

use super::helpers::{app, recorded, route, send, sink_config, testkit, TOKEN};

#[test]
fn metrics_move_with_known_traffic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        "{}{}{}{}{}{}",
        base_config(),
        app(),
        testkit("good", "record = \"data/good.jsonl\""),
        testkit("bad", "mode = \"reject\""),
        route("\"t.good\"", "\"good\""),
        route("\"t.bad\"", "\"bad\""),
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    assert_eq!(get(&gw.admin_url("/healthz")).expect("healthz").status, 200);
    assert_eq!(get(&gw.admin_url("/readyz")).expect("readyz").status, 200);
    for i in 0..3 {
        assert_eq!(send(&gw, &format!("g{i}"), "t.good"), 200);
    }
    assert_eq!(send(&gw, "g0", "t.good"), 200);
    assert_eq!(send(&gw, "b0", "t.bad"), 200);
    assert_eq!(send(&gw, "u0", "t.none"), 200);
    let bad = harness::post(&gw.url("/hook"), &[], "{oops").expect("post");
    assert_eq!(bad.status, 400);

    let m = || get(&gw.admin_url("/metrics")).expect("metrics").body;
    assert!(wait_until(Duration::from_secs(10), || {
        metric(&m(), r#"gateway_dead_letters_total{plugin="bad"}"#) == 1.0
            && metric(
                &m(),
                r#"gateway_deliveries_total{plugin="good",outcome="ok"}"#,
            ) == 3.0
    }));
    let text = m();
    let at = |s: &str| metric(&text, s);
    assert_eq!(
        at(r#"gateway_requests_total{app="ops",status="200",reason="stored"}"#),
        5.0
    );
    assert_eq!(
        at(r#"gateway_requests_total{app="ops",status="200",reason="duplicate"}"#),
        1.0
    );
    assert_eq!(
        at(r#"gateway_requests_total{app="ops",status="400",reason="malformed"}"#),
        1.0
    );
    assert_eq!(at(r#"gateway_events_stored_total{app="ops"}"#), 5.0);
    assert_eq!(at(r#"gateway_duplicate_events_total{app="ops"}"#), 1.0);
    assert_eq!(at(r#"gateway_unrouted_events_total{app="ops"}"#), 1.0);
    assert_eq!(
        at(r#"gateway_deliveries_total{plugin="bad",outcome="reject"}"#),
        1.0
    );
    assert_eq!(at("gateway_pending_deliveries"), 0.0);
    assert_eq!(at("gateway_request_duration_seconds_count"), 7.0);
    // Three deliveries in one to three calls: one sent while another's call still runs may
    // wait `[delivery] linger` and share its successor's call.
    let calls = at(r#"gateway_plugin_call_duration_seconds_count{plugin="good"}"#);
    assert!((1.0..=3.0).contains(&calls), "{calls} calls");
    assert!(at("gateway_store_commit_batch_size_count") >= 1.0);
    assert_eq!(
        at("gateway_store_commit_duration_seconds_count"),
        at("gateway_store_commit_batch_size_count"),
        "every commit timed"
    );
    // Exposed (`at` reads a missing series as 0), and never more than the commits.
    assert!(
        text.lines()
            .any(|l| l.starts_with("gateway_store_commits_paced_total ")),
        "the paced-commit counter is exposed"
    );
    let paced = at("gateway_store_commits_paced_total");
    assert!(
        paced <= at("gateway_store_commit_batch_size_count"),
        "{paced} paced commits"
    );
    // Five events stored (the unrouted one included), each id held once for dedup.
    assert_eq!(at("gateway_store_dedup_ids"), 5.0);
}

#[test]
fn gateway_send_signs_encrypts_and_dedups_like_lark() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        r#"{base}
[[apps]]
name = "hire"
path = "/hook"
verification_token = "t0k"
encrypt_key = "k3y"

[[plugins]]
name = "audit"
library = "{logger}"
config = {{ path = "data/audit.jsonl", fsync = "never" }}

[[routes]]
events = ["hire.referral_account.assets_update_v1"]
plugins = ["audit"]
"#,
        base = base_config(),
        logger = binaries().logger.display(),
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    let url = gw.url("/hook");
    let (code, out, err) = gw.cli(&["send", "--url", &url]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("HTTP 200 {\"msg\":\"success\"}"), "{out}");
    for _ in 0..2 {
        let (code, out, _) = gw.cli(&["send", "--url", &url, "--event-id", "same-1"]);
        assert_eq!(code, 0, "{out}");
    }
    assert!(wait_until(Duration::from_secs(5), || recorded(
        &gw,
        "audit.jsonl"
    )
    .len()
        == 2));
    std::thread::sleep(Duration::from_millis(200));
    let lines = recorded(&gw, "audit.jsonl");
    assert_eq!(lines.len(), 2, "the duplicate is delivered once");
    assert_eq!(lines[1]["event_id"], "same-1");
    // The verification token never reaches the log file or the CLI.
    assert_eq!(lines[1]["event"]["header"]["token"], "<redacted>");
    let (code, out, _) = gw.cli(&["events", "show", "same-1"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(r#"\"token\":\"<redacted>\""#) && !out.contains("t0k"),
        "{out}"
    );
    // A wrong app name is a clear error; a non-2xx answer is exit code 4.
    let (code, _, err) = gw.cli(&["send", "--app", "nope", "--url", &url]);
    assert_eq!(code, 1);
    assert!(err.contains("no app named \"nope\""), "{err}");
    let (code, out, _) = gw.cli(&["send", "--url", &gw.url("/elsewhere")]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("HTTP 404"), "{out}");
}

#[test]
fn a_store_that_cannot_write_answers_503_and_claims_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &sink_config());
    // Another process holds the database's write lock for longer than the gateway waits.
    let other = rusqlite::Connection::open(dir.path().join("data/gateway.db")).expect("open");
    other.execute_batch("BEGIN IMMEDIATE").expect("lock");
    assert_eq!(send(&gw, "locked-1", "t.s"), 503);
    let m = get(&gw.admin_url("/metrics")).expect("metrics").body;
    assert_eq!(
        metric(
            &m,
            r#"gateway_requests_total{app="ops",status="503",reason="store_unavailable"}"#
        ),
        1.0
    );
    assert_eq!(get(&gw.admin_url("/readyz")).expect("readyz").status, 503);
    other.execute_batch("ROLLBACK").expect("unlock");
    // Nothing was claimed: Lark's retry is stored and delivered once.
    assert_eq!(send(&gw, "locked-1", "t.s"), 200);
    assert!(wait_until(Duration::from_secs(5), || recorded(
        &gw,
        "sink.jsonl"
    )
    .len()
        == 1));
    // The probe's 503 stands for a second (probes add at most one store write a second).
    assert!(wait_until(Duration::from_secs(3), || get(
        &gw.admin_url("/readyz")
    )
    .is_ok_and(|r| r.status == 200)));
}

#[test]
fn connections_past_max_connections_are_closed_and_service_continues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        "{}{}{}{}",
        base_config().replace("[server]\n", "[server]\nmax_connections = 2\n"),
        app(),
        testkit("sink", ""),
        route("\"t.s\"", "\"sink\""),
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    // Two idle connections take both slots; a third is closed without an answer.
    let idle: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(gw.addr).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = std::net::TcpStream::connect(gw.addr).expect("connect");
    third
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    use std::io::{Read, Write};
    let _ = third.write_all(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
    let mut buf = [0u8; 64];
    assert!(
        matches!(third.read(&mut buf), Ok(0) | Err(_)),
        "the third connection is closed"
    );
    assert!(
        wait_until(Duration::from_secs(5), || gw
            .log()
            .contains("connection limit reached")),
        "{}",
        gw.log()
    );
    // A peer connecting in a loop meanwhile gets a line a second at most 10 times (it got one
    // per connection: thousands a second); the next line says how many were not logged.
    let refused = |n: usize| {
        for _ in 0..n {
            drop(std::net::TcpStream::connect(gw.addr).expect("connect"));
        }
    };
    refused(60);
    std::thread::sleep(Duration::from_millis(1_200));
    refused(1);
    let lines = || gw.log().matches("connection limit reached").count();
    assert!(
        wait_until(Duration::from_secs(5), || gw.log().contains("skipped=")),
        "{}",
        gw.log()
    );
    assert!(lines() <= 21, "{} lines:\n{}", lines(), gw.log());
    // Freed slots serve again.
    drop(idle);
    assert!(wait_until(Duration::from_secs(5), || {
        let lark = Lark::plain(TOKEN);
        let (body, headers) =
            lark.wrap(&lark.event_v2("after-limit", "t.s", serde_json::json!({})));
        harness::post(&gw.url("/hook"), &headers, &body).is_ok_and(|a| a.status == 200)
    }));
}

/// Whether the server closes `s` without answering a request written on it.
fn closed_unanswered(s: &mut std::net::TcpStream) -> bool {
    use std::io::{Read, Write};
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let _ = s.write_all(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(0) | Err(_))
}

/// One client (here 127.0.0.2) holding its share of connections has its next one closed;
/// another client (127.0.0.3) is served meanwhile, and a slot the first gives back serves it
/// again.
#[test]
fn one_clients_connections_past_max_connections_per_client_are_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        "{}{}{}{}",
        base_config().replace("[server]\n", "[server]\nmax_connections_per_client = 2\n"),
        app(),
        testkit("sink", ""),
        route("\"t.s\"", "\"sink\""),
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    let mut idle: Vec<_> = (0..2)
        .map(|_| connect_from([127, 0, 0, 2], gw.addr))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = connect_from([127, 0, 0, 2], gw.addr);
    assert!(
        closed_unanswered(&mut third),
        "the client's third connection is closed"
    );
    assert!(
        wait_until(Duration::from_secs(5), || gw
            .log()
            .contains("max_connections_per_client")),
        "{}",
        gw.log()
    );
    // Another client is not held up by the first one's share.
    let sent = |from: [u8; 4], id: &str| {
        use std::io::{Read, Write};
        let lark = Lark::plain(TOKEN);
        let (body, headers) = lark.wrap(&lark.event_v2(id, "t.s", serde_json::json!({})));
        let mut s = connect_from(from, gw.addr);
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut head = format!(
            "POST /hook HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in &headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        let _ = s.write_all(format!("{head}\r\n{body}").as_bytes());
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.1 200")
    };
    assert!(sent([127, 0, 0, 3], "other-client"), "{}", gw.log());
    // A slot given back serves the first client again.
    drop(idle.pop());
    assert!(wait_until(Duration::from_secs(5), || sent(
        [127, 0, 0, 2],
        "first-client-again"
    )));
}

/// `Max open files` of process `pid`: (soft, hard), `None` for unlimited.
fn open_files(pid: &str) -> (Option<u64>, Option<u64>) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let mut values = line["Max open files".len()..]
        .split_whitespace()
        .map(|v| v.parse::<u64>().ok());
    (values.next().flatten(), values.next().flatten())
}

/// A soft open-file limit below what `max_connections` (1024 by default) and the gateway's own
/// 128 need is raised at start as far as the hard limit allows (it was only warned about: past
/// it new connections waited unanswered); the warning stays when even the hard limit is short.
#[test]
fn a_low_open_file_limit_is_raised_for_max_connections() {
    let cfg = format!("{}{}", base_config(), app());
    let (_, hard) = open_files("self");
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn_after(dir.path(), &cfg, "ulimit -S -n 300");
    let wanted = hard.map_or(1152, |h| h.min(1152));
    assert_eq!(open_files(&gw.pid().to_string()), (Some(wanted), hard));
    assert!(
        gw.log()
            .contains("raised the soft open-file limit for [server] max_connections"),
        "{}",
        gw.log()
    );
    assert_eq!(
        gw.log().contains("the open-file limit"),
        wanted < 1152,
        "{}",
        gw.log()
    );
    drop(gw);
    // A hard limit of 400: raised to it, and still warned about.
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn_after(dir.path(), &cfg, "ulimit -S -n 300 && ulimit -H -n 400");
    assert_eq!(open_files(&gw.pid().to_string()), (Some(400), Some(400)));
    assert!(
        gw.log().contains("the open-file limit (400"),
        "{}",
        gw.log()
    );
}
