//! What a pushed message becomes: an event stored, acked 200 and delivered; refusals acked 500
//! and stored nowhere; fragments reassembled; a re-sent event delivered once; a store that cannot
//! write acked 500; an acked event durable across kill -9; an event over `max_body_bytes`; and a
//! webhook app beside a websocket app in one gateway. Part of `longconn.rs`.

use std::time::Duration;

use gateway_e2e::harness::{binaries, get, metric, wait_until, Lark};

use super::helpers::{
    ack_code, assert_no_secrets, config, connected, event, event_with, lines, spawn, TOKEN, WAIT,
};
use crate::lark_ws::LarkWs;

#[test]
fn an_event_is_stored_acked_200_and_delivered_and_refusals_are_acked_500() {
    let lark = LarkWs::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = spawn(dir.path(), &config(&lark, "", ""));
    connected(&lark, 1);
    assert!(lark.push_event("m-1", &event("ev-1", "test.one")));
    let ack = lark.wait_ack("m-1", WAIT).expect("ack");
    assert_eq!(ack.code, Some(200));
    assert!(ack
        .biz_rt
        .as_deref()
        .is_some_and(|v| v.parse::<u64>().is_ok()));
    assert_eq!(
        ack.frame.header("trace_id"),
        Some("trace-m-1"),
        "the same frame comes back"
    );
    // Acked means stored: the CLI finds it while the gateway runs.
    let (code, out, err) = gw.cli(&["events", "show", "ev-1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(wait_until(WAIT, || lines(&gw, "audit.jsonl").len() == 1));
    let line = &lines(&gw, "audit.jsonl")[0];
    assert_eq!(line["event_id"], "ev-1");
    assert_eq!(line["app"], "hire");

    // Refused messages are acked with 500, the protocol's one failure code (spec §11: Lark
    // re-sends them), and stored nowhere; the reason is in the metric's label.
    let encrypted = br#"{"encrypt":"P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="}"#;
    let cases: [(&str, Vec<u8>); 4] = [
        ("m-token", event_with("ev-bad", "test.one", "wrong")),
        ("m-json", b"{not json".to_vec()),
        ("m-enc", encrypted.to_vec()),
        (
            "m-challenge",
            br#"{"type":"url_verification","challenge":"c","token":"ws-token"}"#.to_vec(),
        ),
    ];
    for (id, payload) in &cases {
        assert!(lark.push_event(id, payload));
        assert_eq!(ack_code(&lark, id), Some(500), "{id}");
    }
    let (code, _, _) = gw.cli(&["events", "show", "ev-bad"]);
    assert_ne!(code, 0, "a refused event is not stored");
    // A refusal's line carries Lark's trace id (for Lark support).
    assert!(
        gw.log()
            .lines()
            .any(|l| l.contains("message refused") && l.contains("trace_id=trace-m-token")),
        "{}",
        gw.log()
    );

    // Cards are not served and not acked.
    assert!(lark.push_card("m-card", b"{}"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(lark.acks().iter().all(|a| a.message_id != "m-card"));

    let ready = get(&gw.admin_url("/readyz")).expect("readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert!(
        ready.body.contains("websocket app hire: connected"),
        "{}",
        ready.body
    );
    let m = get(&gw.admin_url("/metrics")).expect("metrics").body;
    assert_eq!(
        metric(&m, r#"gateway_longconn_connects_total{app="hire"}"#),
        1.0
    );
    let acks = |code: &str, reason: &str| {
        metric(
            &m,
            &format!(
                r#"gateway_longconn_acks_total{{app="hire",code="{code}",reason="{reason}"}}"#
            ),
        )
    };
    assert_eq!(acks("200", "stored"), 1.0);
    assert_eq!(acks("500", "malformed"), 3.0);
    assert_eq!(acks("500", "bad_token"), 1.0);
    assert_eq!(
        metric(
            &m,
            r#"gateway_longconn_frames_total{app="hire",kind="card"}"#
        ),
        1.0
    );
    assert_eq!(metric(&m, r#"gateway_longconn_connected{app="hire"}"#), 1.0);
    assert_eq!(lark.bootstraps()[0].1["AppSecret"], LarkWs::APP_SECRET);
    assert_no_secrets(&gw);
}

#[test]
fn fragments_sent_out_of_order_are_reassembled_and_a_resent_event_is_delivered_once() {
    let lark = LarkWs::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = spawn(dir.path(), &config(&lark, "", ""));
    connected(&lark, 1);
    let payload = event("ev-frag", "test.sink");
    assert!(lark.push_fragments("m-frag", &payload, 3, &[2, 0, 1]));
    assert_eq!(ack_code(&lark, "m-frag"), Some(200));
    // An incomplete message is never dispatched nor acked.
    assert!(lark.push_fragments("m-part", &event("ev-part", "test.sink"), 3, &[0, 2]));
    // The same event under two more message ids: acked twice, delivered once.
    let dup = event("ev-dup", "test.sink");
    assert!(lark.push_event("m-dup-a", &dup));
    assert!(lark.push_event("m-dup-b", &dup));
    assert_eq!(ack_code(&lark, "m-dup-a"), Some(200));
    assert_eq!(ack_code(&lark, "m-dup-b"), Some(200));
    assert!(wait_until(WAIT, || lines(&gw, "sink.jsonl").len() == 2));
    std::thread::sleep(Duration::from_millis(500));
    let ids: Vec<String> = lines(&gw, "sink.jsonl")
        .iter()
        .map(|l| l["event_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(
        ids.contains(&"ev-frag".to_owned()) && ids.contains(&"ev-dup".to_owned()),
        "{ids:?}"
    );
    // A frame whose `sum` is present but no number may be a part of a message: never taken
    // for a whole one (its payload here is a whole event, which would have been stored).
    assert!(lark.push_event_with(
        "m-bad-sum",
        &event("ev-bad-sum", "test.sink"),
        &[("sum", "two")]
    ));
    assert!(
        wait_until(WAIT, || gw
            .log()
            .contains("fragment dropped: its sum or seq is not a number")),
        "{}",
        gw.log()
    );
    assert!(lark.acks().iter().all(|a| a.message_id != "m-bad-sum"));
    let (code, _, _) = gw.cli(&["events", "show", "ev-bad-sum"]);
    assert_ne!(code, 0, "not stored");
    assert!(lark.acks().iter().all(|a| a.message_id != "m-part"));
    let (code, _, _) = gw.cli(&["events", "show", "ev-part"]);
    assert_ne!(code, 0);
    let m = get(&gw.admin_url("/metrics")).expect("metrics").body;
    assert_eq!(
        metric(&m, r#"gateway_duplicate_events_total{app="hire"}"#),
        1.0
    );
}

#[test]
fn a_store_that_cannot_write_acks_500_and_the_resend_is_delivered_once() {
    let lark = LarkWs::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = spawn(dir.path(), &config(&lark, "", ""));
    connected(&lark, 1);
    let other = rusqlite::Connection::open(dir.path().join("data/gateway.db")).expect("open");
    other.execute_batch("BEGIN IMMEDIATE").expect("lock");
    let payload = event("ev-locked", "test.sink");
    assert!(lark.push_event("m-locked", &payload));
    assert_eq!(ack_code(&lark, "m-locked"), Some(500));
    other.execute_batch("ROLLBACK").expect("unlock");
    // Lark re-sends what was not acked with 200.
    assert!(lark.push_event("m-locked", &payload));
    assert!(wait_until(WAIT, || lark
        .acks()
        .iter()
        .any(|a| a.message_id == "m-locked" && a.code == Some(200))));
    assert!(wait_until(WAIT, || lines(&gw, "sink.jsonl").len() == 1));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lines(&gw, "sink.jsonl").len(), 1);
    let m = get(&gw.admin_url("/metrics")).expect("metrics").body;
    assert_eq!(
        metric(
            &m,
            r#"gateway_longconn_acks_total{app="hire",code="500",reason="store_unavailable"}"#
        ),
        1.0
    );
}

#[test]
fn kill_9_an_acked_event_is_durable_and_a_message_resent_after_restart_is_delivered_once() {
    let lark = LarkWs::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // A slow plugin, so the delivery is still running when the gateway is killed.
    let slow = format!(
        "[[plugins]]\nname = \"slowpoke\"\nlibrary = \"{}\"\nconfig = {{ mode = \"slow\", sleep_ms = 1500, record = \"data/slow.jsonl\" }}\n\n[[routes]]\nevents = [\"test.slow\"]\nplugins = [\"slowpoke\"]\n",
        binaries().testkit.display()
    );
    let cfg = config(&lark, "", &slow);
    let mut gw = spawn(dir.path(), &cfg);
    connected(&lark, 1);
    let payload = event("ev-crash", "test.slow");
    assert!(lark.push_event("m-crash", &payload));
    assert_eq!(ack_code(&lark, "m-crash"), Some(200));
    gw.kill9();
    // The ack promised durability: the event is in the store after kill -9.
    let (code, out, err) = gw.cli(&["events", "show", "ev-crash"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        lines(&gw, "slow.jsonl").is_empty(),
        "killed before the plugin finished"
    );

    // Restart; Lark re-sends the message it considers unacknowledged.
    let gw = spawn(dir.path(), &cfg);
    connected(&lark, 2);
    assert!(lark.push_event("m-crash-resent", &payload));
    assert_eq!(ack_code(&lark, "m-crash-resent"), Some(200));
    assert!(
        wait_until(WAIT, || lines(&gw, "slow.jsonl").len() == 1),
        "{}",
        gw.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lines(&gw, "slow.jsonl").len(), 1, "delivered once");
}

/// An event larger than `[server] max_body_bytes` is acked 500 (reason `too_large`), like any
/// refusal, whether its frame fits the connection's frame bound or not quite; the connection
/// stays up (it was never acked, and a frame over max_body_bytes + 64 KiB broke the connection,
/// again at every re-send).
#[test]
fn an_event_over_max_body_bytes_is_acked_500_and_the_connection_stays() {
    let lark = LarkWs::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(&lark, "", "").replace(
        "shutdown_grace = \"5s\"",
        "shutdown_grace = \"5s\"\nmax_body_bytes = 4096",
    );
    let gw = spawn(dir.path(), &cfg);
    connected(&lark, 1);
    let sized = |id: &str, bytes: usize| {
        let mut e: serde_json::Value =
            serde_json::from_slice(&event(id, "test.sink")).expect("json");
        e["event"]["pad"] = "x".repeat(bytes).into();
        e.to_string().into_bytes()
    };
    assert!(lark.push_event("m-big", &sized("ev-big", 5_000)));
    assert_eq!(ack_code(&lark, "m-big"), Some(500));
    assert!(lark.push_event("m-bigger", &sized("ev-bigger", 72 * 1024)));
    assert_eq!(ack_code(&lark, "m-bigger"), Some(500));
    assert!(lark.push_event("m-fine", &event("ev-fine", "test.sink")));
    assert_eq!(ack_code(&lark, "m-fine"), Some(200));
    let m = get(&gw.admin_url("/metrics")).expect("metrics").body;
    assert_eq!(
        metric(&m, r#"gateway_longconn_connects_total{app="hire"}"#),
        1.0,
        "{}",
        gw.log()
    );
    assert_eq!(
        metric(
            &m,
            r#"gateway_longconn_acks_total{app="hire",code="500",reason="too_large"}"#
        ),
        2.0
    );
}

#[test]
fn a_webhook_app_and_a_websocket_app_share_one_gateway() {
    let lark = LarkWs::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let webhook = format!(
        "[[apps]]\nname = \"pushed\"\npath = \"/hook\"\nverification_token = \"{TOKEN}\"\n"
    );
    let gw = spawn(dir.path(), &config(&lark, "", &webhook));
    connected(&lark, 1);
    let pushed = Lark::plain(TOKEN);
    let a = pushed.send(
        &gw.url("/hook"),
        &pushed.event_v2("ev-http", "test.both", serde_json::json!({})),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(lark.push_event("m-ws", &event("ev-ws", "test.both")));
    assert_eq!(ack_code(&lark, "m-ws"), Some(200));
    assert!(wait_until(WAIT, || lines(&gw, "audit.jsonl").len() == 2));
    let mut seen: Vec<(String, String)> = lines(&gw, "audit.jsonl")
        .iter()
        .map(|l| {
            (
                l["app"].as_str().unwrap_or_default().to_owned(),
                l["event_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("hire".to_owned(), "ev-ws".to_owned()),
            ("pushed".to_owned(), "ev-http".to_owned())
        ]
    );
    // `check` validates the websocket app without connecting; `check --connect` bootstraps
    // and dials.
    let before = lark.bootstraps().len();
    let (code, out, err) = gw.cli(&["check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("websocket"), "{out}");
    assert_eq!(
        lark.bootstraps().len(),
        before,
        "plain check connects to nothing"
    );
    let (code, out, err) = gw.cli(&["check", "--connect"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("app hire: long connection ok (bootstrap and handshake; service_id 42"),
        "{out}"
    );
    assert_eq!(lark.bootstraps().len(), before + 1);
    // `send` refuses a websocket app by name.
    let (code, _, err) = gw.cli(&["send", "--app", "hire"]);
    assert_eq!(code, 1);
    assert!(err.contains("long connection"), "{err}");
}
