//! One plugin instance name's in-memory queue and concurrency limit ([`PluginQueue`]), kept
//! across reloads, and the calls hung past their timeout that still hold a permit of it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::Job;
use crate::plugins::PluginSlot;

/// A call that outlived its timeout and still holds its permit. (`S`, the instance, is only
/// compared by address: the unit tests use another type.)
#[derive(Debug)]
pub(super) struct HungCall<S = PluginSlot> {
    pub(super) slot: Arc<S>,
    /// Set when a reload replaced the instance: its permit was handed to the new instance, so
    /// the call's own permit is forgotten when it finally returns.
    pub(super) forgiven: AtomicBool,
}

/// One plugin instance name's queue, dispatcher and limit.
pub(super) struct PluginQueue<S = PluginSlot> {
    pub(super) tx: mpsc::Sender<Job>,
    /// The instance to call; replaced in place when a reload changes its config. Shared with the
    /// queue a removed name gets back if a reload configures it again (as `hung` and
    /// `permits`): a call of the removed queue that hangs past its timeout then sees the instance
    /// in place now ([`PluginQueue::register_hung`]).
    pub(super) slot: Arc<RwLock<Arc<S>>>,
    /// At most `max_concurrency` calls at once for this name, whichever instance runs them.
    pub(super) permits: Arc<Semaphore>,
    /// The current `max_concurrency`.
    pub(super) limit: Mutex<usize>,
    /// Calls of this name running now, whichever instance runs them: counted apart from the
    /// permits, which a lowered limit's surplus also holds while calls return.
    pub(super) running: Arc<AtomicUsize>,
    /// Shared with the queue a removed name gets back if a reload configures it again.
    pub(super) hung: Arc<Mutex<Vec<Arc<HungCall<S>>>>>,
    /// Stops this dispatcher when a reload removes the instance.
    pub(super) cancel: CancellationToken,
}

/// A call's permit, the call counted in its queue's `running` while it is held.
pub(super) struct CallPermit {
    permit: Option<OwnedSemaphorePermit>,
    running: Arc<AtomicUsize>,
}

impl CallPermit {
    /// The call ended, but its permit was handed to a new instance meanwhile (see
    /// [`HungCall::forgiven`]): not given back.
    pub(super) fn forget(mut self) {
        if let Some(p) = self.permit.take() {
            p.forget();
        }
    }
}

impl Drop for CallPermit {
    fn drop(&mut self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<S> PluginQueue<S> {
    /// Waits for a permit of this name (`None`: the semaphore is closed).
    pub(super) async fn permit(&self) -> Option<CallPermit> {
        let permit = self.permits.clone().acquire_owned().await.ok()?;
        self.running.fetch_add(1, Ordering::SeqCst);
        Some(CallPermit {
            permit: Some(permit),
            running: self.running.clone(),
        })
    }

    /// Calls of this name running now.
    pub(super) fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Whether a call of this name runs besides the one whose permit the caller holds.
    pub(super) fn others_running(&self) -> bool {
        self.running() > 1
    }

    pub(super) fn slot(&self) -> Option<Arc<S>> {
        self.slot.read().ok().map(|s| s.clone())
    }

    /// Lists a call on `slot` hung past its timeout, its permit still held. When a reload
    /// already replaced `slot` (the reload came before the timeout), the permit is handed to the
    /// instance in place at once, as [`PluginQueue::replace`] does for the calls it finds hung:
    /// a reload meant to fix a hanging plugin takes effect however the two fell. Listed first,
    /// then compared, under the list's lock: `replace` swaps the instance before it takes that
    /// lock, so one of the two sees the other, and `forgiven` hands the permit over once.
    pub(super) fn register_hung(&self, slot: &Arc<S>) -> Arc<HungCall<S>> {
        let hung = Arc::new(HungCall {
            slot: slot.clone(),
            forgiven: Default::default(),
        });
        if let Ok(mut list) = self.hung.lock() {
            list.push(hung.clone());
            let replaced = self.slot().is_some_and(|now| !Arc::ptr_eq(&now, slot));
            if replaced && !hung.forgiven.swap(true, Ordering::SeqCst) {
                self.permits.add_permits(1);
            }
        }
        hung
    }

    /// Swaps in a reloaded instance (unless `slot` is the one in place: a reload kept it) and
    /// hands the permits of calls hung on the old instance to the new one (the reload meant to
    /// fix a hanging plugin takes effect); resizes the limit to `wanted` either way.
    pub(super) fn replace(&self, slot: &Arc<S>, wanted: usize) {
        let Ok(mut current) = self.slot.write() else {
            return;
        };
        if !Arc::ptr_eq(&current, slot) {
            let old = std::mem::replace(&mut *current, slot.clone());
            drop(current);
            if let Ok(hung) = self.hung.lock() {
                for call in hung.iter().filter(|c| Arc::ptr_eq(&c.slot, &old)) {
                    if !call.forgiven.swap(true, Ordering::SeqCst) {
                        self.permits.add_permits(1);
                    }
                }
            }
        } else {
            drop(current);
        }
        let Ok(mut limit) = self.limit.lock() else {
            return;
        };
        if wanted > *limit {
            self.permits.add_permits(wanted - *limit);
        } else if wanted < *limit {
            // Take the surplus out as calls return.
            let surplus = (*limit - wanted) as u32;
            let permits = self.permits.clone();
            tokio::spawn(async move {
                if let Ok(p) = permits.acquire_many_owned(surplus).await {
                    p.forget();
                }
            });
        }
        *limit = wanted;
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
