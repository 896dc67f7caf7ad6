//! A peer that stops reading: its receive window fills with the gateway's acks and a write
//! never completes. Part of `longconn.rs`.
//!
//! Each write of the connection's loop is bounded (three ping intervals) and gives way to a
//! stop, so such a peer neither keeps a dead connection "connected" nor holds a stop past the
//! long connections' 5 s.

use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_e2e::harness::wait_until;

use super::helpers::{config_at, spawn, WAIT};

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, tag: u64, bytes: &[u8]) {
    put_varint(out, (tag << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A data frame (`type = event`) whose ack echoes a `pad`-byte header; the payload is not an
/// event, so the gateway acks it 500 at once.
fn padded_event(i: u64, pad: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for (tag, v) in [(1u64, i), (2, i), (3, 1), (4, 1)] {
        put_varint(&mut out, tag << 3);
        put_varint(&mut out, v);
    }
    let headers = [
        ("type", "event".to_owned()),
        ("message_id", format!("m{i}")),
        ("sum", "1".to_owned()),
        ("seq", "0".to_owned()),
        ("trace_id", "x".repeat(pad)),
    ];
    for (k, v) in headers {
        let mut inner = Vec::new();
        put_bytes(&mut inner, 1, k.as_bytes());
        put_bytes(&mut inner, 2, v.as_bytes());
        put_bytes(&mut out, 5, &inner);
    }
    put_bytes(&mut out, 8, b"not an event");
    out
}

/// A bootstrap endpoint and a WebSocket server that, once the client is connected, sends
/// `frames` padded events and never reads again (its TCP stack still acknowledges, so the
/// connection stays up while the client's writes fill both socket buffers). Returns the
/// domain and the count of bootstraps.
fn stuck_peer(frames: u64, pad: usize) -> (String, Arc<AtomicUsize>) {
    let http = TcpListener::bind("127.0.0.1:0").expect("bind");
    let ws = TcpListener::bind("127.0.0.1:0").expect("bind");
    let ws_port = ws.local_addr().expect("addr").port();
    let domain = format!("http://{}", http.local_addr().expect("addr"));
    let bootstraps = Arc::new(AtomicUsize::new(0));
    let count = bootstraps.clone();
    std::thread::spawn(move || {
        for mut s in http.incoming().map_while(Result::ok) {
            count.fetch_add(1, Ordering::SeqCst);
            if !crate::lark_ws::read_http_request(&mut s) {
                continue;
            }
            let body = serde_json::json!({"code": 0, "msg": "ok", "data": {
                "URL": format!("ws://127.0.0.1:{ws_port}/ws?service_id=1&access_key=AK&ticket=T"),
                "ClientConfig": {"ReconnectCount": -1, "ReconnectInterval": 1,
                                 "ReconnectNonce": 1, "PingInterval": 1}}})
            .to_string();
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    std::thread::spawn(move || {
        for s in ws.incoming().map_while(Result::ok) {
            let Ok(mut sock) = tungstenite::accept(s) else {
                continue;
            };
            std::thread::spawn(move || {
                for i in 0..frames {
                    if sock
                        .send(tungstenite::Message::Binary(padded_event(i, pad).into()))
                        .is_err()
                    {
                        break;
                    }
                }
                // Never read again; keep the socket open.
                std::thread::sleep(Duration::from_secs(600));
                drop(sock);
            });
        }
    });
    (domain, bootstraps)
}

/// README: a connection without a pong for more than three ping intervals is replaced, and so
/// is one whose write does not complete within that. With `PingInterval` 1 s and a peer that
/// reads nothing (so never answers a ping), a reconnect (a second bootstrap) is due within ~5 s.
/// Without the bound, the blocked ack write held the loop: no ping, no check, for good.
#[test]
fn a_peer_that_stops_reading_is_never_declared_dead() {
    let (domain, bootstraps) = stuck_peer(48, 1024 * 1024);
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = spawn(dir.path(), &config_at(&domain, "", ""));
    assert!(wait_until(WAIT, || bootstraps.load(Ordering::SeqCst) >= 1));
    let reconnected = wait_until(Duration::from_secs(15), || {
        bootstraps.load(Ordering::SeqCst) >= 2
    });
    assert!(
        reconnected,
        "no pong for 15 s at PingInterval 1 s, yet the connection was never replaced\n{}",
        gw.log()
    );
    assert!(
        gw.log().contains("not written within 3s"),
        "the lost connection's reason names the write\n{}",
        gw.log()
    );
}

/// A gateway (`shutdown_grace` 20 s) connected to a peer that stopped reading, once the acks
/// have filled the socket buffers: its stop's long-connection drain holds for up to 5 s.
fn gateway_with_a_full_peer() -> (tempfile::TempDir, gateway_e2e::harness::TestGateway) {
    let (domain, bootstraps) = stuck_peer(48, 1024 * 1024);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg =
        config_at(&domain, "", "").replace("shutdown_grace = \"5s\"", "shutdown_grace = \"20s\"");
    let gw = spawn(dir.path(), &cfg);
    assert!(wait_until(WAIT, || bootstraps.load(Ordering::SeqCst) >= 1));
    // Let the acks fill the socket buffers (at once), well before the blocked write's own
    // 3 s bound replaces the connection (at 3 s a stop could find it already gone).
    std::thread::sleep(Duration::from_secs(1));
    (dir, gw)
}

/// README (`shutdown_grace`): long connections get at most 5 s of the grace to ack their
/// in-flight messages. A peer that stopped reading held the stop for the whole grace (20 s).
#[test]
fn a_peer_that_stops_reading_holds_a_stop_no_longer_than_the_long_connections_5_s() {
    let (_dir, mut gw) = gateway_with_a_full_peer();
    let asked = Instant::now();
    gw.signal("TERM");
    let status = gw.wait(Duration::from_secs(40)).expect("the gateway exits");
    let took = asked.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took < Duration::from_secs(8),
        "took {took:?} to stop (grace 20 s; long connections should take at most 5 s)\n{}",
        gw.log()
            .lines()
            .filter(|l| !l.contains("DEBUG"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// README (signals): a second signal exits at once, also while the long connections drain.
/// The stop above waits up to 5 s for a peer that stopped reading; a second signal half a second
/// into it ends the process then, with status 1 (a signal seen only after the drain: 4.5 s).
#[test]
fn a_second_signal_during_the_long_connections_drain_exits_at_once() {
    let (_dir, mut gw) = gateway_with_a_full_peer();
    gw.signal("TERM");
    assert!(
        wait_until(WAIT, || gw.log().contains("shutting down")),
        "the stop began\n{}",
        gw.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !gw.log().contains("long connections closed")
            && !gw.log().contains("long connections did not close"),
        "the long connections' drain was over before the second signal: the test shows nothing\n{}",
        gw.log()
    );
    let asked = Instant::now();
    gw.signal("TERM");
    let status = gw.wait(Duration::from_secs(40)).expect("the gateway exits");
    let took = asked.elapsed();
    assert_eq!(status.code(), Some(1), "{status:?}\n{}", gw.log());
    assert!(
        took < Duration::from_secs(3),
        "the second signal's exit took {took:?}\n{}",
        gw.log()
    );
    assert!(
        gw.log().contains("second signal: exiting now"),
        "{}",
        gw.log()
    );
}
