//! Writing an attempt's marks and outcomes to the store, and retrying when the store refuses:
//! the outcome stays in memory (with its permit, held by the caller) and is written again with
//! backoff until the store takes it; meanwhile [`super::StoreHealth`] stops new calls. Counters
//! and the health book move only for writes that applied.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::attempt::{from, job_span};
use super::{Engine, Job};
use crate::metrics;
use crate::store::{Finish, FinishRecord, Guard, Trace, WriteId, LATE_RETRY};

/// Retrying a refused write starts here and doubles up to [`RECORD_RETRY_MAX`].
const RECORD_RETRY_MIN: Duration = Duration::from_millis(200);
const RECORD_RETRY_MAX: Duration = Duration::from_secs(5);

impl Engine {
    /// Marks the attempts of `jobs` as started, retrying until the store takes it (like
    /// outcomes: no call starts while the store refuses writes). One flag per job: call only
    /// the marked ones. `None` on shutdown, or when `removed` fires first (a reload removed
    /// the instance while the store refused the marks): nothing is called then.
    pub(super) async fn mark_started(
        &self,
        jobs: &[Job],
        removed: &CancellationToken,
    ) -> Option<Vec<bool>> {
        // A stop that began since the hand-off: no call starts (the delivery stays pending for
        // the next start; an isolated plugin's child is already being let go).
        if self.cancel.is_cancelled() {
            for j in jobs {
                self.known.drop_key(j.key, j.generation);
            }
            return None;
        }
        let marks: Vec<(i64, Guard)> = jobs.iter().map(|j| (j.key, from(j))).collect();
        let mut wait = RECORD_RETRY_MIN;
        let mut failed = false;
        loop {
            match self.store.start_attempts(marks.clone()).await {
                Ok(marked) => {
                    self.health.set(true);
                    return Some(marked);
                }
                Err(e) => {
                    self.health.set(false);
                    if !failed {
                        tracing::error!(error = %e, "could not mark deliveries as started: waiting for the store before calling the plugin");
                        failed = true;
                    }
                    let stop = async {
                        tokio::select! {
                            _ = self.cancel.cancelled() => {}
                            _ = removed.cancelled() => {}
                        }
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop => {
                            for j in jobs {
                                self.known.drop_key(j.key, j.generation);
                            }
                            return None;
                        }
                    }
                    wait = (wait * 2).min(RECORD_RETRY_MAX);
                }
            }
        }
    }

    /// Records one outcome (see [`Engine::record_many`]); its metrics label is the trace's
    /// outcome without `late `.
    pub(super) async fn record(
        &self,
        job: &Job,
        guard: Guard,
        attempt: u32,
        finish: Finish,
        trace: Trace,
    ) -> bool {
        let label = trace.outcome.trim_start_matches("late ");
        let record = FinishRecord {
            key: job.key,
            guard,
            attempts: attempt,
            finish,
            trace,
            write: WriteId::fresh(),
        };
        let applied = self
            .record_many(std::slice::from_ref(job), vec![record], &[label])
            .await;
        applied.first().copied().unwrap_or(false)
    }

    /// Records the outcomes of `jobs` in one durable write, retrying until the store takes it.
    /// Returns, per job, whether it applied (false when the delivery was replayed or finished
    /// meanwhile: the replay stands). A stop does not end the retries: the process ends them
    /// when `shutdown_grace` is over.
    pub(super) async fn record_many(
        &self,
        jobs: &[Job],
        records: Vec<FinishRecord>,
        labels: &[&str],
    ) -> Vec<bool> {
        let mut wait = RECORD_RETRY_MIN;
        let mut failures = 0u32;
        loop {
            match self.store.finish_many(records.clone()).await {
                Ok(applied) => {
                    self.health.set(true);
                    if failures > 0 {
                        tracing::info!(failures, "delivery outcomes recorded after store failures");
                    }
                    for (((job, record), label), applied) in
                        jobs.iter().zip(&records).zip(labels).zip(&applied)
                    {
                        // A late retry records again what the timeout recorded (and counted).
                        if *applied && record.trace.outcome != LATE_RETRY {
                            count(job, &record.finish, label);
                            self.book.record(&job.plugin, &record.finish);
                        } else if !*applied {
                            job_span(job).in_scope(|| {
                                tracing::info!("outcome not recorded: the delivery was replayed, finished or dead-lettered meanwhile")
                            });
                        }
                    }
                    return applied;
                }
                Err(e) => {
                    self.health.set(false);
                    if failures == 0 {
                        tracing::error!(error = %e, deliveries = jobs.len(), "could not record delivery outcomes: keeping them in memory, pausing new calls until the store takes writes");
                    }
                    failures += 1;
                    // Also while the gateway stops: the shutdown's grace bounds this (the
                    // engine waits that long for its calls, then the process ends), and an
                    // outcome given up here would be a crashed attempt at the next start.
                    let wait_now = if self.cancel.is_cancelled() {
                        wait.min(RECORD_RETRY_MIN * 2)
                    } else {
                        wait
                    };
                    tokio::time::sleep(wait_now).await;
                    wait = (wait * 2).min(RECORD_RETRY_MAX);
                }
            }
        }
    }
}

/// Counts an outcome that the store took.
fn count(job: &Job, finish: &Finish, label: &str) {
    let m = metrics::get();
    m.deliveries
        .get_or_create(&metrics::OutcomeLabels {
            plugin: job.plugin.clone(),
            outcome: label.to_owned(),
        })
        .inc();
    match finish {
        Finish::Dead { .. } => {
            m.dead_letters
                .get_or_create(&metrics::plugin(&job.plugin))
                .inc();
        }
        Finish::Retry { .. } => {
            m.retries.get_or_create(&metrics::plugin(&job.plugin)).inc();
        }
        Finish::Done => {}
    }
}
