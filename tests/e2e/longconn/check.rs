//! `gateway check --connect` against the stand-in: it bootstraps and dials each websocket
//! app, and words a failure (a refused bootstrap or handshake) by its verdict. Part of
//! `longconn.rs`.

use gateway_e2e::harness::{run_cli_with_env, wait_until};

use super::helpers::{config, WAIT};
use crate::lark_ws::LarkWs;

/// `check --connect` said "bootstrap ok … config is valid" (exit 0) while every handshake was
/// refused 403: it never dialled. And for a failure worth retrying it said `run` would report
/// the app failed until a reload, while `run` keeps retrying.
#[test]
fn check_connect_dials_and_words_a_failure_by_its_verdict() {
    let lark = LarkWs::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config(&lark, "", "")).expect("write");
    let env = [("WS_SECRET", LarkWs::APP_SECRET)];
    let check = || run_cli_with_env(&path, &["check", "--connect"], &env);

    lark.refuse_handshakes(1, "403", None);
    let (code, out, err) = check();
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("app hire: long connection handshake failed"),
        "{err}"
    );
    assert!(err.contains("forbidden"), "{err}");
    assert!(err.contains("failed until a reload"), "{err}");
    assert!(!out.contains("is valid"), "{out}");

    lark.queue_bootstrap_codes(&[1]);
    let (code, out, err) = check();
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("app hire: long connection bootstrap failed"),
        "{err}"
    );
    assert!(err.contains("keep retrying"), "{err}");
    assert!(!err.contains("until a reload"), "{err}");

    let (code, out, err) = check();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("app hire: long connection ok (bootstrap and handshake; service_id 42"),
        "{out}"
    );
    let accepted = lark.handshakes().iter().filter(|(_, ok)| *ok).count();
    assert_eq!(accepted, 1, "{:?}", lark.handshakes());
    assert!(
        wait_until(WAIT, || lark.open_connections() == 0),
        "check closes its connection"
    );
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
