//! App checks that close traps: a setting the app's other settings make meaningless, and base
//! URLs whose host is not what it seems.

use super::tests::problems;

#[test]
fn a_clock_skew_limit_needs_signed_requests_so_an_encrypt_key() {
    let p = problems(
        r#"
[[apps]]
name = "plain"
path = "/plain"
max_clock_skew = "5m"
"#,
    );
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(
        p[0].starts_with("apps[0].max_clock_skew: ") && p[0].contains("encrypt_key"),
        "{p:#?}"
    );
}

/// A window of a few seconds cannot be honoured: the timestamp is in whole seconds and a
/// request takes time to arrive ("0s" refused every request that crossed a second).
#[test]
fn a_clock_skew_limit_below_10_s_is_refused() {
    let app = |skew: &str| {
        format!(
            r#"
[[apps]]
name = "signed"
path = "/signed"
encrypt_key = "k"
max_clock_skew = "{skew}"
"#
        )
    };
    for skew in ["0s", "9s"] {
        let p = problems(&app(skew));
        assert!(
            p.iter()
                .any(|p| p.starts_with("apps[0].max_clock_skew: must be at least 10s")),
            "{skew}: {p:#?}"
        );
    }
    let config = super::tests::load(&app("10s"), &[]).expect("10s is honoured");
    assert_eq!(
        config.apps[0]
            .webhook()
            .expect("a webhook app")
            .max_clock_skew,
        Some(std::time::Duration::from_secs(10))
    );
}

#[test]
fn a_domain_with_user_info_query_or_fragment_is_refused() {
    for domain in [
        "http://localhost:1@evil.example",
        "http://127.0.0.1:80@evil.example",
        "https://open.feishu.cn@evil.example",
        "https://user:pw@open.feishu.cn",
        "https://open.feishu.cn?x=1",
        "https://open.feishu.cn#top",
        "https://open.feishu.cn /x",
    ] {
        let p = problems(&format!(
            r#"
[[apps]]
name = "ws"
mode = "websocket"
app_id = "cli"
app_secret = "s"
domain = "{domain}"
"#
        ));
        assert_eq!(p.len(), 1, "{domain}: {p:#?}");
        assert!(p[0].starts_with("apps[0].domain: "), "{p:#?}");
    }
}

/// Both names (TOML values as written) refused at check, with their locations and `why`.
fn names_refused(app: &str, plugin: &str, why: &str) {
    let p = problems(&format!(
        "[[apps]]\nname = {app}\npath = \"/hire\"\n\n[[plugins]]\nname = {plugin}\nlibrary = \"/nonexistent/p.so\"\n"
    ));
    let named = |at: &str| p.iter().any(|m| m.starts_with(at) && m.contains(why));
    assert!(named("apps[0].name: "), "{p:#?}");
    assert!(named("plugins[0].name: "), "{p:#?}");
}

/// An app's or a plugin's name is stored with every event or delivery: a control character in
/// it (a NUL cannot be stored in PostgreSQL at all) is refused at check, with its location.
#[test]
fn a_name_with_a_control_character_is_refused() {
    names_refused(r#""hi\u0000re""#, r#""lo\ng""#, "control character");
}

/// Regression: a name with `"` or `\` passed check, and the metrics library writes label values
/// as they are: every scrape of `/metrics` then failed to parse (all metrics lost).
#[test]
fn a_name_with_a_quote_or_a_backslash_is_refused() {
    names_refused(r#"'ops"team'"#, r#"'pay\out'"#, "metrics label values");
}

/// A websocket app's `app_id` that is set but refused (empty, or whitespace around it) is
/// reported once, as what it is, not also as missing; one that is absent is reported missing.
#[test]
fn a_websocket_app_id_is_reported_once_for_what_is_wrong_with_it() {
    let app = |app_id: &str| {
        format!("[[apps]]\nname = \"ws\"\nmode = \"websocket\"\n{app_id}app_secret = \"s\"\n")
    };
    for (line, says) in [
        ("app_id = \"\"\n", "apps[0].app_id: is empty"),
        (
            "app_id = \" cli\"\n",
            "apps[0].app_id: begins or ends with whitespace",
        ),
        ("", "apps[0].app_id: is required for a websocket app"),
    ] {
        let p = problems(&app(line));
        assert_eq!(p.len(), 1, "{line:?}: {p:#?}");
        assert!(p[0].starts_with(says), "{line:?}: {p:#?}");
    }
}

/// `{:?}` of an app (in a debug log, a panic message) names it and never shows a secret.
#[test]
fn an_apps_debug_output_shows_no_secret() {
    let config = super::tests::load(
        r#"
[[apps]]
name = "signed"
path = "/signed"
verification_token = "VTOKEN-SECRET"
encrypt_key = "EKEY-SECRET"

[[apps]]
name = "ws"
mode = "websocket"
app_id = "cli_ws"
app_secret = "APP-SECRET"
"#,
        &[],
    )
    .expect("valid");
    for app in &config.apps {
        let mut shown = format!("{app:?}");
        if let Some(l) = app.long_connection() {
            shown.push_str(&format!("{l:?}"));
        }
        assert!(shown.contains(&format!("{:?}", app.name)), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(!shown.contains("SECRET"), "{shown}");
    }
    let ws = config.apps[1].long_connection().expect("websocket app");
    assert!(format!("{ws:?}").contains("cli_ws"));
}
