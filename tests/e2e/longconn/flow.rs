//! What the long connection does while the gateway itself holds back: backpressure (the
//! in-flight limit) against the liveness check and the fragment timers, a new `max_body_bytes`
//! reaching the connection (dialled again beside it, kept when that fails), and a burst past
//! the in-flight limit while the store stalls, acked and delivered in full. Part of
//! `longconn.rs`.

use std::time::Duration;

use gateway_e2e::harness::{get, metric, wait_until};

use super::helpers::{ack_code, config, connected, event, lines, spawn, WAIT};
use crate::lark_ws::LarkWs;

/// Messages handled at once on one connection (`session::MAX_IN_FLIGHT`).
const IN_FLIGHT: usize = 256;

/// While the connection stops reading because 256 messages are in flight (here: a locked
/// store refuses each round after its 2 s busy timeout), pongs and fragments wait unread in
/// the socket. That time is not silence (the connection was declared dead, "no pong for 3s",
/// and everything unacked had to be re-sent) and does not run the fragment timers (a message
/// whose first fragment came before the stall expired before its last one could be read).
#[test]
fn a_backpressure_stall_is_not_silence_and_does_not_expire_fragments() {
    const BURST: usize = 900;
    let lark = LarkWs::start();
    lark.set_client_config(serde_json::json!({
        "ReconnectCount": -1, "ReconnectInterval": 1, "ReconnectNonce": 1, "PingInterval": 1
    }));
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = spawn(dir.path(), &config(&lark, "", ""));
    connected(&lark, 1);
    let other = rusqlite::Connection::open(dir.path().join("data/gateway.db")).expect("open");
    other.execute_batch("BEGIN IMMEDIATE").expect("lock");
    let split = event("ev-split", "test.sink");
    assert!(lark.push_fragments("m-split", &split, 2, &[0]));
    for i in 0..BURST {
        assert!(lark.push_event(&format!("m-{i}"), &event(&format!("ev-{i}"), "test.burst")));
    }
    assert!(lark.push_fragments("m-split", &split, 2, &[1]));
    // The stand-in reads acks once it has written everything queued: three rounds refused
    // mean at least 6 s spent not reading (> 3 ping intervals, > the 5 s fragment timer).
    assert!(
        wait_until(Duration::from_secs(30), || lark.acks().len()
            >= 3 * IN_FLIGHT),
        "{} acks; connections {}\n{}",
        lark.acks().len(),
        lark.bootstraps().len(),
        gw.log()
    );
    other.execute_batch("ROLLBACK").expect("unlock");
    assert!(
        lark.wait_ack("m-split", WAIT).is_some(),
        "the split message was dispatched and acked\n{}",
        gw.log()
    );
    assert!(
        wait_until(WAIT, || lark.acks().len() > BURST),
        "{} acks",
        lark.acks().len()
    );
    assert!(!gw.log().contains("no pong"), "{}", gw.log());
    assert_eq!(lark.bootstraps().len(), 1, "the same connection throughout");
    let m = get(&gw.admin_url("/metrics")).expect("metrics").body;
    assert_eq!(
        metric(&m, r#"gateway_longconn_connects_total{app="hire"}"#),
        1.0
    );
}

/// A fragmented message that never completes is dropped (evicted when 64 incomplete ones are
/// held, or expired 5 s after its last fragment): counted by reason and logged with its
/// message_id, no longer silently.
#[test]
fn an_incomplete_message_dropped_is_counted_and_logged() {
    let lark = LarkWs::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = spawn(dir.path(), &config(&lark, "", ""));
    connected(&lark, 1);
    // One more than the 64 incomplete messages held: the oldest is evicted.
    for i in 0..65 {
        let id = format!("m-part-{i}");
        assert!(lark.push_fragments(&id, &event(&format!("ev-part-{i}"), "test.sink"), 2, &[0]));
    }
    let dropped = |reason: &str| {
        let m = get(&gw.admin_url("/metrics")).expect("metrics").body;
        metric(
            &m,
            &format!(r#"gateway_longconn_fragments_dropped_total{{app="hire",reason="{reason}"}}"#),
        )
    };
    assert!(
        wait_until(WAIT, || dropped("evicted") == 1.0),
        "{}",
        gw.log()
    );
    assert!(
        wait_until(WAIT, || dropped("expired") == 64.0),
        "{}",
        gw.log()
    );
    let log = gw.log();
    let line = |id: &str| {
        log.lines()
            .find(|l| {
                l.contains("incomplete message dropped") && l.contains(&format!("message_id={id} "))
            })
            .unwrap_or_else(|| panic!("no log line for {id}:\n{log}"))
            .to_owned()
    };
    assert!(line("m-part-0").contains("evicted"));
    assert!(line("m-part-64").contains("expired"));
    assert!(lark.acks().is_empty(), "nothing was dispatched");
}

/// `[server] max_body_bytes` raised by a reload reaches the open connection, as it reaches the
/// webhooks: the connection took its size limit and its frame bound (4 × the limit + 64 KiB)
/// at connect time, so events the new limit allows were still refused, or could not be read.
#[test]
fn a_reload_that_raises_max_body_bytes_reaches_the_long_connection() {
    let lark = LarkWs::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let with_limit = |limit: usize| with_max_body(&lark, limit);
    let gw = spawn(dir.path(), &with_limit(4096));
    connected(&lark, 1);
    assert!(lark.push_event("m-5k", &sized("ev-5k", 5_000)));
    assert_eq!(ack_code(&lark, "m-5k"), Some(500), "over 4096 bytes");
    std::fs::write(dir.path().join("gateway.toml"), with_limit(256 * 1024)).expect("write");
    gw.signal("HUP");
    // The connection is dialled again with the new bound, after acking what is in flight.
    connected(&lark, 2);
    assert!(lark.push_event("m-5k-again", &sized("ev-5k", 5_000)));
    assert_eq!(ack_code(&lark, "m-5k-again"), Some(200));
    // Over the old frame bound (4 × 4096 + 64 KiB = 80 KiB), within the new limit.
    assert!(lark.push_event("m-100k", &sized("ev-100k", 100 * 1024)));
    assert_eq!(ack_code(&lark, "m-100k"), Some(200));
    assert!(gw.log().contains("max_body_bytes changed"), "{}", gw.log());
    let m = get(&gw.admin_url("/metrics")).expect("metrics").body;
    assert_eq!(
        metric(&m, r#"gateway_longconn_reconnects_total{app="hire"}"#),
        0.0,
        "a re-dial, not a reconnect after a loss"
    );
}

/// A reload's new `max_body_bytes` dials a new connection beside the running one, which serves
/// until the new one is up. Here Lark allows no reconnect (`ReconnectCount` 0) and refuses the
/// first re-dial: the running connection stays and takes events, and the re-dial is tried again
/// (the connection was closed first, the failed dial counted as a lost connection, and the app
/// failed for good over a limit change).
#[test]
fn a_failed_redial_for_a_new_max_body_bytes_keeps_the_running_connection() {
    let lark = LarkWs::start();
    lark.set_client_config(serde_json::json!({
        "ReconnectCount": 0, "ReconnectInterval": 1, "ReconnectNonce": 0, "PingInterval": 30
    }));
    let dir = tempfile::tempdir().expect("tempdir");
    let with_limit = |limit: usize| with_max_body(&lark, limit);
    let gw = spawn(dir.path(), &with_limit(4096));
    connected(&lark, 1);
    lark.refuse_handshakes(1, "500", None);
    std::fs::write(dir.path().join("gateway.toml"), with_limit(256 * 1024)).expect("write");
    gw.signal("HUP");
    assert!(
        wait_until(WAIT, || lark.handshakes().len() == 2),
        "no re-dial\n{}",
        gw.log()
    );
    assert!(!lark.handshakes()[1].1, "the first re-dial is refused");
    // The running connection still serves (the only one open until a re-dial succeeds).
    assert!(lark.push_event("m-kept", &event("ev-kept", "test.sink")));
    assert_eq!(ack_code(&lark, "m-kept"), Some(200), "{}", gw.log());
    // Tried again after ReconnectInterval (1 s): the new connection takes over.
    connected(&lark, 2);
    assert!(
        wait_until(WAIT, || lark.open_connections() == 1),
        "the old connection closes once the new one is up\n{}",
        gw.log()
    );
    // Over the old frame bound (4 × 4096 + 64 KiB = 80 KiB), within the new limit.
    assert!(lark.push_event("m-100k", &sized("ev-100k", 100 * 1024)));
    assert_eq!(ack_code(&lark, "m-100k"), Some(200));
    let ready = get(&gw.admin_url("/readyz")).expect("readyz");
    assert!(
        ready.body.contains("websocket app hire: connected"),
        "{}",
        ready.body
    );
    let m = get(&gw.admin_url("/metrics")).expect("metrics").body;
    assert_eq!(metric(&m, r#"gateway_longconn_connected{app="hire"}"#), 1.0);
    assert!(
        !gw.log().contains("long connection stopped"),
        "{}",
        gw.log()
    );
}

/// An event for app `hire` padded with `bytes` bytes.
fn sized(id: &str, bytes: usize) -> Vec<u8> {
    let mut e: serde_json::Value = serde_json::from_slice(&event(id, "test.sink")).expect("json");
    e["event"]["pad"] = "x".repeat(bytes).into();
    e.to_string().into_bytes()
}

#[test]
fn a_burst_past_the_in_flight_limit_while_the_store_stalls_is_acked_and_delivered_in_full() {
    // Each round holds the store's write lock while Lark pushes far more messages than the
    // connection handles at once (256), then lets go: hundreds of acks become due together
    // while hundreds of messages still wait to be read. Every message is acked 200 and
    // delivered once, on the same connection. (The loop once stopped sending acks while it
    // waited for an in-flight slot, which could wedge the connection for good; that took a
    // rare interleaving this test does not force: it guards the backpressure path as a whole.)
    const ROUNDS: usize = 4;
    const PER_ROUND: usize = 700;
    let lark = LarkWs::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = spawn(dir.path(), &config(&lark, "", ""));
    connected(&lark, 1);
    let other = rusqlite::Connection::open(dir.path().join("data/gateway.db")).expect("open");
    for round in 0..ROUNDS {
        other.execute_batch("BEGIN IMMEDIATE").expect("lock");
        for i in 0..PER_ROUND {
            let payload = event(&format!("ev-{round}-{i}"), "test.burst");
            assert!(lark.push_event(&format!("m-{round}-{i}"), &payload));
        }
        std::thread::sleep(Duration::from_millis(300));
        other.execute_batch("ROLLBACK").expect("unlock");
        // The store's writer gets the lock between stalls: relocked at once, the rounds were
        // one stall of their sum, past the 1 s an event waits for the lock (acked 500 then).
        std::thread::sleep(Duration::from_millis(200));
    }
    let total = ROUNDS * PER_ROUND;
    assert!(
        wait_until(Duration::from_secs(30), || lark.acks().len() >= total),
        "{} of {total} acked; the connection stopped taking messages\n{}",
        lark.acks().len(),
        gw.log()
    );
    let acks = lark.acks();
    assert!(acks.iter().all(|a| a.code == Some(200)), "all stored");
    let ids: std::collections::HashSet<_> = acks.iter().map(|a| a.message_id.clone()).collect();
    assert_eq!(ids.len(), total, "one ack per message");
    assert!(wait_until(WAIT, || lines(&gw, "audit.jsonl").len() == total));
    assert_eq!(lark.open_connections(), 1, "the same connection throughout");
}

/// The test config with `[server] max_body_bytes = limit`.
fn with_max_body(lark: &LarkWs, limit: usize) -> String {
    config(lark, "", "").replace(
        "shutdown_grace = \"5s\"",
        &format!("shutdown_grace = \"5s\"\nmax_body_bytes = {limit}"),
    )
}
