//! What a call's outcome means for the delivery: an in-time outcome (or a timeout) decided into
//! done, a retry at a time or a dead letter ([`Decision`]), and the outcome of a call that
//! returned after its timeout was recorded, applied over that record.

use gateway_plugin::host::CallOutcome;

use super::{backoff, detail, Engine, Job};
use crate::store::{sqlite::now_ms, Finish, Guard, Trace, LATE_RETRY, TIMED_OUT};

/// What an outcome means for the delivery.
pub(super) struct Decision {
    pub(super) finish: Finish,
    /// The metrics label (`ok`, `retry`, `reject`, `panicked`, `timeout`).
    pub(super) label: &'static str,
    /// For a retry: when the next attempt is due.
    pub(super) retry_at: Option<tokio::time::Instant>,
}

/// Whether an attempt due at `next_at_ms` would come later than `max_age` after the event was
/// received at `received_at_ms` (an attempt due exactly at `max_age` still runs).
fn past_max_age(next_at_ms: i64, received_at_ms: i64, max_age: std::time::Duration) -> bool {
    let max_age_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
    next_at_ms.saturating_sub(received_at_ms) > max_age_ms
}

impl Engine {
    /// What an in-time outcome (or a timeout, `None`) means.
    pub(super) fn decide(
        &self,
        job: &Job,
        attempt: u32,
        outcome: Option<CallOutcome>,
        ms: u64,
    ) -> Decision {
        let dead = |error: String, label| Decision {
            finish: Finish::Dead {
                error: detail::cap(error),
            },
            label,
            retry_at: None,
        };
        let (reason, retry_after, label) = match outcome {
            Some(CallOutcome::Ok) => {
                tracing::debug!(duration_ms = ms, "delivered");
                return Decision {
                    finish: Finish::Done,
                    label: "ok",
                    retry_at: None,
                };
            }
            Some(CallOutcome::Reject { reason }) => {
                let reason = detail::cap(reason);
                tracing::warn!(duration_ms = ms, %reason, "rejected by plugin: dead letter");
                return dead(reason, "reject");
            }
            Some(CallOutcome::Panicked { message }) => {
                let message = detail::cap(message);
                tracing::error!(duration_ms = ms, panic = %message, "plugin panicked: dead letter, restarting instance");
                return dead(format!("panicked: {message}"), "panicked");
            }
            Some(CallOutcome::Retry {
                reason,
                retry_after,
            }) => (detail::cap(reason), retry_after, "retry"),
            None => (
                format!("timed out after {}ms", self.config().timeout.as_millis()),
                None,
                TIMED_OUT,
            ),
        };
        let config = self.config();
        if attempt >= config.max_attempts {
            tracing::warn!(duration_ms = ms, %reason, "retries exhausted: dead letter");
            return dead(
                format!("{reason} (gave up after {attempt} attempts)"),
                label,
            );
        }
        let delay = backoff::delay(
            attempt,
            config.initial_backoff,
            config.max_backoff,
            retry_after,
            &mut rand::thread_rng(),
        );
        let next_at_ms =
            now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
        if let Some(max_age) = config.max_age {
            if past_max_age(next_at_ms, job.received_at_ms, max_age) {
                tracing::warn!(duration_ms = ms, %reason, "delivery older than max_age: dead letter");
                return dead(
                    format!(
                        "{reason} (gave up: the next attempt would exceed max_age {}ms)",
                        max_age.as_millis()
                    ),
                    label,
                );
            }
        }
        tracing::info!(duration_ms = ms, %reason, retry_in_ms = delay.as_millis() as u64, "will retry");
        Decision {
            finish: Finish::Retry {
                next_at_ms,
                error: reason,
            },
            label,
            retry_at: Some(tokio::time::Instant::now() + delay),
        }
    }

    /// Applies the outcome of a call that returned after its timeout was recorded (as a retry
    /// when `pending`, else as a dead letter; `applied`: whether that record took, which it
    /// does not when the delivery was already a dead letter, the orphan rule's). Returns whether
    /// it ended the delivery. `trace` makes its history row from the outcome's name.
    ///
    /// Whatever the outcome, something is recorded: the delivery has shown as running since the
    /// timeout (its mark, or on a shared store its claim, kept), and only a record ends that. A
    /// record that cannot apply to a dead letter still ends it (see `Store::finish_many`).
    pub(super) async fn late(
        &self,
        job: &Job,
        attempt: u32,
        outcome: Option<CallOutcome>,
        (pending, applied, recorded): (bool, bool, &Finish),
        trace: impl Fn(&'static str) -> Trace,
    ) -> bool {
        // The attempt count the stored row has now: this attempt's if the timeout's record
        // took, else the one the call started from. A success replaces a dead letter and
        // stands whoever started the attempt since; any other outcome applies only over this
        // process's own mark (see `Guard::own_mark`).
        let at = |dead_too| Guard {
            generation: job.generation,
            attempts: if applied { attempt } else { job.attempts },
            dead_too,
            own_mark: !dead_too,
        };
        match outcome {
            Some(CallOutcome::Ok) => {
                let applied = self
                    .record(job, at(true), attempt, Finish::Done, trace("late ok"))
                    .await;
                if applied {
                    tracing::info!("the timed-out call succeeded after all: delivered");
                }
                applied
            }
            // The retry recorded at the timeout stands (and so does its dead letter); recorded
            // again, it clears the attempt's "started" mark kept while the call ran.
            Some(CallOutcome::Retry { .. }) | None => {
                self.record(job, at(false), attempt, recorded.clone(), trace(LATE_RETRY))
                    .await;
                false
            }
            Some(CallOutcome::Reject { reason }) => {
                let reason = detail::cap(reason);
                let finish = Finish::Dead {
                    error: reason.clone(),
                };
                // It ends the delivery only over the retry its timeout recorded.
                let ended = self
                    .record(job, at(false), attempt, finish, trace("late reject"))
                    .await
                    && pending;
                if ended {
                    tracing::warn!(%reason, "the timed-out call was rejected after all: dead letter");
                }
                ended
            }
            Some(CallOutcome::Panicked { message }) => {
                let message = detail::cap(message);
                tracing::error!(panic = %message, "the timed-out call panicked: restarting instance");
                let finish = Finish::Dead {
                    error: detail::cap(format!("panicked: {message}")),
                };
                self.record(job, at(false), attempt, finish, trace("late panicked"))
                    .await
                    && pending
            }
        }
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
