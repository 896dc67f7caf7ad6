//! The connection parameters Lark hands out with the endpoint and in pongs (`ClientConfig`,
//! all in seconds), and how updates apply.
//!
//! Rules (spec §11, gateway rules in brackets): only the keys present change [a pong may omit
//! keys]. The endpoint's answer ([`ClientConfig::apply`]): `PingInterval` and
//! `ReconnectInterval` ignore values ≤ 0 [a zero interval would spin]; `ReconnectNonce`
//! ignores negative values (0 = no random first wait); `ReconnectCount` takes any value (< 0 =
//! reconnect forever, 0 = never). A pong's update ([`ClientConfig::apply_pong`]) ignores every
//! value ≤ 0 [the spec's rule for pongs: so a pong can neither stop the reconnects nor make
//! them endless]. Intervals are capped at one day.

use std::time::Duration;

use serde::Deserialize;

const MAX_SECONDS: i64 = 86_400;

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

fn seconds(n: i64) -> Duration {
    Duration::from_secs(n.clamp(0, MAX_SECONDS) as u64)
}

impl ClientConfig {
    /// Applies the keys present in `update`; returns whether anything changed.
    pub fn apply(&mut self, update: &ClientConfigUpdate) -> bool {
        let before = *self;
        if let Some(n) = update.reconnect_count {
            self.reconnect_count = n;
        }
        if let Some(n) = update.reconnect_interval.filter(|n| *n > 0) {
            self.reconnect_interval = seconds(n);
        }
        if let Some(n) = update.reconnect_nonce.filter(|n| *n >= 0) {
            self.reconnect_nonce = seconds(n);
        }
        if let Some(n) = update.ping_interval.filter(|n| *n > 0) {
            self.ping_interval = seconds(n);
        }
        *self != before
    }

    /// Applies the keys of a pong's update that are above 0; returns whether anything changed.
    pub fn apply_pong(&mut self, update: &ClientConfigUpdate) -> bool {
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
        assert!(c.apply(&u));
        assert_eq!(c.ping_interval, Duration::from_secs(5));
        assert_eq!(c.reconnect_interval, Duration::from_secs(120), "untouched");
        let u = ClientConfigUpdate::from_payload(
            br#"{"PingInterval":0,"ReconnectInterval":-3,"ReconnectNonce":0,"ReconnectCount":-1}"#,
        )
        .expect("parses");
        assert!(c.apply(&u), "the nonce changed");
        assert_eq!(c.ping_interval, Duration::from_secs(5), "0 ignored");
        assert_eq!(c.reconnect_interval, Duration::from_secs(120), "-3 ignored");
        assert_eq!(c.reconnect_nonce, Duration::ZERO);
        assert!(!c.apply(&u), "nothing changes twice");
        let u = ClientConfigUpdate::from_payload(br#"{"PingInterval":99999999999,"Extra":1}"#)
            .expect("unknown keys are tolerated");
        c.apply(&u);
        assert_eq!(c.ping_interval, Duration::from_secs(86_400));
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
        assert!(!c.apply_pong(&u), "nothing applies");
        assert_eq!(c.reconnect_count, 5, "a pong cannot stop the reconnects");
        assert_eq!(c.reconnect_nonce, Duration::from_secs(30));
        let u = ClientConfigUpdate::from_payload(br#"{"ReconnectCount":-1}"#).expect("parses");
        assert!(!c.apply_pong(&u), "nor make them endless");
        let u = ClientConfigUpdate::from_payload(br#"{"ReconnectCount":7,"ReconnectNonce":3}"#)
            .expect("parses");
        assert!(c.apply_pong(&u));
        assert_eq!(c.reconnect_count, 7);
        assert_eq!(c.reconnect_nonce, Duration::from_secs(3));
        // The endpoint's answer keeps its own rules: a count of 0 means no reconnect.
        let u = ClientConfigUpdate::from_payload(br#"{"ReconnectCount":0}"#).expect("parses");
        assert!(c.apply(&u));
        assert_eq!(c.reconnect_count, 0);
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
