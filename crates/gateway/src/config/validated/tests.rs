//! Config validation: defaults, expansion (an unset `${VAR}` the only problem of its key),
//! relative paths, every problem reported with its location, the shipped examples valid, log
//! levels, admin TLS; and the helpers the other config test modules share. Websocket and webhook
//! app keys: `transport_tests.rs`; plugin libraries and their pins: `library_tests.rs`; values
//! the gateway cannot honour (durations, limits, secrets shown): `trap_tests.rs`.

use super::server::{default_workers, DEFAULT_LISTEN, DEFAULT_MAX_BODY};
use super::*;

pub(super) fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).expect("write");
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .ok_or(std::env::VarError::NotPresent)
    };
    Config::load_with_env(&path, &lookup)
}

pub(super) fn problems(text: &str) -> Vec<String> {
    match load(text, &[]) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

pub(super) const MINIMAL: &str = r#"
[[apps]]
name = "hire"
path = "/webhook/event"
"#;

#[test]
fn minimal_gets_defaults() {
    let c = load(MINIMAL, &[]).expect("valid");
    assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(c.max_body_bytes, DEFAULT_MAX_BODY);
    assert_eq!(c.retention, DEFAULT_RETENTION);
    // The README's default, `7d`.
    assert_eq!(DEFAULT_RETENTION, Duration::from_secs(604_800));
    assert_eq!(c.dead_letter_retention, Duration::from_secs(30 * 86_400));
    assert_eq!(c.delivery, DeliveryConfig::default());
    assert_eq!(c.workers, default_workers());
    assert!(c.workers >= 1);
    let StoreConfig::Sqlite { path } = &c.store else {
        panic!("the embedded store is the default")
    };
    assert!(path.is_absolute());
    assert!(path.ends_with("data/gateway.db"));
    assert_eq!(path.parent().and_then(Path::parent), Some(c.dir.as_path()));
}

#[test]
fn full_config_with_env() {
    let c = load(
        r#"
[server]
listen = "127.0.0.1:0"
max_body_bytes = 2048
[[apps]]
name = "hire"
path = "/a"
verification_token = "${TOKEN}"
encrypt_key = "${KEY}"
max_clock_skew = "5m"
[[apps]]
name = "other"
path = "/b"
[store]
path = "/var/lib/gw.db"
retention = "30d"
[delivery]
max_attempts = 3
initial_backoff = "500ms"
max_backoff = "10m"
timeout = "30s"
[[plugins]]
name = "audit"
library = "lib/liblogger.so"
config = { path = "x-${TOKEN}.jsonl", nested = { list = ["${KEY}", 1] } }
max_concurrency = 2
[[routes]]
events = ["hire.referral_account.assets_update_v1", "im.*"]
plugins = ["audit"]
apps = ["hire"]
"#,
        &[("TOKEN", "s3cr3t"), ("KEY", "key")],
    )
    .expect("valid");
    assert_eq!(c.apps[0].verification_token.as_deref(), Some("s3cr3t"));
    let hook = c.apps[0].webhook().expect("a webhook app");
    assert!(hook.cipher.is_some());
    assert_eq!(hook.max_clock_skew, Some(Duration::from_secs(300)));
    assert_eq!(
        c.store,
        StoreConfig::Sqlite {
            path: PathBuf::from("/var/lib/gw.db")
        }
    );
    assert_eq!(c.delivery.initial_backoff, Duration::from_millis(500));
    assert!(c.plugins[0].library.starts_with(&c.dir));
    assert_eq!(c.plugins[0].config["path"], "x-s3cr3t.jsonl");
    assert_eq!(c.plugins[0].config["nested"]["list"][0], "key");
    assert_eq!(c.plugins[0].max_concurrency, 2);
    assert_eq!(c.routes[0].events[1], EventPattern::Prefix("im.".into()));
    assert!(
        !format!("{:?}", c.apps[0]).contains("s3cr3t"),
        "Debug redacts secrets"
    );
}

#[test]
fn unknown_keys_are_syntax_errors_with_location() {
    let err = load("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n", &[]).expect_err("typo");
    let msg = err.to_string();
    assert!(msg.contains("lisen"), "{msg}");
    assert!(msg.contains("line 3"), "{msg}");
}

#[test]
fn syntax_errors_never_echo_the_offending_line() {
    let err = load(
        "[[apps]]\nname = \"a\"\npath = \"/a\"\nencrypt_Key = \"s3cr3t-value\"\n",
        &[],
    )
    .expect_err("unknown key");
    let msg = err.to_string();
    assert!(msg.contains("line 4, column 1"), "{msg}");
    assert!(msg.contains("encrypt_Key"), "{msg}");
    assert!(!msg.contains("s3cr3t-value"), "{msg}");
}

#[test]
fn every_problem_is_reported_with_its_location() {
    let p = problems(
        r#"
[server]
listen = "nowhere"
workers = 0
[[apps]]
name = "a"
path = "no-slash"
verification_token = "${NOPE}"
[[apps]]
name = "a"
path = "/x"
[delivery]
timeout = "10 parsecs"
max_attempts = 0
linger = "2s"
[[plugins]]
name = "p"
library = "x.so"
[[plugins]]
name = "p"
library = "y.so"
[[routes]]
events = ["bad*pattern"]
plugins = ["ghost"]
apps = ["nobody"]
"#,
    );
    let joined = p.join("\n");
    for needle in [
        "server.listen:",
        "server.workers: must be at least 1",
        "apps[0].path:",
        "apps[0].verification_token: environment variable NOPE is not set",
        "apps[1].name: duplicate name",
        "delivery.timeout:",
        "delivery.max_attempts:",
        "delivery.linger: must be at most 1s",
        "plugins[1].name: duplicate name",
        "routes[0].events[0]:",
        "routes[0].plugins[0]: unknown plugin \"ghost\"",
        "routes[0].apps[0]: unknown app \"nobody\"",
    ] {
        assert!(joined.contains(needle), "missing {needle:?} in:\n{joined}");
    }
}

#[test]
fn linger_takes_durations_up_to_a_second_and_zero_turns_it_off() {
    let with = |v: &str| format!("{MINIMAL}[delivery]\nlinger = \"{v}\"\n");
    for (text, ms) in [("0ms", 0), ("250ms", 250), ("1s", 1000)] {
        let c = load(&with(text), &[]).expect("valid");
        assert_eq!(c.delivery.linger, Duration::from_millis(ms), "{text}");
    }
    for bad in ["1001ms", "soon"] {
        let p = problems(&with(bad));
        assert!(p[0].starts_with("delivery.linger:"), "{bad}: {p:?}");
    }
}

#[test]
fn patterns() {
    assert!(EventPattern::parse("hire.*")
        .expect("ok")
        .matches("hire.x.y"));
    assert!(!EventPattern::parse("hire.*").expect("ok").matches("hirex"));
    assert!(EventPattern::parse("*").expect("ok").matches("anything"));
    assert!(EventPattern::parse("a.b").expect("ok").matches("a.b"));
    assert!(EventPattern::parse("hire*").is_err());
    assert!(EventPattern::parse("").is_err());
}

#[test]
fn the_shipped_gateway_toml_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../gateway.toml");
    let c = Config::load_with_env(&path, &|_| Err(std::env::VarError::NotPresent))
        .expect("shipped gateway.toml is valid");
    assert_eq!(c.apps.len(), 1);
    assert_eq!(
        c.apps[0].webhook().map(|w| w.path.as_str()),
        Some("/webhook/event")
    );
    assert!(c.plugins[0]
        .library
        .ends_with("target/release/liblogger.so"));
    assert_eq!(c.routes[0].plugins, ["audit"]);
}

#[test]
fn the_shipped_plugin_and_app_examples_are_valid_once_uncommented() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../gateway.toml");
    let text = std::fs::read_to_string(&path).expect("read");
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if [
                    "[[plugins]]",
                    "[[apps]]",
                    "name =",
                    "library =",
                    "config =",
                    "mode =",
                    "app_id =",
                    "app_secret =",
                    "domain =",
                    "verification_token =",
                ]
                .iter()
                .any(|k| rest.starts_with(k)) =>
            {
                rest.to_owned()
            }
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        .replace(
            r#"plugins = ["audit"]"#,
            r#"plugins = ["audit", "notify", "payout"]"#,
        );
    let c = load(
        &uncommented,
        &[
            (
                "LARK_BOT_WEBHOOK_URL",
                "https://open.feishu.cn/open-apis/bot/v2/hook/x",
            ),
            ("LARK_BOT_SECRET", "s"),
            ("LARK_APP_ID", "cli_x"),
            ("LARK_APP_SECRET", "secret"),
            ("LARK_VERIFICATION_TOKEN", "token"),
        ],
    )
    .expect("examples are valid");
    let ws = c.app_by_name("hire-ws").and_then(App::long_connection);
    assert_eq!(ws.map(|l| l.app_id.as_str()), Some("cli_x"));
    let names: Vec<&str> = c.plugins.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["audit", "notify", "payout"]);
    assert_eq!(c.plugins[2].config["app_secret"], "secret");
}

#[test]
fn log_levels_are_checked_and_warning_means_warn() {
    for bad in [
        "verbose",
        "warnings",
        "info,gateway=loud",
        "=debug",
        "info,,debug",
    ] {
        let p = problems(&format!("{MINIMAL}\n[log]\nlevel = \"{bad}\"\n"));
        assert!(
            p.iter().any(|x| x.starts_with("log.level:")),
            "{bad}: {p:?}"
        );
    }
    let p = problems(&format!("{MINIMAL}\n[log]\nlevel = \"verbose\"\n"));
    assert!(p[0].contains("error, warn, info, debug, trace"), "{p:?}");
    for no_target in ["=debug", "info, =debug"] {
        let p = problems(&format!("{MINIMAL}\n[log]\nlevel = \"{no_target}\"\n"));
        assert!(
            p[0].contains("a directive has no target before `=`"),
            "{p:?}"
        );
    }
    for (given, used) in [
        ("warning", "warn"),
        ("WARN", "warn"),
        ("info, gateway=debug", "info,gateway=debug"),
        ("plugin=Warning", "plugin=warn"),
    ] {
        let c = load(&format!("{MINIMAL}\n[log]\nlevel = \"{given}\"\n"), &[]).expect("valid");
        assert_eq!(c.log_level.as_deref(), Some(used), "{given}");
    }
}

#[test]
fn admin_tls_resolves_like_server_tls_and_needs_the_listener() {
    let c = load(
        &format!("[admin]\ntls = {{ cert = \"a/cert.pem\", key = \"/k.pem\" }}\n{MINIMAL}"),
        &[],
    )
    .expect("valid");
    let files = c.admin_tls.expect("admin tls");
    assert_eq!(files.cert, c.dir.join("a/cert.pem"));
    assert_eq!(files.key, PathBuf::from("/k.pem"));
    assert!(c.tls.is_none());
    let p = problems(&format!(
        "[admin]\nlisten = \"off\"\ntls = {{ cert = \"\", key = \"k.pem\" }}\n{MINIMAL}"
    ));
    assert!(p.iter().any(|p| p.starts_with("admin.tls:")), "{p:?}");
    assert!(p.iter().any(|p| p.starts_with("admin.tls.cert:")), "{p:?}");
}

/// A TLS file given as a variable that is set but empty would name the config's folder: the
/// same problem as an empty path, with its location (an unset one is the variable's problem).
#[test]
fn a_tls_file_whose_variable_is_empty_is_refused() {
    let text = format!("[server]\ntls = {{ cert = \"${{CERT}}\", key = \"${{KEY}}\" }}\n{MINIMAL}");
    let p = match load(&text, &[("CERT", ""), ("KEY", " ")]) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected Invalid, got {other:?}"),
    };
    assert!(
        p.iter()
            .any(|p| p.starts_with("server.tls.cert:") && p.contains("must name a PEM file")),
        "{p:?}"
    );
    assert!(p.iter().any(|p| p.starts_with("server.tls.key:")), "{p:?}");
    let p = match load(&text, &[("KEY", "k.pem")]) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected Invalid, got {other:?}"),
    };
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("server.tls.cert:") && p[0].contains("CERT"),
        "{p:?}"
    );
    let c = load(&text, &[("CERT", "c.pem"), ("KEY", "/k.pem")]).expect("valid");
    let files = c.tls.expect("tls");
    assert_eq!(files.cert, c.dir.join("c.pem"));
    assert_eq!(files.key, PathBuf::from("/k.pem"));
}

/// A token for an admin listener that is off would be ignored: refused, as `tls` is.
#[test]
fn an_admin_token_needs_the_listener() {
    let p = problems(&format!(
        "[admin]\nlisten = \"off\"\ntoken = \"0123456789abcdef0123456789abcdef\"\n{MINIMAL}"
    ));
    assert!(
        p.iter()
            .any(|p| p.starts_with("admin.token:") && p.contains("listener is off")),
        "{p:?}"
    );
}

/// A value whose `${VAR}` is not set is reported once, for the variable: the checks that would
/// run on it (empty, not a duration, not an address) would judge a stand-in and mislead.
#[test]
fn an_unset_variable_is_the_only_problem_of_its_key() {
    let p = problems(
        r#"
[server]
listen = "${NOPE_LISTEN}"
[[apps]]
name = "a"
path = "/a"
verification_token = "${NOPE_TOKEN}"
encrypt_key = "x${NOPE_KEY}"
[store]
retention = "${NOPE_RETENTION}"
[delivery]
timeout = "${NOPE_TIMEOUT}"
"#,
    );
    assert_eq!(
        p,
        [
            "server.listen: environment variable NOPE_LISTEN is not set",
            "apps[0].verification_token: environment variable NOPE_TOKEN is not set",
            "apps[0].encrypt_key: environment variable NOPE_KEY is not set",
            "store.retention: environment variable NOPE_RETENTION is not set",
            "delivery.timeout: environment variable NOPE_TIMEOUT is not set",
        ]
    );
    // Set but empty is still a problem of its own.
    let Err(ConfigError::Invalid { problems, .. }) = load(
        &MINIMAL.replace("path =", "verification_token = \"${EMPTY}\"\npath ="),
        &[("EMPTY", "")],
    ) else {
        panic!("an empty token is refused")
    };
    assert_eq!(
        problems,
        ["apps[0].verification_token: is empty (remove the key to disable it)"]
    );
}

/// A Unix-socket host takes any `sslmode` alone (it is ignored there, as libpq does), but not
/// `require` in a list with TCP hosts: the driver takes one `sslmode` for every host and a
/// socket never offers TLS, so that host could never be used. Refused at `store.url`.
#[test]
fn sslmode_require_beside_a_unix_socket_is_refused() {
    let store = |url: &str| format!("{MINIMAL}[store]\nurl = \"{url}\"\n");
    let p = problems(&store(
        "postgres://gw:pw@%2Frun%2Fpostgresql,db:5432/gw?sslmode=require",
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("store.url: postgres://gw:***@")
            && p[0]
                .contains("sslmode=require cannot apply to the Unix-socket host /run/postgresql"),
        "{p:?}"
    );
    for url in [
        "postgres://gw@%2Frun%2Fpostgresql/gw",
        "postgres://gw@%2Frun%2Fpostgresql/gw?sslmode=require",
        "postgres://gw@/gw?host=/run/postgresql&sslmode=require",
        "postgres://gw@%2Frun%2Fpostgresql,db:5432/gw",
        "postgres://gw@%2Frun%2Fpostgresql,db:5432/gw?sslmode=disable",
        "postgres://gw@db1,db2/gw?sslmode=require",
    ] {
        let c = load(&store(url), &[]);
        assert!(c.is_ok(), "{url}: {c:?}");
    }
}

/// A `hostaddr` is reached over TCP whatever its host names (as with libpq): beside a socket
/// folder, or with no host, it has no name for TLS to check the certificate against, so
/// `sslmode=require` could never connect. Refused at `store.url`, in each spelling, with the
/// fix; `prefer` and `disable` are kept, and so is `require` with a host name beside the
/// address. Hosts and `hostaddr`s in different numbers are refused whatever the `sslmode`.
#[test]
fn sslmode_require_towards_a_hostaddr_without_a_host_name_is_refused() {
    let store = |url: &str| format!("{MINIMAL}[store]\nurl = \"{url}\"\n");
    for (url, at) in [
        (
            "postgres://gw:pw@/gw?host=/var/run/postgresql&hostaddr=127.0.0.1&sslmode=require",
            "hostaddr 127.0.0.1 (given for the Unix-socket folder /var/run/postgresql)",
        ),
        (
            "postgres://gw:pw@%2Fvar%2Frun%2Fpostgresql/gw?hostaddr=127.0.0.1&sslmode=require",
            "hostaddr 127.0.0.1 (given for the Unix-socket folder /var/run/postgresql)",
        ),
        (
            "postgresql://gw:pw@/gw?hostaddr=127.0.0.1&sslmode=require",
            "hostaddr 127.0.0.1 (given without a host name)",
        ),
    ] {
        let p = problems(&store(url));
        assert_eq!(p.len(), 1, "{url}: {p:?}");
        assert!(
            p[0].starts_with("store.url: postgres")
                && p[0].contains(":***@")
                && p[0].contains(&format!("sslmode=require cannot be met at {at}"))
                && p[0].contains("set host to the name on the server's certificate"),
            "{url}: {p:?}"
        );
        assert!(!p[0].contains(":pw@"), "{p:?}");
    }
    let p = problems(&store("postgres://gw@db1,db2/gw?hostaddr=10.0.0.1"));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("2 host(s) and 1 hostaddr(s)"), "{p:?}");
    for url in [
        "postgres://gw@/gw?host=/var/run/postgresql&hostaddr=127.0.0.1",
        "postgres://gw@/gw?host=/var/run/postgresql&hostaddr=127.0.0.1&sslmode=disable",
        "postgres://gw@/gw?hostaddr=127.0.0.1&sslmode=prefer",
        "postgres://gw@db.internal/gw?hostaddr=127.0.0.1&sslmode=require",
    ] {
        let c = load(&store(url), &[]);
        assert!(c.is_ok(), "{url}: {c:?}");
    }
}
