//! End-to-end tests of the `notifier` plugin (issue 5): the real `gateway` binary loads the real
//! `libnotifier.so` and posts to the bot stand-in (`standins/bot.rs`) on loopback. Covered: the
//! stand-in receives the exact body, whose live signature verifies with an HMAC computed here
//! independently of the plugin (the secret reaches the plugin through `${VAR}` expansion); a 429
//! then a 200 is one delivery done in 2 attempts; bot code 19021 is a dead letter carrying the
//! code; a burst of 50 events is paced by the client-side rate limit (20/s) and every message
//! arrives exactly once. The webhook token and the secret never show in the gateway's output.
//! An account id full of markup (an @-everyone mention, a link, bold, a backslash, a line break)
//! reaches the bot neutralised: fullwidth brackets in a text message, HTML entities in a card body,
//! as written (on one line) in a card's plain-text header. A reload that changes the instance's
//! config keeps the bot's rate-limit window.

#[path = "../standins/bot.rs"]
mod bot;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bot::{BotStandin, Recorded, Reply};
use gateway_e2e::harness::{base_config, binaries, get, metric, wait_until, Lark, TestGateway};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const TOKEN: &str = "notify-e2e-token";
const ENCRYPT_KEY: &str = "notify-e2e-encrypt-key";
const HOOK_TOKEN: &str = "HOOK-e2e-7c1d9a0b";
const BOT_SECRET: &str = "bot-secret-e2e-Zx8q";
/// The config names this variable; only the gateway's environment holds the secret.
const SECRET_VAR: &str = "E2E_NOTIFIER_BOT_SECRET";
const TEMPLATE: &str =
    "{account_id}: {points} points, {cash}; changed {modify_time}; {app}/{event_id}";
const ASSETS_UPDATE: &str = "hire.referral_account.assets_update_v1";

fn hook_path() -> String {
    format!("/open-apis/bot/v2/hook/{HOOK_TOKEN}")
}

/// A gateway with one `notify` instance posting to `bot` at `rate_per_second` (0 = unlimited).
fn start(dir: &std::path::Path, bot: &BotStandin, rate_per_second: u32) -> TestGateway {
    start_with(dir, bot, rate_per_second, "")
}

/// [`start`], with `extra` lines added to the plugin's config table.
fn start_with(
    dir: &std::path::Path,
    bot: &BotStandin,
    rate_per_second: u32,
    extra: &str,
) -> TestGateway {
    let cfg = config(bot, rate_per_second, extra);
    TestGateway::spawn_with_env(dir, &cfg, &[(SECRET_VAR, BOT_SECRET)])
}

/// The config [`start_with`] starts.
fn config(bot: &BotStandin, rate_per_second: u32, extra: &str) -> String {
    format!(
        r#"{base}
[[apps]]
name = "hire"
path = "/hook"
verification_token = "{TOKEN}"
encrypt_key = "{ENCRYPT_KEY}"

[delivery]
max_attempts = 5
initial_backoff = "50ms"
max_backoff = "200ms"
# Above the plugin's timeout + max_wait (2 s + 5 s): a call waiting for a send slot is not cut.
timeout = "10s"

[[plugins]]
name = "notify"
library = "{library}"
max_concurrency = 50

[plugins.config]
target = "lark_bot"
url = "{url}"
secret = "${{{SECRET_VAR}}}"
utc_offset = "+08:00"
template = "{TEMPLATE}"
timeout = "2s"
rate_per_second = {rate_per_second}
rate_per_minute = 0
max_wait = "5s"
{extra}

[[routes]]
events = ["{ASSETS_UPDATE}"]
plugins = ["notify"]
"#,
        base = base_config(),
        library = binaries().notifier.display(),
        url = bot.url(&hook_path()),
    )
}

fn lark() -> Lark {
    Lark::encrypted(TOKEN, ENCRYPT_KEY)
}

/// Sends an assets_update event and checks the gateway acknowledged it.
fn send(gw: &TestGateway, event_id: &str, account: &str, points: u64, cash: &str, modify_ms: u64) {
    let lark = lark();
    let answer = lark.send(
        &gw.url("/hook"),
        &lark.assets_update(event_id, account, points, cash, modify_ms),
    );
    assert_eq!(answer.status, 200, "{event_id}: {}", answer.body);
}

/// The `notify` delivery of `event_id` as `gateway events show` reports it.
fn delivery(gw: &TestGateway, event_id: &str) -> serde_json::Value {
    let (code, out, err) = gw.cli(&["events", "show", event_id]);
    assert_eq!(code, 0, "events show {event_id}: {err}");
    let event: serde_json::Value = serde_json::from_str(&out).expect("events show prints JSON");
    event["deliveries"]
        .as_array()
        .and_then(|ds| ds.iter().find(|d| d["plugin"] == "notify"))
        .cloned()
        .unwrap_or_else(|| panic!("{event_id} has no notify delivery: {out}"))
}

fn dead_letters(gw: &TestGateway) -> Vec<serde_json::Value> {
    let (code, out, err) = gw.cli(&["dead-letters", "--json"]);
    assert_eq!(code, 0, "dead-letters: {err}");
    out.lines()
        .map(|l| serde_json::from_str(l).expect("one JSON dead letter per line"))
        .collect()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Spec §10, written here independently of the plugin:
/// `base64(HMAC-SHA256(key = timestamp + "\n" + secret, message = ""))`.
fn bot_sign(timestamp: &str, secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(format!("{timestamp}\n{secret}").as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(b"");
    STANDARD.encode(mac.finalize().into_bytes())
}

/// The rendered message text of a recorded bot request.
fn text_of(r: &Recorded) -> String {
    r.json()["content"]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("not a text message: {}", r.body_text()))
        .to_owned()
}

/// Neither the hook token nor the secret may appear in anything the gateway printed.
fn assert_no_secrets(gw: &TestGateway) {
    let log = gw.log();
    assert!(
        !log.contains(HOOK_TOKEN),
        "the hook token leaked into the log"
    );
    assert!(
        !log.contains(BOT_SECRET),
        "the bot secret leaked into the log"
    );
}

#[test]
fn bot_receives_the_exact_body_with_a_live_signature() {
    let bot = BotStandin::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start(dir.path(), &bot, 5);
    let config = std::fs::read_to_string(dir.path().join("gateway.toml")).expect("config");
    assert!(
        !config.contains(BOT_SECRET) && config.contains(&format!("${{{SECRET_VAR}}}")),
        "the secret must come from the environment, not the file"
    );

    let before = now_secs();
    send(
        &gw,
        "nt-exact-1",
        "7147998241542539527",
        1500,
        r#"[{"currency_type":"CNY","amount":100.25},{"currency_type":"USD","amount":0.1}]"#,
        1_685_431_415_036,
    );
    let got = bot.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "the bot got no message");
    assert!(wait_until(Duration::from_secs(10), || {
        delivery(&gw, "nt-exact-1")["state"] == "done"
    }));
    let after = now_secs();
    let r = &got[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, hook_path());
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );

    // The timestamp is the send time (unix seconds, as a string)...
    let body = r.json();
    let ts = body["timestamp"]
        .as_str()
        .expect("a signed message has a string timestamp")
        .to_owned();
    let ts_secs: u64 = ts.parse().expect("timestamp is unix seconds");
    assert!(
        (before..=after).contains(&ts_secs),
        "timestamp {ts_secs} not within [{before}, {after}]"
    );
    // ...the signature verifies with the secret the gateway took from the environment...
    assert_eq!(body["sign"], bot_sign(&ts, BOT_SECRET).as_str());
    // ...and the whole body is exactly what spec §10 prescribes, amounts exact, time in +08:00.
    let text = "7147998241542539527: 1500 points, CNY 100.25, USD 0.10; \
                changed 2023-05-30 15:23:35 +08:00; hire/nt-exact-1";
    let expected = format!(
        r#"{{"msg_type":"text","content":{{"text":{}}},"timestamp":"{ts}","sign":"{}"}}"#,
        serde_json::Value::from(text),
        bot_sign(&ts, BOT_SECRET)
    );
    assert_eq!(r.body_text(), expected);
    assert_eq!(delivery(&gw, "nt-exact-1")["attempts"], 1);
    assert_no_secrets(&gw);
}

#[test]
fn http_429_then_200_is_delivered_in_two_attempts() {
    let bot = BotStandin::start();
    bot.push(Reply::status(429));
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start(dir.path(), &bot, 5);
    send(&gw, "nt-429", "acc-429", 7, "[]", 1_700_000_000_000);

    assert!(
        wait_until(Duration::from_secs(10), || delivery(&gw, "nt-429")["state"]
            == "done"),
        "not delivered: {}\n{}",
        delivery(&gw, "nt-429"),
        gw.log()
    );
    let d = delivery(&gw, "nt-429");
    assert_eq!(d["attempts"], 2, "{d}");
    let got = bot.requests();
    assert_eq!(got.len(), 2, "one refused and one accepted request");
    // The same message both times, each freshly signed.
    assert_eq!(text_of(&got[0]), text_of(&got[1]));
    for r in &got {
        let body = r.json();
        let ts = body["timestamp"].as_str().expect("timestamp");
        assert_eq!(body["sign"], bot_sign(ts, BOT_SECRET).as_str());
    }
    assert!(dead_letters(&gw).is_empty());
}

#[test]
fn bot_code_19021_is_a_dead_letter_with_the_code() {
    let bot = BotStandin::start();
    bot.push(Reply::bot_error(
        19021,
        "sign match fail or timestamp is not within one hour from current time",
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start(dir.path(), &bot, 5);
    send(&gw, "nt-19021", "acc-19021", 1, "[]", 1_700_000_000_000);

    assert!(
        wait_until(Duration::from_secs(10), || dead_letters(&gw).len() == 1),
        "no dead letter:\n{}",
        gw.log()
    );
    let dead = dead_letters(&gw);
    let d = &dead[0];
    assert_eq!(d["event_id"], "nt-19021");
    assert_eq!(d["plugin"], "notify");
    assert_eq!(d["state"], "dead");
    assert_eq!(d["attempts"], 1, "a bot error code is not retried");
    let error = d["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("19021"), "{error}");
    assert!(error.contains("sign match fail"), "{error}");
    assert!(!error.contains(HOOK_TOKEN), "{error}");
    assert_eq!(bot.requests().len(), 1);
    assert_eq!(delivery(&gw, "nt-19021")["state"], "dead");
    assert_no_secrets(&gw);
}

#[test]
fn burst_of_50_is_paced_by_the_rate_limit_and_all_arrive() {
    const N: usize = 50;
    const RATE: usize = 20;
    let bot = BotStandin::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start(dir.path(), &bot, RATE as u32);

    let ids: Vec<String> = (0..N).map(|i| format!("nt-burst-{i:02}")).collect();
    std::thread::scope(|s| {
        for chunk in ids.chunks(10) {
            let gw = &gw;
            s.spawn(move || {
                for (i, id) in chunk.iter().enumerate() {
                    send(gw, id, "acc-burst", i as u64, "[]", 1_700_000_000_000);
                }
            });
        }
    });

    let got = bot.wait_for(N, Duration::from_secs(20));
    assert_eq!(got.len(), N, "not every message arrived:\n{}", gw.log());
    let metrics = || get(&gw.admin_url("/metrics")).expect("metrics").body;
    assert!(wait_until(Duration::from_secs(5), || metric(
        &metrics(),
        r#"gateway_deliveries_total{plugin="notify",outcome="ok"}"#
    ) == N as f64));

    // Every event exactly once.
    let delivered: Vec<String> = got
        .iter()
        .map(|r| {
            let text = text_of(r);
            text.rsplit_once("hire/")
                .map(|(_, id)| id.to_owned())
                .unwrap_or_else(|| panic!("unexpected text {text:?}"))
        })
        .collect();
    let unique: BTreeSet<&String> = delivered.iter().collect();
    assert_eq!(unique.len(), N, "duplicates among {delivered:?}");
    assert_eq!(unique, ids.iter().collect::<BTreeSet<_>>());
    // Slots were found within max_wait: nothing was sent back to the gateway for a retry.
    assert_eq!(
        metric(
            &metrics(),
            r#"gateway_retries_scheduled_total{plugin="notify"}"#
        ),
        0.0
    );

    // Paced: no more than RATE arrivals in any one-second window. Measured at the stand-in, so
    // allow 200 ms for scheduling and loopback jitter; unpaced, all 50 arrive within a few ms.
    let mut at: Vec<_> = got.iter().map(|r| r.at).collect();
    at.sort();
    for i in RATE..N {
        let gap = at[i] - at[i - RATE];
        assert!(
            gap >= Duration::from_millis(800),
            "requests {} and {i} arrived only {gap:?} apart",
            i - RATE
        );
    }
    // 50 sends at 20/s need three windows: the last ten go at least 2 s after the first.
    let span = at[N - 1] - at[0];
    assert!(span >= Duration::from_millis(1800), "span {span:?}");
    assert!(span < Duration::from_secs(10), "span {span:?}");
    assert_no_secrets(&gw);
}

/// An account id a stand-in for a hostile or careless upstream could send: the plugin's parsing
/// takes any non-empty string as the account id.
const MARKUP_ACCOUNT: &str =
    "<at user_id=\"all\">所有人</at> [claim](https://evil.example/pay) **b** \\\nx";

/// The one message the bot received for `event_id`, once its delivery is done.
fn the_message(gw: &TestGateway, bot: &BotStandin, event_id: &str) -> Recorded {
    let got = bot.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "the bot got no message:\n{}", gw.log());
    assert!(wait_until(Duration::from_secs(10), || {
        delivery(gw, event_id)["state"] == "done"
    }));
    got.into_iter().next().expect("one message")
}

#[test]
fn a_mention_or_link_in_the_account_id_reaches_a_text_message_neutralised() {
    let bot = BotStandin::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start(dir.path(), &bot, 5);
    send(
        &gw,
        "nt-markup-text",
        MARKUP_ACCOUNT,
        5,
        "[]",
        1_685_431_415_036,
    );
    let r = the_message(&gw, &bot, "nt-markup-text");

    let body = r.json();
    let ts = body["timestamp"].as_str().expect("timestamp").to_owned();
    // `<` `>` `[` `]` in the value are fullwidth (no tag, no link), its line break a space; the
    // template's own text is as written.
    let text =
        "＜at user_id=\"all\"＞所有人＜/at＞ ［claim］(https://evil.example/pay) **b** \\ x: \
                5 points, none; changed 2023-05-30 15:23:35 +08:00; hire/nt-markup-text";
    let expected = format!(
        r#"{{"msg_type":"text","content":{{"text":{}}},"timestamp":"{ts}","sign":"{}"}}"#,
        serde_json::Value::from(text),
        bot_sign(&ts, BOT_SECRET)
    );
    assert_eq!(r.body_text(), expected);
    assert!(!r.body_text().contains("<at"), "{}", r.body_text());
}

#[test]
fn a_mention_or_link_in_the_account_id_reaches_a_card_as_literal_text() {
    let bot = BotStandin::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start_with(
        dir.path(),
        &bot,
        5,
        "format = \"card\"\ntitle = \"Balance: {account_id}\"",
    );
    send(
        &gw,
        "nt-markup-card",
        MARKUP_ACCOUNT,
        5,
        "[]",
        1_685_431_415_036,
    );
    let r = the_message(&gw, &bot, "nt-markup-card");

    let body = r.json();
    let ts = body["timestamp"].as_str().expect("timestamp").to_owned();
    // The body is Lark Markdown: every syntax character of a value is an HTML entity (the event
    // id's `-` too); the header is plain text, which interprets nothing: the value as sent, on
    // one line.
    let content = "&#60;at user&#95;id=&#34;all&#34;&#62;所有人&#60;&#47;at&#62; \
                   &#91;claim&#93;&#40;https&#58;&#47;&#47;evil.example&#47;pay&#41; \
                   &#42;&#42;b&#42;&#42; &#92; x: 5 points, none; \
                   changed 2023-05-30 15:23:35 +08:00; hire/nt&#45;markup&#45;card";
    let title =
        "Balance: <at user_id=\"all\">所有人</at> [claim](https://evil.example/pay) **b** \\ x";
    assert_eq!(
        body,
        serde_json::json!({
            "msg_type": "interactive",
            "card": {
                "config": {"wide_screen_mode": true},
                "header": {"title": {"tag": "plain_text", "content": title}, "template": "blue"},
                "elements": [{"tag": "div", "text": {"tag": "lark_md", "content": content}}],
            },
            "timestamp": ts,
            "sign": bot_sign(&ts, BOT_SECRET),
        })
    );
}

/// Regression: a reload that changed the instance's config (here its template) created the new
/// instance with an empty rate-limit window, so the bot got the old window's sends and a new
/// window's on top (6 messages within seconds under 3 a minute). The window is the target's.
#[test]
fn a_reload_keeps_the_bots_rate_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bot = BotStandin::start();
    let limited = |template: &str| {
        config(&bot, 0, "")
            .replacen("rate_per_minute = 0", "rate_per_minute = 3", 1)
            .replacen("max_wait = \"5s\"", "max_wait = \"0s\"", 1)
            .replacen(TEMPLATE, template, 1)
    };
    let cfg = limited("v1 {account_id}");
    assert!(cfg.contains("rate_per_minute = 3") && cfg.contains("v1 {account_id}"));
    std::fs::write(dir.path().join("gateway.toml"), &cfg).expect("write");
    let gw = TestGateway::spawn_with_env(dir.path(), &cfg, &[(SECRET_VAR, BOT_SECRET)]);
    for i in 0..3 {
        send(
            &gw,
            &format!("w-{i}"),
            "ou_w",
            1,
            "[]",
            1_700_000_001_000 + i,
        );
    }
    let first = bot.wait_for(3, Duration::from_secs(10));
    assert_eq!(first.len(), 3, "{}", gw.log());
    std::fs::write(dir.path().join("gateway.toml"), limited("v2 {account_id}")).expect("write");
    gw.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .log()
            .contains("config reloaded")),
        "{}",
        gw.log()
    );
    send(&gw, "w-3", "ou_w", 1, "[]", 1_700_000_002_000);
    // The new instance finds the minute's three sends: no slot, a retry, nothing sent.
    assert!(
        wait_until(Duration::from_secs(10), || delivery(&gw, "w-3")["attempts"]
            .as_u64()
            >= Some(1)),
        "{}",
        delivery(&gw, "w-3")
    );
    let d = delivery(&gw, "w-3");
    assert_eq!(d["state"], "pending", "{d}");
    assert!(
        d["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no send slot")),
        "{d}"
    );
    assert_eq!(bot.requests().len(), 3, "the bot got more than 3 a minute");
}
