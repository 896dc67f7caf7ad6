//! The dispatchers' wait for a store that takes writes again ([`StoreHealth`]): they wait while
//! it refuses them, are woken as soon as it takes them (not at the next second's look), and
//! only then; a stop ends the wait. While they wait, the store's write probe is tried once a
//! second, and one that succeeds ends the wait (when the write that failed is never tried
//! again, nothing else would).

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::store::{StoreError, StoreFuture};

/// A write probe that fails while `ok` is false, counting its tries.
#[derive(Default)]
struct Probe {
    ok: AtomicBool,
    tries: AtomicUsize,
}

impl Probe {
    fn run(&self) -> StoreFuture<()> {
        self.tries.fetch_add(1, Ordering::SeqCst);
        let answer = if self.ok.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(StoreError("disk full".into()))
        };
        Box::pin(async move { answer })
    }
}

fn health() -> Arc<StoreHealth> {
    Arc::new(StoreHealth {
        ok: AtomicBool::new(true),
        changed: Notify::new(),
    })
}

/// Waits in a task of its own, probing with `probe`: whether the store became writable, and
/// after how long.
fn waiter(
    h: &Arc<StoreHealth>,
    probe: &Arc<Probe>,
    cancel: &CancellationToken,
) -> tokio::task::JoinHandle<(bool, Duration)> {
    let (h, probe, cancel) = (h.clone(), probe.clone(), cancel.clone());
    tokio::spawn(async move {
        let since = Instant::now();
        (h.writable(|| probe.run(), &cancel).await, since.elapsed())
    })
}

#[test]
fn dispatchers_wait_while_the_store_refuses_writes_and_wake_when_it_takes_them() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let h = health();
        let failing = Arc::new(Probe::default());
        let cancel = CancellationToken::new();
        let at_once = tokio::time::timeout(
            Duration::from_millis(100),
            h.writable(|| failing.run(), &cancel),
        );
        assert_eq!(at_once.await.ok(), Some(true), "a writable store: no wait");

        // Refusing writes wakes no one (a woken dispatcher would only look and wait again,
        // but the line "accepts writes again" would be a lie).
        let notified = h.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        h.set(false);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut notified)
                .await
                .is_err(),
            "a store that fails woke the waiters"
        );

        let waiting = waiter(&h, &failing, &cancel);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !waiting.is_finished(),
            "returned while the store refuses writes"
        );
        h.set(true);
        let (writable, waited) = waiting.await.expect("waiter");
        assert!(writable);
        // Woken by the change, not by the once-a-second look (the belt and braces).
        assert!(
            waited < Duration::from_millis(800),
            "woken after {waited:?}"
        );

        h.set(false);
        let stopped = waiter(&h, &failing, &cancel);
        tokio::time::sleep(Duration::from_millis(50)).await;
        cancel.cancel();
        let (writable, waited) = stopped.await.expect("waiter");
        assert!(!writable, "a stop ends the wait with false");
        assert!(
            waited < Duration::from_millis(800),
            "stopped after {waited:?}"
        );
    });
}

#[test]
fn a_store_that_takes_writes_again_is_found_by_the_probe_when_no_write_says_so() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let h = health();
        let probe = Arc::new(Probe::default());
        let cancel = CancellationToken::new();
        h.set(false);
        let waiting = waiter(&h, &probe, &cancel);
        // Probed once a second while the store refuses writes, never sooner.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        assert!(!waiting.is_finished(), "returned while the probe fails");
        let tries = probe.tries.load(Ordering::SeqCst);
        assert!((1..=3).contains(&tries), "{tries} probes in 2.5 s");
        // The store recovers; no write of the engine says so: the next probe does.
        probe.ok.store(true, Ordering::SeqCst);
        let (writable, waited) = waiting.await.expect("waiter");
        assert!(writable);
        assert!(waited < Duration::from_millis(4_000), "after {waited:?}");
        assert!(
            h.ok.load(Ordering::SeqCst),
            "the probe's success is the health"
        );
        // Writable: no probe at all.
        let before = probe.tries.load(Ordering::SeqCst);
        assert!(h.writable(|| probe.run(), &cancel).await);
        assert_eq!(probe.tries.load(Ordering::SeqCst), before);
    });
}
