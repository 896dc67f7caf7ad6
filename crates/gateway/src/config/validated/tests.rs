//! Config validation: defaults, expansion, relative paths, and every problem reported with its
//! location.

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

const MINIMAL: &str = r#"
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
app_id = "cli"
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

/// `[libraries] dir` (relative to the config's folder) and bare `library` names in it:
/// `lib<name>.so` before `<name>.so`; a name that is in neither is a problem listing both.
#[test]
fn library_names_resolve_in_the_libraries_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = dir.path().join("plugins.d");
    std::fs::create_dir(&folder).expect("mkdir");
    for file in ["liba.so", "a.so", "b.so"] {
        std::fs::write(folder.join(file), "").expect("write");
    }
    let path = dir.path().join("gateway.toml");
    let write = |plugins: &str| {
        std::fs::write(
            &path,
            format!("{MINIMAL}\n[libraries]\ndir = \"plugins.d\"\n{plugins}"),
        )
        .expect("write");
    };
    write(
        "[[plugins]]\nname = \"one\"\nlibrary = \"a\"\n\
         [[plugins]]\nname = \"two\"\nlibrary = \"b\"\n\
         [[plugins]]\nname = \"three\"\nlibrary = \"plugins.d/b.so\"\n",
    );
    let c = Config::load_with_env(&path, &|_| Err(std::env::VarError::NotPresent)).expect("valid");
    assert_eq!(c.library_dir.as_deref(), Some(folder.as_path()));
    let libs: Vec<&Path> = c.plugins.iter().map(|p| p.library.as_path()).collect();
    assert_eq!(
        libs,
        [
            folder.join("liba.so"),
            folder.join("b.so"),
            folder.join("b.so")
        ]
    );
    write("[[plugins]]\nname = \"one\"\nlibrary = \"c\"\n");
    let Err(ConfigError::Invalid { problems, .. }) =
        Config::load_with_env(&path, &|_| Err(std::env::VarError::NotPresent))
    else {
        panic!("a name in neither file is refused")
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("plugins[0].library: no plugin library \"c\" in [libraries] dir")
            && problems[0].contains(&format!(
                "tried {} and {}",
                folder.join("libc.so").display(),
                folder.join("c.so").display()
            )),
        "{problems:?}"
    );
}

/// Why the key is `[libraries] dir` and not the `[plugins] dir` first proposed: TOML cannot
/// hold a `[plugins]` table beside `[[plugins]]` entries.
#[test]
fn a_plugins_table_cannot_sit_beside_plugins_entries() {
    let text = format!(
        "{MINIMAL}\n[plugins]\ndir = \"plugins.d\"\n[[plugins]]\nname = \"a\"\nlibrary = \"a\"\n"
    );
    assert!(matches!(load(&text, &[]), Err(ConfigError::Syntax { .. })));
}

#[test]
fn sha256_pins_are_checked_and_kept_lowercase() {
    let pin = "AB".repeat(32);
    let c = load(
        &format!(
            "{MINIMAL}\n[[plugins]]\nname = \"a\"\nlibrary = \"/x/liba.so\"\nsha256 = \"{pin}\"\n"
        ),
        &[],
    )
    .expect("valid");
    assert_eq!(
        c.plugins[0].sha256.as_deref(),
        Some("ab".repeat(32).as_str())
    );
    let p = problems(&format!(
        "{MINIMAL}\n[[plugins]]\nname = \"a\"\nlibrary = \"/x/liba.so\"\nsha256 = \"abc\"\n"
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("plugins[0].sha256: must be the library's SHA-256"),
        "{p:?}"
    );
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

/// The stores count attempts and crashes in 32-bit signed columns: a larger limit wrapped
/// negative there and dead-lettered every crash at once.
#[test]
fn attempt_and_crash_limits_are_bounded() {
    for key in ["max_attempts", "max_crashes"] {
        let p = problems(&format!("{MINIMAL}[delivery]\n{key} = 4294967295\n"));
        assert_eq!(
            p,
            [format!("delivery.{key}: must be at most 100000")],
            "{key}"
        );
        load(&format!("{MINIMAL}[delivery]\n{key} = 100000\n"), &[]).expect("the most is valid");
    }
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
