//! `[server]` and `[admin]`: the defaults the README gives, and each limit's last valid value
//! next to its first refused one (the admin token's length, `workers`); the token never shown.

use super::server::{workers_for, DEFAULT_MAX_BODY, MIN_ADMIN_TOKEN_LEN};
use super::tests::{load, problems, MINIMAL};
use super::AdminToken;

#[test]
fn the_documented_defaults() {
    // README: `max_body_bytes` 1 MiB; `workers` one per CPU but one, at least 1.
    assert_eq!(DEFAULT_MAX_BODY, 1_048_576);
    assert_eq!(workers_for(Some(8)), 7);
    assert_eq!(workers_for(Some(2)), 1);
    assert_eq!(workers_for(Some(1)), 1);
    assert_eq!(workers_for(None), 1);
}

#[test]
fn an_admin_token_of_sixteen_characters_is_the_shortest() {
    assert_eq!(MIN_ADMIN_TOKEN_LEN, 16);
    let with = |t: &str| format!("{MINIMAL}[admin]\ntoken = \"{t}\"\n");
    let c = load(&with("0123456789abcdef"), &[]).expect("16 characters");
    assert_eq!(
        c.admin_token.map(|t| t.0).as_deref(),
        Some("0123456789abcdef")
    );
    let p = problems(&with("0123456789abcde"));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("admin.token: must be at least 16 characters"),
        "{p:?}"
    );
    assert!(!p[0].contains("0123456789abcde"), "{p:?}");
}

#[test]
fn workers_are_at_most_1024() {
    let with = |n: u32| format!("{MINIMAL}[server]\nworkers = {n}\n");
    assert_eq!(load(&with(1024), &[]).expect("1024").workers, 1024);
    assert_eq!(load(&with(1), &[]).expect("1").workers, 1);
    assert_eq!(
        problems(&with(1025)),
        ["server.workers: must be at most 1024"]
    );
}

#[test]
fn an_admin_token_is_never_shown() {
    let shown = format!("{:?}", AdminToken("0123456789abcdef-secret".into()));
    assert_eq!(shown, "AdminToken(<redacted>)");
}
