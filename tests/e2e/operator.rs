//! What an operator sees and does: commands that refuse to guess (a store that is not there, an
//! event id or plugin that does not exist, a replay that would re-run a success), and the
//! `--dry-run` / `--force` of `replay`.

use std::time::Duration;

use gateway_e2e::harness::{
    base_config, binaries, kit_config, read_jsonl, run_cli, wait_until, Lark, TestGateway,
};

const TOKEN: &str = "tok";

fn config() -> String {
    kit_config(
        TOKEN,
        r#"{ mode = "ok", modes = { "test.bad" = "reject", "test.wait" = "retry_always" }, record = "data/kit.jsonl" }"#,
    )
}

fn state(gw: &TestGateway, id: &str) -> String {
    let (code, out, err) = gw.cli(&["events", "show", id]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    v["deliveries"][0]["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn read_only_commands_refuse_a_store_that_does_not_exist_and_create_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config()).expect("write");
    for args in [
        &["dead-letters"][..],
        &["events", "show", "x"],
        &["store", "check"],
        &["replay", "x"],
    ] {
        let (code, out, err) = run_cli(&path, args);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(err.contains("no store at"), "{args:?}: {err}");
        assert!(
            err.contains("is this the config the gateway runs with?"),
            "{err}"
        );
    }
    assert!(!dir.path().join("data").exists(), "nothing was created");
}

#[test]
fn replay_refuses_unknown_names_and_successes_without_force_and_dry_run_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config());
    let lark = Lark::plain(TOKEN);
    for (id, t) in [("ev-ok", "test.ok"), ("ev-bad", "test.bad")] {
        let a = lark.send(
            &gw.url("/hook"),
            &lark.event_v2(id, t, serde_json::json!({})),
        );
        assert_eq!(a.status, 200);
    }
    assert!(wait_until(Duration::from_secs(10), || state(&gw, "ev-ok")
        == "done"
        && state(&gw, "ev-bad") == "dead"));
    let calls = || read_jsonl(&dir.path().join("data/kit.jsonl")).len();
    assert_eq!(calls(), 2);

    let (code, out, err) = gw.cli(&["replay", "nope"]);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("no event \"nope\" in the store"), "{err}");
    let (code, _, err) = gw.cli(&["replay", "ev-ok", "--plugin", "nosuch"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown plugin \"nosuch\""), "{err}");
    let (code, _, err) = gw.cli(&["dead-letters", "--plugin", "nosuch"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown plugin \"nosuch\""), "{err}");

    // A success is re-run only on purpose.
    let (code, _, err) = gw.cli(&["replay", "ev-ok"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("ev-ok:kit already succeeded") && err.contains("--force"),
        "{err}"
    );
    let (code, out, err) = gw.cli(&["replay", "ev-ok", "--force", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("would replay ev-ok:kit (done, 1 attempt(s))"),
        "{out}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        (state(&gw, "ev-ok"), calls()),
        ("done".to_owned(), 2),
        "dry run changed nothing"
    );
    let (code, out, err) = gw.cli(&["replay", "ev-ok", "--force"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 deliveries queued again"), "{out}");
    assert!(wait_until(Duration::from_secs(10), || calls() == 3));
    // Dead letters need no --force.
    let (code, out, err) = gw.cli(&["replay", "--dead-letters"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("replaying ev-bad:kit (dead, 1 attempt(s))"),
        "{out}"
    );
    assert!(wait_until(Duration::from_secs(10), || calls() == 4));
}

#[test]
fn dead_letters_stay_until_purged_on_purpose_with_a_filter() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A dedup retention of 1 ms: finished events go at once, dead letters must not.
    let cfg = config().replace(
        "[store]\npath = \"data/gateway.db\"",
        "[store]\npath = \"data/gateway.db\"\nretention = \"1ms\"",
    );
    assert!(cfg.contains("retention = \"1ms\""), "{cfg}");
    let gw = TestGateway::spawn(dir.path(), &cfg);
    let lark = Lark::plain(TOKEN);
    let a = lark.send(
        &gw.url("/hook"),
        &lark.event_v2("dl-1", "test.bad", serde_json::json!({})),
    );
    assert_eq!(a.status, 200);
    assert!(wait_until(Duration::from_secs(10), || state(&gw, "dl-1") == "dead"));
    drop(gw);
    // A restart runs the retention purge at once.
    let gw = TestGateway::spawn(dir.path(), &cfg);
    std::thread::sleep(Duration::from_millis(500));
    let (code, out, _) = gw.cli(&["dead-letters"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("dl-1") && out.contains("1 dead letter(s)"),
        "{out}"
    );
    let (code, out, _) = gw.cli(&["dead-letters", "--since", "1h30m"]);
    assert_eq!(code, 0);
    assert!(out.contains("dl-1"), "compound durations: {out}");
    let (code, _, err) = gw.cli(&["dead-letters", "--since", "30m1h"]);
    assert_eq!(code, 1);
    assert!(err.contains("largest to smallest"), "{err}");
    let (code, _, err) = gw.cli(&["dead-letters", "--purge"]);
    assert_eq!(code, 1);
    assert!(err.contains("--purge needs a filter"), "{err}");
    let (code, out, err) = gw.cli(&["dead-letters", "--purge", "--plugin", "kit"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 dead letter(s) deleted"), "{out}");
    let (_, out, _) = gw.cli(&["dead-letters"]);
    assert!(out.contains("0 dead letter(s)"), "{out}");
}

#[test]
fn check_is_a_dry_run_that_finds_what_run_would_refuse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    let logger = |table: &str| {
        format!(
            "{}\n[[apps]]\nname = \"hire\"\npath = \"/hook\"\n\n[[plugins]]\nname = \"audit\"\nlibrary = \"{}\"\nconfig = {{ {table} }}\n",
            base_config(),
            binaries().logger.display()
        )
    };
    // A typo in a plugin's own config: only the plugin can tell.
    std::fs::write(&path, logger("path = \"data/a.jsonl\", fsnyc = \"always\"")).expect("write");
    let (code, out, err) = run_cli(&path, &["check"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains("audit") && err.contains("fsnyc"), "{err}");
    assert!(!out.contains("is valid"), "{out}");
    // A store that cannot be created.
    std::fs::write(dir.path().join("file.txt"), "not a folder").expect("write");
    let cfg = logger("path = \"data/a.jsonl\"").replace("data/gateway.db", "file.txt/gateway.db");
    std::fs::write(&path, cfg).expect("write");
    let (code, out, err) = run_cli(&path, &["check"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("store.path:") && err.contains("is not a folder"),
        "{err}"
    );
    // A listen address someone else holds is reported (a warning: it may be this gateway).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let cfg = logger("path = \"data/a.jsonl\"").replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{addr}\""),
        1,
    );
    std::fs::write(&path, cfg).expect("write");
    let (code, out, err) = run_cli(&path, &["check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("warning: server.listen: cannot bind {addr}")),
        "{out}"
    );
    assert!(out.contains("is valid"), "{out}");
    assert!(
        !dir.path().join("data/gateway.db").exists(),
        "check creates no store"
    );
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
    assert!(metric(&scrape(), "gateway_last_reload_timestamp_seconds") > 1.0e9);
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

#[test]
fn events_and_deliveries_can_be_listed_with_filters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config());
    gw.send_plain(TOKEN, "l-ok", "test.ok");
    gw.send_plain(TOKEN, "l-bad", "test.bad");
    gw.send_plain(TOKEN, "l-wait", "test.wait");
    assert!(wait_until(Duration::from_secs(10), || state(&gw, "l-bad")
        == "dead"
        && state(&gw, "l-ok") == "done"));
    let (code, out, err) = gw.cli(&["events", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("3 event(s)"), "{out}");
    let first = out.lines().nth(1).unwrap_or_default();
    assert!(first.contains("l-wait"), "newest first: {out}");
    assert!(first.contains("Z "), "RFC 3339 times: {first}");
    let (_, out, _) = gw.cli(&["events", "list", "--state", "dead", "--json"]);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(rows[0]["id"], "l-bad");
    let (_, out, _) = gw.cli(&["events", "list", "--type", "test.ok", "--since", "1h"]);
    assert!(out.contains("l-ok") && out.contains("1 event(s)"), "{out}");
    assert!(wait_until(Duration::from_secs(10), || {
        gw.cli(&["deliveries", "list", "--state", "retrying"])
            .1
            .contains("l-wait")
    }));
    let (_, out, _) = gw.cli(&["deliveries", "list", "--state", "dead", "--json"]);
    let dead: serde_json::Value =
        serde_json::from_str(out.lines().next().unwrap_or("{}")).expect("json");
    assert_eq!(dead["event_id"], "l-bad");
    assert!(
        dead.get("next_at").is_none(),
        "a finished delivery has no next attempt: {dead}"
    );
    let (code, _, err) = gw.cli(&["deliveries", "list", "--state", "lost"]);
    assert_eq!(code, 2, "{err}");
    // `/status`: per-plugin health for humans and dashboards.
    let status = gateway_e2e::harness::get(&gw.admin_url("/status")).expect("status");
    assert_eq!(status.status, 200);
    let v: serde_json::Value = serde_json::from_str(&status.body).expect("json");
    assert_eq!(v["ready"], true, "{v}");
    let kit = &v["plugins"]["kit"];
    assert!(kit["last_success_ms"].as_i64().is_some(), "{v}");
    assert!(kit["consecutive_failures"].as_u64() >= Some(1), "{v}");
    assert!(
        kit["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("testkit")),
        "{v}"
    );
    assert_eq!(kit["pending"], 1, "l-wait keeps retrying: {v}");
    assert_eq!(kit["max_concurrency"], 4);
    assert_eq!(kit["queued"], 0, "{v}");
    let m = gateway_e2e::harness::get(&gw.admin_url("/metrics"))
        .expect("metrics")
        .body;
    assert!(m.contains(r#"gateway_queue_depth{plugin="kit"} 0"#), "{m}");
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
