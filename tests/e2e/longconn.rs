//! The long-connection (websocket) mode end to end: the real gateway binary dials a stand-in of
//! Lark's long-connection server (`standins/lark_ws.rs`, plain ws on loopback), events reach real
//! plugins, and every ack is checked against what the store holds.

#[path = "../standins/lark_ws.rs"]
mod lark_ws;

use std::path::Path;
use std::time::{Duration, Instant};

use gateway_e2e::harness::{
    base_config, binaries, get, metric, read_jsonl, run_cli_with_env, wait_until, Lark, TestGateway,
};
use lark_ws::LarkWs;

const TOKEN: &str = "ws-token";
const WAIT: Duration = Duration::from_secs(10);

/// A websocket app `hire` on `lark`, the logger as `audit` (for every `test.*` event) and a
/// testkit `sink` recording to `data/sink.jsonl` (for `test.sink`), plus `extra` TOML.
fn config(lark: &LarkWs, app_extra: &str, extra: &str) -> String {
    config_at(&lark.domain(), app_extra, extra)
}

/// [`config`] with the app's `domain` set to `domain`.
fn config_at(domain: &str, app_extra: &str, extra: &str) -> String {
    format!(
        r#"{base}
[[apps]]
name = "hire"
mode = "websocket"
app_id = "{app_id}"
app_secret = "${{WS_SECRET}}"
domain = "{domain}"
verification_token = "{TOKEN}"
{app_extra}

[delivery]
initial_backoff = "50ms"
max_backoff = "200ms"

[[plugins]]
name = "audit"
library = "{logger}"
config = {{ path = "data/audit.jsonl", fsync = "never" }}

[[plugins]]
name = "sink"
library = "{testkit}"
config = {{ mode = "ok", record = "data/sink.jsonl" }}

[[routes]]
events = ["test.*"]
plugins = ["audit"]

[[routes]]
events = ["test.sink"]
plugins = ["sink"]
{extra}
"#,
        base = base_config(),
        app_id = LarkWs::APP_ID,
        logger = binaries().logger.display(),
        testkit = binaries().testkit.display(),
    )
}

fn spawn(dir: &Path, cfg: &str) -> TestGateway {
    TestGateway::spawn_with_env(dir, cfg, &[("WS_SECRET", LarkWs::APP_SECRET)])
}

/// A schema 2.0 event as Lark pushes it for the stand-in's app (plaintext on this transport).
fn event(id: &str, event_type: &str) -> Vec<u8> {
    event_with(id, event_type, TOKEN)
}

fn event_with(id: &str, event_type: &str, token: &str) -> Vec<u8> {
    serde_json::json!({
        "schema": "2.0",
        "header": {
            "event_id": id,
            "event_type": event_type,
            "create_time": "1608725989000",
            "token": token,
            "app_id": LarkWs::APP_ID,
            "tenant_key": "2ca1d211f64f6438",
        },
        "event": {"n": id},
    })
    .to_string()
    .into_bytes()
}

fn lines(gw: &TestGateway, file: &str) -> Vec<serde_json::Value> {
    read_jsonl(&gw.dir.join("data").join(file))
}

fn ack_code(lark: &LarkWs, message_id: &str) -> Option<i64> {
    lark.wait_ack(message_id, WAIT)
        .unwrap_or_else(|| panic!("no ack for {message_id}"))
        .code
}

fn connected(lark: &LarkWs, n: usize) {
    assert!(
        lark.wait_connections(n, WAIT),
        "the gateway did not connect ({n})"
    );
}

fn assert_no_secrets(gw: &TestGateway) {
    let log = gw.log();
    for secret in LarkWs::URL_SECRETS.iter().chain([&LarkWs::APP_SECRET]) {
        assert!(!log.contains(secret), "{secret} appears in the log:\n{log}");
    }
}

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
            gap >= Duration::from_millis(800) && gap <= Duration::from_millis(1600),
            "gap {gap:?} in {pings:?}"
        );
    }
    let first_gap = pings[1].0 - pings[0].0;
    assert!(first_gap <= Duration::from_millis(1600), "{first_gap:?}");
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

#[test]
fn check_connect_reports_a_refused_bootstrap() {
    let lark = LarkWs::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config(&lark, "", "")).expect("write");
    lark.queue_bootstrap_codes(&[10003]);
    let env = [("WS_SECRET", LarkWs::APP_SECRET)];
    let (code, out, err) = run_cli_with_env(&path, &["check", "--connect"], &env);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("app hire: long connection bootstrap failed"),
        "{err}"
    );
    assert!(err.contains("code 10003"), "{err}");
    // `run` starts with such a config (the app shows as failed): check does not say otherwise.
    assert!(!err.contains("`run` would refuse it"), "{err}");
    assert!(err.contains("`run` would start"), "{err}");
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

#[path = "longconn/lifecycle.rs"]
mod lifecycle;

#[path = "longconn/flow.rs"]
mod flow;

#[path = "longconn/check.rs"]
mod check;
