//! Whether this replica has reached the database for long enough to judge other replicas'
//! leases. After an outage (the database restarted, a network cut, a failover) every lease may
//! have run out on the database's clock while every replica was alive and could not renew: a
//! replica that counted the others' running calls as crashed as soon as it was back would run
//! them again beside the calls still running (and lose their outcomes to the changed attempt
//! count). So crashed attempts are counted only once this replica has gone a whole lease
//! without a failed database operation, and a whole lease after it started (it may start just
//! as the database comes back): a live replica renews its claims within a third of a lease of
//! the database answering again.

use std::sync::{Arc, Mutex};

use deadpool_postgres::Pool;
use std::time::{Duration, Instant};

/// When this replica's last database operation failed.
#[derive(Debug, Default)]
pub(super) struct Reach {
    last_failure: Mutex<Option<Instant>>,
    /// When crash recovery was last said to be held back (a warning at most once a lease).
    warned: Mutex<Option<Instant>>,
    /// The database's clock less this replica's, in milliseconds, as last read by a crash
    /// count's quick round trip (`None` before one).
    clock_offset_ms: Mutex<Option<i64>>,
}

impl Reach {
    /// A replica just started: it has not seen the database for a lease yet. It may have come
    /// up the moment the database came back from an outage (a deploy, a unit that failed to
    /// start while the database was down), when every lease has run out while the other
    /// replicas live: it judges their claims only after a lease, as after a failure of its own.
    pub(super) fn starting() -> Reach {
        Reach {
            last_failure: Mutex::new(Some(Instant::now())),
            warned: Mutex::new(None),
            clock_offset_ms: Mutex::new(None),
        }
    }

    /// The database's clock read at `db_ms` in a round trip that began at this replica's
    /// `began_ms` and took `rtt_ms`: its offset from this replica's clock, kept.
    pub(super) fn clock_read(&self, db_ms: i64, began_ms: i64, rtt_ms: i64) {
        if let Ok(mut off) = self.clock_offset_ms.lock() {
            *off = Some(db_ms - began_ms.saturating_add(rtt_ms / 2));
        }
    }

    /// The last offset [`Reach::clock_read`] kept.
    pub(super) fn clock_offset_ms(&self) -> Option<i64> {
        self.clock_offset_ms.lock().ok().and_then(|o| *o)
    }

    /// An operation failed (or timed out) now.
    pub(super) fn failed(&self) {
        if let Ok(mut at) = self.last_failure.lock() {
            *at = Some(Instant::now());
        }
    }

    /// Notes a failure of `result` and passes it on.
    pub(super) fn note<T, E>(&self, result: Result<T, E>) -> Result<T, E> {
        if result.is_err() {
            self.failed();
        }
        result
    }

    /// Whether a whole `lease` passed since the last failure (or none happened). When not, and
    /// it has not for three leases, says so (at most once a lease): a replica whose operations
    /// keep failing never counts other replicas' crashed calls, whose deliveries then wait.
    pub(super) fn steady_for(&self, lease: Duration) -> bool {
        let steady = self
            .last_failure
            .lock()
            .map(|at| at.is_none_or(|at| at.elapsed() >= lease))
            .unwrap_or(false);
        if steady {
            if let Ok(mut w) = self.warned.lock() {
                *w = None;
            }
            return steady;
        }
        if let Ok(mut w) = self.warned.lock() {
            let since = *w.get_or_insert_with(Instant::now);
            if since.elapsed() >= lease.saturating_mul(3) {
                tracing::warn!(
                    held_s = since.elapsed().as_secs(),
                    "crashed calls of other replicas are not counted while this replica's \
                     database operations keep failing (see the errors logged): their \
                     deliveries wait"
                );
                // The next warning a lease from now.
                let now = Instant::now();
                *w = Some(now.checked_sub(lease.saturating_mul(2)).unwrap_or(now));
            }
        }
        false
    }
}

/// Counts a failure when dropped before it was settled (a future dropped mid-operation), and
/// closes the idle connections of its pool (see `connect::discard_idle`).
pub(super) struct OnDrop(pub(super) Option<(Arc<Reach>, Pool)>);

impl OnDrop {
    /// The operation ended: a failure only if it did not succeed.
    pub(super) fn settle(mut self, ok: bool) {
        if let Some((reach, _)) = self.0.take() {
            if !ok {
                reach.failed();
            }
        }
    }
}

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some((reach, pool)) = self.0.take() {
            reach.failed();
            super::connect::discard_idle(&pool);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_and_a_failure_hold_judgement_back_for_a_lease() {
        let started = Reach::starting();
        assert!(!started.steady_for(Duration::from_secs(60)), "just started");
        std::thread::sleep(Duration::from_millis(30));
        assert!(started.steady_for(Duration::from_millis(20)));
        let reach = Reach::default();
        assert!(reach.steady_for(Duration::from_secs(60)), "no failure yet");
        assert!(reach.note(Ok::<_, ()>(1)).is_ok());
        assert!(reach.steady_for(Duration::from_secs(60)));
        assert!(reach.note(Err::<(), _>("down")).is_err());
        assert!(!reach.steady_for(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(30));
        assert!(reach.steady_for(Duration::from_millis(20)));
    }
}
