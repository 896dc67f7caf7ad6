//! The admin JSON API (`/api/v1`) against the real binary: filters and cursor pagination, one
//! event with its deliveries, replay with and without `force`, reload with its result, bounded
//! bodies, and the security rules — a token off loopback, bearer and cookie logins, CSRF, failed
//! logins throttled and counted, `/metrics` `/healthz` `/readyz` open — with no token (the app's
//! verification token or the admin token) in any answer. The listener's limits, loopback names
//! and token reloads: `admin_limits.rs`.

use std::time::Duration;

use gateway_e2e::harness::{
    attempts, metric, read_jsonl, run_cli_with_env, wait_until, TestGateway,
};
use serde_json::{json, Value};

#[path = "admin_client.rs"]
mod admin_client;
use admin_client::*;

#[test]
fn events_filter_and_page_by_cursor_and_one_event_shows_its_deliveries_redacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config(""));
    for i in 0..5 {
        send(&gw, "/hook", &format!("ok-{i}"), "test.ok");
    }
    send(&gw, "/other", "other-1", "test.ok");
    send(&gw, "/hook", "bad-1", "test.bad");
    assert!(wait_until(Duration::from_secs(10), || state(&gw, "bad-1")
        == "dead"
        && state(&gw, "ok-4") == "done"));

    // Filters: app, type, state; each answer is a page with a cursor.
    let all = get(&gw, "/api/v1/events").json();
    assert_eq!(all["events"].as_array().map(Vec::len), Some(7), "{all}");
    assert_eq!(all["next_cursor"], Value::Null);
    let other = get(&gw, "/api/v1/events?app=other").json();
    assert_eq!(other["events"][0]["id"], "other-1");
    assert_eq!(other["events"].as_array().map(Vec::len), Some(1));
    let bad = get(&gw, "/api/v1/events?type=test.bad").json();
    assert_eq!(bad["events"][0]["id"], "bad-1");
    let dead = get(&gw, "/api/v1/events?state=dead").json();
    assert_eq!(dead["events"].as_array().map(Vec::len), Some(1));
    assert_eq!(dead["events"][0]["dead"], 1);
    let none = get(&gw, "/api/v1/events?since=2099-01-01").json();
    assert_eq!(none["events"].as_array().map(Vec::len), Some(0));
    // A name that exists nowhere is an error, as in the CLI, not an empty list.
    for path in [
        "/api/v1/events?app=nosuch",
        "/api/v1/events?type=test.nosuch",
        "/api/v1/deliveries?plugin=nosuch",
        "/api/v1/dead-letters?plugin=nosuch",
    ] {
        let answer = get(&gw, path);
        assert_eq!(answer.status, 404, "{path}: {}", answer.body);
    }

    // Pagination: pages of 2 visit every event once, newest first.
    let mut seen = Vec::new();
    let mut url = "/api/v1/events?app=hire&limit=2".to_owned();
    loop {
        let page = get(&gw, &url).json();
        let ids: Vec<String> = page["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert!(ids.len() <= 2);
        seen.extend(ids);
        match page["next_cursor"].as_str() {
            Some(c) => {
                url = format!(
                    "/api/v1/events?app=hire&limit=2&cursor={}",
                    c.replace('%', "%25")
                        .replace('&', "%26")
                        .replace('+', "%2B")
                )
            }
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert_eq!(sorted.len(), 6, "no event twice: {seen:?}");

    // One event: its deliveries and the envelope, the verification token redacted.
    let e = get(&gw, "/api/v1/events/bad-1").json();
    assert_eq!(e["app"], "hire");
    assert_eq!(e["deliveries"][0]["plugin"], "kit");
    assert_eq!(e["deliveries"][0]["state"], "dead");
    assert_eq!(e["deliveries"][0]["attempts"], 1);
    assert!(
        e["deliveries"][0]["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("testkit: reject"),
        "{e}"
    );
    assert_eq!(e["envelope"]["header"]["token"], "<redacted>");
    assert_eq!(e["envelope"]["header"]["event_id"], "bad-1");
    // Its attempt history: the one attempt, how it ended, when and how long.
    let history = e["deliveries"][0]["history"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(history.len(), 1, "{e}");
    let a = &history[0];
    assert_eq!(
        (&a["generation"], &a["attempt"], &a["outcome"]),
        (&json!(0), &json!(1), &json!("reject")),
        "{a}"
    );
    assert!(
        a["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("testkit: reject"),
        "{a}"
    );
    assert!(
        a["duration_ms"].is_u64() && a["started_at"].is_string(),
        "{a}"
    );
    assert!(
        a["started_at_ms"].as_i64() <= a["recorded_at_ms"].as_i64(),
        "{a}"
    );

    // Deliveries by state and plugin, dead letters, plugins.
    let d = get(&gw, "/api/v1/deliveries?state=dead&plugin=kit").json();
    assert_eq!(d["deliveries"][0]["event_id"], "bad-1");
    let d = get(&gw, "/api/v1/deliveries?state=pending").json();
    assert_eq!(d["deliveries"].as_array().map(Vec::len), Some(0));
    let dl = get(&gw, "/api/v1/dead-letters").json();
    assert_eq!(dl["dead_letters"][0]["event_id"], "bad-1");
    let p = get(&gw, "/api/v1/plugins").json();
    assert_eq!(p["plugins"][0]["name"], "kit");
    assert_eq!(p["plugins"][0]["status"]["consecutive_failures"], 1);
    assert_eq!(p["plugins"][0]["config"]["record"], "data/kit.jsonl");
    assert_eq!(p["plugins"][0]["descriptor"]["name"], "testkit");
    let o = get(&gw, "/api/v1/overview").json();
    assert_eq!(o["dead_letters"], 1);
    assert_eq!(o["last_hour"].as_array().map(Vec::len), Some(60));

    // Errors are JSON with 4xx codes.
    let table: &[(&str, u16, &str)] = &[
        ("/api/v1/events/nope", 404, "no event \"nope\""),
        ("/api/v1/events?state=weird", 400, "state"),
        ("/api/v1/events?limit=0", 400, "limit"),
        ("/api/v1/dead-letters?limit=501", 400, "limit"),
        ("/api/v1/events?cursor=zzz", 400, "cursor"),
        ("/api/v1/events?since=yesterday-ish", 400, "since"),
        ("/api/v1/nothing", 404, "no API endpoint"),
        ("/api/v1/replay", 405, "method not allowed"),
    ];
    for (path, status, says) in table {
        let r = get(&gw, path);
        assert_eq!(r.status, *status, "{path}: {}", r.body);
        assert!(
            r.json()["error"]
                .as_str()
                .unwrap_or_default()
                .contains(says),
            "{path}: {}",
            r.body
        );
    }

    // Dead letters come a page at a time: the newest `limit`, and whether there are more.
    send(&gw, "/hook", "bad-2", "test.bad");
    assert!(wait_until(Duration::from_secs(10), || state(&gw, "bad-2") == "dead"));
    let dl = get(&gw, "/api/v1/dead-letters?limit=1").json();
    assert_eq!(dl["dead_letters"].as_array().map(Vec::len), Some(1), "{dl}");
    assert_eq!(dl["dead_letters"][0]["event_id"], "bad-2", "newest first");
    assert_eq!(dl["truncated"], true);
    let dl = get(&gw, "/api/v1/dead-letters").json();
    assert_eq!(dl["dead_letters"].as_array().map(Vec::len), Some(2), "{dl}");
    assert_eq!(dl["truncated"], false);
}

#[test]
fn replay_reruns_successes_only_with_force_and_reload_answers_its_result() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config(""));
    send(&gw, "/hook", "ev-ok", "test.ok");
    send(&gw, "/hook", "ev-flaky", "test.flaky");
    assert!(wait_until(Duration::from_secs(10), || state(&gw, "ev-ok")
        == "done"
        && state(&gw, "ev-flaky") == "dead"));
    let calls = || read_jsonl(&dir.path().join("data/kit.jsonl")).len();
    assert_eq!(calls(), 2);

    // A success is not re-run without force: 409 naming what would run again, nothing changes.
    let r = post_json(&gw, "/api/v1/replay", json!({"event_ids": ["ev-ok"]}));
    assert_eq!(r.status, 409, "{}", r.body);
    let v = r.json();
    assert_eq!(v["succeeded"][0]["event_id"], "ev-ok");
    assert_eq!(v["would_replay"][0]["plugin"], "kit");
    // A dry run lists, changes nothing.
    let r = post_json(
        &gw,
        "/api/v1/replay",
        json!({"event_ids": ["ev-ok"], "force": true, "dry_run": true}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["would_replay"][0]["event_id"], "ev-ok");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(calls(), 2, "no call after a refused replay or a dry run");
    let r = post_json(
        &gw,
        "/api/v1/replay",
        json!({"event_ids": ["ev-ok"], "force": true}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["replayed"], 1);
    assert!(wait_until(Duration::from_secs(10), || calls() == 3));

    // Dead letters need no force; the flaky delivery succeeds the second time.
    let r = post_json(
        &gw,
        "/api/v1/replay",
        json!({"deliveries": [{"event_id": "ev-flaky", "plugin": "kit"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(wait_until(Duration::from_secs(10), || state(
        &gw, "ev-flaky"
    ) == "done"));
    let r = post_json(&gw, "/api/v1/replay", json!({"dead_letters": true}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["replayed"], 0);
    // Each delivery's history keeps every generation's attempts, oldest first.
    let outcomes =
        |id: &str| attempts(&get(&gw, &format!("/api/v1/events/{id}")).json()["deliveries"][0]);
    assert_eq!(
        outcomes("ev-ok"),
        [(0, 1, "ok".into()), (1, 1, "ok".into())]
    );
    assert_eq!(
        outcomes("ev-flaky"),
        [(0, 1, "retry".into()), (1, 1, "ok".into())]
    );

    // Refusals.
    let table: &[(Value, u16, &str)] = &[
        (json!({"event_ids": ["nope"]}), 404, "no event \"nope\""),
        (
            json!({"event_ids": ["ev-ok"], "plugin": "nosuch"}),
            404,
            "unknown plugin",
        ),
        (json!({}), 400, "exactly one of"),
        (
            json!({"event_ids": ["ev-ok"], "dead_letters": true}),
            400,
            "exactly one of",
        ),
        (json!({"evnt_ids": ["x"]}), 400, "unknown field"),
    ];
    for (body, status, says) in table {
        let r = post_json(&gw, "/api/v1/replay", body.clone());
        assert_eq!(r.status, *status, "{body}: {}", r.body);
        let error = r.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(error.contains(says), "{body}: {}", r.body);
    }
    let r = call(
        "POST",
        &gw.admin_url("/api/v1/replay"),
        &[("Content-Type", "text/plain")],
        Some("{}"),
    );
    assert_eq!(r.status, 415, "{}", r.body);
    let big = format!("{{\"event_ids\": [\"{}\"]}}", "x".repeat(70 * 1024));
    let r = call(
        "POST",
        &gw.admin_url("/api/v1/replay"),
        &[("Content-Type", "application/json")],
        Some(&big),
    );
    assert_eq!(r.status, 413, "{}", r.body);

    // Reload: the same validation as SIGHUP, the result in the answer.
    let r = post_json(&gw, "/api/v1/reload", json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["result"], "ok");
    assert_eq!(r.json()["not_applied"], json!([]), "{}", r.body);
    let path = dir.path().join("gateway.toml");
    let good = std::fs::read_to_string(&path).expect("config");
    // What waits for a restart is in the answer, not only in the log.
    std::fs::write(&path, good.replace("[server]\n", "[server]\nworkers = 7\n")).expect("write");
    let r = post_json(&gw, "/api/v1/reload", json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    let notes = r.json()["not_applied"].to_string();
    assert!(
        notes.contains("[server] workers changes only on restart"),
        "{}",
        r.body
    );
    // Still not applied at the next reload of the same file; back to the running value, none.
    let r = post_json(&gw, "/api/v1/reload", json!({}));
    let notes = r.json()["not_applied"].to_string();
    assert!(
        notes.contains("workers changes only on restart"),
        "{}",
        r.body
    );
    std::fs::write(&path, &good).expect("write");
    let r = post_json(&gw, "/api/v1/reload", json!({}));
    assert_eq!(r.json()["not_applied"], json!([]), "{}", r.body);
    std::fs::write(
        &path,
        good.replace("plugins = [\"kit\"]", "plugins = [\"ghost\"]"),
    )
    .expect("write");
    let r = post_json(&gw, "/api/v1/reload", json!({}));
    assert_eq!(r.status, 422, "{}", r.body);
    let error = r.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("unknown plugin \"ghost\""), "{}", r.body);
    let m = get(&gw, "/metrics").body;
    assert_eq!(
        metric(&m, "gateway_reloads_total{result=\"refused\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(metric(&m, "gateway_reloads_total{result=\"ok\"}"), 4.0);
    // The running config stayed: events are still delivered.
    send(&gw, "/hook", "ev-after", "test.ok");
    assert!(wait_until(Duration::from_secs(10), || state(
        &gw, "ev-after"
    ) == "done"));
}

/// The `csrf-token` meta of a console page.
fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"csrf-token\" content=\"")
        .expect("a csrf meta")
        + "name=\"csrf-token\" content=\"".len();
    page[at..].chars().take_while(|c| *c != '"').collect()
}

#[test]
fn a_token_guards_every_page_and_call_and_cookie_posts_need_the_csrf_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn_with_env(
        dir.path(),
        &config("token = \"${ADMIN_TOKEN}\""),
        &[("ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    send(&gw, "/hook", "ev-bad", "test.bad");
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let auth = [("Authorization", bearer.as_str())];
    assert!(wait_until(Duration::from_secs(10), || {
        call("GET", &gw.admin_url("/api/v1/dead-letters"), &auth, None).json()["dead_letters"][0]
            ["event_id"]
            == "ev-bad"
    }));

    // Open: health, readiness, metrics.
    for path in ["/healthz", "/readyz", "/metrics", "/assets/console.css"] {
        assert_eq!(get(&gw, path).status, 200, "{path}");
    }
    // Everything else needs the token.
    for path in [
        "/api/v1/events",
        "/api/v1/events/ev-bad",
        "/api/v1/plugins",
        "/status",
    ] {
        let r = get(&gw, path);
        assert_eq!(r.status, 401, "{path}: {}", r.body);
        assert!(r.header("www-authenticate").is_some(), "{path}");
        let r = call(
            "GET",
            &gw.admin_url(path),
            &[("Authorization", "Bearer wrong-token-wrong-token")],
            None,
        );
        assert_eq!(r.status, 401, "{path}");
        let r = call("GET", &gw.admin_url(path), &auth, None);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    for path in [
        "/",
        "/events",
        "/events/ev-bad",
        "/dead-letters",
        "/plugins",
    ] {
        let r = get(&gw, path);
        assert_eq!(r.status, 303, "{path}");
        assert!(
            r.header("location")
                .unwrap_or_default()
                .starts_with("/login?next="),
            "{path}"
        );
    }
    let r = post_json(&gw, "/api/v1/replay", json!({"dead_letters": true}));
    assert_eq!(r.status, 401, "{}", r.body);

    // The login form: a wrong token is refused and counted.
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let r = call(
        "POST",
        &gw.admin_url("/login"),
        &form,
        Some("token=not-the-token"),
    );
    assert_eq!(r.status, 401);
    assert!(r.body.contains("wrong token"), "{}", r.body);
    let m = get(&gw, "/metrics").body;
    assert!(
        metric(&m, "gateway_admin_auth_failures_total{kind=\"login\"}") >= 1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "gateway_admin_auth_failures_total{kind=\"bearer\"}"),
        4.0,
        "{m}"
    );
    // The right token sets an HttpOnly, SameSite=Strict session cookie.
    let r = call(
        "POST",
        &gw.admin_url("/login?next=%2Fdead-letters"),
        &form,
        Some(&format!("token={ADMIN_TOKEN}")),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("/dead-letters"));
    let cookie = r.header("set-cookie").expect("a cookie").to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(!cookie.contains(ADMIN_TOKEN), "{cookie}");
    let session = cookie.split(';').next().expect("name=value").to_owned();
    let with_cookie = [("Cookie", session.as_str())];
    let page = call("GET", &gw.admin_url("/dead-letters"), &with_cookie, None);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("ev-bad"), "{}", page.body);
    let csrf = csrf_of(&page.body);

    // A cookie POST without the CSRF token (or with a wrong one) is refused; with it, it runs.
    let json_ct = ("Content-Type", "application/json");
    let body = json!({"dead_letters": true, "dry_run": true}).to_string();
    let r = call(
        "POST",
        &gw.admin_url("/api/v1/replay"),
        &[with_cookie[0], json_ct],
        Some(&body),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = call(
        "POST",
        &gw.admin_url("/api/v1/replay"),
        &[with_cookie[0], json_ct, ("X-CSRF-Token", "forged")],
        Some(&body),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = call(
        "POST",
        &gw.admin_url("/api/v1/replay"),
        &[with_cookie[0], json_ct, ("X-CSRF-Token", csrf.as_str())],
        Some(&body),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // Scripts with the bearer token need no CSRF token.
    let r = call(
        "POST",
        &gw.admin_url("/api/v1/replay"),
        &[auth[0], json_ct],
        Some(&body),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // Log out: the session ends.
    let r = call(
        "POST",
        &gw.admin_url("/logout"),
        &[with_cookie[0], form[0]],
        Some(&format!("csrf={csrf}")),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(
        call("GET", &gw.admin_url("/api/v1/events"), &with_cookie, None).status,
        401
    );

    // Failed logins are throttled per address: after 10 failures in a minute even the right
    // token waits (4 bearer and 1 login failures above).
    for _ in 0..5 {
        call("POST", &gw.admin_url("/login"), &form, Some("token=guess"));
    }
    let r = call(
        "POST",
        &gw.admin_url("/login"),
        &form,
        Some(&format!("token={ADMIN_TOKEN}")),
    );
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    let r = call("GET", &gw.admin_url("/api/v1/events"), &auth, None);
    assert_eq!(r.status, 429, "the bearer path is throttled too");
    let m = get(&gw, "/metrics").body;
    assert!(metric(&m, "gateway_admin_auth_failures_total{kind=\"throttled\"}") >= 2.0);
    assert!(!gw.log().contains(ADMIN_TOKEN), "the token is never logged");
}

#[test]
fn without_a_token_cross_site_posts_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config(""));
    let body = json!({"dead_letters": true}).to_string();
    let ct = ("Content-Type", "application/json");
    for bad in [
        ("Origin", "http://evil.example"),
        ("Sec-Fetch-Site", "cross-site"),
    ] {
        let r = call(
            "POST",
            &gw.admin_url("/api/v1/replay"),
            &[ct, bad],
            Some(&body),
        );
        assert_eq!(r.status, 403, "{bad:?}: {}", r.body);
        // This mode has no sessions: the answer does not ask for a session's CSRF token.
        assert!(
            r.body.contains("from another site") && !r.body.contains("CSRF"),
            "{}",
            r.body
        );
    }
    let origin = format!("http://{}", gw.admin.expect("admin"));
    let r = call(
        "POST",
        &gw.admin_url("/api/v1/replay"),
        &[ct, ("Origin", origin.as_str())],
        Some(&body),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // A form post (what a cross-site page can send without a preflight) is not JSON: refused.
    let r = call(
        "POST",
        &gw.admin_url("/api/v1/replay"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some("dead_letters=true"),
    );
    assert_eq!(r.status, 415);
    // Pages are open on loopback without a token.
    assert_eq!(get(&gw, "/").status, 200);
    assert_eq!(get(&gw, "/login").status, 303);
}

#[test]
fn check_requires_a_strong_token_when_the_admin_listener_is_not_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    let open = config("").replace(
        "[admin]\nlisten = \"127.0.0.1:0\"",
        "[admin]\nlisten = \"0.0.0.0:0\"",
    );
    std::fs::write(&path, &open).expect("write");
    let (code, out, err) = run_cli_with_env(&path, &["check"], &[]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("admin.listen") && err.contains("[admin] token"),
        "{err}"
    );
    let short = open.replace(
        "listen = \"0.0.0.0:0\"",
        "listen = \"0.0.0.0:0\"\ntoken = \"${ADMIN_TOKEN}\"",
    );
    std::fs::write(&path, &short).expect("write");
    let (code, _, err) = run_cli_with_env(&path, &["check"], &[("ADMIN_TOKEN", "short")]);
    assert_eq!(code, 2);
    assert!(err.contains("admin.token: must be at least 16"), "{err}");
    assert!(!err.contains("short\""), "the token is not echoed: {err}");
    let (code, _, err) = run_cli_with_env(&path, &["check"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("ADMIN_TOKEN"), "{err}");
    let (code, out, err) = run_cli_with_env(&path, &["check"], &[("ADMIN_TOKEN", ADMIN_TOKEN)]);
    assert_eq!(code, 0, "{out}{err}");
}

/// Every `gateway_*` name in `text`.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("gateway_") {
        let start = i + at;
        let before_ok =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = start
            + text[start..]
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(text.len() - start);
        if before_ok {
            names.insert(text[start..end].to_owned());
        }
        i = end;
    }
    names
}

#[test]
fn dashboard_and_alert_rules_use_only_exported_metrics_and_promtool_accepts_the_rules() {
    let root = gateway_e2e::workspace_root();
    let rules = root.join("deploy/prometheus/alerts.yml");
    let dashboard = root.join("deploy/grafana/gateway.json");

    let out = std::process::Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "promtool is needed to check deploy/prometheus/alerts.yml ({e}): \
                 `apt-get install -y prometheus` (.ci/run installs it)"
            )
        });
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The names used: every expression of the dashboard, the whole rules file.
    let board: Value =
        serde_json::from_str(&std::fs::read_to_string(&dashboard).expect("dashboard"))
            .expect("the dashboard is JSON");
    let mut exprs = String::new();
    for panel in board["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().into_iter().flatten() {
            exprs.push_str(t["expr"].as_str().unwrap_or_default());
            exprs.push('\n');
        }
    }
    for v in board["templating"]["list"].as_array().into_iter().flatten() {
        exprs.push_str(v["definition"].as_str().unwrap_or_default());
        exprs.push('\n');
    }
    let mut used = metric_names(&exprs);
    used.extend(metric_names(
        &std::fs::read_to_string(&rules).expect("rules"),
    ));
    for needed in [
        "gateway_requests_total",
        "gateway_dead_letters_total",
        "gateway_oldest_pending_age_seconds",
        "gateway_reloads_total",
        "gateway_store_commit_batch_size_bucket",
    ] {
        assert!(used.contains(needed), "{needed} is used: {used:?}");
    }

    // What a running gateway exports: sample names, and the families' declared names.
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config(""));
    send(&gw, "/hook", "ev-1", "test.ok");
    let text = get(&gw, "/metrics").body;
    let mut samples = std::collections::BTreeSet::new();
    let mut types = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(n), Some(t)) = (parts.next(), parts.next()) {
                types.insert(n.to_owned(), t.to_owned());
            }
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            samples.insert(name.to_owned());
        }
    }
    let exported = |n: &str| {
        let family = |suffix: &str, kind: &str| {
            n.strip_suffix(suffix)
                .is_some_and(|base| types.get(base).is_some_and(|t| t == kind))
        };
        samples.contains(n)
            || types.contains_key(n)
            || family("_total", "counter")
            || family("_bucket", "histogram")
            || family("_sum", "histogram")
            || family("_count", "histogram")
    };
    let missing: Vec<&String> = used.iter().filter(|n| !exported(n)).collect();
    assert!(
        missing.is_empty(),
        "used by deploy/ but not exported by the gateway: {missing:?}"
    );
}
