//! The in-process instances' `shutdown`s: run on the blocking pool when a slot's last user
//! drops it (a reload letting it go, a call returning on a replaced instance), counted, and
//! waited for by who must not run beside one (a reload's gate share, a delivery running alone,
//! the stop): native code that may kill the process is never charged to such a delivery.

use super::{PluginSlot, Runner};

/// The last reference to an instance runs the plugin's `shutdown`, which may block (flushing,
/// closing a database): when a slot is dropped on an async worker (a reload retiring it), its
/// instance is released on the blocking pool instead.
impl Drop for PluginSlot {
    fn drop(&mut self) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Runner::InProcess(runner) = &mut self.runner else {
            return;
        };
        // Taken, not cloned: the slot must not keep a reference that could end up the last one.
        let instances = runner.take();
        if !instances.is_empty() {
            // Told to whoever waits for this thread's drops (`dropping_and_waiting`).
            let ended = DROPPED_HERE.with(|d| {
                d.borrow_mut().as_mut().map(|waiting| {
                    let (tx, rx) = std::sync::mpsc::channel::<()>();
                    waiting.push(rx);
                    tx
                })
            });
            SHUTDOWNS.spawn_blocking_on(
                move || {
                    drop(instances);
                    drop(ended);
                },
                &handle,
            );
        }
    }
}

thread_local! {
    /// While [`dropping_and_waiting`] runs on this thread: the `shutdown`s its drops started,
    /// each ended when its channel closes.
    static DROPPED_HERE: std::cell::RefCell<Option<Vec<std::sync::mpsc::Receiver<()>>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `drops` (which lets plugin slots go) and waits, at most `within`, for the in-process
/// instances' `shutdown`s those drops started on the blocking pool: for a caller that must hold
/// something until they end (a reload, the engine's gate share: a `shutdown` is native code that
/// may kill the process, never beside a delivery that runs alone). An instance a running call
/// still uses is shut down by that call, later. Whether they all ended. Blocking: from a
/// blocking thread.
pub fn dropping_and_waiting(within: std::time::Duration, drops: impl FnOnce()) -> bool {
    DROPPED_HERE.with(|d| *d.borrow_mut() = Some(Vec::new()));
    drops();
    let started = DROPPED_HERE
        .with(|d| d.borrow_mut().take())
        .unwrap_or_default();
    let deadline = std::time::Instant::now() + within;
    started.iter().all(|ended| {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        // The sender dropped (the shutdown ended, or its task was cancelled): disconnected.
        matches!(
            ended.recv_timeout(left),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) | Ok(())
        )
    })
}

/// The in-process instances let go by a slot's drop whose `shutdown` may still run on the
/// blocking pool: the stop waits for them ([`shutdowns_ended`]).
static SHUTDOWNS: std::sync::LazyLock<tokio_util::task::TaskTracker> =
    std::sync::LazyLock::new(tokio_util::task::TaskTracker::new);

/// Waits (at most `within`) until no in-process instance's `shutdown` runs (those the drops of
/// slots started on the blocking pool): for a delivery about to run alone, so that a
/// `shutdown` that kills the process is never charged to it. Whether none runs.
pub async fn shutdowns_idle(within: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while !SHUTDOWNS.is_empty() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    true
}

/// Waits (at most `within`) for the in-process instances' `shutdown`s the drops of their
/// slots started; whether they all ended. For the stop, once the engine and the running config
/// (the slots' users) are gone.
pub async fn shutdowns_ended(within: std::time::Duration) -> bool {
    SHUTDOWNS.close();
    tokio::time::timeout(within, SHUTDOWNS.wait()).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A delivery about to run alone waits while a `shutdown` runs (here a stand-in task on
    /// the same tracker), at most its bound, and goes on once none runs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_call_waits_for_the_shutdowns_running() {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let running = SHUTDOWNS.spawn_blocking(move || {
            let _ = released.recv_timeout(Duration::from_secs(10));
        });
        assert!(
            !shutdowns_idle(Duration::from_millis(50)).await,
            "a shutdown runs: not idle within 50 ms"
        );
        let started = Instant::now();
        let waiter = tokio::spawn(shutdowns_idle(Duration::from_secs(10)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiter.is_finished(), "went on while a shutdown ran");
        drop(release);
        assert!(waiter.await.expect("waiter"), "idle once it ended");
        assert!(started.elapsed() >= Duration::from_millis(100));
        running.await.expect("stand-in");
    }
}
