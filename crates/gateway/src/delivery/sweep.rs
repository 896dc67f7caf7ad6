//! The sweeper: the engine's link back to the store. It finds due deliveries that memory does
//! not hold — everything unfinished at start (after `kill -9` too), overflow, lost timers,
//! replays made by the CLI (a new generation: it supersedes a waiting retry at once) — and
//! queues them, page by page, only while the plugins' queues have room. It never queues a
//! delivery that is already queued or being called ([`super::known`]).
//!
//! Each round also runs the orphan rule ([`super::orphans`]), and a page that holds a delivery
//! of a name with no instance asks it to look.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Engine, HANDOFF_GRACE_MS, SWEEP_BATCH, SWEEP_INTERVAL};
use crate::metrics;
use crate::store::sqlite::now_ms;
use crate::store::DueDelivery;

/// Whether the sweeper leaves `d` to the ingress hand-off for now: a first attempt, never
/// replayed, committed by this process (after `started_at_ms`) less than [`HANDOFF_GRACE_MS`]
/// ago. Anything else is the sweeper's at once: retries, replays, and what an earlier process
/// left; and so is a fresh delivery once the grace is over (its hand-off may have found the
/// queue full).
fn left_to_handoff(d: &DueDelivery, now_ms: i64, started_at_ms: i64) -> bool {
    d.attempts == 0
        && d.generation == 0
        && d.next_at_ms > now_ms - HANDOFF_GRACE_MS
        && started_at_ms < d.next_at_ms
}

/// How long until `next_due_ms`, at least a millisecond (a due time already past is looked at
/// again at once, not in a busy loop).
fn until_due(next_due_ms: i64, now_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(next_due_ms - now_ms).unwrap_or(0).max(1))
}

/// One page of due deliveries sorted out: what to queue now, and whether some were left to the
/// hand-off (the sweeper then looks again once their grace is over).
#[derive(Debug, Default)]
struct Picked {
    /// `(key, generation)` of each delivery claimed for a queue.
    wanted: Vec<(i64, u32)>,
    left_to_handoff: bool,
    /// A delivery of a plugin name with no queue (not configured) was on the page.
    unconfigured: bool,
}

/// Sorts out one page: each delivery not [`left_to_handoff`] and whose plugin's queue has
/// `room` left is offered to `claim` (the registry of what is queued or running, which refuses
/// what it already holds); only a claimed one takes a place in its queue's room. A plugin
/// without an entry in `room` (not configured) gets nothing, and is reported (its deliveries
/// are orphans: the orphan rule must look at them).
fn pick(
    page: &[DueDelivery],
    room: &mut HashMap<String, usize>,
    now_ms: i64,
    started_at_ms: i64,
    mut claim: impl FnMut(i64, u32) -> bool,
) -> Picked {
    let mut picked = Picked::default();
    for d in page {
        if left_to_handoff(d, now_ms, started_at_ms) {
            picked.left_to_handoff = true;
            continue;
        }
        let Some(n) = room.get_mut(&d.plugin) else {
            picked.unconfigured = true;
            continue;
        };
        if *n == 0 {
            continue;
        }
        if claim(d.key, d.generation) {
            *n -= 1;
            picked.wanted.push((d.key, d.generation));
        }
    }
    picked
}

/// Whether a round ends after this page: at the end of the due list (a page shorter than
/// [`SWEEP_BATCH`]), or when no queue has room left (the next round, once the dispatchers made
/// room, starts again from the first due delivery).
fn round_ends(full_page: bool, room: &HashMap<String, usize>) -> bool {
    !full_page || room.values().all(|n| *n == 0)
}

impl Engine {
    pub(super) async fn sweep(self: Arc<Self>) {
        loop {
            let mut sleep_for = self.sweep_round().await;
            if let Some(next) = self.sweep_orphans().await {
                sleep_for = sleep_for.min(next);
            }
            self.revive_waiting().await;
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep_for) => {}
            }
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
        self.prune_retired();
        if self.store.shared() {
            // Another replica died mid-call (or could not renew its claims for a whole lease)
            // and its lease ran out: count the crash first (the attempt cannot start again
            // before).
            let d = self.config();
            let running = self.known.running();
            match self
                .store
                .recover_crashed(d.max_attempts, d.max_crashes, running)
                .await
            {
                Ok(r) if r.found == 0 => {}
                Ok(r) => {
                    r.count_dead_letters();
                    tracing::warn!(
                        deliveries = r.found,
                        "a gateway replica died during plugin calls (its lease expired): counted as failed attempts; taking them over"
                    )
                }
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
                sleep_for = sleep_for.min(until_due(next, now));
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
            let Picked {
                wanted,
                left_to_handoff,
                unconfigured,
            } = pick(
                &due.deliveries,
                &mut room,
                now,
                self.started_at_ms,
                |key, generation| self.known.sweep(key, generation, started),
            );
            if left_to_handoff {
                sleep_for = sleep_for.min(Duration::from_millis(HANDOFF_GRACE_MS as u64));
            }
            if unconfigured {
                // Pending for a name no instance has: replayed (or left over) since the orphan
                // rule last looked. Its grace starts now.
                self.check_orphans();
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
            if round_ends(full_page, &room) {
                if full_page {
                    sleep_for = sleep_for.min(Duration::from_millis(100));
                }
                return sleep_for;
            }
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;
    const STARTED: i64 = NOW - 60_000;

    fn due(attempts: u32, generation: u32, next_at_ms: i64) -> DueDelivery {
        DueDelivery {
            key: 1,
            plugin: "p".into(),
            attempts,
            generation,
            next_at_ms,
        }
    }

    #[test]
    fn only_a_fresh_first_attempt_of_this_process_is_left_to_the_handoff() {
        let just_committed = NOW - 10;
        assert!(left_to_handoff(&due(0, 0, just_committed), NOW, STARTED));
        assert!(
            left_to_handoff(&due(0, 0, NOW - HANDOFF_GRACE_MS + 1), NOW, STARTED),
            "the grace's last millisecond"
        );
        assert!(
            !left_to_handoff(&due(0, 0, NOW - HANDOFF_GRACE_MS), NOW, STARTED),
            "the grace is over: the hand-off may have found the queue full"
        );
        assert!(
            !left_to_handoff(&due(0, 0, NOW - 600_000), NOW, NOW - 900_000),
            "long past the grace"
        );
        assert!(
            !left_to_handoff(&due(1, 0, just_committed), NOW, STARTED),
            "a retry has no hand-off"
        );
        assert!(
            !left_to_handoff(&due(0, 1, just_committed), NOW, STARTED),
            "a replay has no hand-off"
        );
        assert!(
            !left_to_handoff(&due(0, 0, just_committed), NOW, just_committed),
            "committed by the process before this one (at the same millisecond)"
        );
        assert!(
            !left_to_handoff(&due(0, 0, just_committed), NOW, NOW - 5),
            "committed before this process started"
        );
    }

    #[test]
    fn the_sweeper_sleeps_until_the_next_due_delivery_and_at_least_a_millisecond() {
        assert_eq!(until_due(NOW + 250, NOW), Duration::from_millis(250));
        assert_eq!(until_due(NOW + 1, NOW), Duration::from_millis(1));
        assert_eq!(until_due(NOW, NOW), Duration::from_millis(1));
        assert_eq!(until_due(NOW - 40, NOW), Duration::from_millis(1));
    }

    fn on(plugin: &str, key: i64, attempts: u32, generation: u32) -> DueDelivery {
        DueDelivery {
            key,
            plugin: plugin.into(),
            attempts,
            generation,
            next_at_ms: NOW - 60_000,
        }
    }

    fn room(entries: &[(&str, usize)]) -> HashMap<String, usize> {
        entries.iter().map(|(n, r)| (n.to_string(), *r)).collect()
    }

    #[test]
    fn a_page_fills_each_queue_up_to_its_room_and_no_further() {
        let page = [
            on("a", 1, 1, 0),
            on("a", 2, 1, 0),
            on("b", 3, 1, 0),
            on("a", 4, 1, 0),
            on("b", 5, 0, 1),
        ];
        let mut left = room(&[("a", 2), ("b", 5)]);
        let picked = pick(&page, &mut left, NOW, STARTED, |_, _| true);
        assert_eq!(picked.wanted, vec![(1, 0), (2, 0), (3, 0), (5, 1)]);
        assert!(!picked.left_to_handoff);
        assert_eq!(left, room(&[("a", 0), ("b", 3)]), "the room each one took");
    }

    #[test]
    fn only_what_the_registry_claims_takes_room() {
        // Keys 1 and 2 are queued or running already: the registry refuses them, and their
        // places stay free for the next ones.
        let page = [on("a", 1, 1, 0), on("a", 2, 1, 0), on("a", 3, 1, 0)];
        let mut left = room(&[("a", 1)]);
        let mut offered = Vec::new();
        let picked = pick(&page, &mut left, NOW, STARTED, |key, generation| {
            offered.push((key, generation));
            key == 3
        });
        assert_eq!(picked.wanted, vec![(3, 0)]);
        assert_eq!(offered, vec![(1, 0), (2, 0), (3, 0)]);
        assert_eq!(left, room(&[("a", 0)]));
    }

    #[test]
    fn a_full_or_unconfigured_queue_gets_nothing_and_a_fresh_one_is_left_to_the_handoff() {
        let fresh = DueDelivery {
            next_at_ms: NOW - 10,
            ..on("a", 9, 0, 0)
        };
        let page = [on("a", 1, 1, 0), on("gone", 2, 1, 0), fresh];
        let mut left = room(&[("a", 0)]);
        let mut offered = 0;
        let picked = pick(&page, &mut left, NOW, STARTED, |_, _| {
            offered += 1;
            true
        });
        assert_eq!(picked.wanted, vec![]);
        assert_eq!(offered, 0, "nothing offered to the registry without room");
        assert!(picked.left_to_handoff);
        assert!(picked.unconfigured, "`gone` has no queue: an orphan");
        assert_eq!(left, room(&[("a", 0)]));
        // A full queue alone is no orphan.
        let picked = pick(&[on("a", 1, 1, 0)], &mut left, NOW, STARTED, |_, _| true);
        assert!(!picked.unconfigured);
    }

    #[test]
    fn a_round_ends_at_a_short_page_or_when_no_queue_has_room() {
        assert!(
            round_ends(false, &room(&[("a", 10)])),
            "the end of the due list"
        );
        assert!(
            !round_ends(true, &room(&[("a", 10)])),
            "more pages, room left"
        );
        assert!(
            !round_ends(true, &room(&[("a", 0), ("b", 1)])),
            "one queue still has room"
        );
        assert!(
            round_ends(true, &room(&[("a", 0), ("b", 0)])),
            "every queue is full"
        );
        assert!(round_ends(true, &room(&[])), "no plugin configured");
    }
}
