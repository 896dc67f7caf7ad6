//! The sweeper: the engine's link back to the store. It finds due deliveries that memory does
//! not hold — everything unfinished at start (after `kill -9` too), overflow, lost timers,
//! replays made by the CLI (a new generation: it supersedes a waiting retry at once) — and
//! queues them, page by page, only while the plugins' queues have room. It never queues a
//! delivery that is already queued or being called ([`super::known`]).
//!
//! It also ends deliveries that would otherwise stay pending forever: those of a plugin
//! instance name no longer configured (a reload removed it, or it was gone at start) become dead
//! letters once the name has been missing for `[delivery] removed_plugin_grace`, with a reason
//! saying so; an operator can replay them once an instance of that name exists again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Engine, HANDOFF_GRACE_MS, SWEEP_BATCH, SWEEP_INTERVAL};
use crate::metrics;
use crate::store::sqlite::now_ms;

/// Plugin names with pending deliveries and no instance.
#[derive(Debug, Default)]
pub(super) struct Orphans {
    /// Look at the store on the next round (set at start, on reload, and on a delivery for an
    /// unknown name).
    check: bool,
    /// Since when each name has been seen missing.
    missing_since: HashMap<String, Instant>,
}

impl Engine {
    pub(super) async fn sweep(self: Arc<Self>) {
        loop {
            let mut sleep_for = self.sweep_round().await;
            if let Some(next) = self.sweep_orphans().await {
                sleep_for = sleep_for.min(next);
            }
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep_for) => {}
            }
        }
    }

    /// Asks the next round to look for deliveries of instances no longer configured.
    pub(super) fn check_orphans(&self) {
        if let Ok(mut o) = self.orphans.lock() {
            o.check = true;
        }
    }

    /// One pass over the due deliveries, page by page, queueing what memory does not hold while
    /// the plugins' queues have room; bodies are read only for what is queued. Returns how long
    /// to sleep before the next pass.
    async fn sweep_round(&self) -> Duration {
        let now = now_ms();
        let started = Instant::now();
        let mut sleep_for = SWEEP_INTERVAL;
        self.known.prune();
        if self.store.shared() {
            // Another replica died mid-call and its lease ran out: count the crash first (the
            // attempt cannot start again before).
            let d = self.config();
            match self.store.recover_crashed(d.max_attempts, d.max_crashes).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    deliveries = n,
                    "a gateway replica died during plugin calls (its lease expired): counted as failed attempts; taking them over"
                ),
                Err(e) => tracing::error!(error = %e, "sweeper could not read the store"),
            }
        }
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
                let fresh =
                    d.attempts == 0 && d.generation == 0 && d.next_at_ms > now - HANDOFF_GRACE_MS;
                if fresh && self.started_at_ms < d.next_at_ms {
                    sleep_for = sleep_for.min(Duration::from_millis(HANDOFF_GRACE_MS as u64));
                    continue;
                }
                let Some(n) = room.get_mut(&d.plugin).filter(|n| **n > 0) else {
                    continue;
                };
                if self.known.sweep(d.key, d.generation, started) {
                    *n -= 1;
                    wanted.push((d.key, d.generation));
                }
            }
            if !wanted.is_empty() {
                let keys = wanted.iter().map(|(k, _)| *k).collect();
                match self.store.load_pending(keys).await {
                    Ok(rows) => {
                        let loaded: HashSet<i64> = rows.iter().map(|r| r.key).collect();
                        for (key, generation) in &wanted {
                            if !loaded.contains(key) {
                                // Finished meanwhile: nothing to run.
                                self.known.drop_key(*key, *generation);
                            }
                        }
                        for row in rows {
                            let swept = wanted.iter().find(|(k, _)| *k == row.key).map(|w| w.1);
                            if swept != Some(row.generation) {
                                // Replayed between the listing and the load: the next round
                                // takes the new generation.
                                self.known
                                    .drop_key(row.key, swept.unwrap_or(row.generation));
                                continue;
                            }
                            if row.generation > 0 && row.attempts == 0 {
                                metrics::get()
                                    .replays
                                    .get_or_create(&metrics::plugin(&row.plugin))
                                    .inc();
                            }
                            self.enqueue(row);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "sweeper could not read the store");
                        for (key, generation) in wanted {
                            self.known.drop_key(key, generation);
                        }
                    }
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

    /// Dead-letters the pending deliveries of names missing for longer than the grace. Returns
    /// when to look again, if a name is still within its grace.
    async fn sweep_orphans(&self) -> Option<Duration> {
        let check = self.orphans.lock().map(|o| o.check).unwrap_or(false);
        if !check {
            return None;
        }
        let pending = match self.store.pending_plugins().await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "sweeper could not read the store");
                return Some(SWEEP_INTERVAL);
            }
        };
        let configured: HashSet<String> = self
            .queues
            .read()
            .map(|q| q.keys().cloned().collect())
            .unwrap_or_default();
        let grace = self.config().removed_plugin_grace;
        let now = Instant::now();
        let (expired, next) = {
            let Ok(mut o) = self.orphans.lock() else {
                return None;
            };
            o.missing_since
                .retain(|name, _| pending.contains(name) && !configured.contains(name));
            for name in pending.iter().filter(|n| !configured.contains(*n)) {
                o.missing_since.entry(name.clone()).or_insert(now);
            }
            let expired: Vec<String> = o
                .missing_since
                .iter()
                .filter(|(_, since)| now.duration_since(**since) >= grace)
                .map(|(n, _)| n.clone())
                .collect();
            let next = o
                .missing_since
                .values()
                .map(|since| grace.saturating_sub(now.duration_since(*since)))
                .filter(|left| !left.is_zero())
                .min();
            o.check = !o.missing_since.is_empty();
            (expired, next)
        };
        for name in expired {
            let error = format!(
                "plugin instance `{name}` is no longer configured (removed from the config for \
                 more than removed_plugin_grace {}s); replay once an instance of that name exists \
                 again",
                grace.as_secs()
            );
            match self.store.dead_letter_plugin(name.clone(), error).await {
                Ok(n) => {
                    tracing::warn!(plugin = %name, deliveries = n, "deliveries of a removed plugin instance dead-lettered");
                    if let Ok(mut o) = self.orphans.lock() {
                        o.missing_since.remove(&name);
                    }
                }
                Err(e) => {
                    tracing::error!(plugin = %name, error = %e, "could not dead-letter the deliveries of a removed plugin instance")
                }
            }
        }
        Some(next.unwrap_or(SWEEP_INTERVAL))
    }
}
