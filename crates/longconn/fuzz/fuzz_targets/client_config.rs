//! Fuzz target `client_config`: a pong's payload ([`ClientConfigUpdate::from_payload`]) applied
//! as a pong ([`ClientConfig::apply_pong`]) and as an endpoint answer ([`ClientConfig::apply`]).
//!
//! Input: the first byte picks the config the update applies to (the defaults, or one with
//! reconnects off, few, or endless), the rest is the payload. Checked:
//!
//! - nothing panics;
//! - every interval stays within its cap and a ping interval is never zero;
//! - a pong can neither stop the reconnects nor make them endless: it leaves `ReconnectCount`
//!   as it was or sets a positive count;
//! - `changed` says whether the config changed, `clamped` lists exactly the values sent above
//!   their cap (applied as the cap), and applying the same update again changes nothing.

#![no_main]

use std::time::Duration;

use lark_longconn::client_config::{MAX_PING_INTERVAL, MAX_RECONNECT_WAIT};
use lark_longconn::{Applied, ClientConfig, ClientConfigUpdate};
use libfuzzer_sys::fuzz_target;

fn check(before: ClientConfig, after: ClientConfig, applied: &Applied) {
    assert_eq!(applied.changed, after != before);
    assert!(!after.ping_interval.is_zero() && after.ping_interval <= MAX_PING_INTERVAL);
    assert!(!after.reconnect_interval.is_zero());
    assert!(after.reconnect_interval <= MAX_RECONNECT_WAIT);
    assert!(after.reconnect_nonce <= MAX_RECONNECT_WAIT);
    for c in &applied.clamped {
        let cap = if c.key == "PingInterval" {
            MAX_PING_INTERVAL
        } else {
            MAX_RECONNECT_WAIT
        };
        assert_eq!(c.used, cap, "{c:?}");
        assert!(c.sent > 0 && c.sent.unsigned_abs() > cap.as_secs(), "{c:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, payload)) = data.split_first() else {
        return;
    };
    let Some(update) = ClientConfigUpdate::from_payload(payload) else {
        return;
    };
    let start = ClientConfig {
        reconnect_count: [-1, 0, 3, i64::MAX][usize::from(pick % 4)],
        ping_interval: Duration::from_secs(u64::from(pick / 4 % 8) * 60 + 1),
        ..ClientConfig::default()
    };

    let mut pong = start;
    let applied = pong.apply_pong(&update);
    check(start, pong, &applied);
    assert!(
        pong.reconnect_count == start.reconnect_count || pong.reconnect_count > 0,
        "a pong set ReconnectCount to {}",
        pong.reconnect_count
    );
    let expected_clamps = [
        (
            "ReconnectInterval",
            update.reconnect_interval,
            MAX_RECONNECT_WAIT,
        ),
        ("ReconnectNonce", update.reconnect_nonce, MAX_RECONNECT_WAIT),
        ("PingInterval", update.ping_interval, MAX_PING_INTERVAL),
    ]
    .iter()
    .filter(|(_, sent, cap)| sent.is_some_and(|n| n > 0 && n.unsigned_abs() > cap.as_secs()))
    .count();
    assert_eq!(applied.clamped.len(), expected_clamps);
    let again = pong;
    assert!(!pong.apply_pong(&update).changed, "a pong applied twice");
    assert_eq!(pong, again);

    let mut answer = start;
    let applied = answer.apply(&update);
    check(start, answer, &applied);
    if let Some(n) = update.reconnect_count {
        assert_eq!(answer.reconnect_count, n);
    }
    let again = answer;
    assert!(!answer.apply(&update).changed, "an answer applied twice");
    assert_eq!(answer, again);
});
