//! The admin listener's security rules: a token guards every page and call (bearer or cookie
//! login, the CSRF token for cookie posts, failed logins throttled and counted), cross-site posts
//! are refused without a token, and `check` requires a strong token off loopback. Part of
//! `api.rs`.

use std::time::Duration;

use gateway_e2e::harness::{metric, run_cli_with_env, wait_until, TestGateway};
use serde_json::json;

use super::admin_client::*;

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
    // Printable ASCII only: no header could carry the rest (the byte named, not the token).
    let naive = "admin-token-0123456789-naïve";
    let (code, _, err) = run_cli_with_env(&path, &["check"], &[("ADMIN_TOKEN", naive)]);
    assert_eq!(code, 2);
    assert!(
        err.contains("admin.token: holds a character that is not printable ASCII (byte 26 "),
        "{err}"
    );
    assert!(
        !err.contains("0123456789"),
        "the token is not echoed: {err}"
    );
    let (code, _, err) = run_cli_with_env(&path, &["check"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("ADMIN_TOKEN"), "{err}");
    let (code, out, err) = run_cli_with_env(&path, &["check"], &[("ADMIN_TOKEN", ADMIN_TOKEN)]);
    assert_eq!(code, 0, "{out}{err}");
}
