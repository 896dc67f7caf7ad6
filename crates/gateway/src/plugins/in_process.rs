//! An in-process instance's runner: the loaded library, the instance calls go to, and that
//! instance's replacement after a panic.
//!
//! An instance that panicked is never handed another delivery: it is retired as the call that
//! panicked returns ([`InProcess::retire`]; calls already running on it finish there) and
//! replaced by a fresh one built from the same config, by the engine's restart or by the next
//! call, whichever comes first. The retired instance is let go just before that fresh one's
//! `init` (its `shutdown` runs then, if no call still uses it), or, when a fresh one is already
//! in place (another call on it panicked first), by the restart its last call's panic asks
//! for: not in the call that panicked
//! (whose outcome waits to be recorded), with a share of the engine's gate held as for `init`
//! (a crash in it is not charged to a delivery running alone), and not beside the fresh
//! instance's `init`, unless another call still running on it holds it then: its `shutdown`
//! then runs when that call returns, on that call's thread, maybe while the fresh `init` runs
//! (the restart does not wait for calls, which may hang). When that `init` fails (the plugin refuses, panics, or what it
//! needs at start is down), each call is a retry ("plugin instance unavailable", with the
//! reason), and a call tries `init` again once the restart backoff has passed
//! ([`restart_backoff`]: 10 ms doubling to 1 s, as an isolated instance's starts; the engine's
//! retry backoff paces the deliveries themselves). One `init` runs at a time; a call that
//! finds one running is a retry at once rather than a wait (an `init` may hang).
//!
//! Also here: a batch's fallback after it panicked as a whole ([`PluginSlot::one_by_one`]):
//! each delivery on its own, the instance replaced after each one that panics; when it cannot
//! be replaced, the rest of the batch are retries with that reason, none tried again within
//! the call.
//!
//! [`PluginSlot::one_by_one`]: super::PluginSlot::one_by_one

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock, TryLockError};
use std::time::{Duration, Instant};

use gateway_plugin::host::{CallOutcome, InitError, Instance, Library};

use super::{log_sink, Runner};

/// Restarts that failed in a row, and what the last one said.
#[derive(Debug, Default)]
struct Failed {
    count: u32,
    /// No call tries `init` again before this.
    next_try: Option<Instant>,
    error: String,
}

pub(super) struct InProcess {
    library: Library,
    /// The instance calls go to, numbered; `None` from a panic until a fresh one is made (or
    /// while its `init` fails), and once the slot is dropped.
    instance: RwLock<Option<Current>>,
    /// Held while an `init` runs (so one runs at a time).
    restart: Mutex<Failed>,
    /// Instances made so far (numbers them).
    made: AtomicU64,
    /// Instances retired after a panic, let go before the next `init` (see the module docs).
    retired: Mutex<Vec<Instance>>,
}

/// An instance for a call, and its number (to retire that one, not a successor, after a panic).
#[derive(Clone)]
pub(super) struct Current {
    pub(super) instance: Instance,
    number: u64,
}

impl InProcess {
    pub(super) fn new(library: Library, instance: Instance) -> Self {
        InProcess {
            library,
            instance: RwLock::new(Some(Current {
                instance,
                number: 0,
            })),
            restart: Mutex::new(Failed::default()),
            made: AtomicU64::new(1),
            retired: Mutex::new(Vec::new()),
        }
    }

    /// The current instance (a cheap clone; keeps it alive for the call).
    fn current(&self) -> Option<Current> {
        self.instance
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `current`'s instance panicked: no call gets it any more (calls running on it finish
    /// there). Kept until the next `init` (a successor already in place stays).
    pub(super) fn retire(&self, current: Current) {
        {
            let mut slot = self
                .instance
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if slot.as_ref().is_some_and(|c| c.number == current.number) {
                // Not the last reference: `current` holds one.
                *slot = None;
            }
        }
        self.retired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(current.instance);
    }

    /// The instance to call: the current one; with none (after a panic, or a restart that
    /// failed), a fresh one if no backoff is pending and its `init` succeeds. `Err` is the
    /// reason a call cannot be made now (the call is a retry).
    pub(super) fn for_call(
        &self,
        make: impl FnOnce(&Library) -> Result<Instance, InitError>,
    ) -> Result<Current, String> {
        if let Some(instance) = self.current() {
            return Ok(instance);
        }
        let mut failed = match self.restart.try_lock() {
            Ok(f) => f,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                return Err("plugin instance unavailable: it is being restarted".into())
            }
        };
        // Made by another call between the first look and the lock.
        if let Some(instance) = self.current() {
            return Ok(instance);
        }
        if let Some(wait) = failed
            .next_try
            .map(|t| t.saturating_duration_since(Instant::now()))
            .filter(|w| !w.is_zero())
        {
            return Err(format!(
                "plugin instance unavailable: its restart after a panic failed ({}); next try in {} ms",
                failed.error,
                wait.as_millis().max(1)
            ));
        }
        self.install(&mut failed, make)
            .map_err(|e| restart_failed(&e))
    }

    /// Makes a fresh instance after a panic (which retired the one that panicked), unless a
    /// call already made one since, or one is being made now (a call's `init`, or another
    /// restart's: this one does not wait for it, nor hold its caller's permit meanwhile). On
    /// failure calls try again after the backoff ([`InProcess::for_call`]).
    pub(super) fn replace(
        &self,
        make: impl FnOnce(&Library) -> Result<Instance, InitError>,
    ) -> Result<(), InitError> {
        let mut failed = match self.restart.try_lock() {
            Ok(f) => f,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Ok(()),
        };
        if self.current().is_some() {
            // A successor is in place (an earlier panic's restart): the instance that panicked
            // now, retired by its last call, is let go here (no `init` runs: the restart lock
            // is held), not left for the next panic's restart, a reload or the stop.
            let retired =
                std::mem::take(&mut *self.retired.lock().unwrap_or_else(PoisonError::into_inner));
            drop(retired);
            return Ok(());
        }
        self.install(&mut failed, make).map(drop)
    }

    /// Runs `make` (holding the restart lock: `failed`) and installs what it built, or books
    /// the failure (the slot, empty since the panic, stays empty: calls are retries).
    fn install(
        &self,
        failed: &mut Failed,
        make: impl FnOnce(&Library) -> Result<Instance, InitError>,
    ) -> Result<Current, InitError> {
        // The retired instances go first: their `shutdown` never runs beside this `init`.
        let retired =
            std::mem::take(&mut *self.retired.lock().unwrap_or_else(PoisonError::into_inner));
        drop(retired);
        let made = make(&self.library);
        let mut slot = self
            .instance
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match made {
            Ok(instance) => {
                let fresh = Current {
                    instance,
                    number: self.made.fetch_add(1, Ordering::Relaxed),
                };
                let replaced = slot.replace(fresh.clone());
                drop(slot);
                // Its `shutdown` may block: not under the lock (calls read the slot).
                drop(replaced);
                *failed = Failed::default();
                Ok(fresh)
            }
            Err(e) => {
                let retired = slot.take();
                drop(slot);
                // Its `shutdown` may block: not under the lock (calls read the slot).
                drop(retired);
                failed.count = failed.count.saturating_add(1);
                failed.next_try = Some(Instant::now() + restart_backoff(failed.count));
                failed.error = e.to_string();
                Err(e)
            }
        }
    }

    /// The instances, current and retired, taken for good (the slot is being dropped).
    pub(super) fn take(&mut self) -> Vec<Instance> {
        let mut all = std::mem::take(
            self.retired
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner),
        );
        all.extend(
            self.instance
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
                .map(|c| c.instance),
        );
        all
    }
}

impl super::PluginSlot {
    /// The in-process instance to call (a cheap clone; keeps it alive for the call): the
    /// current one, or a fresh one after a failed restart (this module's rule); `Err` is why no
    /// call can be made now (the call is a retry).
    pub(super) fn instance(&self) -> Result<Current, String> {
        match &self.runner {
            Runner::InProcess(runner) => runner.for_call(|library| self.instantiate(library)),
            Runner::Isolated { .. } => Err("internal: not an in-process instance".into()),
        }
    }

    /// `handle` on `current`, which is retired if it panics (no call gets it again).
    pub(super) fn handle_on(&self, current: Current, delivery_json: &[u8]) -> CallOutcome {
        let outcome = current.instance.handle(delivery_json);
        if matches!(outcome, CallOutcome::Panicked { .. }) {
            self.retire(current);
        }
        outcome
    }

    /// Retires `current` after a panic (see [`InProcess::retire`]).
    pub(super) fn retire(&self, current: Current) {
        if let Runner::InProcess(runner) = &self.runner {
            runner.retire(current);
        }
    }

    pub(super) fn instantiate(&self, library: &Library) -> Result<Instance, InitError> {
        // A restart's: on the calling thread, unbounded (bounded, every retry of a hung `init`
        // would leave one more thread behind; the restart holds its gate share for at most
        // `[delivery] timeout`, and calls meanwhile are retries).
        library.instantiate(
            &self.spec.name,
            &self.spec.config,
            &self.config_dir,
            log_sink(),
        )
    }

    /// Hands each delivery to `handle` on its own, on the instance current then: after one that
    /// panicked, the instance is replaced before the next is handed over (as an isolated
    /// instance's process is), so no delivery goes to an instance that just panicked; if it
    /// cannot be replaced, the rest are retries with that reason (none tries again within this
    /// call). After the last one the engine restarts it, as after any call that panicked.
    /// Also returns how many were handed over (the first ones).
    pub(super) fn one_by_one(&self, deliveries: &[&[u8]]) -> (Vec<CallOutcome>, usize) {
        let mut outcomes = Vec::with_capacity(deliveries.len());
        for (i, d) in deliveries.iter().enumerate() {
            let outcome = self.call(d);
            let panicked = matches!(outcome, CallOutcome::Panicked { .. });
            outcomes.push(outcome);
            if panicked && i + 1 < deliveries.len() {
                if let Err(reason) = self.restart_now() {
                    outcomes.extend(unavailable(deliveries.len() - i - 1, &reason));
                    return (outcomes, i + 1);
                }
            }
        }
        (outcomes, deliveries.len())
    }

    /// [`super::PluginSlot::reinit`] on the calling thread (a batch's, which holds its share of the
    /// engine's gate), a failure logged and returned as the reason the calls it stops get.
    pub(super) fn restart_now(&self) -> Result<(), String> {
        self.reinit().map_err(|e| {
            tracing::error!(error = %e, "plugin instance could not be restarted");
            restart_failed(&e)
        })
    }
}

/// `n` retries with `reason`: the outcomes of calls that could not be made.
pub(crate) fn unavailable(n: usize, reason: &str) -> Vec<CallOutcome> {
    (0..n)
        .map(|_| CallOutcome::Retry {
            reason: reason.to_owned(),
            retry_after: None,
        })
        .collect()
}

/// The reason a call gets when the instance could not be restarted after a panic.
pub(crate) fn restart_failed(error: &InitError) -> String {
    format!("plugin instance unavailable: its restart after a panic failed ({error})")
}

/// The wait before a call tries `init` again after `failures` failed restarts in a row: 10 ms
/// doubling to 1 s.
fn restart_backoff(failures: u32) -> Duration {
    Duration::from_millis(10u64 << failures.saturating_sub(1).min(7)).min(Duration::from_secs(1))
}

/// Creates an in-process instance of `spec` from `library` at a start or a reload, waiting at
/// most its `init_timeout` for `init`: an `init` that does not return in time fails the start
/// (a reload is refused, and the next one is not held up behind it), and is left to end on its
/// own thread, its instance shut down then (native code cannot be stopped).
pub(crate) fn instantiate_within(
    library: &Library,
    spec: &crate::config::PluginSpec,
    dir: &std::path::Path,
) -> Result<Instance, InitError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (lib, name, config, at) = (
        library.clone(),
        spec.name.clone(),
        spec.config.clone(),
        dir.to_path_buf(),
    );
    let spawned = std::thread::Builder::new()
        .name(format!("init-{name}"))
        .spawn(move || {
            let made = lib.instantiate(&name, &config, &at, log_sink());
            if let Err(std::sync::mpsc::SendError(late)) = tx.send(made) {
                if late.is_ok() {
                    tracing::warn!(plugin = %name,
                        "a plugin's init returned after its start gave up on it: that instance is shut down");
                }
            }
        });
    if spawned.is_err() {
        return library.instantiate(&spec.name, &spec.config, dir, log_sink());
    }
    rx.recv_timeout(spec.init_timeout)
        .unwrap_or_else(|_| {
            tracing::error!(plugin = %spec.name, init_timeout = ?spec.init_timeout,
                "a plugin's init did not return within init_timeout: its start failed (the init goes on, on its own thread)");
            Err(InitError::Unavailable {
                instance: spec.name.clone(),
                message: format!(
                    "its init did not return within init_timeout ({:?})",
                    spec.init_timeout
                ),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_from_10_ms_to_1_s() {
        let ms: Vec<u128> = (1..=9).map(|n| restart_backoff(n).as_millis()).collect();
        assert_eq!(ms, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
    }
}
