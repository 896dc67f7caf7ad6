use super::*;
use std::time::Duration;

/// `retention = "1m"` passed without a word, and a re-send after the purge was delivered
/// twice (the audit reproduced it).
#[test]
fn a_retention_shorter_than_larks_resends_is_warned_about() {
    let w = short_retention(Duration::from_secs(60)).expect("warned");
    assert!(
        w.starts_with("store.retention (60s)") && w.contains("delivered again"),
        "{w}"
    );
    assert!(short_retention(Duration::from_secs(8 * 3600)).is_none());
    assert!(short_retention(Duration::from_secs(7 * 86_400)).is_none());
}

#[test]
fn a_limit_per_client_behind_a_proxy_is_warned_about() {
    let proxy = ["10.0.0.5".parse().expect("ip")];
    let w = per_client_behind_proxy(Some(8), &proxy).expect("warned");
    assert!(w.starts_with("server.max_connections_per_client:"), "{w}");
    assert!(per_client_behind_proxy(None, &proxy).is_none());
    assert!(per_client_behind_proxy(Some(8), &[]).is_none());
}

#[test]
fn a_webhook_app_without_token_or_key_is_warned_about() {
    use crate::config::validated::Transport;
    use crate::config::{App, WebhookApp};
    let app = |token: Option<&str>, key: Option<&str>| App {
        name: "open".into(),
        verification_token: token.map(str::to_owned),
        app_id: None,
        transport: Transport::Webhook(WebhookApp {
            path: "/hook".into(),
            encrypt_key: key.map(str::to_owned),
            cipher: None,
            max_clock_skew: None,
        }),
    };
    let w = unauthenticated(&app(None, None)).expect("warned");
    assert!(w.contains("app open") && w.contains("/hook"), "{w}");
    assert!(unauthenticated(&app(Some("t"), None)).is_none());
    assert!(unauthenticated(&app(None, Some("k"))).is_none());
}
