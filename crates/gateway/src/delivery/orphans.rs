//! The orphan rule: deliveries that would otherwise stay pending forever, those of a plugin
//! instance name no longer configured (a reload removed it, or it was gone at start), become
//! dead letters once the name has been missing for `[delivery] removed_plugin_grace`, with a
//! reason saying so; an operator can replay them once an instance of that name exists again.
//!
//! A reload may configure the name again while the rule's write is on its way to the store
//! (after the rule last looked at the configured names, before the write commits): the rule
//! looks again once the write is in, and if the name is back, puts the deliveries it just
//! dead-lettered back in the queue (a replay of exactly those dead letters), so the backlog a
//! reload brings an instance back for is not left dead. One whose call still runs here (a call
//! of the removed instance hung past its timeout) is not replayed beside it: a later sweep
//! round puts it back once it no longer shows as running, unless it is no longer that dead
//! letter by then (a late success replaced it, or an operator replayed it), the call ended in
//! a dead letter of the plugin's own (a rejection: it stands), or the name was removed again.
//! That wait is kept in memory: a restart before the call returned leaves the dead letter (its
//! reason says to replay it). A reload after the second look is after the write: those dead
//! letters stand, as they would for a reload a minute later.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::{Engine, SWEEP_INTERVAL};
use crate::store::sqlite::now_ms;
use crate::store::{Orphaned, ReplaySelector};

/// The names missing for `grace` or longer (their deliveries become dead letters now), and how
/// long until the next of the others reaches its grace (`None`: no other).
fn orphan_deadlines(
    missing_since: &HashMap<String, Instant>,
    grace: Duration,
    now: Instant,
) -> (Vec<String>, Option<Duration>) {
    let expired = missing_since
        .iter()
        .filter(|(_, since)| now.duration_since(**since) >= grace)
        .map(|(n, _)| n.clone())
        .collect();
    let next = missing_since
        .values()
        .map(|since| grace.saturating_sub(now.duration_since(*since)))
        .filter(|left| !left.is_zero())
        .min();
    (expired, next)
}

/// Plugin names with pending deliveries and no instance.
#[derive(Debug, Default)]
pub(super) struct Orphans {
    /// Look at the store on the next round (set at start, on reload, on a delivery handed off
    /// for an unknown name, and when a sweep round meets a pending delivery of one: a replay).
    check: bool,
    /// Since when each name has been seen missing.
    missing_since: HashMap<String, Instant>,
    /// Dead letters the second look left because their call ran, by key: put back once they
    /// no longer show as running ([`Engine::revive_waiting`]).
    waiting: HashMap<i64, Waiting>,
}

/// A dead letter the orphan rule made while its call ran, its name configured again since.
#[derive(Debug, Clone)]
struct Waiting {
    generation: u32,
    event_id: String,
    plugin: String,
    /// The orphan rule's reason: a dead letter with another one is not this one.
    reason: String,
    /// The first round that found it no longer called here (a claim kept on it lapses within
    /// a lease from then, at the latest).
    due_since: Option<Instant>,
}

impl Engine {
    /// Asks the next round to look for deliveries of instances no longer configured.
    pub(super) fn check_orphans(&self) {
        if let Ok(mut o) = self.orphans.lock() {
            o.check = true;
        }
    }

    fn configured(&self, name: &str) -> bool {
        self.queues
            .read()
            .map(|q| q.contains_key(name))
            .unwrap_or(false)
    }

    fn forget_orphan(&self, name: &str) {
        if let Ok(mut o) = self.orphans.lock() {
            o.missing_since.remove(name);
        }
    }

    /// Dead-letters the pending deliveries of names missing for longer than the grace. Returns
    /// when to look again, if a name is still within its grace.
    pub(super) async fn sweep_orphans(&self) -> Option<Duration> {
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
            let (expired, next) = orphan_deadlines(&o.missing_since, grace, now);
            o.check = !o.missing_since.is_empty();
            (expired, next)
        };
        for name in expired {
            self.dead_letter_orphans(&name, grace).await;
        }
        Some(next.unwrap_or(SWEEP_INTERVAL))
    }

    /// The orphan rule's write for `name`, and its undoing if a reload brought the name back
    /// while it ran (see the module docs).
    async fn dead_letter_orphans(&self, name: &str, grace: Duration) {
        // Only what was there before this look: a reload that configures the name again from
        // now on finds its fresh deliveries spared (stamped at or after `cutoff`), and one done
        // already is seen here.
        let cutoff = now_ms();
        if self.configured(name) {
            self.forget_orphan(name);
            return;
        }
        let error = format!(
            "plugin instance `{name}` is no longer configured (removed from the config for more \
             than removed_plugin_grace {}s); replay once an instance of that name exists again",
            grace.as_secs()
        );
        let orphans = match self
            .store
            .dead_letter_plugin(name.to_owned(), error.clone(), cutoff, self.known.running())
            .await
        {
            Ok(run) => {
                match &run.stopped {
                    // The steps before the failure went in: their dead letters are handled
                    // below like a whole write's (counted, or put back if the name is back).
                    // The name is not forgotten: the next round takes the rest.
                    Some(e) => {
                        tracing::error!(plugin = %name, error = %e, "could not dead-letter all the deliveries of a removed plugin instance: the next round takes the rest");
                    }
                    None => self.forget_orphan(name),
                }
                run.orphans
            }
            Err(e) => {
                tracing::error!(plugin = %name, error = %e, "could not dead-letter the deliveries of a removed plugin instance");
                return;
            }
        };
        if orphans.is_empty() {
            return;
        }
        if !self.configured(name) {
            crate::metrics::get()
                .dead_letters
                .get_or_create(&crate::metrics::plugin(name))
                .inc_by(orphans.len() as u64);
            tracing::warn!(plugin = %name, deliveries = orphans.len(), "deliveries of a removed plugin instance dead-lettered");
            return;
        }
        // Configured again while the write ran: the backlog is the new instance's. What runs
        // waits for its call; the rest goes back now, or waits too if that write fails (the
        // next round tries again).
        let (running, idle): (Vec<_>, Vec<_>) = orphans.into_iter().partition(|o| o.running);
        let wait = |list: &[Orphaned]| {
            if let Ok(mut o) = self.orphans.lock() {
                o.waiting.extend(list.iter().map(|r| {
                    let w = Waiting {
                        generation: r.generation,
                        event_id: r.event_id.clone(),
                        plugin: name.to_owned(),
                        reason: error.clone(),
                        due_since: None,
                    };
                    (r.key, w)
                }));
            }
        };
        wait(&running);
        if idle.is_empty() {
            return;
        }
        let keys = idle.iter().map(|o| (o.key, o.generation)).collect();
        match self.put_back(name, keys, &error).await {
            Ok(n) => {
                tracing::info!(plugin = %name, deliveries = n, after_their_call = running.len(), "a reload configured a removed plugin instance again while its deliveries were dead-lettered: queued again");
            }
            Err(()) => wait(&idle),
        }
    }

    /// Puts back those of `keys` (key, generation) still the dead letters the orphan rule made
    /// for `name` with `reason`, and not running: how many (the rule is the store write's own).
    async fn put_back(&self, name: &str, keys: Vec<(i64, u32)>, reason: &str) -> Result<u64, ()> {
        let back = ReplaySelector::Orphans {
            keys,
            reason: reason.to_owned(),
        };
        match self.store.replay(back).await {
            Ok(n) => {
                self.wake.notify_one();
                Ok(n)
            }
            Err(e) => {
                tracing::error!(plugin = %name, error = %e, "a reload configured a removed plugin instance again while its deliveries were dead-lettered, and they could not be queued again yet: retried at the next sweep (or replay them: gateway replay --dead-letters --plugin NAME)");
                Err(())
            }
        }
    }

    /// Each sweep round: the dead letters left for after their call are tried again once this
    /// process no longer calls them, each put back only if it is still that dead letter and
    /// not running (the store write decides). Forgotten once put back; once the write finds
    /// nothing (it is no longer that dead letter: a success replaced it, an operator replayed
    /// it) and no claim of this replica can still be lapsing (two leases after the orphan
    /// write, in a shared store; at once otherwise); and when the name is gone again.
    pub(super) async fn revive_waiting(&self) {
        if self
            .orphans
            .lock()
            .map(|o| o.waiting.is_empty())
            .unwrap_or(true)
        {
            return;
        }
        let running = self.known.running();
        let due: Vec<(i64, Waiting)> = match self.orphans.lock() {
            Ok(o) => o
                .waiting
                .iter()
                .filter(|(key, _)| !running.contains(key))
                .map(|(key, w)| (*key, w.clone()))
                .collect(),
            Err(_) => return,
        };
        let patience = self.store.lease().map(|l| l * 2).unwrap_or_default();
        for (key, w) in due {
            let done = if !self.configured(&w.plugin) {
                true // removed again meanwhile: the dead letter stands (its reason says so)
            } else {
                match self
                    .put_back(&w.plugin, vec![(key, w.generation)], &w.reason)
                    .await
                {
                    Ok(0) => {
                        let since = match self.orphans.lock() {
                            Ok(mut o) => o
                                .waiting
                                .get_mut(&key)
                                .map(|w| *w.due_since.get_or_insert_with(Instant::now)),
                            Err(_) => None,
                        };
                        since.is_none_or(|t| t.elapsed() >= patience)
                    }
                    Ok(_) => {
                        tracing::info!(plugin = %w.plugin, event_id = %w.event_id, "a delivery dead-lettered as its removed instance's call ran, and that name configured again: queued again once the call returned");
                        true
                    }
                    Err(()) => return, // the store is failing: the next round
                }
            };
            if done {
                if let Ok(mut o) = self.orphans.lock() {
                    o.waiting.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "orphans_tests.rs"]
mod engine_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_missing_for_the_grace_expires_and_the_next_wakeup_is_the_nearest_other() {
        let now = Instant::now() + Duration::from_secs(100);
        let grace = Duration::from_secs(10);
        let missing: HashMap<String, Instant> = [
            ("old", now - Duration::from_secs(30)),
            ("exact", now - grace),
            ("recent", now - Duration::from_secs(7)),
            ("newest", now - Duration::from_secs(1)),
        ]
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect();
        let (mut expired, next) = orphan_deadlines(&missing, grace, now);
        expired.sort();
        assert_eq!(expired, vec!["exact".to_string(), "old".to_string()]);
        assert_eq!(
            next,
            Some(Duration::from_secs(3)),
            "recent's grace ends first"
        );

        let only_expired: HashMap<String, Instant> =
            [("old".to_string(), now - Duration::from_secs(30))].into();
        assert_eq!(
            orphan_deadlines(&only_expired, grace, now),
            (vec!["old".to_string()], None)
        );
        assert_eq!(
            orphan_deadlines(&HashMap::new(), grace, now),
            (vec![], None)
        );
    }
}
