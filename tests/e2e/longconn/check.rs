//! `gateway check --connect` against the stand-in: it bootstraps and dials each websocket
//! app, and words a failure by its verdict. Part of `longconn.rs`.

use super::*;

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
