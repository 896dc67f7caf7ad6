//! A reload's handover of a running connection to new settings, in time: the replaced
//! client's in-flight acks, which a shutdown waits for. The stand-in holds the trial's
//! bootstrap (`hold_bootstraps`) so that a message is read on the old connection just before
//! the handover. Part of `longconn.rs`.

use std::time::{Duration, Instant};

use gateway_e2e::harness::{metric, wait_until, TestGateway};

use super::helpers::{config, connected, event, scrape, spawn, WAIT};
use crate::lark_ws::LarkWs;

/// A gateway whose `hire` app was moved by a reload from `first` to `second` while a message,
/// `m-held`, was in flight on `first`: the store is locked by the returned connection, so the
/// message waits the store's 1 s for its write lock, then is refused and acked 500. The
/// trial's bootstrap is held until the message was read, so the handover follows it closely.
struct BusyHandover {
    first: LarkWs,
    second: LarkWs,
    gw: TestGateway,
    store_lock: rusqlite::Connection,
    _dir: tempfile::TempDir,
}

fn busy_handover() -> BusyHandover {
    let (first, second) = (LarkWs::start(), LarkWs::start());
    second.hold_bootstraps(true);
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = spawn(dir.path(), &config(&first, "", ""));
    connected(&first, 1);
    let moved = config(&first, "", "").replace(&first.domain(), &second.domain());
    std::fs::write(dir.path().join("gateway.toml"), moved).expect("write");
    gw.signal("HUP");
    assert!(
        wait_until(WAIT, || second.bootstraps().len() == 1),
        "the new settings are tried\n{}",
        gw.log()
    );
    let store_lock = rusqlite::Connection::open(dir.path().join("data/gateway.db")).expect("open");
    store_lock.execute_batch("BEGIN IMMEDIATE").expect("lock");
    assert!(first.push_event("m-held", &event("ev-held", "test.sink")));
    let frames = r#"gateway_longconn_frames_total{app="hire",kind="event"}"#;
    assert!(wait_until(WAIT, || metric(&scrape(&gw), frames) == 1.0));
    second.hold_bootstraps(false);
    assert!(
        wait_until(WAIT, || gw
            .log()
            .contains("connected with the new settings")),
        "{}",
        gw.log()
    );
    BusyHandover {
        first,
        second,
        gw,
        store_lock,
        _dir: dir,
    }
}

/// The log line of `m-held`'s refusal came after the handover's: the message was still in
/// flight when its client was replaced (what the test is about; the store holds it 1 s).
fn assert_in_flight_at_the_handover(log: &str) {
    // m-held is the one message refused in these tests.
    let handover = log.find("connected with the new settings");
    let refused = log.find("message refused");
    assert!(
        matches!((handover, refused), (Some(h), Some(r)) if h < r),
        "premise not met: m-held was not in flight at the handover\n{log}"
    );
}

/// SIGTERM right after a handover, while the replaced connection still waits to ack a message:
/// the shutdown waits for that client too (it was no longer among the running ones, so its
/// ack could be cut off by the exit).
#[test]
fn a_shutdown_waits_for_the_acks_of_a_connection_a_reload_replaced() {
    let BusyHandover {
        first,
        second: _second,
        mut gw,
        store_lock: _store_lock,
        _dir,
    } = busy_handover();
    let stopping = Instant::now();
    gw.signal("TERM");
    let status = gw.wait(Duration::from_secs(20)).expect("the gateway exits");
    assert!(status.success(), "{status:?}\n{}", gw.log());
    let log = gw.log();
    assert_in_flight_at_the_handover(&log);
    let ack = first
        .acks()
        .into_iter()
        .find(|a| a.message_id == "m-held")
        .unwrap_or_else(|| panic!("m-held was never acked\n{log}"));
    assert_eq!(ack.code, Some(500), "refused: the store was locked");
    assert!(
        ack.at > stopping,
        "premise not met: m-held was acked before the shutdown began\n{log}"
    );
    // Both clients, the replaced one too, ended before the long connections were done.
    let closed = log
        .find("long connections closed")
        .unwrap_or_else(|| panic!("no end of the long connections\n{log}"));
    let finished = log[..closed]
        .matches("long connection client finished")
        .count();
    assert_eq!(finished, 2, "{log}");
}
