//! End-to-end tests of the notifier against the loopback bot stand-in: exact wire bodies, live
//! signatures (verified here with an independent HMAC), result classification, the client-side
//! rate limit under a concurrent burst, and that secrets never reach an `Outcome` reason.

#[path = "../../../tests/standins/bot.rs"]
mod bot;

use std::net::TcpListener;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bot::{BotStandin, Reply};
use gateway_plugin::{Delivery, Host, Outcome, Plugin};
use hmac::{Hmac, Mac};
use notifier::Notifier;
use serde_json::json;
use sha2::Sha256;

const SEED: &str = include_str!("../../../fixtures/assets_update_v1.json");
const HOOK_PATH: &str = "/open-apis/bot/v2/hook/HOOK-TOKEN-6f1e2d3c";
const HOOK_TOKEN: &str = "HOOK-TOKEN-6f1e2d3c";
const BOT_SECRET: &str = "bot-secret-Qw3rTy";

fn notifier(config: serde_json::Value) -> Notifier {
    Notifier::new(config, Host::for_tests(std::env::temp_dir(), "notify")).expect("config accepted")
}

fn seed_delivery(id: &str) -> Delivery {
    let text = format!(
        r#"{{"delivery_id":"{id}","attempt":1,"plugin":"notify","app":"hire",
        "event_id":"5e3702a84e847582be8db7fb73283c02",
        "event_type":"hire.referral_account.assets_update_v1","received_at":1700000000000,
        "event":{SEED}}}"#
    );
    serde_json::from_str(&text).expect("delivery")
}

fn other_delivery() -> Delivery {
    serde_json::from_value(json!({
        "delivery_id": "d-other", "attempt": 1, "plugin": "notify", "app": "hire",
        "event_id": "ev-9", "event_type": "im.message.receive_v1", "received_at": 1,
        "event": {"schema": "2.0", "header": {"event_id": "ev-9"}, "event": {}}
    }))
    .expect("delivery")
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

fn hmac_b64(key: &[u8], message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(message);
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Spec §10, written independently of the plugin's code.
fn bot_sign(timestamp: &str, secret: &str) -> String {
    hmac_b64(format!("{timestamp}\n{secret}").as_bytes(), b"")
}

fn bot_config(standin: &BotStandin) -> serde_json::Value {
    json!({"target": "lark_bot", "url": standin.url(HOOK_PATH), "secret": BOT_SECRET})
}

fn reason(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Ok => "",
        Outcome::Retry { reason, .. } | Outcome::Reject { reason } => reason,
    }
}

#[test]
fn spec_vector_v3() {
    assert_eq!(
        bot_sign("100", "demo"),
        "jquNHnVOwmDRfw+vqTIrY5dooJAgi5EcRtLsQE4wfXg="
    );
}

/// `{:?}` of the plugin names its instance, target and redacted URL, never the hook token.
#[test]
fn the_plugins_debug_output_shows_no_secret() {
    let n = notifier(json!({
        "target": "lark_bot",
        "url": "https://open.feishu.cn/open-apis/bot/v2/hook/HOOKTOKEN",
        "secret": "BOTSECRET"
    }));
    let shown = format!("{n:?}");
    assert!(
        shown.contains("\"notify\"") && shown.contains("https://open.feishu.cn/…/<redacted>"),
        "{shown}"
    );
    assert!(
        !shown.contains("HOOKTOKEN") && !shown.contains("BOTSECRET"),
        "{shown}"
    );
}

#[test]
fn seed_event_reaches_the_bot_exactly_and_signed() {
    let standin = BotStandin::start();
    let mut config = bot_config(&standin);
    config["utc_offset"] = json!("+08:00");
    let n = notifier(config);
    assert_eq!(n.handle(&seed_delivery("d-1")), Outcome::Ok);

    let got = standin.requests();
    assert_eq!(got.len(), 1);
    let req = &got[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, HOOK_PATH);
    assert_eq!(
        req.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    let ts = req.json()["timestamp"]
        .as_str()
        .expect("timestamp string")
        .to_owned();
    let ts_num: i64 = ts.parse().expect("unix seconds");
    assert!((now_secs() - ts_num).abs() <= 5, "timestamp {ts} is live");
    let expected = format!(
        concat!(
            r#"{{"msg_type":"text","content":{{"text":"#,
            r#""Referral account 7147998241542539527 balance updated: 100 points; cash CNY 100.00; "#,
            r#"changed at 2023-05-30 15:23:35 +08:00.\napp hire, event 5e3702a84e847582be8db7fb73283c02"}},"#,
            r#""timestamp":"{ts}","sign":"{sign}"}}"#
        ),
        ts = ts,
        sign = bot_sign(&ts, BOT_SECRET)
    );
    assert_eq!(req.body_text(), expected);
}

#[test]
fn custom_template_card_and_generic_events() {
    let standin = BotStandin::start();
    let n = notifier(json!({
        "target": "lark_bot", "url": standin.url(HOOK_PATH), "format": "card",
        "title": "Balance of {account_id}",
        "template": "**{points}** points, {cash} ({event_type}, {{literal}})",
    }));
    assert_eq!(n.handle(&seed_delivery("d-1")), Outcome::Ok);
    assert_eq!(n.handle(&other_delivery()), Outcome::Ok);
    let got = standin.requests();
    let card = got[0].json();
    assert_eq!(card["msg_type"], "interactive");
    assert!(card.get("sign").is_none(), "no secret, no sign");
    assert_eq!(
        card["card"]["header"]["title"]["content"],
        "Balance of 7147998241542539527"
    );
    // The template's own `**` is markup; in a value `_` (bold as `__x__`) is written as an entity,
    // which Lark shows as `_`.
    assert_eq!(
        card["card"]["elements"][0]["text"]["content"],
        "**100** points, CNY 100.00 (hire.referral&#95;account.assets&#95;update&#95;v1, {literal})"
    );
    // Asset placeholders are empty for other event types (a title left with nothing at all
    // would give way to the default: below).
    let other = got[1].json();
    assert_eq!(other["card"]["header"]["title"]["content"], "Balance of ");
    assert_eq!(
        other["card"]["elements"][0]["text"]["content"],
        "**** points,  (im.message.receive&#95;v1, {literal})"
    );

    let plain = notifier(json!({"target": "lark_bot", "url": standin.url(HOOK_PATH)}));
    assert_eq!(plain.handle(&other_delivery()), Outcome::Ok);
    let text = standin.requests()[2].json();
    assert_eq!(
        text,
        json!({"msg_type": "text", "content": {"text":
            "Event im.message.receive_v1 received on app hire (event ev-9)"}})
    );
}

/// A template (or card title) of asset placeholders only renders nothing for another event
/// type: the default for that type is sent instead of an empty message.
#[test]
fn a_template_that_renders_nothing_gives_way_to_the_default() {
    let standin = BotStandin::start();
    let text = notifier(json!({"target": "lark_bot", "url": standin.url(HOOK_PATH),
                               "template": "{account_id}{cash}"}));
    assert_eq!(text.handle(&other_delivery()), Outcome::Ok);
    let card = notifier(json!({"target": "lark_bot", "url": standin.url(HOOK_PATH),
                               "format": "card", "title": " {account_id} ",
                               "template": "{event_id}: {points}"}));
    assert_eq!(card.handle(&other_delivery()), Outcome::Ok);
    // An assets event still gets the template as written.
    assert_eq!(text.handle(&seed_delivery("d-1")), Outcome::Ok);
    let got = standin.requests();
    assert_eq!(
        got[0].json()["content"]["text"],
        "Event im.message.receive_v1 received on app hire (event ev-9)"
    );
    let card = got[1].json();
    assert_eq!(
        card["card"]["header"]["title"]["content"],
        "im.message.receive_v1"
    );
    assert_eq!(card["card"]["elements"][0]["text"]["content"], "ev&#45;9: ");
    assert_eq!(
        got[2].json()["content"]["text"],
        "7147998241542539527CNY 100.00"
    );
}

#[test]
fn http_target_posts_the_documented_object_with_standard_webhooks_signature() {
    let key = b"0123456789abcdef0123456789abcdef";
    for secret in [
        format!("whsec_{}", STANDARD.encode(key)),
        "raw-secret".into(),
    ] {
        let standin = BotStandin::start();
        standin.set_default(Reply::status(204).with_body(""));
        let n = notifier(json!({
            "target": "http", "url": standin.url("/hooks/payroll"), "secret": secret,
            "template": "{account_id}: {cash}",
        }));
        assert_eq!(n.handle(&seed_delivery("d-http")), Outcome::Ok);
        let req = &standin.requests()[0];
        assert_eq!(req.header("webhook-id"), Some("d-http"));
        let ts = req.header("webhook-timestamp").expect("timestamp");
        assert!((now_secs() - ts.parse::<i64>().expect("secs")).abs() <= 5);
        let key_bytes: &[u8] = match secret.strip_prefix("whsec_") {
            Some(_) => key,
            None => secret.as_bytes(),
        };
        let signed = [b"d-http.", ts.as_bytes(), b".", &req.body].concat();
        assert_eq!(
            req.header("webhook-signature"),
            Some(format!("v1,{}", hmac_b64(key_bytes, &signed)).as_str())
        );
        let body = req.json();
        assert_eq!(body["delivery_id"], "d-http");
        assert_eq!(body["attempt"], 1);
        assert_eq!(body["app"], "hire");
        assert_eq!(body["event_id"], "5e3702a84e847582be8db7fb73283c02");
        assert_eq!(body["event_type"], "hire.referral_account.assets_update_v1");
        assert_eq!(body["received_at"], 1_700_000_000_000u64);
        assert_eq!(body["text"], "7147998241542539527: CNY 100.00");
        let mut seed: serde_json::Value = serde_json::from_str(SEED).expect("seed");
        let token = seed["header"]["token"]
            .as_str()
            .expect("the seed has a token")
            .to_owned();
        seed["header"]["token"] = "<redacted>".into();
        assert_eq!(body["event"], seed);
        // The raw event is embedded as sent, but for its verification token.
        assert!(!req.body_text().contains(&token));
        let redacted = lark_core::redact::redact_token(SEED.trim()).expect("redacted");
        assert!(req.body_text().contains(&redacted));
    }
}

#[test]
fn too_many_requests_then_success() {
    let standin = BotStandin::start();
    standin.push(Reply::status(429).with_retry_after(7));
    let n = notifier(bot_config(&standin));
    match n.handle(&seed_delivery("d-1")) {
        Outcome::Retry { retry_after, .. } => {
            assert_eq!(retry_after, Some(Duration::from_secs(7)))
        }
        other => panic!("expected Retry, got {other:?}"),
    }
    assert_eq!(n.handle(&seed_delivery("d-1")), Outcome::Ok);
    assert_eq!(standin.requests().len(), 2);
}

#[test]
fn classification_table() {
    // (reply, expected kind, needle in the reason)
    let cases = [
        (
            Reply::bot_error(19021, "sign match fail"),
            "reject",
            "19021",
        ),
        (
            Reply::bot_error(19024, "Key Words Not Found"),
            "reject",
            "19024",
        ),
        (
            Reply::bot_error(11232, "frequency limited"),
            "retry",
            "11232",
        ),
        // The custom bot's own limit, over HTTP 400 or 200 (with the older keys beside it).
        (
            Reply::json(
                400,
                &json!({"code": 9499, "msg": "too many request", "data": {}}),
            ),
            "retry",
            "code 9499: too many request",
        ),
        (
            Reply::json(
                200,
                &json!({"StatusCode": 0, "StatusMessage": "", "code": 9499, "msg": "too many request"}),
            ),
            "retry",
            "9499",
        ),
        // The same code for a malformed body is a refusal.
        (
            Reply::json(
                400,
                &json!({"code": 9499, "msg": "Bad Request", "data": {}}),
            ),
            "reject",
            "9499",
        ),
        (Reply::status(500), "retry", "HTTP 500"),
        (Reply::status(503).with_retry_after(3), "retry", "HTTP 503"),
        (Reply::status(400).with_body("bad"), "reject", "HTTP 400"),
        (Reply::status(404), "reject", "HTTP 404"),
        (
            Reply::json(200, &json!({"StatusCode": 0, "StatusMessage": "success"})),
            "ok",
            "",
        ),
        (Reply::json(200, &json!({"hello": 1})), "reject", "HTTP 200"),
        (
            Reply::status(302).with_header("Location", "/elsewhere"),
            "reject",
            "302",
        ),
    ];
    let standin = BotStandin::start();
    let n = notifier(bot_config(&standin));
    for (reply, kind, needle) in cases {
        let shown = format!("{reply:?}");
        standin.push(reply);
        let outcome = n.handle(&seed_delivery("d-1"));
        let got = match &outcome {
            Outcome::Ok => "ok",
            Outcome::Retry { .. } => "retry",
            Outcome::Reject { .. } => "reject",
        };
        assert_eq!(got, kind, "{shown} → {outcome:?}");
        assert!(reason(&outcome).contains(needle), "{shown} → {outcome:?}");
    }
}

/// The bot's own limit answered in a batch: the first delivery is retried and the rest are not
/// sent into the limit (they were all sent, and all dead-lettered, when only 11232 counted).
#[test]
fn a_bot_limit_in_a_batch_retries_and_stops_sending() {
    let standin = BotStandin::start();
    standin.set_default(Reply::json(
        400,
        &json!({"code": 9499, "msg": "too many request", "data": {}}),
    ));
    let n = notifier(bot_config(&standin));
    let batch: Vec<Delivery> = (1..=5).map(|i| seed_delivery(&format!("d-{i}"))).collect();
    let outcomes = n.handle_batch(&batch);
    assert!(
        outcomes.iter().all(|o| matches!(o, Outcome::Retry { .. })),
        "{outcomes:?}"
    );
    assert_eq!(standin.requests().len(), 1, "{outcomes:?}");
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn connection_refused_is_retry() {
    let port = closed_port();
    let n = notifier(json!({
        "target": "lark_bot", "url": format!("http://127.0.0.1:{port}{HOOK_PATH}"),
        "secret": BOT_SECRET,
    }));
    let outcome = n.handle(&seed_delivery("d-1"));
    assert!(matches!(outcome, Outcome::Retry { .. }), "{outcome:?}");
}

#[test]
fn timeout_is_retry() {
    let standin = BotStandin::start();
    standin.push(Reply::ok().with_delay(Duration::from_secs(3)));
    let mut config = bot_config(&standin);
    config["timeout"] = json!("300ms");
    let n = notifier(config);
    let started = Instant::now();
    let outcome = n.handle(&seed_delivery("d-1"));
    assert!(matches!(outcome, Outcome::Retry { .. }), "{outcome:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "timed out early"
    );
}

#[test]
fn burst_is_paced_not_refused() {
    let standin = BotStandin::start();
    let mut config = bot_config(&standin);
    config["rate_per_second"] = json!(20);
    config["rate_per_minute"] = json!(1000);
    config["max_wait"] = json!("10s");
    let n = notifier(config);
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let n = &n;
                s.spawn(move || n.handle(&seed_delivery(&format!("d-{i}"))))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no panic"))
            .collect()
    });
    assert!(outcomes.iter().all(|o| *o == Outcome::Ok), "{outcomes:?}");
    let mut at: Vec<Instant> = standin.requests().iter().map(|r| r.at).collect();
    assert_eq!(at.len(), 50);
    at.sort();
    // 20 per second: three waves at 0 s, 1 s and 2 s (unpaced, all 50 would land within a few
    // ms). Generous slack for scheduling jitter on a loaded machine.
    let span = at[49] - at[0];
    assert!(span >= Duration::from_millis(1500), "span {span:?}");
    for i in 0..at.len() - 20 {
        let gap = at[i + 20] - at[i];
        assert!(gap >= Duration::from_millis(500), "21 sends within {gap:?}");
    }
}

#[test]
fn no_slot_within_max_wait_is_retry_with_retry_after() {
    let standin = BotStandin::start();
    let mut config = bot_config(&standin);
    config["rate_per_second"] = json!(1);
    config["max_wait"] = json!("0s");
    let n = notifier(config);
    assert_eq!(n.handle(&seed_delivery("d-1")), Outcome::Ok);
    match n.handle(&seed_delivery("d-2")) {
        Outcome::Retry {
            reason,
            retry_after: Some(wait),
        } => {
            assert!(reason.contains("rate limit"), "{reason}");
            assert!(
                wait > Duration::ZERO && wait <= Duration::from_secs(1),
                "{wait:?}"
            );
        }
        other => panic!("expected Retry with retry_after, got {other:?}"),
    }
    assert_eq!(standin.requests().len(), 1, "the refused call sent nothing");
}

#[test]
fn secrets_never_appear_in_reasons() {
    let echo = format!("token {HOOK_TOKEN} secret {BOT_SECRET} path {HOOK_PATH}");
    let standin = BotStandin::start();
    let mut config = bot_config(&standin);
    config["timeout"] = json!("300ms");
    let n = notifier(config);
    let replies = [
        Reply::bot_error(19021, &echo),
        Reply::bot_error(11232, &echo),
        Reply::status(400).with_body(echo.clone()),
        Reply::status(500).with_body(echo.clone()),
        Reply::json(200, &json!({"note": echo})),
        Reply::ok().with_delay(Duration::from_secs(2)),
    ];
    let mut reasons = Vec::new();
    for reply in replies {
        standin.push(reply);
        reasons.push(reason(&n.handle(&seed_delivery("d-1"))).to_owned());
    }
    let refused = notifier(json!({
        "target": "lark_bot", "url": format!("http://127.0.0.1:{}{HOOK_PATH}", closed_port()), "secret": BOT_SECRET,
    }));
    reasons.push(reason(&refused.handle(&seed_delivery("d-1"))).to_owned());
    let malformed: Delivery = serde_json::from_str(&format!(
        r#"{{"delivery_id":"x","attempt":1,"plugin":"p","app":"a","event_id":"e",
        "event_type":"hire.referral_account.assets_update_v1","received_at":0,
        "event":{{"event":{{"account_id":"{BOT_SECRET}","modify_time":"x"}}}}}}"#
    ))
    .expect("delivery");
    reasons.push(reason(&n.handle(&malformed)).to_owned());
    for r in &reasons {
        assert!(!r.is_empty(), "every case fails");
        assert!(!r.contains(HOOK_TOKEN), "{r}");
        assert!(!r.contains(BOT_SECRET), "{r}");
        assert!(
            r.contains("/…/<redacted>"),
            "the target is named redacted: {r}"
        );
    }
}

#[test]
fn config_errors_at_new() {
    let host = Host::for_tests(std::env::temp_dir(), "notify");
    let url = "https://open.feishu.cn/open-apis/bot/v2/hook/HOOK-TOKEN-6f1e2d3c";
    for (config, needle) in [
        (
            json!({"target": "lark_bot", "url": url, "template": "{user}"}),
            "unknown placeholder",
        ),
        (
            json!({"target": "lark_bot", "url": url, "retries": 3}),
            "unknown field",
        ),
        (json!({"target": "smtp", "url": url}), "unknown variant"),
        (
            json!({"target": "http", "url": url, "format": "card"}),
            "lark_bot",
        ),
        (
            json!({"target": "lark_bot", "url": url, "max_wait": "soon"}),
            "max_wait",
        ),
    ] {
        let err = Notifier::new(config.clone(), host.clone()).expect_err(&config.to_string());
        assert!(err.contains(needle), "{config}: {err}");
        assert!(!err.contains(HOOK_TOKEN), "{err}");
    }
}
