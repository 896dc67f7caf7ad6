//! The dispatchers' wait for a store that takes writes again ([`StoreHealth`]): they wait while
//! it refuses them, are woken as soon as it takes them (not at the next second's look), and
//! only then; a stop ends the wait.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

fn health() -> Arc<StoreHealth> {
    Arc::new(StoreHealth {
        ok: AtomicBool::new(true),
        changed: Notify::new(),
    })
}

/// Waits in a task of its own: whether the store became writable, and after how long.
fn waiter(
    h: &Arc<StoreHealth>,
    cancel: &CancellationToken,
) -> tokio::task::JoinHandle<(bool, Duration)> {
    let (h, cancel) = (h.clone(), cancel.clone());
    tokio::spawn(async move {
        let since = Instant::now();
        (h.writable(&cancel).await, since.elapsed())
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
        let cancel = CancellationToken::new();
        let at_once = tokio::time::timeout(Duration::from_millis(100), h.writable(&cancel));
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

        let waiting = waiter(&h, &cancel);
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
        let stopped = waiter(&h, &cancel);
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
