//! The connection parameters Lark hands out with the endpoint and in pongs (`ClientConfig`,
//! all in seconds), and how updates apply.
//!
//! Rules (spec §11, gateway rules in brackets): only the keys present change [a pong may omit
//! keys]. The endpoint's answer ([`ClientConfig::apply`]): `PingInterval` and
//! `ReconnectInterval` ignore values ≤ 0 [a zero interval would spin]; `ReconnectNonce`
//! ignores negative values (0 = no random first wait); `ReconnectCount` takes any value (< 0 =
//! reconnect forever, 0 = never). A pong's update ([`ClientConfig::apply_pong`]) ignores every
//! value ≤ 0 [the spec's rule for pongs: so a pong can neither stop the reconnects nor make
//! them endless]. [Values above [`MAX_PING_INTERVAL`] and [`MAX_RECONNECT_WAIT`] are clamped
//! to them and reported in [`Applied::clamped`], so the caller can warn.]

use std::time::Duration;

use serde::Deserialize;

/// The longest `PingInterval` taken. The connection is declared dead after three intervals
/// without a pong, so this bounds how long a dead connection (a NAT or proxy that dropped it
/// silently, as they do after 5–15 idle minutes) goes unnoticed to about 40 minutes; Lark's
/// own default is 120 s. A larger value would rather be a mistake than a wish.
pub const MAX_PING_INTERVAL: Duration = Duration::from_secs(600);
/// The longest `ReconnectInterval` and `ReconnectNonce` taken: after an outage the app
/// receives nothing until the next attempt, so one pong must not be able to keep it away for
/// more than 5 minutes (Lark's defaults are 120 s and 30 s).
pub const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(300);

/// A value Lark sent that was above its cap, and what was used instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clamped {
    /// The `ClientConfig` key (`PingInterval`, `ReconnectInterval`, `ReconnectNonce`).
    pub key: &'static str,
    /// The value sent, in seconds.
    pub sent: i64,
    pub used: Duration,
}

/// What an update did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Whether any parameter changed.
    pub changed: bool,
    /// The values that were above their cap (applied as the cap).
    pub clamped: Vec<Clamped>,
}

/// The effective parameters of one app's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    /// Reconnect attempts after a loss; negative means without end.
    pub reconnect_count: i64,
    pub reconnect_interval: Duration,
    /// The first reconnect waits a random time in `[0, reconnect_nonce)`.
    pub reconnect_nonce: Duration,
    pub ping_interval: Duration,
}

impl Default for ClientConfig {
    /// The values Lark's SDKs start from before the first endpoint answer.
    fn default() -> Self {
        ClientConfig {
            reconnect_count: -1,
            reconnect_interval: Duration::from_secs(120),
            reconnect_nonce: Duration::from_secs(30),
            ping_interval: Duration::from_secs(120),
        }
    }
}

/// `ClientConfig` as sent: every key optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct ClientConfigUpdate {
    #[serde(rename = "ReconnectCount")]
    pub reconnect_count: Option<i64>,
    #[serde(rename = "ReconnectInterval")]
    pub reconnect_interval: Option<i64>,
    #[serde(rename = "ReconnectNonce")]
    pub reconnect_nonce: Option<i64>,
    #[serde(rename = "PingInterval")]
    pub ping_interval: Option<i64>,
}

impl ClientConfigUpdate {
    /// Parses a pong payload; `None` when it is empty or not a ClientConfig object.
    pub fn from_payload(payload: &[u8]) -> Option<ClientConfigUpdate> {
        if payload.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        serde_json::from_slice(payload).ok()
    }
}

/// `n` seconds (`n` >= 0), at most `cap`; a clamp is recorded in `clamped`.
fn seconds(key: &'static str, n: i64, cap: Duration, clamped: &mut Vec<Clamped>) -> Duration {
    let wanted = Duration::from_secs(n.max(0).unsigned_abs());
    if wanted > cap {
        clamped.push(Clamped {
            key,
            sent: n,
            used: cap,
        });
        return cap;
    }
    wanted
}

impl ClientConfig {
    /// Applies the keys present in `update`.
    pub fn apply(&mut self, update: &ClientConfigUpdate) -> Applied {
        let before = *self;
        let mut clamped = Vec::new();
        if let Some(n) = update.reconnect_count {
            self.reconnect_count = n;
        }
        if let Some(n) = update.reconnect_interval.filter(|n| *n > 0) {
            self.reconnect_interval =
                seconds("ReconnectInterval", n, MAX_RECONNECT_WAIT, &mut clamped);
        }
        if let Some(n) = update.reconnect_nonce.filter(|n| *n >= 0) {
            self.reconnect_nonce = seconds("ReconnectNonce", n, MAX_RECONNECT_WAIT, &mut clamped);
        }
        if let Some(n) = update.ping_interval.filter(|n| *n > 0) {
            self.ping_interval = seconds("PingInterval", n, MAX_PING_INTERVAL, &mut clamped);
        }
        Applied {
            changed: *self != before,
            clamped,
        }
    }

    /// Applies the keys of a pong's update that are above 0.
    pub fn apply_pong(&mut self, update: &ClientConfigUpdate) -> Applied {
        let positive = |n: Option<i64>| n.filter(|n| *n > 0);
        self.apply(&ClientConfigUpdate {
            reconnect_count: positive(update.reconnect_count),
            reconnect_interval: positive(update.reconnect_interval),
            reconnect_nonce: positive(update.reconnect_nonce),
            ping_interval: positive(update.ping_interval),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_present_and_sane_keys_apply() {
        let mut c = ClientConfig::default();
        let u = ClientConfigUpdate::from_payload(br#"{"PingInterval":5}"#).expect("parses");
        assert!(c.apply(&u).changed);
        assert_eq!(c.ping_interval, Duration::from_secs(5));
        assert_eq!(c.reconnect_interval, Duration::from_secs(120), "untouched");
        let u = ClientConfigUpdate::from_payload(
            br#"{"PingInterval":0,"ReconnectInterval":-3,"ReconnectNonce":0,"ReconnectCount":-1}"#,
        )
        .expect("parses");
        assert!(c.apply(&u).changed, "the nonce changed");
        assert_eq!(c.ping_interval, Duration::from_secs(5), "0 ignored");
        assert_eq!(c.reconnect_interval, Duration::from_secs(120), "-3 ignored");
        assert_eq!(c.reconnect_nonce, Duration::ZERO);
        let zero = ClientConfigUpdate::from_payload(br#"{"ReconnectInterval":0}"#).expect("parses");
        assert!(!c.apply(&zero).changed);
        assert_eq!(c.reconnect_interval, Duration::from_secs(120), "0 ignored");
        assert!(!c.apply(&u).changed, "nothing changes twice");
        let u = ClientConfigUpdate::from_payload(br#"{"PingInterval":99999999999,"Extra":1}"#)
            .expect("unknown keys are tolerated");
        let applied = c.apply(&u);
        assert_eq!(c.ping_interval, MAX_PING_INTERVAL);
        assert_eq!(
            applied.clamped,
            [Clamped {
                key: "PingInterval",
                sent: 99_999_999_999,
                used: MAX_PING_INTERVAL
            }]
        );
    }

    #[test]
    fn a_pong_ignores_every_value_up_to_zero() {
        let mut c = ClientConfig {
            reconnect_count: 5,
            ..ClientConfig::default()
        };
        let u = ClientConfigUpdate::from_payload(
            br#"{"ReconnectCount":0,"ReconnectNonce":0,"ReconnectInterval":0,"PingInterval":-1}"#,
        )
        .expect("parses");
        assert!(!c.apply_pong(&u).changed, "nothing applies");
        assert_eq!(c.reconnect_count, 5, "a pong cannot stop the reconnects");
        assert_eq!(c.reconnect_nonce, Duration::from_secs(30));
        let u = ClientConfigUpdate::from_payload(br#"{"ReconnectCount":-1}"#).expect("parses");
        assert!(!c.apply_pong(&u).changed, "nor make them endless");
        let u = ClientConfigUpdate::from_payload(br#"{"ReconnectCount":7,"ReconnectNonce":3}"#)
            .expect("parses");
        assert!(c.apply_pong(&u).changed);
        assert_eq!(c.reconnect_count, 7);
        assert_eq!(c.reconnect_nonce, Duration::from_secs(3));
        // The endpoint's answer keeps its own rules: a count of 0 means no reconnect.
        let u = ClientConfigUpdate::from_payload(br#"{"ReconnectCount":0}"#).expect("parses");
        assert!(c.apply(&u).changed);
        assert_eq!(c.reconnect_count, 0);
    }

    /// One pong could stretch the ping interval or the reconnect waits to a day.
    #[test]
    fn intervals_are_capped_at_what_a_deployment_can_live_with() {
        let mut c = ClientConfig::default();
        let u = ClientConfigUpdate::from_payload(
            br#"{"PingInterval":3600,"ReconnectInterval":86400,"ReconnectNonce":1000}"#,
        )
        .expect("parses");
        let applied = c.apply_pong(&u);
        let keys: Vec<&str> = applied.clamped.iter().map(|c| c.key).collect();
        assert_eq!(
            keys,
            ["ReconnectInterval", "ReconnectNonce", "PingInterval"]
        );
        assert_eq!(c.ping_interval, Duration::from_secs(600));
        assert_eq!(c.reconnect_interval, Duration::from_secs(300));
        assert_eq!(c.reconnect_nonce, Duration::from_secs(300));
        let mut c = ClientConfig::default();
        assert_eq!(c.apply(&u).clamped.len(), 3);
        assert_eq!(
            c.ping_interval,
            Duration::from_secs(600),
            "the endpoint's too"
        );
        // At the cap is not clamped.
        let u = ClientConfigUpdate::from_payload(br#"{"PingInterval":600}"#).expect("parses");
        assert!(c.apply(&u).clamped.is_empty());
    }

    #[test]
    fn empty_or_foreign_payloads_are_no_update() {
        assert_eq!(ClientConfigUpdate::from_payload(b""), None);
        assert_eq!(ClientConfigUpdate::from_payload(b"  "), None);
        assert_eq!(ClientConfigUpdate::from_payload(b"[1]"), None);
        assert_eq!(
            ClientConfigUpdate::from_payload(br#"{"PingInterval":"5"}"#),
            None
        );
    }
}
