//! The dispatcher of one plugin instance name: takes deliveries off its queue, builds batches
//! (lingering for a full one under load), holds the engine-wide [`Gate`] and spawns the call.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::queue::PluginQueue;
use super::{Engine, Job};

/// Whether a delivery must be called alone: a retry (whatever failed its batch, a delivery
/// that hangs or kills the plugin's process, must not fail its mates again) or a delivery
/// during which the gateway died.
fn runs_alone(job: &Job) -> bool {
    job.attempts > 0 || job.crashes > 0
}

/// Adds deliveries to `batch` as they come, until it holds `max_batch`, `linger` has passed or
/// `cancel` fires; returns a delivery that came but must run alone (it is not added).
async fn linger(
    cancel: &CancellationToken,
    rx: &mut mpsc::Receiver<Job>,
    batch: &mut Vec<Job>,
    max_batch: usize,
    linger: Duration,
) -> Option<Job> {
    let deadline = tokio::time::Instant::now() + linger;
    while batch.len() < max_batch {
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => return None,
            next = tokio::time::timeout_at(deadline, rx.recv()) => next,
        };
        match next {
            Ok(Some(j)) if runs_alone(&j) => return Some(j),
            Ok(Some(j)) => batch.push(j),
            // The deadline passed, or the queue closed (the dispatcher sees that next).
            Ok(None) | Err(_) => return None,
        }
    }
    None
}

/// A call's hold on the engine-wide gate: shared by ordinary calls, exclusive for a call of a
/// delivery with a crash behind it. Held until the call returned and its outcomes are
/// recorded, or until its timeout: a call hung past it gives the gate up (it keeps its permit),
/// so a native call that never returns cannot keep an exclusive call, and every call queued
/// behind that one, waiting for ever (see ARCHITECTURE.md, poison deliveries). An in-process
/// instance's restart holds a share too ([`restart`](super::restart)).
#[derive(Debug)]
pub(super) enum Gate {
    // The guards are held for their `Drop` only.
    Shared {
        _held: tokio::sync::OwnedRwLockReadGuard<()>,
    },
    Alone {
        _held: tokio::sync::OwnedRwLockWriteGuard<()>,
    },
}

impl Engine {
    pub(super) async fn dispatch(
        self: Arc<Self>,
        queue: Arc<PluginQueue>,
        mut rx: mpsc::Receiver<Job>,
    ) {
        // A delivery taken off the queue that must not share the batch being built.
        let mut held: Option<Job> = None;
        loop {
            let job = match held.take() {
                Some(j) => j,
                None => tokio::select! {
                    biased;
                    _ = queue.cancel.cancelled() => break,
                    job = rx.recv() => match job { Some(j) => j, None => break },
                },
            };
            // No new call while an outcome waits for the store: at most `max_concurrency`
            // calls per plugin are ever made but not recorded.
            let probe = || self.store.probe();
            if !self.health.writable(probe, &queue.cancel).await {
                self.known.drop_key(job.key, job.generation);
                break;
            }
            let permit = tokio::select! {
                biased;
                _ = queue.cancel.cancelled() => {
                    self.known.drop_key(job.key, job.generation);
                    break
                },
                p = queue.permit() => match p {
                    Some(p) => p,
                    // Never closed while the dispatcher runs; released all the same.
                    None => {
                        self.known.drop_key(job.key, job.generation);
                        break;
                    }
                },
            };
            // One call takes every ready delivery, up to `max_batch` (filled while the permits
            // were busy: batches grow with the load). Only first attempts share a call.
            let config = self.config();
            let max_batch = if runs_alone(&job) {
                1
            } else {
                config.max_batch.max(1)
            };
            let mut batch = Vec::with_capacity(max_batch.min(1 + rx.len()));
            batch.push(job);
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(j) if runs_alone(&j) => {
                        held = Some(j);
                        break;
                    }
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            // Under load, fill before spreading: while another call of this plugin runs, wait
            // up to `linger` for a full batch (fewer, bigger calls: each costs the plugin's own
            // sync and two store writes). A plugin with no call running is called at once, and
            // so is a full batch (`linger` adds only while it is short of `max_batch`).
            if held.is_none() && !config.linger.is_zero() && queue.others_running() {
                held = linger(&queue.cancel, &mut rx, &mut batch, max_batch, config.linger).await;
            }
            // Superseded by a replay while it waited in the queue: drop it.
            batch.retain(|j| self.known.start(j.key, j.generation));
            if batch.is_empty() {
                continue;
            }
            // A delivery during which the process died before runs with no other call beside it
            // (of any plugin), so if it kills the process again, only it is counted.
            let alone = batch[0].crashes > 0;
            let gate = async {
                if alone {
                    Gate::Alone {
                        _held: self.gate.clone().write_owned().await,
                    }
                } else {
                    Gate::Shared {
                        _held: self.gate.clone().read_owned().await,
                    }
                }
            };
            // Removed by a reload, or stopping (also while it lingered, which ends at that):
            // no new call starts; what it holds stays pending in the store.
            let gate = tokio::select! {
                biased;
                _ = queue.cancel.cancelled() => {
                    for j in &batch {
                        self.known.drop_key(j.key, j.generation);
                    }
                    break
                },
                g = gate => g,
            };
            // Alone: no call runs beside it now, and no in-process instance's `shutdown` either
            // (native code that may kill the process), wherever its last user let it go (a
            // reload, a call that returned on a replaced instance): waited for, at most a
            // call's timeout.
            if alone {
                crate::plugins::shutdowns_idle(config.timeout).await;
            }
            // The instance current now, with the gate held (the wait can last a lone call's
            // timeout; a reload meanwhile may have replaced it), not when the jobs were queued.
            let Some(slot) = queue.slot() else {
                for j in &batch {
                    self.known.drop_key(j.key, j.generation);
                }
                continue;
            };
            let engine = self.clone();
            let queue = queue.clone();
            self.calls
                .spawn(engine.run(queue, slot, batch, permit, gate));
        }
        // Removed or shutting down: whatever is still queued stays pending in the store; let
        // the sweeper see it again should this instance come back.
        rx.close();
        if let Some(job) = held {
            self.known.drop_key(job.key, job.generation);
        }
        while let Ok(job) = rx.try_recv() {
            self.known.drop_key(job.key, job.generation);
        }
    }
}

#[cfg(test)]
#[path = "linger_tests.rs"]
mod linger_tests;
