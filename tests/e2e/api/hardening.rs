//! The admin listener's answers and inputs, hardened: every answer says `X-Content-Type-Options:
//! nosniff`; a basic-auth proxy's `Authorization` header is neither a login nor a failure, and
//! the `Bearer` scheme is matched in any case; without a token, a request a browser makes for
//! another site is refused, GETs included; a NUL byte in an id or name is a 4xx, never a store
//! error (the PostgreSQL side: `pg_admin.rs`); paths, filters and methods read as HTTP says.
//! Part of `api.rs`.

use gateway_e2e::harness::{metric, TestGateway};
use serde_json::json;

use super::admin_client::*;

fn nosniff(r: &Reply) -> bool {
    r.header("x-content-type-options") == Some("nosniff")
}

#[test]
fn every_admin_answer_says_nosniff() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = TestGateway::spawn(dir.path(), &config(""));
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    // (what, the status it must have, the answer); `/readyz` may still say "starting".
    let answers = [
        ("/healthz", Some(200), get(&open, "/healthz")),
        ("/readyz", None, get(&open, "/readyz")),
        ("/metrics", Some(200), get(&open, "/metrics")),
        ("/status", Some(200), get(&open, "/status")),
        ("/api/v1/events", Some(200), get(&open, "/api/v1/events")),
        (
            "/api/v1/events/nope",
            Some(404),
            get(&open, "/api/v1/events/nope"),
        ),
        ("/api/v1/nothing", Some(404), get(&open, "/api/v1/nothing")),
        ("/", Some(200), get(&open, "/")),
        ("/events/nope", Some(404), get(&open, "/events/nope")),
        (
            "/assets/console.css",
            Some(200),
            get(&open, "/assets/console.css"),
        ),
        (
            "/assets/console.js",
            Some(200),
            get(&open, "/assets/console.js"),
        ),
        ("/login", Some(303), get(&open, "/login")),
        (
            "POST /api/v1/replay (a form)",
            Some(415),
            call(
                "POST",
                &open.admin_url("/api/v1/replay"),
                &[form],
                Some("x=1"),
            ),
        ),
        (
            "Host: evil.example",
            Some(403),
            call(
                "GET",
                &open.admin_url("/api/v1/events"),
                &[("Host", "evil.example")],
                None,
            ),
        ),
    ];
    for (what, status, r) in &answers {
        if let Some(status) = status {
            assert_eq!(r.status, *status, "{what}: {}", r.body);
        }
        assert!(nosniff(r), "{what}: {} {:?}", r.status, r.headers);
    }

    // With a token: the refusals, the login page, the redirect to it, a throttled address.
    let dir = tempfile::tempdir().expect("tempdir");
    let guarded = TestGateway::spawn_with_env(
        dir.path(),
        &config("token = \"${ADMIN_TOKEN}\""),
        &[("ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    // The login form is read before any credential is checked: 64 KiB at most (the API's
    // authenticated calls take up to 1 MiB).
    let big = format!("token={}", "x".repeat(64 * 1024));
    let r = call("POST", &guarded.admin_url("/login"), &[form], Some(&big));
    assert_eq!(r.status, 413, "{}", r.body);
    let wrong = [("Authorization", "Bearer wrong-token-wrong-token")];
    let mut answers = vec![
        get(&guarded, "/api/v1/events"),
        get(&guarded, "/events"),
        get(&guarded, "/login"),
        get(&guarded, "/healthz"),
        call(
            "POST",
            &guarded.admin_url("/login"),
            &[form],
            Some("token=nope"),
        ),
    ];
    for _ in 0..10 {
        answers.push(call("GET", &guarded.admin_url("/status"), &wrong, None));
    }
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(&statuses[..5], [401, 303, 200, 200, 401]);
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    for r in &answers {
        assert!(nosniff(r), "{} {:?}", r.status, r.headers);
    }
}

#[test]
fn a_basic_auth_proxy_header_is_ignored_and_the_bearer_scheme_matches_in_any_case() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn_with_env(
        dir.path(),
        &config("token = \"${ADMIN_TOKEN}\""),
        &[("ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    let url = gw.admin_url("/api/v1/events");
    // A reverse proxy that asks the operator for basic auth passes its header on: more than the
    // throttle's 10 requests neither count nor lock the address out.
    let basic = ("Authorization", "Basic b3BlcmF0b3I6aHVudGVyMg==");
    for _ in 0..15 {
        let r = call("GET", &url, &[basic], None);
        assert_eq!(r.status, 401, "{}", r.body);
    }
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let auth = format!("{scheme} {ADMIN_TOKEN}");
        let r = call("GET", &url, &[("Authorization", auth.as_str())], None);
        assert_eq!(r.status, 200, "{scheme}: {}", r.body);
    }
    // Behind that proxy the console's session cookie works.
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    let r = call(
        "POST",
        &gw.admin_url("/login"),
        &[form, basic],
        Some(&format!("token={ADMIN_TOKEN}")),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let cookie = r.header("set-cookie").expect("a cookie");
    let session = cookie.split(';').next().expect("name=value").to_owned();
    let r = call(
        "GET",
        &gw.admin_url("/events"),
        &[basic, ("Cookie", session.as_str())],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let m = get(&gw, "/metrics").body;
    for kind in ["bearer", "login", "throttled"] {
        let series = format!("gateway_admin_auth_failures_total{{kind=\"{kind}\"}}");
        assert_eq!(metric(&m, &series), 0.0, "{series}");
    }
}

#[test]
fn without_a_token_requests_a_browser_makes_for_another_site_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config(""));
    // A page the operator visits must not make the browser run a costly scan, read an event,
    // or load the console in a frame or a link: GETs too, from any other site (another port of
    // localhost is the same site).
    for site in ["cross-site", "same-site"] {
        for path in [
            "/api/v1/events?state=pending",
            "/api/v1/events/ev-1",
            "/status",
            "/",
            "/events",
            "/assets/console.js",
            "/login",
        ] {
            let r = call(
                "GET",
                &gw.admin_url(path),
                &[("Sec-Fetch-Site", site)],
                None,
            );
            assert_eq!(r.status, 403, "{site} {path}: {}", r.body);
            assert!(
                r.json()["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("from another site") && e.contains(site)),
                "{}",
                r.body
            );
        }
        // The probes stay open (load balancers, Prometheus).
        for path in ["/healthz", "/readyz", "/metrics"] {
            let r = call(
                "GET",
                &gw.admin_url(path),
                &[("Sec-Fetch-Site", site)],
                None,
            );
            assert_eq!(r.status, 200, "{site} {path}: {}", r.body);
        }
        // POSTs as before: refused.
        let r = call(
            "POST",
            &gw.admin_url("/api/v1/replay"),
            &[
                ("Content-Type", "application/json"),
                ("Sec-Fetch-Site", site),
            ],
            Some(&json!({"dead_letters": true, "dry_run": true}).to_string()),
        );
        assert_eq!(r.status, 403, "{}", r.body);
    }
    // The console's own pages, an address typed in or bookmarked, and clients that send no
    // Sec-Fetch-Site (curl, the CLI) are served.
    for headers in [
        &[("Sec-Fetch-Site", "same-origin")][..],
        &[("Sec-Fetch-Site", "none")],
        &[],
    ] {
        for path in ["/api/v1/events?state=pending", "/", "/assets/console.js"] {
            let r = call("GET", &gw.admin_url(path), headers, None);
            assert_eq!(r.status, 200, "{headers:?} {path}: {}", r.body);
        }
    }
}

#[test]
fn a_nul_in_an_id_or_name_is_a_client_error_before_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config(""));
    send(&gw, "/hook", "ev-1", "test.ok");
    assert_nul_refused(&gw, "hire", "kit");
    // The same names without the NUL are served.
    assert_eq!(get(&gw, "/api/v1/events?app=hire").status, 200);
    assert_eq!(get(&gw, "/api/v1/events/ev-1").status, 200);
}

/// Regressions from a review of the admin listener: a `+` in a path was read as a space (404
/// for `evt+1`); a filter that did not decode as UTF-8 was dropped, so the listing (and a
/// replay of its rows) took everything; console pages and `/status` answered 405 without
/// `Allow`, or 200 to any method; the login form answered `PUT` with itself.
#[test]
fn paths_filters_and_methods_are_read_as_http_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn_with_env(
        dir.path(),
        &config("token = \"${ADMIN_TOKEN}\""),
        &[("ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let with = |method: &str, path: &str| {
        call(
            method,
            &gw.admin_url(path),
            &[("Authorization", auth.as_str())],
            (method != "GET").then_some(""),
        )
    };
    send(&gw, "/hook", "evt+1", "test.ok");
    for path in [
        "/api/v1/events/evt+1",
        "/events/evt+1",
        "/api/v1/events/evt%2B1",
    ] {
        let r = with("GET", path);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert!(r.body.contains("evt+1"), "{path}: {}", r.body);
    }
    for path in [
        "/api/v1/events?app=caf%E9",
        "/api/v1/events?state=%FFdead",
        "/api/v1/dead-letters?plugin=%zz",
        "/events?app=caf%E9",
        "/dead-letters?plugin=caf%E9",
    ] {
        let r = with("GET", path);
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert!(
            r.body.contains("not valid percent-encoded UTF-8"),
            "{path}: {}",
            r.body
        );
    }
    // Nor is a parameter a listing does not take, or one given empty (a script's unset
    // variable): each would widen the listing.
    for (path, says) in [
        (
            "/api/v1/dead-letters?plugn=audit",
            "is not one of plugin, since, limit",
        ),
        ("/api/v1/deliveries?plugin=", "is empty"),
        ("/api/v1/events?app=&state=dead", "is empty"),
    ] {
        let r = with("GET", path);
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert!(r.body.contains(says), "{path}: {}", r.body);
    }
    for (method, path, allow) in [
        ("PUT", "/events", "GET"),
        ("DELETE", "/", "GET"),
        ("DELETE", "/status", "GET"),
        ("PUT", "/login", "GET, POST"),
    ] {
        let r = with(method, path);
        assert_eq!(
            (r.status, r.header("allow")),
            (405, Some(allow)),
            "{method} {path}: {}",
            r.body
        );
    }
}
