//! What the engine holds in memory for each delivery key, so that a delivery is never queued
//! or called twice at once, whoever brings it (the ingress hand-off, the sweeper, a retry
//! timer), and a replay (a new generation in the store) takes effect within one sweep.
//!
//! Rules:
//! - A hand-off (fresh from the ingress) is taken only for a key memory has never seen: the
//!   sweeper may have queued (and even finished) it first.
//! - The sweeper queues a pending `(key, generation)` unless memory holds that generation
//!   already, or holds an older one that is still being called (one call per delivery at a
//!   time: the replay waits for that call to return). An older one waiting on a retry timer is
//!   superseded at once (its timer is cancelled); an older one still queued is superseded and
//!   dropped when the dispatcher reaches it.
//! - A key finished in memory is not queued again by a sweep that read the store before it
//!   finished, unless the store shows a newer generation.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How long a finished key is remembered (longer than any sweep takes).
const FORGET_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug)]
enum Phase {
    Queued,
    /// Being called, or its outcome being recorded (held in memory until the store takes it).
    Running,
    /// Waiting on an in-memory retry timer.
    Waiting {
        timer: u64,
        cancel: CancellationToken,
    },
}

#[derive(Debug)]
enum Entry {
    Active { generation: u32, phase: Phase },
    Finished { generation: u32, at: Instant },
}

/// The registry of keys the engine knows.
#[derive(Debug, Default)]
pub struct Known {
    map: Mutex<HashMap<i64, Entry>>,
    next_timer: Mutex<u64>,
}

impl Known {
    fn map(&self) -> MutexGuard<'_, HashMap<i64, Entry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh delivery from the ingress: taken only if memory never saw the key.
    pub fn handoff(&self, key: i64) -> bool {
        let mut map = self.map();
        if map.contains_key(&key) {
            return false;
        }
        map.insert(
            key,
            Entry::Active {
                generation: 0,
                phase: Phase::Queued,
            },
        );
        true
    }

    /// The sweeper, in a round that started at `round`, found `(key, generation)` pending:
    /// true (and the key is marked queued) when it must be queued.
    pub fn sweep(&self, key: i64, generation: u32, round: Instant) -> bool {
        let mut map = self.map();
        let take = match map.get(&key) {
            None => true,
            Some(Entry::Finished { generation: g, at }) => generation > *g || *at < round,
            Some(Entry::Active { generation: g, .. }) if generation <= *g => false,
            Some(Entry::Active { phase, .. }) => match phase {
                Phase::Running => false,
                Phase::Queued => true,
                Phase::Waiting { cancel, .. } => {
                    cancel.cancel();
                    true
                }
            },
        };
        if take {
            map.insert(
                key,
                Entry::Active {
                    generation,
                    phase: Phase::Queued,
                },
            );
        }
        take
    }

    /// The dispatcher is about to call `(key, generation)`: true (and the key is running) if
    /// that is still the current, queued job.
    pub fn start(&self, key: i64, generation: u32) -> bool {
        match self.map().get_mut(&key) {
            Some(Entry::Active {
                generation: g,
                phase,
            }) if *g == generation && matches!(phase, Phase::Queued) => {
                *phase = Phase::Running;
                true
            }
            _ => false,
        }
    }

    /// A retry was recorded: the key waits on a timer, which the returned token cancels.
    pub fn wait(&self, key: i64, generation: u32) -> Option<(u64, CancellationToken)> {
        let timer = {
            let mut n = self.next_timer.lock().unwrap_or_else(|p| p.into_inner());
            *n += 1;
            *n
        };
        match self.map().get_mut(&key) {
            Some(Entry::Active {
                generation: g,
                phase,
            }) if *g == generation => {
                let cancel = CancellationToken::new();
                *phase = Phase::Waiting {
                    timer,
                    cancel: cancel.clone(),
                };
                Some((timer, cancel))
            }
            _ => None,
        }
    }

    /// A retry timer fired: true (and the key is queued) if it is still this timer's.
    pub fn timer_fired(&self, key: i64, generation: u32, timer: u64) -> bool {
        let mut map = self.map();
        let Some(Entry::Active {
            generation: g,
            phase,
        }) = map.get_mut(&key)
        else {
            return false;
        };
        let mine =
            *g == generation && matches!(&*phase, Phase::Waiting { timer: t, .. } if *t == timer);
        if mine {
            *phase = Phase::Queued;
        }
        mine
    }

    /// `(key, generation)` is done with (finished, dead, or its outcome superseded).
    pub fn finish(&self, key: i64, generation: u32) {
        let mut map = self.map();
        if matches!(map.get(&key), Some(Entry::Active { generation: g, .. }) if *g == generation) {
            let at = Instant::now();
            map.insert(key, Entry::Finished { generation, at });
        }
    }

    /// Forgets `(key, generation)` entirely (not queued after all: the next sweep takes it).
    pub fn drop_key(&self, key: i64, generation: u32) {
        let mut map = self.map();
        if matches!(map.get(&key), Some(Entry::Active { generation: g, .. }) if *g == generation) {
            map.remove(&key);
        }
    }

    /// Drops finished keys older than [`FORGET_AFTER`]. One clock read for the whole pass (a
    /// read per entry made this pass, over ~30 s of deliveries, hold the lock for milliseconds).
    pub fn prune(&self) {
        self.prune_at(Instant::now());
    }

    fn prune_at(&self, now: Instant) {
        self.map().retain(|_, e| match e {
            Entry::Finished { at, .. } => now.saturating_duration_since(*at) < FORGET_AFTER,
            Entry::Active { .. } => true,
        });
    }

    /// How many keys memory holds (finished ones included).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handoff_after_the_sweeper_ran_the_key_is_refused() {
        let k = Known::default();
        let round = Instant::now();
        assert!(k.sweep(1, 0, round));
        assert!(!k.handoff(1), "queued by the sweeper");
        assert!(k.start(1, 0));
        k.finish(1, 0);
        assert!(
            !k.handoff(1),
            "already delivered: a late hand-off must not call it again"
        );
        assert!(k.handoff(2));
        assert!(!k.sweep(2, 0, Instant::now()), "handed off");
    }

    #[test]
    fn a_sweep_that_read_before_the_finish_does_not_requeue() {
        let k = Known::default();
        assert!(k.handoff(1));
        assert!(k.start(1, 0));
        let round = Instant::now();
        k.finish(1, 0);
        assert!(!k.sweep(1, 0, round), "stale read");
        assert!(
            k.sweep(1, 0, Instant::now()),
            "a later round trusts the store"
        );
        assert!(k.sweep(2, 0, round));
    }

    #[test]
    fn a_replay_waits_for_a_running_call_but_supersedes_a_timer_at_once() {
        let k = Known::default();
        let round = Instant::now();
        assert!(k.handoff(1));
        assert!(k.start(1, 0));
        assert!(!k.sweep(1, 1, round), "one call per delivery at a time");
        let (timer, cancel) = k.wait(1, 0).expect("waiting");
        assert!(k.sweep(1, 1, round), "the replay supersedes the timer");
        assert!(cancel.is_cancelled());
        assert!(!k.timer_fired(1, 0, timer), "the old timer is stale");
        assert!(!k.start(1, 0), "an old queued job is stale");
        assert!(k.start(1, 1));
    }

    #[test]
    fn a_timer_requeues_only_its_own_wait() {
        let k = Known::default();
        assert!(k.handoff(1));
        assert!(k.start(1, 0));
        let (first, _) = k.wait(1, 0).expect("waiting");
        assert!(k.timer_fired(1, 0, first));
        assert!(!k.timer_fired(1, 0, first), "fires once");
        assert!(k.start(1, 0));
        k.finish(1, 0);
        assert!(k.wait(1, 0).is_none(), "finished keys do not wait");
    }

    #[test]
    fn a_superseded_queued_job_is_dropped_and_drop_key_is_generation_bound() {
        let k = Known::default();
        assert!(k.handoff(1));
        assert!(k.sweep(1, 2, Instant::now()));
        k.drop_key(1, 0);
        assert!(
            k.start(1, 2),
            "dropping an old generation keeps the new one"
        );
        k.drop_key(1, 2);
        assert!(k.handoff(1), "forgotten");
    }

    #[test]
    fn prune_forgets_only_keys_finished_long_enough_ago_and_still_finished() {
        let k = Known::default();
        let later = |extra: u64| Instant::now() + FORGET_AFTER + Duration::from_secs(extra);
        for key in [1, 2, 3, 4] {
            assert!(k.handoff(key));
        }
        for key in [1, 2, 4] {
            assert!(k.start(key, 0));
            k.finish(key, 0);
        }
        k.prune();
        assert_eq!(k.len(), 4, "nothing is old enough yet");
        // Key 4 is replayed (a newer generation) before its finished entry expires.
        assert!(k.sweep(4, 1, Instant::now()));
        k.prune_at(later(1));
        assert_eq!(
            k.len(),
            2,
            "1 and 2 forgotten; 3 (active) and 4 (active again) kept"
        );
        assert!(k.handoff(1), "a forgotten key is unknown again");
        assert!(!k.handoff(3));
        assert!(k.start(4, 1));
        k.finish(4, 1);
        k.prune_at(Instant::now() + FORGET_AFTER - Duration::from_secs(1));
        assert!(!k.handoff(4), "finished again just now: remembered");
        k.prune_at(later(2));
        assert_eq!(k.len(), 2, "4's second finish expired too: 1 and 3 left");
    }
}
