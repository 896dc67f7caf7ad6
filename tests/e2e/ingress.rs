//! Ingress end to end: the real binary, real HTTP, the real logger `.so`. Every row of spec §6
//! (status and message) for an encrypted app and a plain app, plus delivery of the accepted ones.
//! One submodule per topic of this target: `encrypted` (the encrypted app, and Lark's own fixture
//! delivery byte for byte), `plain` (the plain app: schema 1, unrouted events, refusals) and
//! `hostile` (hostile input never gets a 5xx); `helpers` holds the gateway they share. Here: a
//! config with an unknown key refused.

use gateway_e2e::harness::{self, base_config};

/// A config with an unknown key: must be refused.
fn config_with_typo() -> String {
    format!(
        r#"{base}
[server.ignored_so_this_fails]
"#,
        base = base_config()
    )
}

#[test]
fn unknown_keys_refuse_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config_with_typo()).expect("write");
    let (code, _, err) = harness::run_cli(&path, &["check"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("ignored_so_this_fails"), "{err}");
}

#[path = "ingress/helpers.rs"]
mod helpers;

#[path = "ingress/encrypted.rs"]
mod encrypted;

#[path = "ingress/plain.rs"]
mod plain;

#[path = "ingress/hostile.rs"]
mod hostile;
