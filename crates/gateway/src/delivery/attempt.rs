//! One attempt of one delivery: call the plugin under the timeout, decide what the outcome
//! means (done, retry at a time, dead letter), record it, and only then let go of the delivery.
//!
//! Rules this file keeps:
//! - **Recorded before released**: the permit is held until the outcome is in the store. When
//!   the store refuses the write, the outcome stays here and is retried (with backoff) until it
//!   is taken; meanwhile the engine starts no new call ([`super::StoreHealth`]).
//! - **One call per delivery at a time**: a call that outlived its timeout is recorded as a
//!   retry or a dead letter at once, but the delivery stays "running" until the call really
//!   returns, on every path. Its late outcome then counts: a late `Ok` is the delivery (even over
//!   the dead letter the timeout made), a late `Reject` or `Panicked` turns a scheduled retry
//!   into a dead letter (a late panic also restarts the instance), a late `Retry` changes nothing
//!   (what each outcome means, in time or late: [`super::decide`]).
//! - **Replays win**: every record names the generation and attempt count it started from.
//! - Counters move only for writes that applied; reasons are capped ([`super::detail`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use gateway_plugin::host::CallOutcome;
use tracing::Instrument;

use super::decide::Decision;
use super::dispatch::Gate;
use super::queue::{CallPermit, PluginQueue};
use super::restart::restart;
use super::returned::{holding, outcomes_of, panicked, Returned};
use super::{Engine, Job};
use crate::metrics;
use crate::plugins::{Called, PluginSlot};
use crate::store::{sqlite::now_ms, Finish, FinishRecord, Guard, Trace, WriteId};

/// Whether `slot` is still the instance its queue calls: one a reload replaced or removed
/// since the call started is not restarted after a panic (no call would go to it; its
/// successor is already there).
fn is_current(queue: &PluginQueue, slot: &Arc<PluginSlot>) -> bool {
    !queue.cancel.is_cancelled() && queue.slot().is_some_and(|s| Arc::ptr_eq(&s, slot))
}

/// A running plugin call: its outcomes (one per delivery; a panic on the gateway's side of the
/// call as its message) and the permit it holds.
type Call = tokio::task::JoinHandle<(Result<Called, String>, CallPermit)>;

impl Engine {
    /// Runs one call of `slot` for `jobs` (a batch; often one) holding one `permit`.
    pub(super) async fn run(
        self: Arc<Self>,
        queue: Arc<PluginQueue>,
        slot: Arc<PluginSlot>,
        jobs: Vec<Job>,
        permit: CallPermit,
        gate: Gate,
    ) {
        let span = match jobs.as_slice() {
            [job] => tracing::info_span!("delivery", event_id = %job.event_id,
                plugin = %job.plugin, attempt = job.attempts + 1),
            _ => tracing::info_span!("batch", plugin = %slot.spec.name, deliveries = jobs.len()),
        };
        self.attempt(queue, slot, jobs, permit, gate)
            .instrument(span)
            .await
    }

    async fn attempt(
        self: &Arc<Self>,
        queue: Arc<PluginQueue>,
        slot: Arc<PluginSlot>,
        jobs: Vec<Job>,
        permit: CallPermit,
        gate: Gate,
    ) {
        let mut ready = Vec::with_capacity(jobs.len());
        let mut payloads = Vec::with_capacity(jobs.len());
        let mut unbuildable = Vec::new();
        for job in jobs {
            match build_payload(&job, job.attempts + 1) {
                Ok(p) => {
                    payloads.push(p);
                    ready.push(job);
                }
                Err(error) => unbuildable.push((job, error)),
            }
        }
        for (job, error) in unbuildable {
            let finish = Finish::Dead { error };
            let trace = Trace {
                outcome: "reject",
                started_at_ms: now_ms(),
                duration_ms: 0,
                discarded_run: None,
            };
            self.record(&job, from(&job), job.attempts + 1, finish, trace)
                .await;
            self.known.finish(job.key, job.generation);
        }
        if ready.is_empty() {
            return;
        }
        // Durably "started" before the call: should the process die during it, the next start
        // counts this attempt and the crash (poison deliveries end; see `recover_crashed`).
        let Some(marked) = self.mark_started(&ready, &queue.cancel).await else {
            return; // Shutting down, or removed: nothing was called.
        };
        // The instance current once the marks are in: while the store refused them (for as
        // long as it did), a reload may have replaced it. One removed while the write that
        // took the marks ran (a second at most) still takes this call, as a call started just
        // before a reload does.
        let slot = queue.slot().unwrap_or(slot);
        // Unmarked: replayed or finished meanwhile, or (shared store) another replica holds
        // it. Not called here; the sweeper finds it again if it is still due.
        let (ready, payloads): (Vec<Job>, Vec<Vec<u8>>) = ready
            .into_iter()
            .zip(payloads)
            .zip(marked)
            .filter_map(|((job, payload), marked)| {
                if !marked {
                    tracing::debug!(event_id = %job.event_id, plugin = %job.plugin, "not started: replayed, finished or claimed elsewhere");
                    self.known.drop_key(job.key, job.generation);
                }
                marked.then_some((job, payload))
            })
            .unzip();
        if ready.is_empty() {
            return;
        }
        let started = Instant::now();
        let started_at_ms = now_ms();
        let call_slot = slot.clone();
        let call_span = tracing::Span::current();
        let mut call: Call = tokio::task::spawn_blocking(move || {
            // The permit travels with the call and comes back with its outcomes.
            holding(permit, || {
                let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
                call_span.in_scope(|| call_slot.call_batch(&refs))
            })
        });
        let timeout = self.config().timeout;
        let n = ready.len();
        let (returned, permit, late) = match tokio::time::timeout(timeout, &mut call).await {
            Ok(Ok((called, permit))) => (outcomes_of(called, n), Some(permit), None),
            Ok(Err(e)) => (Returned::all(Some(panicked(&e)), n), None, None),
            // Timed out: the call keeps running and keeps its permit (an isolated instance's
            // process is killed, so its call returns at once).
            Err(_) => {
                tokio::task::spawn_blocking(slot.on_timeout_task()); // not awaited: see on_timeout_task
                (Returned::all(None, n), None, Some(call))
            }
        };
        let Returned {
            outcomes,
            discarded,
        } = returned;
        // A call hung past its timeout gives the gate up now (see `Gate`); one that returned
        // holds it until its outcomes are recorded.
        let gate = if late.is_some() {
            drop(gate);
            None
        } else {
            Some(gate)
        };
        let elapsed = started.elapsed();
        metrics::get()
            .plugin_latency
            .get_or_create(&metrics::plugin(&slot.spec.name))
            .observe(elapsed.as_secs_f64());
        let ms = elapsed.as_millis() as u64;
        let panicked_now = outcomes
            .iter()
            .any(|o| matches!(o, Some(CallOutcome::Panicked { .. })));
        let decisions: Vec<Decision> = ready
            .iter()
            .zip(outcomes)
            .map(|(job, outcome)| {
                job_span(job).in_scope(|| self.decide(job, job.attempts + 1, outcome, ms))
            })
            .collect();
        let records = ready
            .iter()
            .zip(&decisions)
            .zip(discarded)
            .map(|((job, d), discarded_run)| FinishRecord {
                key: job.key,
                // A success also replaces a dead letter of the same attempt: the orphan rule
                // (or another replica's) may have dead-lettered the delivery while this call
                // ran; the plugin did it, and leaving the dead letter invites a second run.
                guard: Guard {
                    dead_too: matches!(d.finish, Finish::Done),
                    ..from(job)
                },
                attempts: job.attempts + 1,
                finish: d.finish.clone(),
                trace: Trace {
                    outcome: d.label,
                    started_at_ms,
                    duration_ms: ms,
                    discarded_run,
                },
                write: WriteId::fresh(),
            })
            .collect();
        let labels: Vec<&str> = decisions.iter().map(|d| d.label).collect();
        // A call hung past its timeout is listed before its timeout is recorded (which may take
        // a while when the store refuses it): a reload meanwhile must find it to hand its
        // permit over.
        let hung = late.as_ref().map(|_| queue.register_hung(&slot));
        let applied = self.record_many(&ready, records, &labels).await;
        // Outcomes first, then the restart of a panicked instance, on its own task (see
        // `restart`); the permit is held until the instance is replaced.
        drop(gate);
        if panicked_now && is_current(&queue, &slot) {
            let slot = slot.clone();
            let (gate, limit) = (self.gate.clone(), self.config().timeout);
            tokio::spawn(async move {
                restart(&slot, gate, limit).await;
                drop(permit);
            });
        } else {
            drop(permit);
        }
        let mut retry_at: Vec<Option<tokio::time::Instant>> = decisions
            .iter()
            .zip(&applied)
            .map(|(d, applied)| d.retry_at.filter(|_| *applied))
            .collect();
        if let (Some(call), Some(hung)) = (late, hung) {
            // Awaited through a stop too: the stop's grace bounds how long it waits for this
            // task (`Engine::shutdown_then`), and a call that returns within it is recorded
            // (a late outcome), never cut off and counted as a crash at the next start.
            let returned = call.await;
            if let Ok(mut list) = queue.hung.lock() {
                list.retain(|h| !Arc::ptr_eq(h, &hung));
            }
            let (late, permit) = match returned {
                Ok((called, permit)) => (outcomes_of(called, n), Some(permit)),
                Err(e) => (Returned::all(Some(panicked(&e)), n), None),
            };
            let Returned {
                outcomes: late_outcomes,
                discarded,
            } = late;
            let late_panic = late_outcomes
                .iter()
                .any(|o| matches!(o, Some(CallOutcome::Panicked { .. })));
            let ran_ms = started.elapsed().as_millis() as u64;
            for (((((job, outcome), retry), decision), applied), discarded_run) in ready
                .iter()
                .zip(late_outcomes)
                .zip(&mut retry_at)
                .zip(&decisions)
                .zip(&applied)
                .zip(discarded)
            {
                let pending = retry.is_some();
                let trace = |outcome| Trace {
                    outcome,
                    started_at_ms,
                    duration_ms: ran_ms,
                    discarded_run: discarded_run.clone(),
                };
                let ended = self
                    .late(
                        job,
                        job.attempts + 1,
                        outcome,
                        (pending, *applied, &decision.finish),
                        trace,
                    )
                    .instrument(job_span(job))
                    .await;
                if ended {
                    *retry = None;
                }
            }
            if let Some(p) = permit {
                if hung.forgiven.load(Ordering::SeqCst) {
                    p.forget();
                }
            }
            if late_panic && is_current(&queue, &slot) {
                // After the late outcomes are recorded, on its own task (see above).
                let (slot, gate, limit) = (slot.clone(), self.gate.clone(), self.config().timeout);
                tokio::spawn(async move { restart(&slot, gate, limit).await });
            }
        }
        for (job, retry) in ready.into_iter().zip(retry_at) {
            match retry {
                Some(at) => {
                    let attempt = job.attempts + 1;
                    self.schedule(job, attempt, at)
                }
                None => self.known.finish(job.key, job.generation),
            }
        }
    }

    /// Waits on an in-memory timer, then queues the next attempt (unless a replay superseded it).
    fn schedule(self: &Arc<Self>, job: Job, attempt: u32, at: tokio::time::Instant) {
        let Some((timer, cancel)) = self.known.wait(job.key, job.generation) else {
            return;
        };
        let engine = self.clone();
        let mut next = job;
        next.attempts = attempt;
        let wait = async move {
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {
                    if engine.known.timer_fired(next.key, next.generation, timer) {
                        engine.enqueue(next);
                    }
                }
                _ = cancel.cancelled() => {}
                _ = engine.cancel.cancelled() => {}
            }
        };
        tokio::spawn(wait.instrument(tracing::Span::current()));
    }
}

/// The guard of a job's current state.
pub(super) fn from(job: &Job) -> Guard {
    Guard {
        generation: job.generation,
        attempts: job.attempts,
        dead_too: false,
        own_mark: false,
    }
}

/// The span a single delivery's lines are logged in; none when they already are in a
/// `delivery` span, which is then this job's ([`Engine::run`] opens one for a call of a single
/// delivery), so that a line carries it once, not `delivery{..}:delivery{..}`.
pub(super) fn job_span(job: &Job) -> tracing::Span {
    if tracing::Span::current()
        .metadata()
        .is_some_and(|m| m.name() == "delivery")
    {
        return tracing::Span::none();
    }
    tracing::info_span!("delivery", event_id = %job.event_id, plugin = %job.plugin,
        attempt = job.attempts + 1)
}

/// The delivery JSON of `job`'s attempt `attempt` ([`super::payload`], shared with
/// `gateway plugins call`).
fn build_payload(job: &Job, attempt: u32) -> Result<Vec<u8>, String> {
    super::payload::Payload {
        event_id: &job.event_id,
        plugin: &job.plugin,
        app: &job.app,
        event_type: &job.event_type,
        received_at_ms: job.received_at_ms,
        attempt,
        body: job.body.as_str(),
        parsed: job.body.is_parsed(),
    }
    .to_json()
}
