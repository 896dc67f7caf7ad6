//! Keeping the connection, or giving it up: pings at the interval Lark sets, reconnects with the
//! configured backoff and a new bootstrap, a silent connection declared dead, `ReconnectCount`
//! as a budget, and the fatal bootstrap and handshake codes that stop the app without a retry
//! storm. Part of `longconn.rs`.

use std::time::{Duration, Instant};

use gateway_e2e::harness::{get, metric, wait_until, TestGateway};

use super::helpers::{ack_code, assert_no_secrets, config, connected, event, spawn, WAIT};
use crate::lark_ws::LarkWs;

#[test]
fn pings_follow_ping_interval_and_a_pong_changes_it() {
    let lark = LarkWs::start();
    lark.set_client_config(serde_json::json!({
        "ReconnectCount": -1, "ReconnectInterval": 1, "ReconnectNonce": 1, "PingInterval": 30
    }));
    // The pong to the first ping (sent at once on connect) lowers the interval to 1 s; without
    // it there would be no second ping for 30 s.
    lark.pong_config_once(serde_json::json!({"PingInterval": 1}));
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = spawn(dir.path(), &config(&lark, "", ""));
    connected(&lark, 1);
    assert!(
        wait_until(WAIT, || lark.pings().len() >= 4),
        "{:?}",
        lark.pings()
    );
    let pings = lark.pings();
    assert!(pings
        .iter()
        .all(|(_, service)| *service == LarkWs::SERVICE_ID));
    for pair in pings[1..].windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap >= Duration::from_millis(800) && gap <= Duration::from_millis(2500),
            "gap {gap:?} in {pings:?}"
        );
    }
    // The pong came right after the first ping; the new interval runs from it: the second
    // ping comes one new interval later, not at once.
    let first_gap = pings[1].0 - pings[0].0;
    assert!(
        first_gap >= Duration::from_millis(800) && first_gap <= Duration::from_millis(2500),
        "{first_gap:?}"
    );
    assert!(
        gw.log().contains("client config updated by Lark"),
        "{}",
        gw.log()
    );
}

#[test]
fn a_dropped_connection_reconnects_with_the_configured_backoff_and_a_new_bootstrap() {
    let lark = LarkWs::start();
    lark.set_client_config(serde_json::json!({
        "ReconnectCount": -1, "ReconnectInterval": 1, "ReconnectNonce": 1, "PingInterval": 30
    }));
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = spawn(dir.path(), &config(&lark, "", ""));
    connected(&lark, 1);
    assert_eq!(lark.bootstraps().len(), 1);
    // Two refused handshakes (retryable) after the drop, then success.
    lark.refuse_handshakes(2, "500", None);
    let dropped = Instant::now();
    lark.drop_connection();
    connected(&lark, 2);
    let attempts: Vec<Instant> = lark
        .handshakes()
        .iter()
        .map(|(at, _)| *at)
        .filter(|at| *at > dropped)
        .collect();
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    assert!(
        attempts[0] - dropped < Duration::from_millis(1500),
        "first wait is in [0, nonce)"
    );
    for pair in attempts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(900),
            "ReconnectInterval honoured: {gap:?}"
        );
    }
    assert_eq!(lark.bootstraps().len(), 4, "every attempt bootstraps again");
    assert!(lark.push_event("m-after", &event("ev-after", "test.sink")));
    assert_eq!(ack_code(&lark, "m-after"), Some(200));
    let m = get(&gw.admin_url("/metrics")).expect("metrics").body;
    assert_eq!(
        metric(&m, r#"gateway_longconn_connects_total{app="hire"}"#),
        2.0
    );
    assert_eq!(
        metric(&m, r#"gateway_longconn_reconnects_total{app="hire"}"#),
        3.0
    );
    assert_no_secrets(&gw);
}

#[test]
fn a_silent_connection_is_declared_dead_and_replaced() {
    let lark = LarkWs::start();
    lark.set_client_config(serde_json::json!({
        "ReconnectCount": -1, "ReconnectInterval": 1, "ReconnectNonce": 1, "PingInterval": 1
    }));
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = spawn(dir.path(), &config(&lark, "", ""));
    connected(&lark, 1);
    lark.set_silent(true);
    let silenced = Instant::now();
    assert!(
        wait_until(Duration::from_secs(15), || lark.bootstraps().len() >= 2),
        "no reconnect after pongs stopped:\n{}",
        gw.log()
    );
    let detected = silenced.elapsed();
    assert!(
        detected >= Duration::from_secs(2),
        "declared dead too early: {detected:?}"
    );
    lark.set_silent(false);
    connected(&lark, 2);
    assert!(gw.log().contains("no pong for"), "{}", gw.log());
}

#[test]
fn reconnect_count_is_a_budget_then_the_app_fails() {
    let lark = LarkWs::start();
    lark.set_client_config(serde_json::json!({
        "ReconnectCount": 2, "ReconnectInterval": 1, "ReconnectNonce": 0, "PingInterval": 30
    }));
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = spawn(dir.path(), &config(&lark, "", ""));
    connected(&lark, 1);
    lark.refuse_handshakes(10, "500", None);
    lark.drop_connection();
    assert!(
        wait_until(WAIT, || gw
            .log()
            .contains("gave up after 2 reconnect attempt(s)")),
        "{}",
        gw.log()
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(lark.handshakes().len(), 3, "1 + ReconnectCount attempts");
    let ready = get(&gw.admin_url("/readyz")).expect("readyz");
    assert_eq!(ready.status, 503);
    assert!(
        ready.body.contains("websocket app hire: failed"),
        "{}",
        ready.body
    );
    // A reload gives a client that gave up a fresh start, its settings unchanged (as README
    // "Webhook or long connection?" says): it connects once Lark accepts again.
    lark.refuse_handshakes(0, "500", None);
    gw.signal("HUP");
    connected(&lark, 2);
    assert!(
        wait_until(WAIT, || get(&gw.admin_url("/readyz"))
            .is_ok_and(|r| r.status == 200)),
        "{}",
        gw.log()
    );
    assert!(
        gw.log().contains("restarting after a failure"),
        "{}",
        gw.log()
    );
}

#[test]
fn a_fatal_bootstrap_code_stops_the_app_with_a_clear_error_and_no_retry_storm() {
    let lark = LarkWs::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(&lark, "", "");
    let gw = TestGateway::spawn_with_env(dir.path(), &cfg, &[("WS_SECRET", "wrong-secret")]);
    assert!(
        wait_until(WAIT, || gw.log().contains("long connection stopped")),
        "{}",
        gw.log()
    );
    let log = gw.log();
    assert!(log.contains("code 1000040344"), "{log}");
    assert!(log.contains("check app_id and app_secret"), "{log}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lark.bootstraps().len(), 1, "a fatal code is not retried");
    assert_eq!(lark.handshakes().len(), 0);
    let ready = get(&gw.admin_url("/readyz")).expect("readyz");
    assert_eq!(ready.status, 503);
    assert!(
        ready
            .body
            .contains("websocket app hire: failed (Lark refused"),
        "{}",
        ready.body
    );
    // One answer everywhere: /status and the console's overview said "ready" (review finding).
    assert!(
        ready
            .body
            .starts_with("websocket app not connected: hire\n"),
        "{}",
        ready.body
    );
    for path in ["/status", "/api/v1/overview"] {
        let answer = get(&gw.admin_url(path)).expect(path);
        let v: serde_json::Value = serde_json::from_str(&answer.body).expect("json");
        assert_eq!(v["ready"], false, "{path}: {}", answer.body);
    }
    assert!(!gw.log().contains("wrong-secret"));
    // Webhook traffic and the rest of the gateway are unaffected.
    assert_eq!(get(&gw.admin_url("/healthz")).expect("healthz").status, 200);
}

/// `ClientConfig` values above the gateway's caps (a ping interval over 10 minutes, a
/// reconnect wait over 5) are used as the caps, each with a warning naming the value and
/// where it came from (README "Webhook or long connection?"), from a bootstrap answer and from
/// a pong alike.
#[test]
fn client_config_values_above_the_caps_are_warned_about() {
    let lark = LarkWs::start();
    lark.set_client_config(serde_json::json!({
        "ReconnectCount": -1, "ReconnectInterval": 86400, "ReconnectNonce": 0, "PingInterval": 30
    }));
    lark.pong_config_once(serde_json::json!({"PingInterval": 86400}));
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = spawn(dir.path(), &config(&lark, "", ""));
    connected(&lark, 1);
    let warned = |line: &str| {
        gw.log()
            .lines()
            .any(|l| l.contains(line) && l.contains("86400"))
    };
    assert!(
        wait_until(WAIT, || warned(
            "the bootstrap answer asked for a ReconnectInterval above the gateway's cap"
        ) && warned(
            "a pong asked for a PingInterval above the gateway's cap"
        )),
        "{}",
        gw.log()
    );
}

/// A refusal that retrying cannot fix, met while reconnecting after a lost connection (here
/// the 50-connection limit), stops the app as it would at the first connect: no retry storm.
#[test]
fn a_fatal_refusal_while_reconnecting_stops_the_app() {
    let lark = LarkWs::start();
    lark.set_client_config(serde_json::json!({
        "ReconnectCount": -1, "ReconnectInterval": 1, "ReconnectNonce": 0, "PingInterval": 30
    }));
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = spawn(dir.path(), &config(&lark, "", ""));
    connected(&lark, 1);
    lark.refuse_handshakes(10, "514", Some("1000040350"));
    lark.drop_connection();
    assert!(
        wait_until(WAIT, || gw.log().contains("long connection stopped")),
        "{}",
        gw.log()
    );
    assert!(gw.log().contains("1000040350"), "{}", gw.log());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        lark.handshakes().len(),
        2,
        "one refused reconnect, no retry"
    );
    let ready = get(&gw.admin_url("/readyz")).expect("readyz");
    assert_eq!(ready.status, 503);
    assert!(
        ready.body.contains("websocket app hire: failed"),
        "{}",
        ready.body
    );
}

/// A failure worth retrying at the very first connect (Lark busy: a handshake answered 500) is
/// retried per the policy, as after a lost connection: the app connects on the next attempt
/// and never shows as failed.
#[test]
fn a_retryable_refusal_of_the_first_connect_is_retried() {
    let lark = LarkWs::start();
    lark.set_client_config(serde_json::json!({
        "ReconnectCount": -1, "ReconnectInterval": 1, "ReconnectNonce": 0, "PingInterval": 30
    }));
    lark.refuse_handshakes(1, "500", None);
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = spawn(dir.path(), &config(&lark, "", ""));
    connected(&lark, 1);
    let accepted: Vec<bool> = lark.handshakes().iter().map(|(_, ok)| *ok).collect();
    assert_eq!(accepted, [false, true], "refused once, then connected");
    assert_eq!(lark.bootstraps().len(), 2, "every attempt bootstraps again");
    assert!(
        wait_until(WAIT, || get(&gw.admin_url("/readyz"))
            .is_ok_and(|r| r.status == 200)),
        "{}",
        gw.log()
    );
    assert!(
        !gw.log().contains("long connection stopped"),
        "{}",
        gw.log()
    );
}

/// Whatever Lark's reconnect timing (here `ReconnectNonce` 0: reconnect at once), a server
/// that closes every connection right after its handshake is not hammered: the gap between
/// attempts is 1 s and doubles for each further connection in a row lost at once (1 s, then
/// 2 s here).
#[test]
fn a_server_closing_every_connection_at_once_is_not_hammered() {
    let lark = LarkWs::start();
    lark.set_client_config(serde_json::json!({
        "ReconnectCount": -1, "ReconnectInterval": 1, "ReconnectNonce": 0, "PingInterval": 30
    }));
    lark.close_accepted(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = spawn(dir.path(), &config(&lark, "", ""));
    connected(&lark, 1);
    let at: Vec<Instant> = lark.handshakes().iter().map(|(at, _)| *at).collect();
    assert_eq!(at.len(), 3, "two closed at once, then one kept: {at:?}");
    let gaps: Vec<Duration> = at.windows(2).map(|p| p[1] - p[0]).collect();
    assert!(
        gaps[0] >= Duration::from_millis(900) && gaps[1] >= Duration::from_millis(1800),
        "{gaps:?}\n{}",
        gw.log()
    );
    assert!(lark.push_event("m-kept", &event("ev-kept", "test.sink")));
    assert_eq!(ack_code(&lark, "m-kept"), Some(200));
}

#[test]
fn handshake_refused_for_the_connection_limit_is_fatal() {
    let lark = LarkWs::start();
    lark.refuse_handshakes(1, "514", Some("1000040350"));
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = spawn(dir.path(), &config(&lark, "", ""));
    assert!(
        wait_until(WAIT, || gw.log().contains("long connection stopped")),
        "{}",
        gw.log()
    );
    assert!(gw.log().contains("1000040350"), "{}", gw.log());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lark.bootstraps().len(), 1);
    assert_eq!(lark.handshakes().len(), 1);
    assert_no_secrets(&gw);
}

/// tungstenite's client handshake logs its whole request line (the URL's `access_key` and
/// `ticket`) at trace, through the `log` bridge: never written, whatever the filter.
#[test]
fn trace_logging_does_not_write_the_connection_url_credentials() {
    let lark = LarkWs::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn_with_env(
        dir.path(),
        &config(&lark, "", ""),
        &[
            ("WS_SECRET", LarkWs::APP_SECRET),
            ("RUST_LOG", "info,tungstenite=trace"),
        ],
    );
    connected(&lark, 1);
    assert!(wait_until(WAIT, || gw
        .log()
        .contains("Client handshake done")));
    assert_no_secrets(&gw);
    // The bridge is live (tungstenite's debug lines are written): only its trace is held back.
    assert!(
        gw.log().contains("Client handshake done"),
        "tungstenite's debug line is in the log:\n{}",
        gw.log()
    );
}
