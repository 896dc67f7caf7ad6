//! `[delivery]`: the retry policy and call limits every plugin instance shares.

use std::time::Duration;

use super::Validator;
use crate::config::raw::RawDelivery;

/// The longest `[delivery] linger` accepted: a longer wait would only delay deliveries.
const MAX_LINGER: Duration = Duration::from_secs(1);

/// Retry policy and call limits shared by all plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryConfig {
    pub max_attempts: u32,
    /// When set, a delivery whose next attempt would come later than this after the event was
    /// received becomes a dead letter instead.
    pub max_age: Option<Duration>,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub timeout: Duration,
    /// Pending deliveries of an instance name no longer configured become dead letters once the
    /// name has been missing this long.
    pub removed_plugin_grace: Duration,
    /// The most ready deliveries one plugin call takes (plugins with a batch entry handle them
    /// together; others one by one within the call).
    pub max_batch: usize,
    /// While another call of the same plugin runs, a new call waits up to this long for
    /// `max_batch` ready deliveries (bigger batches under load); a plugin with no call running
    /// is called at once.
    pub linger: Duration,
    /// A delivery during whose calls the gateway died this many times is dead-lettered (a
    /// poison delivery must not crash every restart).
    pub max_crashes: u32,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            max_attempts: 12,
            max_age: None,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(600),
            timeout: Duration::from_secs(30),
            removed_plugin_grace: Duration::from_secs(60),
            max_batch: 64,
            linger: Duration::from_millis(2),
            max_crashes: 3,
        }
    }
}

/// The most attempts or crashes a delivery may be given (the stores count them in 32-bit
/// signed columns).
const MAX_COUNT: u32 = 100_000;

impl Validator<'_> {
    /// `[delivery]`, each key checked against its bounds; a key out of them is a problem and
    /// its default is used meanwhile.
    pub(super) fn delivery(&mut self, raw: &RawDelivery) -> DeliveryConfig {
        let d = DeliveryConfig::default();
        DeliveryConfig {
            max_attempts: match raw.max_attempts {
                Some(0) => {
                    self.problem("delivery.max_attempts", "must be at least 1");
                    d.max_attempts
                }
                Some(n) if n > MAX_COUNT => {
                    self.problem(
                        "delivery.max_attempts",
                        format!("must be at most {MAX_COUNT}"),
                    );
                    d.max_attempts
                }
                Some(n) => n,
                None => d.max_attempts,
            },
            max_age: raw
                .max_age
                .as_deref()
                .map(|t| self.duration("delivery.max_age", Some(t), Duration::ZERO)),
            initial_backoff: self.duration(
                "delivery.initial_backoff",
                raw.initial_backoff.as_deref(),
                d.initial_backoff,
            ),
            max_backoff: self.duration(
                "delivery.max_backoff",
                raw.max_backoff.as_deref(),
                d.max_backoff,
            ),
            timeout: self.duration_at_least(
                "delivery.timeout",
                raw.timeout.as_deref(),
                d.timeout,
                Duration::from_millis(1),
                "must be greater than 0 (every plugin call would time out)",
            ),
            removed_plugin_grace: self.duration(
                "delivery.removed_plugin_grace",
                raw.removed_plugin_grace.as_deref(),
                d.removed_plugin_grace,
            ),
            max_batch: match raw.max_batch {
                Some(0) => {
                    self.problem("delivery.max_batch", "must be at least 1");
                    d.max_batch
                }
                Some(n) if n > 10_000 => {
                    self.problem("delivery.max_batch", "must be at most 10000");
                    d.max_batch
                }
                Some(n) => n as usize,
                None => d.max_batch,
            },
            linger: {
                let linger = self.duration("delivery.linger", raw.linger.as_deref(), d.linger);
                if linger > MAX_LINGER {
                    self.problem("delivery.linger", "must be at most 1s");
                    d.linger
                } else {
                    linger
                }
            },
            max_crashes: match raw.max_crashes {
                Some(0) => {
                    self.problem("delivery.max_crashes", "must be at least 1");
                    d.max_crashes
                }
                Some(n) if n > MAX_COUNT => {
                    self.problem(
                        "delivery.max_crashes",
                        format!("must be at most {MAX_COUNT}"),
                    );
                    d.max_crashes
                }
                Some(n) => n,
                None => d.max_crashes,
            },
        }
    }
}
