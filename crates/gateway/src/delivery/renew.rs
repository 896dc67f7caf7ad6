//! Keeping this process's claims on what it runs (a shared store only, see
//! [`crate::store::Store::lease`]).
//!
//! A claim is a lease set when an attempt starts. Left alone it would run out while a slow call
//! (within its timeout) and a slow outcome write add up to more than the lease, and another
//! replica would count the attempt as crashed and call the delivery again beside this one. So
//! every third of the lease the engine renews the claims of every delivery it holds as running
//! ([`super::known`]): from just before the attempt is marked started until its outcome is
//! recorded (a write the store refuses is retried, and renewed meanwhile), or the call is given
//! up at shutdown. A call hung past its timeout still runs (native code cannot be stopped) and
//! keeps its delivery running here, so its claim holds too: as with one gateway, the delivery
//! is not called again until that call returns.
//!
//! A renewal that fails (the database unreachable or too slow) is tried again at the next tick.
//! The claims lapse once no renewal succeeded for a whole lease: should the other replicas reach
//! the database meanwhile, one of them may then count the attempt as crashed and run the
//! delivery again while this process still runs it or retries its outcome (the outcome that is
//! recorded first stands; the plugin's `delivery_id` is the guard against the double call).

use std::sync::Arc;
use std::time::Duration;

use super::Engine;
use crate::store::StoreError;

/// Renewals per lease: a lease survives two failed renewals in a row.
const RENEWALS_PER_LEASE: u32 = 3;

/// How often the claims of a store whose claims hold for `lease` are renewed.
pub(super) fn every(lease: Duration) -> Duration {
    (lease / RENEWALS_PER_LEASE).max(Duration::from_millis(10))
}

impl Engine {
    /// Renews the claims of running deliveries every `every`, until the engine is shut down and
    /// its last call ended.
    pub(super) async fn renew_claims(self: Arc<Self>, every: Duration) {
        let stopped = async {
            self.cancel.cancelled().await;
            self.calls.wait().await;
        };
        tokio::pin!(stopped);
        let mut failing = false;
        // One renewal per period, each given at most the period: a renewal stuck on a dead
        // connection must not hold the next one back past the lease.
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = &mut stopped => return,
            }
            let keys = self.known.running();
            if keys.is_empty() {
                continue;
            }
            let n = keys.len();
            let renewal = tokio::time::timeout(every, self.store.renew_claims(keys))
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError("the renewal took longer than its period".into()))
                });
            match renewal {
                Ok(renewed) => {
                    if failing {
                        tracing::info!(running = n, renewed, "claims renewed again");
                        failing = false;
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, running = n, "could not renew the claims of running deliveries: retrying; if no renewal succeeds for a whole lease, another replica may run them again");
                        failing = true;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_renewed_three_times_a_lease() {
        assert_eq!(every(Duration::from_secs(60)), Duration::from_secs(20));
        assert_eq!(
            every(Duration::from_millis(1500)),
            Duration::from_millis(500)
        );
        assert_eq!(
            every(Duration::ZERO),
            Duration::from_millis(10),
            "never a busy loop"
        );
    }
}
