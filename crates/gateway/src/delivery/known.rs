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

    /// The keys being called now, or whose outcome is being recorded (a call hung past its
    /// timeout included: it still runs): in a shared store, their claims must hold.
    pub fn running(&self) -> Vec<i64> {
        self.keys()
            .active
            .iter()
            .filter(|(_, a)| matches!(a.phase, Phase::Running))
            .map(|(key, _)| *key)
            .collect()
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
#[path = "known_tests.rs"]
mod tests;
