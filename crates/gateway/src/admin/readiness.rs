//! The store's part of `/readyz` (and of `/status`'s `ready`, the same answer): one small write
//! made and committed through the store ([`crate::store::Store::probe`]), its answer standing
//! for [`PROBE_FRESH`].
//!
//! Never: lets probes add more than one store write per [`PROBE_FRESH`] however many come (they
//! are unauthenticated, and load balancers probe every second or more often: concurrent probes
//! wait for the one write in flight and take its answer), or keeps a probe waiting longer than
//! [`PROBE_TIMEOUT`] (a hung database answers 503 within it, not after the store's own
//! operation timeout).

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::store::StoreError;

/// How long a probe's answer, 200 or 503, stands for the probes that follow.
pub(super) const PROBE_FRESH: Duration = Duration::from_secs(1);

/// The longest a probe waits for the store (for the probe in flight, then for its own write):
/// past it, the store is not ready. Under the few seconds load balancers give a health check.
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The last probe's answer, and the lock that makes concurrent probes share one write.
#[derive(Debug, Default)]
pub(super) struct StoreProbe {
    /// When the last write was tried and whether it committed. An async lock, held across the
    /// write on purpose: a probe that comes while a write is in flight waits for it (within its
    /// own deadline) and takes its answer instead of making another.
    last: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

impl StoreProbe {
    /// Whether the store takes writes: the answer of a write tried less than [`PROBE_FRESH`]
    /// ago, else of a new one (`write`), each within [`PROBE_TIMEOUT`] of this call.
    pub(super) async fn writable<F>(&self, write: impl FnOnce() -> F) -> bool
    where
        F: Future<Output = Result<(), StoreError>>,
    {
        let deadline = Instant::now() + PROBE_TIMEOUT;
        let Ok(mut last) = tokio::time::timeout_at(deadline, self.last.lock()).await else {
            return false;
        };
        if let Some((at, ok)) = *last {
            if at.elapsed() < PROBE_FRESH {
                return ok;
            }
        }
        let ok = match tokio::time::timeout_at(deadline, write()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness: the store did not take the probe's write");
                false
            }
            Err(_) => {
                tracing::warn!(
                    "readiness: the store did not answer the probe's write within {PROBE_TIMEOUT:?}"
                );
                false
            }
        };
        *last = Some((Instant::now(), ok));
        ok
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_store_that_never_answers_is_not_ready_after_the_bound() {
        let probe = StoreProbe::default();
        let started = Instant::now();
        let ok = probe
            .writable(std::future::pending::<Result<(), StoreError>>)
            .await;
        assert!(!ok);
        assert_eq!(started.elapsed(), PROBE_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_write_is_not_ready() {
        let probe = StoreProbe::default();
        let ok = probe
            .writable(|| async { Err(StoreError("database or disk is full".into())) })
            .await;
        assert!(!ok);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_probes_share_one_write_and_its_answer_stands_for_a_second() {
        let probe = Arc::new(StoreProbe::default());
        let writes = Arc::new(AtomicUsize::new(0));
        let write = |writes: Arc<AtomicUsize>| {
            move || async move {
                writes.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok(())
            }
        };
        let probes: Vec<_> = (0..10)
            .map(|_| {
                let (probe, writes) = (probe.clone(), writes.clone());
                tokio::spawn(async move { probe.writable(write(writes)).await })
            })
            .collect();
        for p in probes {
            assert!(p.await.expect("probe"));
        }
        assert_eq!(writes.load(Ordering::SeqCst), 1, "one write for ten probes");
        tokio::time::sleep(PROBE_FRESH / 2).await;
        assert!(probe.writable(write(writes.clone())).await);
        assert_eq!(writes.load(Ordering::SeqCst), 1, "fresh: no write");
        tokio::time::sleep(PROBE_FRESH).await;
        assert!(probe.writable(write(writes.clone())).await);
        assert_eq!(writes.load(Ordering::SeqCst), 2, "stale: a new write");
    }

    /// An answer stands for less than [`PROBE_FRESH`]: a probe exactly that long after it
    /// writes again.
    #[tokio::test(start_paused = true)]
    async fn an_answer_is_stale_once_its_second_is_over() {
        let probe = StoreProbe::default();
        let writes = AtomicUsize::new(0);
        let write = || async {
            writes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        };
        assert!(probe.writable(write).await);
        tokio::time::sleep(PROBE_FRESH - Duration::from_millis(1)).await;
        assert!(probe.writable(write).await);
        assert_eq!(writes.load(Ordering::SeqCst), 1, "still fresh");
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(probe.writable(write).await);
        assert_eq!(writes.load(Ordering::SeqCst), 2, "its second is over");
    }
}
