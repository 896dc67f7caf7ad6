//! The delivery engine: runs every (event, plugin) delivery off the request path.
//!
//! - The intake hands fresh deliveries over right after their commit ([`Engine::handoff`]); a
//!   sweeper reloads due deliveries from the store (at start: everything unfinished, including
//!   after `kill -9`; later: overflow, lost timers, and replays made by the CLI while the gateway
//!   runs) and dead-letters deliveries of instances no longer configured.
//! - Each plugin instance name has its own FIFO queue, dispatcher and concurrency limit (kept
//!   across reloads); calls run on the blocking pool under a timeout, on the instance current
//!   when the call starts. A slow plugin only fills its own queue.
//! - Every outcome is recorded before the delivery is released in memory; when the store cannot
//!   take it, the outcome stays in memory (with its permit) and is retried, and no new call
//!   starts until the store accepts writes again. The store is the truth. A delivery is
//!   at-least-once: a crash mid-call repeats that call.
//! - [`known`] keeps one call per delivery at a time across hand-off, sweeper, timers, replays.
//! - On a shared store, the claims of running deliveries are renewed while they run ([`renew`]),
//!   so another replica never takes over a call, or an outcome write, that is still going on.

mod attempt;
pub mod backoff;
pub(crate) mod detail;
pub mod health;
mod known;
mod orphans;
pub mod payload;
mod record;
mod renew;
mod restart;
mod returned;
mod sweep;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::DeliveryConfig;
use crate::plugins::{PluginSlot, Plugins};
use crate::store::{sqlite::now_ms, Store};
use known::Known;

/// Deliveries queued in memory per plugin; beyond this the store holds them until the sweeper.
const QUEUE_CAPACITY: usize = 10_000;
/// How often the sweeper looks at the store when nothing wakes it.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// How many due deliveries one sweep loads.
const SWEEP_BATCH: usize = 1_000;
/// Fresh first attempts belong to the ingress hand-off for this long after their commit; the
/// sweeper leaves them alone until then (it takes them after, e.g. when a queue was full).
const HANDOFF_GRACE_MS: i64 = 2_000;

/// One delivery ready to run: the store's pending record, event body included.
pub use crate::store::PendingDelivery as Job;

/// The delivery id a plugin sees: stable for an (event, plugin instance) pair.
pub fn delivery_id(event_id: &str, plugin: &str) -> String {
    format!("{event_id}:{plugin}")
}

/// A call that outlived its timeout and still holds its permit.
#[derive(Debug)]
struct HungCall {
    slot: Arc<PluginSlot>,
    /// Set when a reload replaced the instance: its permit was handed to the new instance, so
    /// the call's own permit is forgotten when it finally returns.
    forgiven: AtomicBool,
}

/// One plugin instance name's queue, dispatcher and limit.
struct PluginQueue {
    tx: mpsc::Sender<Job>,
    /// The instance to call; replaced in place when a reload changes its config.
    slot: RwLock<Arc<PluginSlot>>,
    /// At most `max_concurrency` calls at once for this name, whichever instance runs them.
    permits: Arc<Semaphore>,
    /// The current `max_concurrency`.
    limit: Mutex<usize>,
    /// Shared with the queue a removed name gets back if a reload configures it again.
    hung: Arc<Mutex<Vec<Arc<HungCall>>>>,
    /// Stops this dispatcher when a reload removes the instance.
    cancel: CancellationToken,
}

impl PluginQueue {
    /// Whether a call of this name runs besides the one whose permit the caller holds.
    fn others_running(&self) -> bool {
        let limit = self.limit.lock().map(|l| *l).unwrap_or(0);
        self.permits.available_permits() + 1 < limit
    }

    fn slot(&self) -> Option<Arc<PluginSlot>> {
        self.slot.read().ok().map(|s| s.clone())
    }

    /// Swaps in a reloaded instance: resizes the limit and hands the permits of calls hung on
    /// the old instance to the new one (the reload meant to fix a hanging plugin takes effect).
    fn replace(&self, slot: &Arc<PluginSlot>) {
        let Ok(mut current) = self.slot.write() else {
            return;
        };
        if Arc::ptr_eq(&current, slot) {
            return;
        }
        let old = std::mem::replace(&mut *current, slot.clone());
        drop(current);
        if let Ok(hung) = self.hung.lock() {
            for call in hung.iter().filter(|c| Arc::ptr_eq(&c.slot, &old)) {
                if !call.forgiven.swap(true, Ordering::SeqCst) {
                    self.permits.add_permits(1);
                }
            }
        }
        let wanted = slot.spec.max_concurrency;
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

/// Whether a delivery must be called alone: a retry (whatever failed its batch, a delivery
/// that hangs or kills the plugin's process, must not fail its mates again) or a delivery
/// during which the gateway died.
fn runs_alone(job: &Job) -> bool {
    job.attempts > 0 || job.crashes > 0
}

/// Adds deliveries to `batch` as they come, until it holds `max_batch`, `linger` has passed or
/// `cancel` fires; returns a delivery that came but must run alone (it is not added).
async fn linger(
    cancel: &CancellationToken,
    rx: &mut mpsc::Receiver<Job>,
    batch: &mut Vec<Job>,
    max_batch: usize,
    linger: Duration,
) -> Option<Job> {
    let deadline = tokio::time::Instant::now() + linger;
    while batch.len() < max_batch {
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => return None,
            next = tokio::time::timeout_at(deadline, rx.recv()) => next,
        };
        match next {
            Ok(Some(j)) if runs_alone(&j) => return Some(j),
            Ok(Some(j)) => batch.push(j),
            // The deadline passed, or the queue closed (the dispatcher sees that next).
            Ok(None) | Err(_) => return None,
        }
    }
    None
}

/// A call's hold on the engine-wide gate: shared by ordinary calls, exclusive for a call of a
/// delivery with a crash behind it. Held until the call returned and its outcomes are
/// recorded, or until its timeout: a call hung past it gives the gate up (it keeps its permit),
/// so a native call that never returns cannot keep an exclusive call, and every call queued
/// behind that one, waiting for ever (see ARCHITECTURE.md, poison deliveries). An in-process
/// instance's restart holds a share too ([`restart`]).
#[derive(Debug)]
enum Gate {
    // The guards are held for their `Drop` only.
    Shared {
        _held: tokio::sync::OwnedRwLockReadGuard<()>,
    },
    Alone {
        _held: tokio::sync::OwnedRwLockWriteGuard<()>,
    },
}

/// Whether the store currently takes writes; dispatchers wait while it does not.
#[derive(Debug)]
struct StoreHealth {
    ok: AtomicBool,
    changed: Notify,
}

impl StoreHealth {
    fn set(&self, ok: bool) {
        if self.ok.swap(ok, Ordering::SeqCst) != ok && ok {
            tracing::info!("the store accepts writes again: resuming deliveries");
            self.changed.notify_waiters();
        }
    }

    /// Returns once the store takes writes (true), or when `cancel` fires (false).
    async fn writable(&self, cancel: &CancellationToken) -> bool {
        loop {
            let notified = self.changed.notified();
            if self.ok.load(Ordering::SeqCst) {
                return true;
            }
            tokio::select! {
                _ = notified => {}
                _ = cancel.cancelled() => return false,
                // Belt and braces: never rely on a single wake-up.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

/// The engine. Cheap to share (`Arc`).
pub struct Engine {
    store: Arc<dyn Store>,
    /// Retry policy and call timeout; replaced on reload.
    config: RwLock<DeliveryConfig>,
    /// Per plugin instance name; replaced on reload.
    queues: RwLock<HashMap<String, Arc<PluginQueue>>>,
    /// Queues a reload removed while calls of theirs still ran: a name configured again gets
    /// their permits back, so `max_concurrency` holds across the removal.
    retired: Mutex<HashMap<String, Arc<PluginQueue>>>,
    known: Known,
    health: StoreHealth,
    /// Per-plugin outcomes, for `/status`.
    book: health::HealthBook,
    /// Calls share it; a call of a delivery with a crash behind it takes it alone.
    gate: Arc<tokio::sync::RwLock<()>>,
    /// Plugin names with pending deliveries but no instance, and since when (see `sweep`).
    orphans: Mutex<orphans::Orphans>,
    wake: Notify,
    cancel: CancellationToken,
    calls: TaskTracker,
    /// When this engine started: deliveries created before it have no hand-off coming.
    started_at_ms: i64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config())
            .finish()
    }
}

impl Engine {
    /// Builds the engine and starts one dispatcher per plugin and the sweeper.
    pub fn start(store: Arc<dyn Store>, plugins: Plugins, config: DeliveryConfig) -> Arc<Engine> {
        let engine = Arc::new(Engine {
            store,
            config: RwLock::new(config),
            queues: RwLock::new(HashMap::new()),
            retired: Mutex::new(HashMap::new()),
            known: Known::default(),
            book: Default::default(),
            gate: Arc::new(tokio::sync::RwLock::new(())),
            health: StoreHealth {
                ok: AtomicBool::new(true),
                changed: Notify::new(),
            },
            orphans: Mutex::new(orphans::Orphans::default()),
            wake: Notify::new(),
            cancel: CancellationToken::new(),
            calls: TaskTracker::new(),
            started_at_ms: now_ms(),
        });
        engine.add_plugins(&plugins, config);
        engine.retain_plugins(&plugins);
        tokio::spawn(engine.clone().sweep());
        if let Some(lease) = engine.store.lease() {
            tokio::spawn(engine.clone().renew_claims(renew::every(lease)));
        }
        engine
    }

    fn config(&self) -> DeliveryConfig {
        self.config.read().map(|c| *c).unwrap_or_default()
    }

    /// Adds and replaces instances (a reload calls this before it swaps the routes, and
    /// [`Engine::retain_plugins`] after, so no event is routed to an instance without a queue).
    /// A replaced instance keeps its queue and limit: calls already running finish on the old
    /// instance, every call starting from now runs on the new one.
    pub fn add_plugins(self: &Arc<Self>, plugins: &Plugins, config: DeliveryConfig) {
        if let Ok(mut c) = self.config.write() {
            *c = config;
        }
        let Ok(mut queues) = self.queues.write() else {
            return;
        };
        for slot in plugins.iter() {
            match queues.get(&slot.spec.name) {
                Some(q) => q.replace(slot),
                None => {
                    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
                    let earlier = self
                        .retired
                        .lock()
                        .ok()
                        .and_then(|mut r| r.remove(&slot.spec.name));
                    let q = Arc::new(match earlier {
                        // Calls of the name's removed queue still run: they keep counting
                        // against its limit (then `replace` applies the new instance and limit).
                        Some(old) => PluginQueue {
                            tx,
                            slot: RwLock::new(old.slot().unwrap_or_else(|| slot.clone())),
                            permits: old.permits.clone(),
                            limit: Mutex::new(old.limit.lock().map(|l| *l).unwrap_or(0)),
                            hung: old.hung.clone(),
                            cancel: self.cancel.child_token(),
                        },
                        None => PluginQueue {
                            tx,
                            slot: RwLock::new(slot.clone()),
                            permits: Arc::new(Semaphore::new(slot.spec.max_concurrency)),
                            limit: Mutex::new(slot.spec.max_concurrency),
                            hung: Arc::default(),
                            cancel: self.cancel.child_token(),
                        },
                    });
                    q.replace(slot);
                    queues.insert(slot.spec.name.clone(), q.clone());
                    tokio::spawn(self.clone().dispatch(q, rx));
                }
            }
        }
        drop(queues);
        // Deliveries of a plugin that just came (back) may be waiting in the store.
        self.wake.notify_one();
    }

    /// Stops the dispatchers of instances not in `plugins`; their pending deliveries become
    /// dead letters after `[delivery] removed_plugin_grace` unless the name comes back.
    pub fn retain_plugins(&self, plugins: &Plugins) {
        if let Ok(mut queues) = self.queues.write() {
            let mut retired = self.retired.lock().ok();
            queues.retain(|name, q| {
                let keep = plugins.iter().any(|s| &s.spec.name == name);
                if !keep {
                    q.cancel.cancel();
                    if let Some(r) = retired.as_mut() {
                        r.insert(name.clone(), q.clone());
                    }
                }
                keep
            });
            // Forget the removed queues whose calls have all returned.
            if let Some(r) = retired.as_mut() {
                r.retain(|_, q| {
                    let limit = q.limit.lock().map(|l| *l).unwrap_or(0);
                    q.permits.available_permits() < limit
                });
            }
        }
        self.check_orphans();
        self.wake.notify_one();
    }

    /// A fresh delivery from the intake, right after its commit.
    pub fn handoff(&self, job: Job) {
        if self.known.handoff(job.key) {
            self.enqueue(job);
        }
    }

    /// Puts a job the registry marked queued on its plugin's queue (or lets the sweeper bring
    /// it back later).
    fn enqueue(&self, job: Job) {
        let queue = self
            .queues
            .read()
            .ok()
            .and_then(|q| q.get(&job.plugin).cloned());
        let (key, generation) = (job.key, job.generation);
        let Some(queue) = queue else {
            tracing::warn!(plugin = %job.plugin, event_id = %job.event_id,
                "delivery for a plugin instance that is not configured; dead-lettered after removed_plugin_grace");
            self.known.drop_key(key, generation);
            self.check_orphans();
            return;
        };
        if queue.tx.try_send(job).is_err() {
            // Full (or shutting down): the store has it; the sweeper will bring it back.
            self.known.drop_key(key, generation);
        }
    }

    /// Stops taking new work and waits up to `grace` for running calls; returns whether every
    /// call finished. Unfinished deliveries stay pending in the store.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.cancel.cancel();
        self.calls.close();
        tokio::time::timeout(grace, self.calls.wait()).await.is_ok()
    }

    /// Each configured plugin instance: (name, health, calls running, `max_concurrency`,
    /// deliveries waiting in its in-memory queue).
    pub fn plugin_status(&self) -> Vec<(String, health::PluginHealth, usize, usize, usize)> {
        let Ok(queues) = self.queues.read() else {
            return Vec::new();
        };
        let mut out: Vec<_> = queues
            .iter()
            .map(|(name, q)| {
                let limit = q.limit.lock().map(|l| *l).unwrap_or(0);
                let running = limit.saturating_sub(q.permits.available_permits());
                let queued = QUEUE_CAPACITY.saturating_sub(q.tx.capacity());
                (name.clone(), self.book.get(name), running, limit, queued)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Number of calls running now.
    pub fn running(&self) -> usize {
        self.calls.len()
    }

    /// The keys of the deliveries held as running: being called (a call hung past its timeout
    /// included) or having their outcome recorded.
    pub fn running_keys(&self) -> Vec<i64> {
        self.known.running()
    }

    async fn dispatch(self: Arc<Self>, queue: Arc<PluginQueue>, mut rx: mpsc::Receiver<Job>) {
        // A delivery taken off the queue that must not share the batch being built.
        let mut held: Option<Job> = None;
        loop {
            let job = match held.take() {
                Some(j) => j,
                None => tokio::select! {
                    biased;
                    _ = queue.cancel.cancelled() => break,
                    job = rx.recv() => match job { Some(j) => j, None => break },
                },
            };
            // No new call while an outcome waits for the store: at most `max_concurrency`
            // calls per plugin are ever made but not recorded.
            if !self.health.writable(&queue.cancel).await {
                self.known.drop_key(job.key, job.generation);
                break;
            }
            let permit = tokio::select! {
                biased;
                _ = queue.cancel.cancelled() => {
                    self.known.drop_key(job.key, job.generation);
                    break
                },
                p = queue.permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            // One call takes every ready delivery, up to `max_batch` (filled while the permits
            // were busy: batches grow with the load). Only first attempts share a call.
            let config = self.config();
            let max_batch = if runs_alone(&job) {
                1
            } else {
                config.max_batch.max(1)
            };
            let mut batch = Vec::with_capacity(max_batch.min(1 + rx.len()));
            batch.push(job);
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(j) if runs_alone(&j) => {
                        held = Some(j);
                        break;
                    }
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            // Under load, fill before spreading: while another call of this plugin runs, wait
            // up to `linger` for a full batch (fewer, bigger calls: each costs the plugin's own
            // sync and two store writes). A plugin with no call running is called at once.
            if held.is_none()
                && batch.len() < max_batch
                && !config.linger.is_zero()
                && queue.others_running()
            {
                held = linger(&queue.cancel, &mut rx, &mut batch, max_batch, config.linger).await;
            }
            // Superseded by a replay while it waited in the queue: drop it.
            batch.retain(|j| self.known.start(j.key, j.generation));
            if batch.is_empty() {
                continue;
            }
            // The instance current now, not when the jobs were queued.
            let Some(slot) = queue.slot() else {
                for j in &batch {
                    self.known.drop_key(j.key, j.generation);
                }
                continue;
            };
            // A delivery during which the process died before runs with no other call beside it
            // (of any plugin), so if it kills the process again, only it is counted.
            let gate = if batch[0].crashes > 0 {
                tokio::select! {
                    biased;
                    _ = queue.cancel.cancelled() => {
                        for j in &batch {
                            self.known.drop_key(j.key, j.generation);
                        }
                        break
                    },
                    g = self.gate.clone().write_owned() => Gate::Alone { _held: g },
                }
            } else {
                Gate::Shared {
                    _held: self.gate.clone().read_owned().await,
                }
            };
            let engine = self.clone();
            let queue = queue.clone();
            self.calls
                .spawn(engine.run(queue, slot, batch, permit, gate));
        }
        // Removed or shutting down: whatever is still queued stays pending in the store; let
        // the sweeper see it again should this instance come back.
        rx.close();
        if let Some(job) = held {
            self.known.drop_key(job.key, job.generation);
        }
        while let Ok(job) = rx.try_recv() {
            self.known.drop_key(job.key, job.generation);
        }
    }
}

#[cfg(test)]
#[path = "delivery/linger_tests.rs"]
mod linger_tests;
