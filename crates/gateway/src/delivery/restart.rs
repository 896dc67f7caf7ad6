//! The restart of a panicked instance, off the call that panicked: its outcomes are recorded
//! first, and neither they, nor the batch's retries, nor other plugins wait for the restart.
//!
//! The restart of an in-process instance holds a share of the engine's gate while the new
//! instance's `init` runs, as a call does: an in-process `init` can kill the process (a segfault, `abort()`), and a delivery
//! with a crash behind it, which runs alone, must not be running then (it would be charged with
//! that crash). The share is given up after `[delivery] timeout`, as a hung call's is: an
//! `init` that never returns must not keep an exclusive call, and every call queued behind it,
//! waiting for ever.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::RwLock;
use tokio::task::JoinError;

use crate::plugins::PluginSlot;

/// Replaces `slot`'s panicked instance (its `init`, and the old instance's shutdown, may
/// block), holding a share of `gate` for at most `limit`.
pub(super) async fn restart(slot: &Arc<PluginSlot>, gate: Arc<RwLock<()>>, limit: Duration) {
    let fresh = slot.clone();
    let restarted = if slot.isolated().is_some() {
        // Nothing runs here: the next call starts a new process (see `PluginSlot::reinit`).
        tokio::task::spawn_blocking(move || fresh.reinit()).await
    } else {
        beside_calls(gate, limit, move || fresh.reinit()).await
    };
    match restarted {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "plugin instance could not be restarted"),
        Err(e) => tracing::error!(error = %e, "plugin restart failed"),
    }
}

/// Runs `work` on the blocking pool once it holds a share of `gate`, which it gives up when
/// `work` returns or after `limit`, whichever comes first; then waits for `work` regardless.
async fn beside_calls<T: Send + 'static>(
    gate: Arc<RwLock<()>>,
    limit: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, JoinError> {
    let share = gate.read_owned().await;
    let mut task = tokio::task::spawn_blocking(work);
    match tokio::time::timeout(limit, &mut task).await {
        Ok(done) => done,
        Err(_) => {
            drop(share);
            task.await
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[tokio::test]
    async fn the_restart_waits_for_a_call_running_alone_and_keeps_one_waiting() {
        let gate = Arc::new(RwLock::new(()));
        let alone = gate.clone().write_owned().await;
        let ran = Arc::new(AtomicBool::new(false));
        let restart = tokio::spawn(beside_calls(gate.clone(), Duration::from_secs(60), {
            let ran = ran.clone();
            move || {
                ran.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(300));
            }
        }));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!ran.load(Ordering::SeqCst), "init ran beside a call alone");
        drop(alone);
        while !ran.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // While `init` runs, a call that must run alone waits for it.
        assert!(
            gate.try_write().is_err(),
            "a call alone could start beside init"
        );
        restart.await.expect("task").expect("work");
        assert!(gate.try_write().is_ok(), "the share outlived init");
    }

    #[tokio::test]
    async fn an_init_past_the_limit_gives_its_share_up_and_is_still_awaited() {
        let gate = Arc::new(RwLock::new(()));
        let (started, done) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let restart = tokio::spawn(beside_calls(gate.clone(), Duration::from_millis(100), {
            let (started, done) = (started.clone(), done.clone());
            move || {
                started.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(600));
                done.store(true, Ordering::SeqCst);
                7
            }
        }));
        while !started.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let alone = tokio::time::timeout(Duration::from_secs(5), gate.clone().write_owned())
            .await
            .expect("the share was given up after the limit");
        assert!(
            !done.load(Ordering::SeqCst),
            "the limit did not end the wait early"
        );
        drop(alone);
        assert_eq!(restart.await.expect("task").expect("work"), 7);
        assert!(done.load(Ordering::SeqCst));
    }
}
