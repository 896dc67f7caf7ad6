//! The admin listener's answers and inputs, hardened: a basic-auth proxy's `Authorization` header
//! is neither a login nor a failure, and the `Bearer` scheme is matched in any case; a NUL byte in
//! an id or name is a 4xx, never a store error (the PostgreSQL side: `pg_admin.rs`). Part of
//! `api.rs`.

use gateway_e2e::harness::{metric, TestGateway};

use super::admin_client::*;

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
fn a_nul_in_an_id_or_name_is_a_client_error_before_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config(""));
    send(&gw, "/hook", "ev-1", "test.ok");
    assert_nul_refused(&gw, "hire", "kit");
    // The same names without the NUL are served.
    assert_eq!(get(&gw, "/api/v1/events?app=hire").status, 200);
    assert_eq!(get(&gw, "/api/v1/events/ev-1").status, 200);
}
