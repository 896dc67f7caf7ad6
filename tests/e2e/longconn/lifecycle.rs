//! The long-connection client's life cycle around shutdown and reload: cancellation while it
//! connects, new settings tried before the old connection goes, and a reload that moves the
//! connection to a new domain or stops it with its app (the handover's timing: `handover`).
//! Part of `longconn.rs`.

use std::time::{Duration, Instant};

use gateway_e2e::harness::{base_config, get, metric, post, wait_until, TestGateway};

use super::helpers::{
    ack_code, config, config_at, connected, event, scrape, spawn, HungEndpoint, WAIT,
};
use crate::lark_ws::LarkWs;

/// SIGTERM while the bootstrap waits for an answer (up to its 10 s timeout, then a 15 s dial)
/// ends the client at once: the connect was not raced against the cancel token, so it ate
/// the whole shared `shutdown_grace`.
#[test]
fn sigterm_while_the_bootstrap_hangs_exits_promptly() {
    let hung = HungEndpoint::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config_at(&hung.domain(), "", "")
        .replace("shutdown_grace = \"5s\"", "shutdown_grace = \"10s\"");
    let mut gw = spawn(dir.path(), &cfg);
    assert!(
        wait_until(WAIT, || hung.accepted() >= 1),
        "no bootstrap\n{}",
        gw.log()
    );
    let asked = Instant::now();
    gw.signal("TERM");
    let status = gw.wait(Duration::from_secs(20)).expect("the gateway exits");
    let took = asked.elapsed();
    assert!(status.success(), "{status:?}\n{}", gw.log());
    assert!(
        took < Duration::from_secs(6),
        "took {took:?} to stop with a bootstrap pending (grace 10 s)\n{}",
        gw.log()
    );
}

/// SIGTERM while a reload tries an app's new settings (its bootstrap held unanswered): the
/// trial ends with the stop, and that is no refusal of the settings: nothing is logged or
/// counted as "not applied".
#[test]
fn a_stop_during_a_trial_of_new_settings_is_no_refusal_of_them() {
    let lark = LarkWs::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let with_secret = |secret: &str| config(&lark, "", "").replace("${WS_SECRET}", secret);
    let mut gw = TestGateway::spawn(dir.path(), &with_secret(LarkWs::APP_SECRET));
    connected(&lark, 1);
    lark.hold_bootstraps(true);
    std::fs::write(dir.path().join("gateway.toml"), with_secret("rotated")).expect("write");
    gw.signal("HUP");
    assert!(
        wait_until(WAIT, || lark.bootstraps().len() >= 2),
        "the reload's trial did not bootstrap\n{}",
        gw.log()
    );
    gw.signal("TERM");
    let status = gw.wait(Duration::from_secs(20)).expect("the gateway exits");
    assert!(status.success(), "{status:?}\n{}", gw.log());
    let log = gw.log();
    assert!(log.contains("long connections closed"), "{log}");
    assert!(!log.contains("were not applied"), "{log}");
}

/// A reload whose new app settings Lark refuses (a typo'd app_secret) leaves the working
/// connection up: the new settings are tried first, and only a connection made with them
/// replaces the old one. The reload reports the app's settings as not applied (API, log,
/// metric). A reload with settings Lark accepts moves the connection over afterwards.
#[test]
fn a_reload_with_a_refused_secret_keeps_the_working_connection() {
    let lark = LarkWs::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let with_secret = |secret: &str| config(&lark, "", "").replace("${WS_SECRET}", secret);
    let gw = TestGateway::spawn(dir.path(), &with_secret(LarkWs::APP_SECRET));
    connected(&lark, 1);
    std::fs::write(dir.path().join("gateway.toml"), with_secret("ws_secreT")).expect("write");
    let json = [("Content-Type".to_owned(), "application/json".to_owned())];
    let answer = post(&gw.admin_url("/api/v1/reload"), &json, "{}").expect("reload");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let v: serde_json::Value = serde_json::from_str(&answer.body).expect("json");
    let not_applied = v["not_applied"].to_string();
    assert!(
        not_applied.contains("hire") && not_applied.contains("1000040344"),
        "{}",
        answer.body
    );
    assert_eq!(lark.bootstraps().len(), 2, "the new secret was tried");
    assert_eq!(lark.open_connections(), 1, "{}", gw.log());
    assert!(lark.push_event("m-kept", &event("ev-kept", "test.sink")));
    assert_eq!(ack_code(&lark, "m-kept"), Some(200));
    let m = scrape(&gw);
    assert_eq!(metric(&m, r#"gateway_longconn_connected{app="hire"}"#), 1.0);
    assert_eq!(
        metric(&m, r#"gateway_longconn_connects_total{app="hire"}"#),
        1.0
    );
    assert_eq!(
        metric(&m, r#"gateway_longconn_settings_refused_total{app="hire"}"#),
        1.0
    );
    let ready = get(&gw.admin_url("/readyz")).expect("readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert!(gw.log().contains("previous settings"), "{}", gw.log());

    // Put back: the running connection has these settings already; nothing to try.
    std::fs::write(
        dir.path().join("gateway.toml"),
        with_secret(LarkWs::APP_SECRET),
    )
    .expect("write");
    let answer = post(&gw.admin_url("/api/v1/reload"), &json, "{}").expect("reload");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(!answer.body.contains("hire"), "{}", answer.body);
    assert_eq!(lark.bootstraps().len(), 2);
    assert_eq!(lark.open_connections(), 1);
}

/// An `app_id` change names another Lark app: the running connection (the old app's events,
/// which the new config's pin refuses) is not kept; a refusal of the new one shows the app
/// failed, as for a new app.
#[test]
fn a_reload_that_changes_app_id_replaces_the_connection() {
    let lark = LarkWs::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(&lark, "", "");
    let gw = spawn(dir.path(), &cfg);
    connected(&lark, 1);
    let moved = cfg.replace(
        &format!("app_id = \"{}\"", LarkWs::APP_ID),
        "app_id = \"cli_other\"",
    );
    assert_ne!(moved, cfg);
    std::fs::write(dir.path().join("gateway.toml"), moved).expect("write");
    let json = [("Content-Type".to_owned(), "application/json".to_owned())];
    let answer = post(&gw.admin_url("/api/v1/reload"), &json, "{}").expect("reload");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        wait_until(Duration::from_secs(10), || lark.open_connections() == 0),
        "the old app's connection was kept: {}",
        gw.log()
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            get(&gw.admin_url("/readyz"))
                .is_ok_and(|r| r.status == 503 && r.body.contains("failed"))
        }),
        "{}",
        gw.log()
    );
    let m = scrape(&gw);
    assert_eq!(metric(&m, r#"gateway_longconn_connected{app="hire"}"#), 0.0);
}

#[test]
fn a_reload_moves_the_connection_when_the_domain_changes_and_stops_it_when_the_app_goes() {
    let first = LarkWs::start();
    let second = LarkWs::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let webhook = "[[apps]]\nname = \"pushed\"\npath = \"/hook\"\n";
    let gw = spawn(dir.path(), &config(&first, "", webhook));
    connected(&first, 1);
    let moved = config(&first, "", webhook).replace(&first.domain(), &second.domain());
    std::fs::write(dir.path().join("gateway.toml"), moved).expect("write");
    gw.signal("HUP");
    connected(&second, 1);
    assert!(
        wait_until(WAIT, || first.open_connections() == 0),
        "the old connection closes"
    );
    assert!(second.push_event("m-moved", &event("ev-moved", "test.sink")));
    assert_eq!(ack_code(&second, "m-moved"), Some(200));
    // Without the websocket app, no connection remains and /readyz no longer lists it.
    let without: String = format!(
        "{}\n[[apps]]\nname = \"pushed\"\npath = \"/hook\"\n",
        base_config()
    );
    std::fs::write(dir.path().join("gateway.toml"), without).expect("write");
    gw.signal("HUP");
    assert!(
        wait_until(WAIT, || second.open_connections() == 0),
        "{}",
        gw.log()
    );
    let ready = get(&gw.admin_url("/readyz")).expect("readyz");
    assert!(!ready.body.contains("websocket app"), "{}", ready.body);
}

/// An `app_id` change stops the running connection and starts a new client: the connected
/// gauge read 1 until that client's first connect ended (a bootstrap's 10 s), while `/readyz`
/// said the app was not connected.
#[test]
fn the_connected_gauge_drops_as_soon_as_an_app_id_change_stops_the_connection() {
    let lark = LarkWs::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = spawn(dir.path(), &config(&lark, "", ""));
    assert!(lark.wait_connections(1, WAIT));
    let gauge = r#"gateway_longconn_connected{app="hire"}"#;
    let scrape = || get(&gw.admin_url("/metrics")).expect("metrics").body;
    assert!(wait_until(WAIT, || metric(&scrape(), gauge) == 1.0));
    lark.hold_bootstraps(true);
    let changed = config(&lark, "", "").replace(LarkWs::APP_ID, "cli_other_app");
    std::fs::write(dir.path().join("gateway.toml"), changed).expect("write");
    gw.signal("HUP");
    assert!(
        wait_until(WAIT, || gw.log().contains("app_id changed")),
        "{}",
        gw.log()
    );
    let at_once = wait_until(Duration::from_secs(2), || metric(&scrape(), gauge) == 0.0);
    lark.hold_bootstraps(false);
    assert!(at_once, "the gauge still said connected: {}", scrape());
}

/// A bootstrap answer is a few hundred bytes, and the gateway reads up to 64 KiB of one: an
/// answer of several KiB (here a `ClientConfig` with a field the gateway does not know) is read
/// whole, not cut to a few hundred bytes and refused as malformed.
#[test]
fn a_bootstrap_answer_of_several_kib_is_read_whole() {
    let lark = LarkWs::start();
    lark.set_client_config(serde_json::json!({
        "ReconnectCount": -1, "ReconnectInterval": 1, "ReconnectNonce": 0, "PingInterval": 30,
        "FutureSetting": "x".repeat(8 * 1024)
    }));
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = spawn(dir.path(), &config(&lark, "", ""));
    connected(&lark, 1);
    assert_eq!(lark.bootstraps().len(), 1, "{}", gw.log());
}
