//! What the running gateway shows an operator: metrics (the build, dead letters, pending per
//! plugin, reloads), JSON logs of one record per line, and the requests it refuses (oversized
//! heads get 431; refusals are logged with the client, rate-limited). Part of `operator.rs`.

use std::time::Duration;

use gateway_e2e::harness::{wait_until, Lark, TestGateway};

use super::helpers::{config, state, TOKEN};

#[test]
fn metrics_show_the_build_dead_letters_pending_per_plugin_and_reloads() {
    use gateway_e2e::harness::{get, metric};
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config());
    gw.send_plain(TOKEN, "m-bad", "test.bad");
    assert!(wait_until(Duration::from_secs(10), || state(&gw, "m-bad") == "dead"));
    let scrape = || get(&gw.admin_url("/metrics")).expect("metrics").body;
    let m = scrape();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        metric(&m, &format!("gateway_build_info{{version=\"{version}\"}}")),
        1.0,
        "{m}"
    );
    assert_eq!(metric(&m, "gateway_dead_letters_current"), 1.0, "{m}");
    // A good reload, then a broken one.
    gw.signal("HUP");
    assert!(wait_until(Duration::from_secs(10), || metric(
        &scrape(),
        r#"gateway_reloads_total{result="ok"}"#
    ) == 1.0));
    // In seconds, now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let at = metric(&scrape(), "gateway_last_reload_timestamp_seconds");
    assert!(
        (now - 60.0..=now + 60.0).contains(&at),
        "{at} against {now}"
    );
    std::fs::write(dir.path().join("gateway.toml"), "not = [toml").expect("write");
    gw.signal("HUP");
    assert!(wait_until(Duration::from_secs(10), || metric(
        &scrape(),
        r#"gateway_reloads_total{result="refused"}"#
    ) == 1.0));
    // A delivery that keeps retrying is pending, per plugin.
    std::fs::write(dir.path().join("gateway.toml"), config()).expect("write");
    gw.send_plain(TOKEN, "m-wait", "test.wait");
    assert!(wait_until(Duration::from_secs(10), || metric(
        &scrape(),
        r#"gateway_pending_deliveries_by_plugin{plugin="kit"}"#
    ) == 1.0));
}

#[test]
fn json_logs_are_one_record_per_line_even_for_multi_line_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn_full(dir.path(), &config(), &[], &["--log-format", "json"]);
    // A refused reload logs a multi-line list of problems.
    let broken = config().replace("name = \"kit\"", "name = \"kit\"\nmax_concurrency = 0");
    std::fs::write(dir.path().join("gateway.toml"), broken).expect("write");
    gw.signal("HUP");
    assert!(wait_until(Duration::from_secs(10), || gw
        .log()
        .contains("reload refused")));
    let log = gw.log();
    assert!(log.contains("gateway listening on http://"), "{log}");
    for line in log.lines() {
        let record: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON record ({e}): {line}"));
        assert!(record["level"].is_string(), "{line}");
    }
}

#[test]
fn oversized_request_heads_get_431() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config());
    let ask = |head: String| -> String {
        let mut conn = std::net::TcpStream::connect(gw.addr).expect("connect");
        conn.write_all(head.as_bytes()).expect("write");
        let mut answer = Vec::new();
        let _ = conn.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    };
    let many: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = ask(format!(
        "POST /hook HTTP/1.1\r\nHost: x\r\n{many}Content-Length: 0\r\n\r\n"
    ));
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let big = "v".repeat(20 * 1024);
    let answer = ask(format!(
        "POST /hook HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nContent-Length: 0\r\n\r\n"
    ));
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // An ordinary head still works.
    let lark = Lark::plain(TOKEN);
    let a = lark.send(
        &gw.url("/hook"),
        &lark.event_v2("h-ok", "test.ok", serde_json::json!({})),
    );
    assert_eq!(a.status, 200);
}

#[test]
fn refused_requests_are_logged_with_the_client_and_rate_limited() {
    use gateway_e2e::harness::{get, metric, post};
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config().replacen(
        "[server]\n",
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n",
        1,
    );
    assert!(cfg.contains("trusted_proxies"), "{cfg}");
    let gw = TestGateway::spawn(dir.path(), &cfg);
    let wrong = Lark::plain("not-the-token");
    let body = wrong.event_v2("r-1", "test.ok", serde_json::json!({}));
    let started = std::time::Instant::now();
    for _ in 0..200 {
        let a = post(&gw.url("/hook"), &[], &body).expect("post");
        assert_eq!(a.status, 401);
    }
    let headers = vec![(
        "X-Forwarded-For".to_owned(),
        "10.9.8.7, 198.51.100.7".to_owned(),
    )];
    let a = post(&gw.url("/hook"), &headers, &body).expect("post");
    assert_eq!(a.status, 401);
    let seconds = started.elapsed().as_secs() + 1;
    assert!(wait_until(Duration::from_secs(5), || gw
        .log()
        .contains("client=198.51.100.7")
        || gw.log().matches("request refused").count() > 0));
    std::thread::sleep(Duration::from_millis(300));
    let log = gw.log();
    let lines = log.matches("request refused").count() as u64;
    assert!(
        lines <= 10 * (seconds + 1),
        "{lines} refusal lines in {seconds}s"
    );
    assert!(log.contains("client=127.0.0.1"), "{log}");
    let m = get(&gw.admin_url("/metrics")).expect("metrics").body;
    assert_eq!(
        metric(
            &m,
            r#"gateway_requests_total{app="hire",status="401",reason="bad_token"}"#
        ),
        201.0,
        "every refusal is counted"
    );
    // A trusted proxy's X-Forwarded-For names the client (once a line is let through).
    std::thread::sleep(Duration::from_millis(1100));
    let a = post(&gw.url("/hook"), &headers, &body).expect("post");
    assert_eq!(a.status, 401);
    assert!(
        wait_until(Duration::from_secs(5), || gw
            .log()
            .contains("client=198.51.100.7")),
        "{}",
        gw.log()
    );
    let reported = gw.log().lines().any(|l| {
        l.contains("request refused")
            && l.split("skipped=")
                .nth(1)
                .is_some_and(|n| !n.starts_with('0'))
    });
    assert!(
        reported,
        "a later line says how many were skipped:\n{}",
        gw.log()
    );
}
