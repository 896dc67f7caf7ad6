//! The sweeper: the engine's link back to the store. It finds due deliveries that memory does
//! not know about — everything unfinished at start (after `kill -9` too), retries whose timer was
//! lost, queue overflow, replays made by the CLI — and queues them, page by page, only while the
//! plugins' queues have room. It never queues a delivery that is already queued or running.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Engine, HANDOFF_GRACE_MS, SWEEP_BATCH, SWEEP_INTERVAL};
use crate::store::sqlite::now_ms;

impl Engine {
    pub(super) async fn sweep(self: Arc<Self>) {
        loop {
            let sleep_for = self.sweep_round().await;
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep_for) => {}
            }
        }
    }

    /// One pass over the due deliveries, page by page, queueing what memory does not know while
    /// the plugins' queues have room; bodies are read only for what is queued. Returns how long
    /// to sleep before the next pass.
    async fn sweep_round(&self) -> Duration {
        let now = now_ms();
        let started = Instant::now();
        let mut sleep_for = SWEEP_INTERVAL;
        self.prune_forgotten();
        let mut cursor = (i64::MIN, i64::MIN);
        loop {
            let due = match self.store.due(now, cursor, SWEEP_BATCH).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::error!(error = %e, "sweeper could not read the store");
                    return sleep_for;
                }
            };
            if let Some(next) = due.next_due_ms {
                sleep_for = sleep_for.min(Duration::from_millis((next - now).max(1) as u64));
            }
            let full_page = due.deliveries.len() == SWEEP_BATCH;
            if let Some(last) = due.deliveries.last() {
                cursor = (last.next_at_ms, last.key);
            }
            let mut room: HashMap<String, usize> = self
                .queues
                .read()
                .map(|q| {
                    q.iter()
                        .map(|(n, q)| (n.clone(), q.tx.capacity()))
                        .collect()
                })
                .unwrap_or_default();
            let mut wanted = Vec::new();
            for d in due.deliveries {
                let fresh = d.attempts == 0 && d.next_at_ms > now - HANDOFF_GRACE_MS;
                if fresh && self.started_at_ms < d.next_at_ms {
                    sleep_for = sleep_for.min(Duration::from_millis(HANDOFF_GRACE_MS as u64));
                    continue;
                }
                if self.skip_in_sweep(d.key, started) {
                    continue;
                }
                if let Some(n) = room.get_mut(&d.plugin).filter(|n| **n > 0) {
                    *n -= 1;
                    wanted.push(d.key);
                }
            }
            if !wanted.is_empty() {
                match self.store.load_pending(wanted).await {
                    Ok(rows) => rows.into_iter().for_each(|d| self.submit(d)),
                    Err(e) => tracing::error!(error = %e, "sweeper could not read the store"),
                }
            }
            // Stop at the end of the due list, or when every queue is full (the next pass, after
            // the dispatchers made room, continues from the start).
            if !full_page || room.values().all(|n| *n == 0) {
                if full_page {
                    sleep_for = sleep_for.min(Duration::from_millis(100));
                }
                return sleep_for;
            }
            tokio::task::yield_now().await;
        }
    }
}
