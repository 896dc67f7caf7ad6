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
//!   finished (or less than a millisecond after: finish times are rounded up), unless the
//!   store shows a newer generation.
//!
//! Layout: keys in flight live in a small map; finished keys (tens of thousands per second
//! under load) in two tables that rotate every [`FORGET_AFTER`]: a key is remembered for at
//! least that long and at most twice that. A rotation empties the older table and reuses it,
//! so the lock every hand-off takes is never held for a pass over (or a rehash of) the finished
//! keys: a pass over ~300k entries held it for ~3 ms, and a table growing one insert at a time
//! rehashes everything it holds at each doubling.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How long a finished key is remembered at least (longer than any sweep takes); at most
/// twice this.
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
struct Active {
    generation: u32,
    phase: Phase,
}

/// A finished key: its generation and when it finished, in milliseconds (rounded up) after
/// its table's `since` — 8 bytes, not the 16 of an `Instant`.
#[derive(Debug, Clone, Copy)]
struct Done {
    generation: u32,
    at_ms: u32,
}

/// Finished keys since `since`.
#[derive(Debug)]
struct Table {
    since: Instant,
    keys: HashMap<i64, Done>,
}

impl Table {
    fn new(since: Instant, capacity: usize) -> Self {
        Self {
            since,
            keys: HashMap::with_capacity(capacity),
        }
    }

    /// When `done` finished, never earlier than it did (so never before a round it followed).
    fn finished_at(&self, done: Done) -> Instant {
        self.since + Duration::from_millis(u64::from(done.at_ms))
    }

    fn stamp(&self, now: Instant) -> u32 {
        let micros = now.saturating_duration_since(self.since).as_micros();
        u32::try_from(micros.div_ceil(1000)).unwrap_or(u32::MAX)
    }
}

#[derive(Debug)]
struct Keys {
    active: HashMap<i64, Active>,
    /// Finished since the last rotation, and in the period before it.
    current: Table,
    previous: Table,
}

impl Keys {
    fn new(now: Instant) -> Self {
        Self {
            active: HashMap::new(),
            current: Table::new(now, 0),
            previous: Table::new(now, 0),
        }
    }

    /// The generation and finish time of `key`, if memory holds it as finished.
    fn finished(&self, key: i64) -> Option<(u32, Instant)> {
        [&self.current, &self.previous]
            .into_iter()
            .find_map(|table| {
                let done = table.keys.get(&key)?;
                Some((done.generation, table.finished_at(*done)))
            })
    }

    /// Makes `key` active (and no longer finished) at `generation`, queued.
    fn queue(&mut self, key: i64, generation: u32) {
        self.current.keys.remove(&key);
        self.previous.keys.remove(&key);
        self.active.insert(
            key,
            Active {
                generation,
                phase: Phase::Queued,
            },
        );
    }
}

/// The registry of keys the engine knows.
#[derive(Debug)]
pub struct Known {
    keys: Mutex<Keys>,
    next_timer: Mutex<u64>,
}

impl Default for Known {
    fn default() -> Self {
        Self {
            keys: Mutex::new(Keys::new(Instant::now())),
            next_timer: Mutex::new(0),
        }
    }
}

impl Known {
    fn keys(&self) -> MutexGuard<'_, Keys> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh delivery from the ingress: taken only if memory never saw the key.
    pub fn handoff(&self, key: i64) -> bool {
        let mut keys = self.keys();
        if keys.active.contains_key(&key) || keys.finished(key).is_some() {
            return false;
        }
        keys.queue(key, 0);
        true
    }

    /// The sweeper, in a round that started at `round`, found `(key, generation)` pending:
    /// true (and the key is marked queued) when it must be queued.
    pub fn sweep(&self, key: i64, generation: u32, round: Instant) -> bool {
        let mut keys = self.keys();
        let take = match keys.active.get(&key) {
            Some(a) if generation <= a.generation => false,
            Some(a) => match &a.phase {
                Phase::Running => false,
                Phase::Queued => true,
                Phase::Waiting { cancel, .. } => {
                    cancel.cancel();
                    true
                }
            },
            None => match keys.finished(key) {
                None => true,
                Some((g, at)) => generation > g || at < round,
            },
        };
        if take {
            keys.queue(key, generation);
        }
        take
    }

    /// The dispatcher is about to call `(key, generation)`: true (and the key is running) if
    /// that is still the current, queued job.
    pub fn start(&self, key: i64, generation: u32) -> bool {
        match self.keys().active.get_mut(&key) {
            Some(a) if a.generation == generation && matches!(a.phase, Phase::Queued) => {
                a.phase = Phase::Running;
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
        match self.keys().active.get_mut(&key) {
            Some(a) if a.generation == generation => {
                let cancel = CancellationToken::new();
                a.phase = Phase::Waiting {
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
        let mut keys = self.keys();
        let Some(a) = keys.active.get_mut(&key) else {
            return false;
        };
        let mine = a.generation == generation
            && matches!(&a.phase, Phase::Waiting { timer: t, .. } if *t == timer);
        if mine {
            a.phase = Phase::Queued;
        }
        mine
    }

    /// `(key, generation)` is done with (finished, dead, or its outcome superseded).
    pub fn finish(&self, key: i64, generation: u32) {
        let now = Instant::now();
        let mut keys = self.keys();
        if matches!(keys.active.get(&key), Some(a) if a.generation == generation) {
            keys.active.remove(&key);
            let at_ms = keys.current.stamp(now);
            keys.current.keys.insert(key, Done { generation, at_ms });
        }
    }

    /// Forgets `(key, generation)` entirely (not queued after all: the next sweep takes it).
    pub fn drop_key(&self, key: i64, generation: u32) {
        let mut keys = self.keys();
        if matches!(keys.active.get(&key), Some(a) if a.generation == generation) {
            keys.active.remove(&key);
        }
    }

    /// Once [`FORGET_AFTER`] has passed since the last rotation, forgets the keys finished in
    /// the period before it (all at least that old) and starts a new period.
    pub fn prune(&self) {
        self.prune_at(Instant::now());
    }

    fn prune_at(&self, now: Instant) {
        let mut keys = self.keys();
        if now.saturating_duration_since(keys.current.since) < FORGET_AFTER {
            return;
        }
        // The oldest table is emptied and reused: clearing resets its control bytes (one byte
        // per slot, ~0.5 MB at 300k keys) and keeps its memory, so the footprint stays that of
        // two periods instead of growing and shrinking with each allocation. Sized for the
        // period that just ended, steady load never rehashes it.
        let size = keys.current.keys.len();
        let mut reused = std::mem::replace(&mut keys.previous, Table::new(now, 0));
        reused.keys.clear();
        reused.keys.reserve(size);
        reused.since = now;
        let ended = std::mem::replace(&mut keys.current, reused);
        keys.previous = ended;
    }

    /// How many keys memory holds (finished ones included).
    #[cfg(test)]
    fn len(&self) -> usize {
        let keys = self.keys();
        keys.active.len() + keys.current.keys.len() + keys.previous.keys.len()
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
        // Finish times are kept to the millisecond, rounded up.
        assert!(
            k.sweep(1, 0, Instant::now() + Duration::from_millis(1)),
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
        let (second, _) = k.wait(1, 0).expect("waiting again");
        assert_ne!(first, second, "each wait has a timer of its own");
        assert!(
            !k.timer_fired(1, 0, first),
            "an earlier wait's timer is stale"
        );
        assert!(k.timer_fired(1, 0, second));
        assert!(k.start(1, 0));
        k.finish(1, 0);
        assert!(k.wait(1, 0).is_none(), "finished keys do not wait");
    }

    #[test]
    fn an_outcome_of_a_superseded_generation_does_not_make_the_new_one_wait() {
        let k = Known::default();
        assert!(k.handoff(1));
        assert!(
            k.sweep(1, 1, Instant::now()),
            "a replay supersedes the queued job"
        );
        assert!(k.wait(1, 0).is_none(), "generation 0 is no longer current");
        assert!(k.start(1, 1), "generation 1 is still queued, not waiting");
    }

    #[test]
    fn prune_rotates_once_a_period_has_passed() {
        let k = Known::default();
        assert!(k.handoff(1));
        assert!(k.start(1, 0));
        k.finish(1, 0);
        k.prune();
        assert_eq!(k.keys().current.keys.len(), 1, "the period has not ended");
        let begun = Instant::now()
            .checked_sub(FORGET_AFTER + Duration::from_millis(1))
            .expect("the clock has run longer than one period");
        k.keys().current.since = begun;
        k.prune();
        let keys = k.keys();
        assert!(keys.current.keys.is_empty(), "a new period began");
        assert_eq!(
            keys.previous.keys.len(),
            1,
            "the key is kept one more period"
        );
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
    fn finished_keys_are_remembered_one_to_two_periods_and_active_ones_always() {
        let k = Known::default();
        let t0 = Instant::now();
        let at = |periods: u32, extra_ms: u64| {
            t0 + FORGET_AFTER * periods + Duration::from_millis(extra_ms)
        };
        for key in [1, 2, 3, 4] {
            assert!(k.handoff(key));
        }
        for key in [1, 2, 4] {
            assert!(k.start(key, 0));
            k.finish(key, 0);
        }
        k.prune();
        k.prune_at(at(0, 0) - Duration::from_millis(1));
        assert_eq!(k.len(), 4, "no period has ended yet");
        k.prune_at(at(1, 1));
        assert_eq!(k.len(), 4, "finished less than two periods ago: kept");
        // Key 4 is replayed (a newer generation) before its finished entry is forgotten.
        assert!(k.sweep(4, 1, Instant::now()));
        k.prune_at(at(1, 500));
        assert_eq!(k.len(), 4, "one rotation per period");
        k.prune_at(at(2, 2));
        assert_eq!(
            k.len(),
            2,
            "1 and 2 forgotten; 3 (active) and 4 (active again) kept"
        );
        assert!(k.handoff(1), "a forgotten key is unknown again");
        assert!(!k.handoff(3));
        assert!(k.start(4, 1));
        k.finish(4, 1);
        k.prune_at(at(3, 3));
        assert!(
            !k.handoff(4),
            "finished in the period that just ended: remembered"
        );
        k.prune_at(at(4, 4));
        assert_eq!(k.len(), 2, "4's second finish forgotten too: 1 and 3 left");
    }

    #[test]
    fn a_finish_time_is_never_rounded_before_the_round_it_followed() {
        let k = Known::default();
        assert!(k.handoff(1));
        assert!(k.start(1, 0));
        let round = Instant::now();
        k.finish(1, 0);
        // However close the round is to the finish, a sweep that read before it is stale.
        assert!(!k.sweep(1, 0, round));
        let keys = k.keys();
        let done = keys.current.keys[&1];
        let at = keys.current.finished_at(done);
        assert!(at >= round);
        drop(keys);
        assert!(
            !k.sweep(1, 0, at),
            "a round read at the very (rounded-up) finish time is still taken as stale"
        );
    }

    /// Finish times are kept relative to their table's start: one taken well after the table
    /// began still reads back as after a round that preceded it (a stamp lost or cut to the
    /// table's first millisecond would let that stale round queue the key a second time).
    #[test]
    fn a_finish_well_after_the_table_began_still_outlasts_an_earlier_round() {
        let k = Known::default();
        std::thread::sleep(Duration::from_millis(5));
        assert!(k.handoff(1));
        assert!(k.start(1, 0));
        let round = Instant::now();
        k.finish(1, 0);
        assert!(!k.sweep(1, 0, round), "a round that read before the finish");
        let keys = k.keys();
        let done = keys.current.keys[&1];
        assert!(
            done.at_ms >= 5,
            "stamped {} ms after the table began",
            done.at_ms
        );
    }

    #[test]
    fn a_rotation_reuses_the_oldest_table_and_keeps_its_memory() {
        let k = Known::default();
        let t0 = Instant::now();
        let finish = |keys: std::ops::Range<i64>| {
            for key in keys {
                assert!(k.handoff(key));
                assert!(k.start(key, 0));
                k.finish(key, 0);
            }
        };
        finish(0..5000);
        k.prune_at(t0 + FORGET_AFTER);
        finish(5000..5010);
        k.prune_at(t0 + FORGET_AFTER * 2);
        let big = k.keys().current.keys.capacity();
        assert!(big >= 5000, "the 5000-key table, emptied: {big}");
        assert!(k.keys().current.keys.is_empty());
        assert!(!k.handoff(5003), "the quiet period's keys are kept");
        k.prune_at(t0 + FORGET_AFTER * 3);
        assert!(
            k.keys().current.keys.capacity() >= 10,
            "sized for the period that ended"
        );
        k.prune_at(t0 + FORGET_AFTER * 4);
        assert_eq!(
            k.keys().current.keys.capacity(),
            big,
            "the big table again: memory is kept, not freed and allocated again"
        );
    }

    #[test]
    fn a_rotation_sizes_the_new_table_like_the_period_that_ended() {
        let k = Known::default();
        for key in 0..1000 {
            assert!(k.handoff(key));
            assert!(k.start(key, 0));
            k.finish(key, 0);
        }
        k.prune_at(Instant::now() + FORGET_AFTER);
        let keys = k.keys();
        assert_eq!(keys.previous.keys.len(), 1000);
        assert!(keys.current.keys.is_empty());
        assert!(keys.current.keys.capacity() >= 1000);
    }
}
