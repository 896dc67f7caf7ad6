use super::*;
use serde_json::json;

fn base() -> serde_json::Value {
    json!({"app_id": "cli_1", "app_secret": "s3cret", "ledger": "payout.db"})
}

#[test]
fn an_endpoint_needs_a_scheme_and_a_host() {
    for good in ["https://open.feishu.cn", "http://127.0.0.1:8080/pay"] {
        assert!(check_http_url("forward_url", good).is_ok(), "{good}");
    }
    for bad in [
        "http://",
        "https://",
        "https:///pay",
        "ftp://host",
        "open.feishu.cn",
        // The client cannot send to these: refused at start, not after a withdrawal.
        "https://pay.example.com:99999/x",
        "https://pay.example.com:port/x",
        "http://pay host.example/x",
    ] {
        let err = check_http_url("forward_url", bad)
            .expect_err(bad)
            .to_string();
        assert!(err.contains("forward_url"), "{err}");
    }
}

/// `base_url = "https://open.feishu.cn#x"` passed, then every call went to `/` (404) and
/// every payout was a dead letter; `?tenant=1` and `/open-apis` likewise.
#[test]
fn a_base_url_that_would_swallow_the_api_paths_is_refused() {
    let with = |base_url: &str| {
        let mut c = base();
        c["base_url"] = json!(base_url);
        Config::from_json(&c)
    };
    for bad in [
        "https://open.feishu.cn#x",
        "http://127.0.0.1:9?tenant=1",
        "https://open.feishu.cn/open-apis",
        "https://open.feishu.cn/open-apis/",
    ] {
        let err = with(bad).expect_err(bad).to_string();
        assert!(err.contains("`base_url`"), "{bad}: {err}");
    }
    for good in ["https://open.feishu.cn/", "https://proxy.internal/lark"] {
        assert!(with(good).is_ok(), "{good}");
    }
}

#[test]
fn the_forward_secret_is_never_shown() {
    let forward = ForwardConfig {
        url: "http://127.0.0.1:9/pay".into(),
        secret: Some("hmac-s3cret".into()),
    };
    let shown = format!("{forward:?}");
    assert!(
        shown.contains("http://127.0.0.1:9/pay") && shown.contains("<redacted>"),
        "{shown}"
    );
    assert!(!shown.contains("hmac-s3cret"), "{shown}");
}

#[test]
fn defaults() {
    let c = Config::from_json(&base()).expect("valid");
    assert_eq!(c.base_url, DEFAULT_BASE_URL);
    assert_eq!(c.withdraw, [BonusType::Points, BonusType::Cash]);
    assert_eq!(c.timeout, DEFAULT_TIMEOUT);
    assert!(c.forward.is_none());
    assert!(c.retry_codes.is_empty());
    assert!(c.covered_codes.is_empty(), "off unless listed");
    assert!(!format!("{c:?}").contains("s3cret"));
}

#[test]
fn full_config() {
    let mut v = base();
    let o = v.as_object_mut().expect("object");
    o.insert("base_url".into(), json!("http://127.0.0.1:9/"));
    o.insert("withdraw".into(), json!(["cash"]));
    o.insert("min_cash".into(), json!({"CNY": "10.00", "usd": 0.5}));
    o.insert(
        "forward_url".into(),
        json!("https://pay.example/withdrawals"),
    );
    o.insert("forward_secret".into(), json!("fsecret"));
    o.insert("timeout".into(), json!("250ms"));
    o.insert("retry_codes".into(), json!([1069, 1002001]));
    o.insert("covered_codes".into(), json!([1002100]));
    let c = Config::from_json(&v).expect("valid");
    assert_eq!(c.base_url, "http://127.0.0.1:9");
    assert_eq!(c.withdraw, [BonusType::Cash]);
    assert_eq!(c.min_cash["CNY"].to_string(), "10.00");
    assert_eq!(c.min_cash["USD"].to_string(), "0.50");
    assert_eq!(c.timeout, Duration::from_millis(250));
    assert_eq!(c.retry_codes, [1069, 1_002_001]);
    assert_eq!(c.covered_codes, [1_002_100]);
    assert!(!format!("{c:?}").contains("fsecret"));
}

#[test]
fn refuses_bad_configs() {
    for (key, value) in [
        ("colour", json!(1)),
        ("withdraw", json!([])),
        ("withdraw", json!(["gold"])),
        ("min_cash", json!({"CNY": "1.005"})),
        ("min_cash", json!({"CNY": -1})),
        ("min_cash", json!({"CNY": "1.00", "cny": "2.00"})),
        ("min_cash", json!({" CNY": "1.00"})),
        ("min_cash", json!({"": "1.00"})),
        ("timeout", json!("10")),
        ("timeout", json!("0s")),
        ("retry_codes", json!([0])),
        ("retry_codes", json!(["1069"])),
        ("covered_codes", json!([0])),
        ("covered_codes", json!("1002100")),
        ("base_url", json!("ftp://x")),
        ("forward_secret", json!("x")),
        ("app_secret", json!("")),
        ("ledger", json!("")),
        ("ledger", json!("mysql://db/x")),
        ("ledger", json!("postgres://u@db:port/x")),
    ] {
        let mut v = base();
        v.as_object_mut()
            .expect("object")
            .insert(key.into(), value.clone());
        assert!(Config::from_json(&v).is_err(), "{key} = {value}");
    }
    assert!(Config::from_json(&json!({"app_id": "a", "app_secret": "b"})).is_err());
    // A code both retried and taken as nothing to withdraw.
    let mut v = base();
    let o = v.as_object_mut().expect("object");
    o.insert("retry_codes".into(), json!([1069, 7]));
    o.insert("covered_codes".into(), json!([7]));
    match Config::from_json(&v) {
        Err(ConfigError::Invalid(m)) => assert!(m.contains("code 7"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// A minimum that could never apply is refused rather than ignored.
#[test]
fn refuses_minimums_for_what_is_not_withdrawn() {
    let with = |withdraw: serde_json::Value, key: &str, min: serde_json::Value| {
        let mut v = base();
        let o = v.as_object_mut().expect("object");
        o.insert("withdraw".into(), withdraw);
        o.insert(key.into(), min);
        Config::from_json(&v)
    };
    assert!(with(json!(["cash"]), "min_points", json!(10)).is_err());
    assert!(with(json!(["points"]), "min_cash", json!({"CNY": "1.00"})).is_err());
    assert!(with(json!(["points"]), "min_points", json!(10)).is_ok());
    assert!(with(json!(["points"]), "min_cash", json!({})).is_ok());
    // A zero minimum is no minimum: an existing config that writes one still starts.
    assert!(with(json!(["cash"]), "min_points", json!(0)).is_ok());
    assert!(with(json!(["points"]), "min_cash", json!({"CNY": "0"})).is_ok());
}

/// Serde quotes a number where a string belongs; a URL check quotes the URL: neither
/// reaches the message with a secret or a password in it.
#[test]
fn refusals_never_echo_secrets() {
    for (key, value) in [
        ("app_secret", json!(98_765_432_109_876_u64)),
        ("forward_secret", json!(55_544_433_322_211_u64)),
        ("forward_url", json!("ftp://u:FWDPASSWORD@pay.example/x")),
        ("base_url", json!("gopher://u:BASEPASSWORD@open.example")),
        ("base_url", json!("ftp://u:BASEPASSWORD@open.example/")),
        ("forward_url", json!("ftp://u:FWD\"PASSWORD@pay.example/x")),
        ("forward_url", json!("ftp://u:FWD#PASSWORD@pay.example/x")),
        ("ledger", json!("postgres://u:LEDGERPASSWORD@db:port/x")),
    ] {
        let mut v = base();
        let o = v.as_object_mut().expect("object");
        o.insert(key.into(), value.clone());
        if key == "forward_secret" {
            o.insert("forward_url".into(), json!("https://pay.example/x"));
        }
        let message = Config::from_json(&v).expect_err("refused").to_string();
        for secret in ["98765432109876", "55544433322211", "PASSWORD"] {
            assert!(!message.contains(secret), "{key}: {message}");
        }
    }
}

#[test]
fn ledger_is_a_path_or_a_postgres_url_whose_password_is_never_shown() {
    let c = Config::from_json(&base()).expect("valid");
    assert_eq!(c.ledger, LedgerLocation::File("payout.db".into()));
    let mut v = base();
    v.as_object_mut().expect("object").insert(
        "ledger".into(),
        json!("postgres://payout:pg-s3cret@db.internal:5432/gateway"),
    );
    let c = Config::from_json(&v).expect("valid");
    assert!(matches!(c.ledger, LedgerLocation::Postgres(_)));
    let shown = format!("{c:?}");
    assert!(!shown.contains("pg-s3cret"), "{shown}");
    assert!(
        shown.contains("postgres://payout:***@db.internal:5432/gateway"),
        "{shown}"
    );
}
