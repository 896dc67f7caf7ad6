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
mod decide;
pub(crate) mod detail;
mod dispatch;
pub mod health;
mod known;
mod orphans;
pub mod payload;
mod queue;
mod record;
mod renew;
mod restart;
mod returned;
#[cfg(test)]
mod store_health_tests;
mod sweep;
#[cfg(test)]
mod test_store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::DeliveryConfig;
use crate::plugins::Plugins;
use crate::store::{sqlite::now_ms, Store};
use known::Known;
use queue::PluginQueue;

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

    /// Returns once the store takes writes (true), or when `cancel` fires (false). While it
    /// refuses them, `probe` (the store's write probe) is tried once a second: the write that
    /// failed may never be tried again (a start mark is given up when a reload removes its
    /// instance), and no other write of the engine would then say that the store recovered.
    async fn writable(
        &self,
        probe: impl Fn() -> crate::store::StoreFuture<()>,
        cancel: &CancellationToken,
    ) -> bool {
        loop {
            let notified = self.changed.notified();
            if self.ok.load(Ordering::SeqCst) {
                return true;
            }
            tokio::select! {
                _ = notified => {}
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    tokio::select! {
                        probed = probe() => if probed.is_ok() {
                            self.set(true);
                        },
                        _ = cancel.cancelled() => return false,
                    }
                }
            }
        }
    }
}

/// The engine. Cheap to share (`Arc`).
/// A share of the engine's gate held for a reload's plugin starts ([`Engine::beside_calls_blocking`]).
pub struct BesideCalls(Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>);

impl Drop for BesideCalls {
    fn drop(&mut self) {
        if let Some((done, holder)) = self.0.take() {
            drop(done);
            let _ = holder.join();
        }
    }
}

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
    /// The dispatchers, the sweeper and the claim renewals: they hold the engine (and through
    /// it the plugin instances) until they see the stop ([`Engine::background_ended`]).
    tasks: TaskTracker,
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
    /// From a blocking thread: a share of the gate calls share (so no call that must run
    /// alone, a delivery with a crash behind it, runs meanwhile), held until the guard drops or
    /// `[delivery] timeout` passes, as a hung call's is: for a reload's in-process library
    /// loads and `init`s (native code that may kill the process, which must not be charged to
    /// such a delivery). Waits for a call running alone to end: at most its timeout, but its
    /// hold also covers the writes of its start mark and outcome, retried while the store
    /// refuses writes (so a reload waits for the store then).
    pub fn beside_calls_blocking(&self) -> BesideCalls {
        let limit = self.config().timeout;
        let gate = self.gate.clone();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return BesideCalls(None);
        };
        let share = rt.block_on(gate.read_owned());
        let (done, ended) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let _ = ended.recv_timeout(limit);
            drop(share);
        });
        BesideCalls(Some((done, holder)))
    }

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
            tasks: TaskTracker::new(),
            started_at_ms: now_ms(),
        });
        engine.add_plugins(&plugins, config);
        engine.retain_plugins(&plugins);
        engine.tasks.spawn(engine.clone().sweep());
        if let Some(lease) = engine.store.lease() {
            engine
                .tasks
                .spawn(engine.clone().renew_claims(renew::every(lease)));
        }
        engine
    }

    fn config(&self) -> DeliveryConfig {
        self.config.read().map(|c| *c).unwrap_or_default()
    }

    /// Adds and replaces instances (a reload calls this before it swaps the routes, and
    /// [`Engine::retain_plugins`] after, so no event is routed to an instance without a queue).
    /// A replaced instance keeps its queue and limit: calls already running finish on the old
    /// instance, every call starting from now runs on the new one. A kept instance (unchanged
    /// but for `max_concurrency`) gets the new limit.
    pub fn add_plugins(self: &Arc<Self>, plugins: &Plugins, config: DeliveryConfig) {
        if let Ok(mut c) = self.config.write() {
            *c = config;
        }
        let Ok(mut queues) = self.queues.write() else {
            return;
        };
        for slot in plugins.iter() {
            let limit = plugins.limit(slot);
            match queues.get(&slot.spec.name) {
                Some(q) => q.replace(slot, limit),
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
                            slot: old.slot.clone(),
                            permits: old.permits.clone(),
                            limit: Mutex::new(old.limit.lock().map(|l| *l).unwrap_or(0)),
                            hung: old.hung.clone(),
                            running: old.running.clone(),
                            cancel: self.cancel.child_token(),
                        },
                        None => PluginQueue {
                            tx,
                            slot: Arc::new(RwLock::new(slot.clone())),
                            permits: Arc::new(Semaphore::new(limit)),
                            limit: Mutex::new(limit),
                            hung: Arc::default(),
                            running: Arc::default(),
                            cancel: self.cancel.child_token(),
                        },
                    });
                    q.replace(slot, limit);
                    queues.insert(slot.spec.name.clone(), q.clone());
                    self.tasks.spawn(self.clone().dispatch(q, rx));
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
        }
        self.prune_retired();
        self.check_orphans();
        self.wake.notify_one();
    }

    /// Forgets the removed queues whose calls have all returned (at each reload and each
    /// sweep): a retired queue holds its instance, which must not outlive its calls (an
    /// instance's `shutdown` releases what it holds, e.g. a file a successor waits for).
    fn prune_retired(&self) {
        if let Ok(mut retired) = self.retired.lock() {
            retired.retain(|_, q| q.running() > 0);
        }
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
            // A removed plugin's whole backlog comes by here at each sweep: at most 10 lines a
            // second, the next one counting those not logged.
            static UNCONFIGURED: std::sync::LazyLock<crate::ingress::log_limit::RefusalLog> =
                std::sync::LazyLock::new(Default::default);
            if let Some(skipped) = UNCONFIGURED.admit(std::time::Instant::now()) {
                tracing::warn!(plugin = %job.plugin, event_id = %job.event_id, skipped,
                    "delivery for a plugin instance that is not configured; dead-lettered after removed_plugin_grace");
            }
            self.known.drop_key(key, generation);
            self.check_orphans();
            return;
        };
        if queue.tx.try_send(job).is_err() {
            // Full (or shutting down): the store has it; the sweeper will bring it back.
            self.known.drop_key(key, generation);
        }
    }

    /// Starts no more plugin calls: called as soon as a stop begins, so no call starts during
    /// the listeners' drain (one started near the end of `shutdown_grace` would be cut off by
    /// the exit: its plugin may have acted with no outcome recorded, and the next start would
    /// count a crash). Events stored meanwhile stay pending for the next start (or, on
    /// PostgreSQL, for the other replicas once the stop releases its claims). Running calls go
    /// on, and their outcomes are recorded ([`Engine::shutdown_then`] waits for them).
    pub fn stop_calls(&self) {
        self.cancel.cancel();
        self.calls.close();
    }

    /// Stops taking new work ([`Engine::stop_calls`]) and waits up to `grace` for running
    /// calls; returns whether every call finished. Unfinished deliveries stay pending in the
    /// store. `stopped` runs once no new call can start, before the wait for the running ones
    /// (the stop tells isolated plugins' processes to leave there: each finishes its calls,
    /// then runs its `shutdown`, beside the other plugins' calls).
    pub async fn shutdown_then(&self, grace: Duration, stopped: impl FnOnce()) -> bool {
        self.stop_calls();
        stopped();
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
                let running = q.running();
                let queued = QUEUE_CAPACITY.saturating_sub(q.tx.capacity());
                (name.clone(), self.book.get(name), running, limit, queued)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// After [`Engine::shutdown_then`]: waits (at most `within`) for the dispatchers, the sweeper
    /// and the claim renewals to end (the renewals go on while a call hung past its timeout
    /// runs), so that the engine's last user is its owner, whose drop lets the plugin instances
    /// go. Whether they all ended.
    pub async fn background_ended(&self, within: Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(within, self.tasks.wait())
            .await
            .is_ok()
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
}
