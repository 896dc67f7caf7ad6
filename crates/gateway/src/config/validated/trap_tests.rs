//! No silent traps: a value the gateway cannot honour is refused at `gateway check`, at its key
//! path (among them durations past 100 years, a zero timeout, retentions under a minute, and
//! attempt and crash limits past what the stores count), and no refusal shows a secret.

use super::tests::{load, problems, MINIMAL};
use super::*;

const APP: &str = r#"
[[apps]]
name = "hire"
path = "/webhook/event"
"#;

/// The problems of `text` (an [`APP`] is added), with `env` for `${VAR}`s.
fn problems_with(text: &str, env: &[(&str, &str)]) -> Vec<String> {
    match load(&format!("{APP}{text}"), env) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// The one problem of `text`, which must be at `at`.
fn one_problem(text: &str, at: &str) -> String {
    let p = problems_with(text, &[]);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(p[0].starts_with(&format!("{at}: ")), "{p:#?}");
    p[0].clone()
}

#[test]
fn a_malformed_variable_reference_never_shows_the_secret() {
    for (value, what) in [
        ("tok-SUPERSECRET${", "unterminated"),
        ("tok-SUPERSECRET${SUPER-SECRET}", "invalid variable name"),
    ] {
        let p = problems(&format!(
            "[[apps]]\nname = \"a\"\npath = \"/a\"\nverification_token = \"{value}\"\n"
        ));
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(
            p[0].starts_with("apps[0].verification_token: ") && p[0].contains(what),
            "{p:#?}"
        );
        assert!(!p[0].contains("SECRET"), "{p:#?}");
    }
}

#[test]
fn a_domain_password_is_never_shown() {
    // The password may hold `#`, `?` or `/`, and the scheme may be missing.
    for domain in [
        "https://user:DOMAINPASSWORD@open.feishu.cn",
        "https://user:DOMAIN#PASSWORD@open.feishu.cn",
        "https://user:DOMAIN?/PASSWORD@open.feishu.cn",
        "user:DOMAINPASSWORD@open.feishu.cn",
    ] {
        let p = problems(&format!(
            "[[apps]]\nname = \"ws\"\nmode = \"websocket\"\napp_id = \"cli\"\n\
             app_secret = \"s\"\ndomain = \"{domain}\"\n"
        ));
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(p[0].starts_with("apps[0].domain: "), "{p:#?}");
        assert!(!p[0].contains("PASSWORD"), "{p:#?}");
        assert!(p[0].contains("open.feishu.cn"), "{p:#?}");
    }
}

/// A secret written without quotes is a type error, which serde words with the value in it.
#[test]
fn a_secret_of_the_wrong_type_is_never_shown() {
    for (table, key, value) in [
        (
            "[[apps]]\nname = \"a\"\npath = \"/a\"",
            "verification_token",
            "8374920193",
        ),
        (
            "[[apps]]\nname = \"a\"\npath = \"/a\"",
            "encrypt_key",
            "83749201938475629",
        ),
        (
            "[[apps]]\nname = \"a\"\nmode = \"websocket\"\napp_id = \"c\"",
            "app_secret",
            "48151623",
        ),
        ("[admin]", "token", "1234567890123456789"),
        ("[store]", "url", "998877665544"),
        (
            "[[apps]]\nname = \"a\"\npath = \"/a\"",
            "encrypt_key",
            "4242.4242",
        ),
        (
            "[[apps]]\nname = \"a\"\npath = \"/a\"",
            "encrypt_key",
            "[\"x\", 4242424242]",
        ),
    ] {
        let text = format!("{table}\n{key} = {value}\n");
        let Err(e @ ConfigError::Syntax { .. }) = load(&text, &[]) else {
            panic!("{key} = {value} must be refused");
        };
        let shown = e.to_string();
        for digits in value.split(|c: char| !c.is_ascii_digit()) {
            assert!(digits.len() < 4 || !shown.contains(digits), "{shown}");
        }
        assert!(shown.contains("line ") && shown.contains(key), "{shown}");
    }
}

#[test]
fn the_two_listeners_cannot_share_an_address() {
    for (server, admin) in [
        ("127.0.0.1:7000", "127.0.0.1:7000"),
        ("0.0.0.0:7000", "127.0.0.1:7000"),
        ("[::]:7000", "[::1]:7000"),
        // Dual-stack: `[::]` takes IPv4 too.
        ("[::]:7000", "127.0.0.1:7000"),
    ] {
        let p = one_problem(
            &format!("[server]\nlisten = \"{server}\"\n[admin]\nlisten = \"{admin}\"\n"),
            "admin.listen",
        );
        assert!(p.contains("server.listen"), "{p}");
    }
    // Port 0 is a fresh port for each; other ports or addresses are fine.
    for (server, admin) in [
        ("127.0.0.1:0", "127.0.0.1:0"),
        ("127.0.0.1:7000", "127.0.0.1:7001"),
        ("127.0.0.1:7000", "127.0.0.2:7000"),
        ("0.0.0.0:7000", "[::1]:7000"),
    ] {
        let text = format!("{APP}[server]\nlisten = \"{server}\"\n[admin]\nlisten = \"{admin}\"\n");
        load(&text, &[]).expect("valid");
    }
}

#[test]
fn a_log_filter_the_tracing_parser_refuses_is_refused() {
    let p = one_problem("[log]\nlevel = \"warn,gate[way=debug\"\n", "log.level");
    assert!(p.contains("gate[way"), "{p}");
    let c = load(
        &format!("{APP}[log]\nlevel = \"warn,gateway[request]=debug\"\n"),
        &[],
    )
    .expect("a span filter is a filter");
    assert!(c.log_level.is_some());
}

#[test]
fn a_route_that_can_never_match_is_refused() {
    one_problem(
        "[[plugins]]\nname = \"p\"\nlibrary = \"/nonexistent/p.so\"\n\
         [[routes]]\nevents = [\"*\"]\nplugins = [\"p\"]\napps = []\n",
        "routes[0].apps",
    );
    for pattern in [
        " hire.x", "hire.x ", "hire. x", "hire..*", "hire..x", ".hire", "hire.", ".*", "hire\t.x",
    ] {
        let p = problems_with(
            &format!(
                "[[plugins]]\nname = \"p\"\nlibrary = \"/nonexistent/p.so\"\n\
                 [[routes]]\nevents = [\"*\", {pattern:?}]\nplugins = [\"p\"]\n"
            ),
            &[],
        );
        assert_eq!(p.len(), 1, "{pattern:?}: {p:#?}");
        assert!(p[0].starts_with("routes[0].events[1]: "), "{p:#?}");
    }
    // Schema 1.0 types may have upper-case letters.
    load(
        &format!(
            "{APP}[[plugins]]\nname = \"p\"\nlibrary = \"/nonexistent/p.so\"\n\
             [[routes]]\nevents = [\"APPROVAL_Instance\", \"Hire.*\"]\nplugins = [\"p\"]\n"
        ),
        &[],
    )
    .expect("valid");
}

#[test]
fn a_webhook_path_no_request_path_can_equal_is_refused() {
    for path in [
        "/webhook/event?x=1",
        "/webhook/event#top",
        "/webhook event",
        "/webhook/\tevent",
        "/webhook/<event>",
        "/webhook/`event`",
    ] {
        let p = problems(&format!("[[apps]]\nname = \"a\"\npath = {path:?}\n"));
        assert_eq!(p.len(), 1, "{path:?}: {p:#?}");
        assert!(p[0].starts_with("apps[0].path: "), "{p:#?}");
    }
    for path in [
        "/webhook/%7Bevent%7D",
        "/a/b-c_d.e~f/@x:y;z=1,2!$&'()*+",
        "/事件",
    ] {
        load(&format!("[[apps]]\nname = \"a\"\npath = {path:?}\n"), &[]).expect(path);
    }
}

#[test]
fn an_admin_token_with_surrounding_whitespace_is_refused() {
    let token = "0123456789abcdef0123";
    for padded in [
        format!("{token} "),
        format!(" {token}"),
        format!("{token}\n"),
    ] {
        let p = problems_with("[admin]\ntoken = \"${T}\"\n", &[("T", &padded)]);
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(
            p[0].starts_with("admin.token: ") && p[0].contains("whitespace"),
            "{p:#?}"
        );
        assert!(!p[0].contains(token), "{p:#?}");
    }
}

#[test]
fn an_admin_token_outside_printable_ascii_is_refused() {
    // Non-ASCII from the environment or written in the file, a space or control character
    // inside: an `Authorization: Bearer` header could never carry it.
    for (token, at) in [
        ("0123456789abcdéf0123", 15),
        ("0123456789abcdef0123\u{200b}x", 21),
        ("пароль-пароль-пароль", 1),
        ("0123456789 abcdef0123", 11),
        ("0123456789\tabcdef0123", 11),
        ("0123456789abcdef\u{7f}0123", 17),
    ] {
        let from_env = problems_with("[admin]\ntoken = \"${T}\"\n", &[("T", token)]);
        let quoted = toml::Value::String(token.into()).to_string();
        let in_file = problems_with(&format!("[admin]\ntoken = {quoted}\n"), &[]);
        for p in [from_env, in_file] {
            assert_eq!(p.len(), 1, "{token:?}: {p:#?}");
            assert!(
                p[0].starts_with("admin.token: ")
                    && p[0].contains("not printable ASCII")
                    && p[0].contains(&format!("byte {at} "))
                    // One line of prose (its source lines once ran on with their indents).
                    && !p[0].contains("  "),
                "{token:?}: {p:#?}"
            );
            assert!(
                !p[0].contains("0123456789") && !p[0].contains("пароль"),
                "{p:#?}"
            );
        }
    }
    // Every printable ASCII character is fine.
    let all: String = (0x21u8..=0x7e).map(char::from).collect();
    let c = load(
        &format!("{APP}[admin]\ntoken = \"${{T}}\"\n"),
        &[("T", &all)],
    )
    .expect("printable ASCII");
    assert_eq!(c.admin_token.map(|t| t.0), Some(all));
}

#[test]
fn admin_listen_is_compared_with_off_after_expansion() {
    let c = load(
        &format!("{APP}[admin]\nlisten = \"${{X}}\"\n"),
        &[("X", "off")],
    )
    .expect("valid");
    assert_eq!(c.admin_listen, None);
}

#[test]
fn the_clock_skew_message_reads_as_one_sentence() {
    let p = problems("[[apps]]\nname = \"a\"\npath = \"/a\"\nmax_clock_skew = \"5m\"\n");
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(!p[0].contains("  "), "{p:#?}");
}

/// JSON has no NaN or infinity: a plugin config float that is one was handed over as `null`.
#[test]
fn a_plugin_config_float_json_cannot_hold_is_refused() {
    let plugin = |value: &str| {
        format!(
            "[[plugins]]\nname = \"p\"\nlibrary = \"/nonexistent/libp.so\"\n\
             config = {{ ratio = {value} }}\n"
        )
    };
    for value in ["nan", "inf", "-inf"] {
        let p = one_problem(&plugin(value), "plugins[0].config.ratio");
        assert!(p.contains("no JSON form"), "{p}");
    }
    assert!(load(&format!("{APP}{}", plugin("0.5")), &[]).is_ok());
}

/// An event is stored whole and handed to an isolated plugin in one frame: a body limit beyond
/// what either holds accepted events that could never be delivered.
#[test]
fn a_body_limit_no_store_or_frame_can_hold_is_refused() {
    let p = one_problem(
        "[server]\nmax_body_bytes = 2147483648\n",
        "server.max_body_bytes",
    );
    assert!(p.contains("256 MiB"), "{p}");
    let c = load(&format!("{APP}[server]\nmax_body_bytes = 268435456\n"), &[]).expect("valid");
    assert_eq!(c.max_body_bytes, 256 << 20);
}

/// Every duration is used in millisecond arithmetic on `i64` Unix times (`now_ms() -
/// retention`): a longer one than 100 years is refused at its key, so nothing can wrap (a
/// retention of 200000000000d made the purge cutoff a time in the future: everything went).
#[test]
fn every_duration_key_is_at_most_100_years() {
    let keys: [(&str, &str); 12] = [
        ("server.body_timeout", "[server]\nbody_timeout = \"{v}\"\n"),
        (
            "server.shutdown_grace",
            "[server]\nshutdown_grace = \"{v}\"\n",
        ),
        (
            "apps[0].max_clock_skew",
            "[[apps]]\nname = \"a\"\npath = \"/a\"\nencrypt_key = \"k\"\nmax_clock_skew = \"{v}\"\n",
        ),
        ("store.retention", "[store]\nretention = \"{v}\"\n"),
        (
            "store.dead_letter_retention",
            "[store]\ndead_letter_retention = \"{v}\"\n",
        ),
        (
            "store.lease",
            "[store]\nurl = \"postgres://gw@db/gateway\"\nlease = \"{v}\"\n",
        ),
        ("delivery.max_age", "[delivery]\nmax_age = \"{v}\"\n"),
        (
            "delivery.initial_backoff",
            "[delivery]\ninitial_backoff = \"{v}\"\nmax_backoff = \"36500d\"\n",
        ),
        (
            "delivery.max_backoff",
            "[delivery]\nmax_backoff = \"{v}\"\n",
        ),
        ("delivery.timeout", "[delivery]\ntimeout = \"{v}\"\n"),
        (
            "delivery.removed_plugin_grace",
            "[delivery]\nremoved_plugin_grace = \"{v}\"\n",
        ),
        ("delivery.linger", "[delivery]\nlinger = \"{v}\"\n"),
    ];
    for (key, table) in keys {
        let config = |v: &str| {
            let table = table.replace("{v}", v);
            if table.starts_with("[[apps]]") {
                table
            } else {
                format!("{MINIMAL}{table}")
            }
        };
        for too_long in ["36501d", "200000000000d", "36500d1ms"] {
            let p = problems(&config(too_long));
            assert!(
                p.iter().any(|p| p.starts_with(&format!("{key}: "))
                    && (p.contains("at most 36500d") || key == "delivery.linger")),
                "{key} = {too_long}: {p:?}"
            );
        }
        if key != "delivery.linger" {
            let c = load(&config("36500d"), &[]);
            assert!(c.is_ok(), "{key} = 36500d: {c:?}");
        }
    }
    let c = load(
        &format!("{MINIMAL}[store]\nretention = \"36500d\"\ndead_letter_retention = \"36500d\"\n"),
        &[],
    )
    .expect("valid");
    assert_eq!(c.retention, MAX_DURATION);
    assert!(i64::try_from(MAX_DURATION.as_millis()).is_ok_and(|ms| ms < i64::MAX / 2));
}

/// A zero plugin timeout times every call out; a retention under a minute purges what was just
/// stored. Both passed `gateway check` before.
#[test]
fn a_zero_timeout_and_retentions_under_a_minute_are_refused() {
    let p = problems(&format!("{MINIMAL}[delivery]\ntimeout = \"0s\"\n"));
    assert_eq!(
        p,
        ["delivery.timeout: must be greater than 0 (every plugin call would time out)"]
    );
    let p = problems(&format!("{MINIMAL}[server]\nbody_timeout = \"0ms\"\n"));
    assert_eq!(
        p,
        ["server.body_timeout: must be greater than 0 (every request would get 408)"]
    );
    for key in ["retention", "dead_letter_retention"] {
        for short in ["0s", "0ms", "59s999ms", "1ms"] {
            let p = problems(&format!("{MINIMAL}[store]\n{key} = \"{short}\"\n"));
            assert_eq!(p.len(), 1, "{key} = {short}: {p:?}");
            assert!(
                p[0].starts_with(&format!("store.{key}: must be at least 1m")),
                "{key} = {short}: {p:?}"
            );
        }
        let c = load(&format!("{MINIMAL}[store]\n{key} = \"1m\"\n"), &[]).expect("1m is valid");
        assert_eq!(
            if key == "retention" {
                c.retention
            } else {
                c.dead_letter_retention
            },
            Duration::from_secs(60)
        );
    }
    let c = load(&format!("{MINIMAL}[delivery]\ntimeout = \"1ms\"\n"), &[]).expect("valid");
    assert_eq!(c.delivery.timeout, Duration::from_millis(1));
}

/// An IPv4-mapped loopback admin address is loopback (no token needed), as `[::ffff:a.b.c.d]`
/// is `a.b.c.d` everywhere else; a mapped outside address is not.
#[test]
fn a_mapped_loopback_admin_address_needs_no_token() {
    let on = |addr: &str| format!("{APP}[admin]\nlisten = \"{addr}\"\n");
    assert!(load(&on("[::ffff:127.0.0.1]:9465"), &[]).is_ok());
    let p = problems_with(&on("[::ffff:10.0.0.1]:9465").replacen(APP, "", 1), &[]);
    assert!(
        p.len() == 1 && p[0].starts_with("admin.listen: ") && p[0].contains("not a loopback"),
        "{p:#?}"
    );
}

/// A Lark secret with a stray space or line break (from a variable, or a `${file:}` holding an
/// extra line) passed check, then every webhook was refused (401: the token or the signature
/// never matched). The value is not shown.
#[test]
fn a_lark_secret_with_surrounding_whitespace_is_refused() {
    let webhook = "[[apps]]\nname = \"a\"\npath = \"/a\"\nverification_token = \"${T}\"\nencrypt_key = \"${K}\"\napp_id = \"${I}\"\n";
    let p = problems_with(
        webhook,
        &[("T", "tok-123 "), ("K", "key-456\n"), ("I", " cli_789")],
    );
    for key in ["verification_token", "encrypt_key", "app_id"] {
        assert!(
            p.iter()
                .any(|p| p.starts_with(&format!("apps[1].{key}: begins or ends with whitespace"))),
            "{key}: {p:#?}"
        );
    }
    assert!(
        !p.iter()
            .any(|p| p.contains("tok-123") || p.contains("key-456") || p.contains("cli_789")),
        "{p:#?}"
    );
    let ws =
        "[[apps]]\nname = \"w\"\nmode = \"websocket\"\napp_id = \"cli_1\"\napp_secret = \"${S}\"\n";
    let p = problems_with(ws, &[("S", "secret\t")]);
    assert!(
        p.iter()
            .any(|p| p.starts_with("apps[1].app_secret: begins or ends with whitespace")),
        "{p:#?}"
    );
}

/// `pool_size = 4294967295` passed, then `check` and `run` aborted allocating the pool.
#[test]
fn a_pool_past_its_bound_is_refused() {
    let url = "[store]\nurl = \"postgres://gw@127.0.0.1/gw\"\n";
    one_problem(&format!("{url}pool_size = 4294967295\n"), "store.pool_size");
    assert!(load(&format!("{APP}{url}pool_size = 1024\n"), &[]).is_ok());
}

/// Two websocket apps of one app_id on one platform passed: Lark hands each event to one
/// connection, so a route naming one app missed the events the other received. On two
/// platforms (Feishu and Lark) they are two apps.
#[test]
fn two_websocket_apps_of_one_app_id_are_refused() {
    let ws = |name: &str, domain: &str| {
        format!("[[apps]]\nname = \"{name}\"\nmode = \"websocket\"\napp_id = \"cli_same\"\napp_secret = \"s\"\ndomain = \"{domain}\"\n")
    };
    let feishu = "https://open.feishu.cn";
    let p = problems_with(&format!("{}{}", ws("a", feishu), ws("b", feishu)), &[]);
    assert!(
        p.iter().any(|p| p.starts_with(
            "apps[2].app_id: duplicate app_id \"cli_same\" at https://open.feishu.cn"
        )),
        "{p:#?}"
    );
    let two = format!(
        "{APP}{}{}",
        ws("a", feishu),
        ws("b", "https://open.larksuite.com")
    );
    assert!(load(&two, &[]).is_ok());
}
