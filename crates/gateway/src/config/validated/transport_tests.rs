//! The two transports' app keys: a websocket app with its defaults beside a webhook app, every
//! transport key refused outside its mode, an unknown mode, and a websocket `domain` that is no
//! URL or plain http.

use super::tests::{load, problems};

#[test]
fn websocket_app_with_defaults_beside_a_webhook_app() {
    let c = load(
        r#"
[[apps]]
name = "hook"
path = "/hook"
[[apps]]
name = "ws"
mode = "websocket"
app_id = "${APP_ID}"
app_secret = "${APP_SECRET}"
verification_token = "t"
[[apps]]
name = "ws2"
mode = "websocket"
app_id = "cli_2"
app_secret = "s2"
domain = "http://127.0.0.1:9/"
"#,
        &[("APP_ID", "cli_1"), ("APP_SECRET", "s3cr3t")],
    )
    .expect("valid");
    assert!(c.apps[0].webhook().is_some());
    let ws = c.apps[1].long_connection().expect("websocket app");
    assert_eq!(ws.app_id, "cli_1");
    assert_eq!(ws.app_secret, "s3cr3t");
    assert_eq!(ws.domain, "https://open.feishu.cn");
    assert_eq!(
        c.apps[1].app_id.as_deref(),
        Some("cli_1"),
        "pinned like a webhook app_id"
    );
    assert_eq!(
        c.apps[2].long_connection().map(|l| l.domain.as_str()),
        Some("http://127.0.0.1:9"),
        "trailing slash dropped"
    );
    let shown = format!("{:?}", c.apps[1]);
    assert!(!shown.contains("s3cr3t"), "{shown}");
}

#[test]
fn transport_keys_belong_to_their_mode() {
    let p = problems(
        r#"
[[apps]]
name = "ws"
mode = "websocket"
path = "/x"
encrypt_key = "k"
max_clock_skew = "5m"
[[apps]]
name = "hook"
path = "/hook"
app_secret = "s"
domain = "https://open.larksuite.com"
[[apps]]
name = "nopath"
[[apps]]
name = "odd"
mode = "stream"
[[apps]]
name = "plain"
mode = "websocket"
app_id = "cli"
app_secret = "s"
domain = "http://open.feishu.cn"
[[apps]]
name = "nourl"
mode = "websocket"
app_id = "cli_b"
app_secret = "s"
domain = "open.feishu.cn"
"#,
    );
    let expected = [
        "apps[0].path: belongs to webhook apps only",
        "apps[0].encrypt_key: belongs to webhook apps only",
        "apps[0].max_clock_skew: belongs to webhook apps only",
        "apps[0].app_id: is required for a websocket app",
        "apps[0].app_secret: is required for a websocket app",
        "apps[1].app_secret: belongs to websocket apps only",
        "apps[1].domain: belongs to websocket apps only",
        "apps[2].path: is required for a webhook app",
        "apps[3].mode: \"stream\" is neither \"webhook\" nor \"websocket\"",
        "apps[4].domain: \"http://open.feishu.cn\": plain http would send the app secret in clear",
        "apps[5].domain: \"open.feishu.cn\" is not a URL",
    ];
    for e in expected {
        assert!(
            p.iter().any(|x| x.starts_with(e)),
            "missing {e:?} in {p:#?}"
        );
    }
    assert_eq!(p.len(), expected.len(), "{p:#?}");
}
