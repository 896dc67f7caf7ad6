//! A reload's handover of a running connection to new settings, in time: each app handed over
//! as soon as its own trial connects (another app's trial still waiting), and the replaced
//! client's in-flight acks, which a shutdown waits for and which must not touch the connected
//! gauge of its successor. The stand-in holds the trial's bootstrap (`hold_bootstraps`) so that
//! a message is read on the old connection just before the handover. Part of `longconn.rs`.

use std::time::{Duration, Instant};

use gateway_e2e::harness::{get, metric, post, wait_until, TestGateway};

use super::helpers::{
    ack_code, config, connected, event, scrape, spawn, HungEndpoint, TOKEN, WAIT,
};
use crate::lark_ws::LarkWs;

/// A second websocket app, `staff`, bootstrapping at `domain`.
fn staff_app(domain: &str) -> String {
    format!(
        r#"
[[apps]]
name = "staff"
mode = "websocket"
app_id = "{app_id}"
app_secret = "${{WS_SECRET}}"
domain = "{domain}"
verification_token = "{TOKEN}"
"#,
        app_id = LarkWs::APP_ID
    )
}

/// A reload that gives two apps new settings tries both at once; `hire`'s trial connects at
/// once, `staff`'s waits for a bootstrap that is never answered (the gateway gives up after
/// 10 s). `hire` is handed over while `staff`'s trial still waits (every handover waited for the
/// slowest trial); the reload returns once `staff`'s trial ends, refused, with that refusal.
#[test]
fn each_app_is_handed_over_as_soon_as_its_own_trial_connects() {
    let (hire_old, hire_new, staff_old) = (LarkWs::start(), LarkWs::start(), LarkWs::start());
    let hung = HungEndpoint::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = spawn(
        dir.path(),
        &config(&hire_old, "", &staff_app(&staff_old.domain())),
    );
    connected(&hire_old, 1);
    connected(&staff_old, 1);
    let moved = config(&hire_new, "", &staff_app(&hung.domain()));
    std::fs::write(dir.path().join("gateway.toml"), moved).expect("write");
    let url = gw.admin_url("/api/v1/reload");
    let reload = std::thread::spawn(move || {
        let json = [("Content-Type".to_owned(), "application/json".to_owned())];
        post(&url, &json, "{}")
    });
    assert!(
        wait_until(WAIT, || hung.accepted() >= 1),
        "staff's trial bootstraps\n{}",
        gw.log()
    );
    connected(&hire_new, 1);
    assert!(
        wait_until(WAIT, || hire_old.open_connections() == 0),
        "hire's old connection is let go\n{}",
        gw.log()
    );
    // Before staff's trial ended: its bootstrap still waits for an answer.
    assert_eq!(
        hung.closed(),
        0,
        "hire was handed over only once staff's trial had given up\n{}",
        gw.log()
    );
    assert!(!reload.is_finished(), "the reload waits for every trial");
    assert!(hire_new.push_event("m-hire", &event("ev-hire", "test.sink")));
    assert_eq!(ack_code(&hire_new, "m-hire"), Some(200));

    // Staff's trial is refused: its bootstrap breaks. The reload reports it, and only it.
    hung.release();
    let answer = reload.join().expect("reload thread").expect("reload");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let v: serde_json::Value = serde_json::from_str(&answer.body).expect("json");
    let not_applied = v["not_applied"].to_string();
    assert!(
        not_applied.contains("app staff") && !not_applied.contains("app hire"),
        "{}",
        answer.body
    );
    assert_eq!(
        staff_old.open_connections(),
        1,
        "staff keeps its connection"
    );
    assert!(staff_old.push_event("m-staff", &event("ev-staff", "test.sink")));
    assert_eq!(ack_code(&staff_old, "m-staff"), Some(200));
    let m = scrape(&gw);
    let refused = |app: &str| {
        metric(
            &m,
            &format!(r#"gateway_longconn_settings_refused_total{{app="{app}"}}"#),
        )
    };
    assert_eq!((refused("hire"), refused("staff")), (0.0, 1.0));
    for app in ["hire", "staff"] {
        let gauge = format!(r#"gateway_longconn_connected{{app="{app}"}}"#);
        assert_eq!(metric(&m, &gauge), 1.0, "{app}\n{m}");
    }
}

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

/// `gateway_longconn_connected{app}` is 1 while the app is connected, also after a reload
/// replaced its connection while a message was in flight on the old one: the old client, still
/// acking after its successor set the gauge to 1, speaks for the app no more.
///
/// What this does not reach: the race this guarded first (the old client, done acking, set its
/// state to "connecting" and the gauge to 0) is gone since a cancelled session returns without
/// writing any state (`Ended::Cancelled`); a cancelled client now reaches `Ctx::set` only when a
/// connect attempt or a lost connection completes in the instants before it sees its cancel,
/// which no test outside the process can schedule. `longconn::tests` covers that guard.
#[test]
fn the_connected_gauge_stays_1_after_a_reload_replaced_a_busy_connection() {
    let BusyHandover {
        first,
        second,
        gw,
        store_lock,
        _dir,
    } = busy_handover();
    assert!(
        wait_until(WAIT, || first.acks().len() == 1),
        "the old connection acked its message\n{}",
        gw.log()
    );
    assert!(
        wait_until(WAIT, || gw
            .log()
            .contains("long connection client finished")),
        "the old client ends once its message is acked\n{}",
        gw.log()
    );
    assert_in_flight_at_the_handover(&gw.log());
    store_lock.execute_batch("ROLLBACK").expect("unlock");
    assert_eq!(
        first.acks()[0].code,
        Some(500),
        "refused: the store was locked"
    );
    assert_eq!(second.open_connections(), 1);
    let connected = r#"gateway_longconn_connected{app="hire"}"#;
    assert_eq!(metric(&scrape(&gw), connected), 1.0, "{}", scrape(&gw));
    let ready = get(&gw.admin_url("/readyz")).expect("readyz");
    assert!(
        ready.body.contains("websocket app hire: connected"),
        "{}",
        ready.body
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
