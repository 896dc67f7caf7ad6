//! The delivery engine: runs every (event, plugin) delivery off the request path.
//!
//! - The ingress hands fresh deliveries over right after their commit ([`Engine::submit`]); a
//!   sweeper reloads due deliveries from the store (at start: everything unfinished, including
//!   after `kill -9`; later: retries whose in-memory timer was lost, overflow, and replays made by
//!   the CLI while the gateway runs).
//! - Each plugin has its own FIFO queue and dispatcher, bounded by its semaphore; calls run on the
//!   blocking pool under a timeout. A slow plugin only fills its own queue.
//! - Every outcome is persisted before the delivery is forgotten in memory; the store is the
//!   truth. A delivery is at-least-once: a crash mid-call repeats that call.

pub mod backoff;
mod sweep;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use gateway_plugin::host::CallOutcome;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::DeliveryConfig;
use crate::metrics;
use crate::plugins::{PluginSlot, Plugins};
use crate::store::{sqlite::now_ms, Finish, Store};

/// Deliveries queued in memory per plugin; beyond this the store holds them until the sweeper.
const QUEUE_CAPACITY: usize = 10_000;
/// How often the sweeper looks at the store when nothing wakes it.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// How many due deliveries one sweep loads.
const SWEEP_BATCH: usize = 1_000;
/// Fresh first attempts belong to the ingress hand-off for this long; the sweeper leaves them
/// alone so a delivery is not queued twice (it takes them after, e.g. when a queue was full).
const HANDOFF_GRACE_MS: i64 = 2_000;
/// How long a finished key is remembered, so a sweep that read it as pending just before it
/// finished does not run it again.
const FORGET_AFTER: Duration = Duration::from_secs(30);

/// One delivery ready to run: the store's pending record, event body included.
pub use crate::store::PendingDelivery as Job;

/// A running plugin call: its outcome and the concurrency permit it holds.
type Call = tokio::task::JoinHandle<(CallOutcome, tokio::sync::OwnedSemaphorePermit)>;

/// The delivery id a plugin sees: stable for an (event, plugin instance) pair.
pub fn delivery_id(event_id: &str, plugin: &str) -> String {
    format!("{event_id}:{plugin}")
}

/// The JSON handed to `handle` (the fields of `gateway_plugin::Delivery`).
#[derive(Serialize)]
struct DeliveryPayload<'a> {
    delivery_id: String,
    attempt: u32,
    plugin: &'a str,
    app: &'a str,
    event_id: &'a str,
    event_type: &'a str,
    received_at: i64,
    event: &'a RawValue,
}

/// One plugin instance's queue and dispatcher.
struct PluginQueue {
    tx: mpsc::Sender<Job>,
    /// The instance to call; replaced in place when a reload changes its config.
    slot: RwLock<Arc<PluginSlot>>,
    /// Stops this dispatcher when a reload removes the instance.
    cancel: CancellationToken,
}

impl PluginQueue {
    fn slot(&self) -> Option<Arc<PluginSlot>> {
        self.slot.read().ok().map(|s| s.clone())
    }
}

/// The engine. Cheap to share (`Arc`).
pub struct Engine {
    store: Arc<dyn Store>,
    /// Retry policy and call timeout; replaced on reload.
    config: RwLock<DeliveryConfig>,
    /// Per plugin instance name; replaced on reload.
    queues: RwLock<HashMap<String, Arc<PluginQueue>>>,
    /// Keys queued, running or waiting for a retry timer (`None`), or recently finished
    /// (`Some(when)`): the sweeper skips them.
    known: Mutex<HashMap<i64, Option<Instant>>>,
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
            known: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            cancel: CancellationToken::new(),
            calls: TaskTracker::new(),
            started_at_ms: now_ms(),
        });
        engine.reconfigure(&plugins, config);
        tokio::spawn(engine.clone().sweep());
        engine
    }

    fn config(&self) -> DeliveryConfig {
        self.config.read().map(|c| *c).unwrap_or_default()
    }

    /// Applies a (re)loaded set of plugin instances and delivery settings: new instances get a
    /// queue and a dispatcher, changed ones are swapped in place (running calls finish on the old
    /// instance, which is then shut down), removed ones stop taking work. Their pending
    /// deliveries stay in the store until an instance of that name exists again.
    pub fn reconfigure(self: &Arc<Self>, plugins: &Plugins, config: DeliveryConfig) {
        self.add_plugins(plugins, config);
        self.retain_plugins(plugins);
    }

    /// The first half of [`Engine::reconfigure`]: add and replace, remove nothing. A reload
    /// calls this before it swaps the routes, and [`Engine::retain_plugins`] after, so no
    /// request is ever routed to an instance without a queue.
    pub fn add_plugins(self: &Arc<Self>, plugins: &Plugins, config: DeliveryConfig) {
        if let Ok(mut c) = self.config.write() {
            *c = config;
        }
        let Ok(mut queues) = self.queues.write() else {
            return;
        };
        for slot in plugins.iter() {
            match queues.get(&slot.spec.name) {
                Some(q) => {
                    if let Ok(mut current) = q.slot.write() {
                        if !Arc::ptr_eq(&current, slot) {
                            *current = slot.clone();
                        }
                    }
                }
                None => {
                    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
                    let q = Arc::new(PluginQueue {
                        tx,
                        slot: RwLock::new(slot.clone()),
                        cancel: self.cancel.child_token(),
                    });
                    queues.insert(slot.spec.name.clone(), q.clone());
                    tokio::spawn(self.clone().dispatch(q, rx));
                }
            }
        }
        drop(queues);
        // Deliveries of a plugin that just came (back) may be waiting in the store.
        self.wake.notify_one();
    }

    /// Stops the dispatchers of instances not in `plugins`.
    pub fn retain_plugins(&self, plugins: &Plugins) {
        if let Ok(mut queues) = self.queues.write() {
            queues.retain(|name, q| {
                let keep = plugins.iter().any(|s| &s.spec.name == name);
                if !keep {
                    q.cancel.cancel();
                }
                keep
            });
        }
    }

    /// Queues a delivery (no-op if it is already queued or running).
    pub fn submit(&self, job: Job) {
        let queue = self
            .queues
            .read()
            .ok()
            .and_then(|q| q.get(&job.plugin).cloned());
        let Some(queue) = queue else {
            tracing::warn!(plugin = %job.plugin, event_id = %job.event_id,
                "delivery for a plugin that is not configured; left pending");
            return;
        };
        if !self.remember(job.key) {
            return;
        }
        let key = job.key;
        if queue.tx.try_send(job).is_err() {
            // Full (or shutting down): the store has it; the sweeper will bring it back.
            self.forget(key);
        }
    }

    /// Marks a key active; false if it already is.
    fn remember(&self, key: i64) -> bool {
        let Ok(mut known) = self.known.lock() else {
            return false;
        };
        !matches!(known.insert(key, None), Some(None))
    }

    fn forget(&self, key: i64) {
        if let Ok(mut k) = self.known.lock() {
            k.insert(key, Some(Instant::now()));
        }
    }

    /// Whether a sweep that started at `since` must skip this key.
    fn skip_in_sweep(&self, key: i64, since: Instant) -> bool {
        match self.known.lock() {
            Ok(k) => match k.get(&key) {
                Some(None) => true,
                Some(Some(finished)) => *finished >= since,
                None => false,
            },
            Err(_) => true,
        }
    }

    fn prune_forgotten(&self) {
        if let Ok(mut k) = self.known.lock() {
            k.retain(|_, v| v.is_none_or(|t| t.elapsed() < FORGET_AFTER));
        }
    }

    /// Stops taking new work and waits up to `grace` for running calls; returns whether every
    /// call finished. Unfinished deliveries stay pending in the store.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.cancel.cancel();
        self.calls.close();
        tokio::time::timeout(grace, self.calls.wait()).await.is_ok()
    }

    /// Number of calls running now.
    pub fn running(&self) -> usize {
        self.calls.len()
    }

    async fn dispatch(self: Arc<Self>, queue: Arc<PluginQueue>, mut rx: mpsc::Receiver<Job>) {
        loop {
            let job = tokio::select! {
                biased;
                _ = queue.cancel.cancelled() => break,
                job = rx.recv() => match job { Some(j) => j, None => break },
            };
            let Some(slot) = queue.slot() else {
                self.forget(job.key);
                continue;
            };
            let permit = tokio::select! {
                biased;
                _ = queue.cancel.cancelled() => { self.forget(job.key); break },
                p = slot.permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let engine = self.clone();
            let slot = slot.clone();
            self.calls
                .spawn(async move { engine.run(slot, job, permit).await });
        }
        // Removed or shutting down: whatever is still queued stays pending in the store; let
        // the sweeper see it again should this instance come back.
        rx.close();
        while let Ok(job) = rx.try_recv() {
            self.forget(job.key);
        }
    }

    async fn run(
        self: Arc<Self>,
        slot: Arc<PluginSlot>,
        job: Job,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        let attempt = job.attempts + 1;
        let span = tracing::info_span!("delivery", event_id = %job.event_id,
            plugin = %job.plugin, attempt);
        async {
            let payload = match build_payload(&job, attempt) {
                Ok(p) => p,
                Err(e) => {
                    self.finish(&job, attempt, Finish::Dead { error: e }, "reject")
                        .await;
                    return;
                }
            };
            let started = Instant::now();
            let call_slot = slot.clone();
            let call_span = tracing::Span::current();
            let mut call: Call = tokio::task::spawn_blocking(move || {
                // The permit comes back with the outcome and is held until the outcome is
                // recorded, so at most `max_concurrency` deliveries per plugin are ever "called
                // but not recorded" (the duplicates a crash can cause). After a timeout it stays
                // with the call until the call really returns.
                let outcome = call_span.in_scope(|| call_slot.call(&payload));
                (outcome, permit)
            });
            let timeout = self.config().timeout;
            let (outcome, _permit, late) = match tokio::time::timeout(timeout, &mut call).await {
                Ok(Ok((outcome, permit))) => (Some(outcome), Some(permit), None),
                Ok(Err(e)) => (
                    Some(CallOutcome::Panicked {
                        message: format!("plugin call failed: {e}"),
                    }),
                    None,
                    None,
                ),
                // Timed out: the call keeps running (and keeps its permit); keep its handle.
                Err(_) => (None, None, Some(call)),
            };
            let elapsed = started.elapsed();
            metrics::get()
                .plugin_latency
                .get_or_create(&metrics::plugin(&job.plugin))
                .observe(elapsed.as_secs_f64());
            self.conclude(&slot, &job, attempt, outcome, elapsed, late)
                .await;
        }
        .instrument(span)
        .await
    }

    async fn conclude(
        self: &Arc<Self>,
        slot: &Arc<PluginSlot>,
        job: &Job,
        attempt: u32,
        outcome: Option<CallOutcome>,
        elapsed: Duration,
        late: Option<Call>,
    ) {
        let ms = elapsed.as_millis() as u64;
        let (label, retry) = match outcome {
            Some(CallOutcome::Ok) => {
                tracing::info!(duration_ms = ms, "delivered");
                self.finish(job, attempt, Finish::Done, "ok").await;
                return;
            }
            Some(CallOutcome::Reject { reason }) => {
                tracing::warn!(duration_ms = ms, %reason, "rejected by plugin: dead letter");
                self.finish(job, attempt, Finish::Dead { error: reason }, "reject")
                    .await;
                return;
            }
            Some(CallOutcome::Panicked { message }) => {
                tracing::error!(duration_ms = ms, %message, "plugin panicked: dead letter, restarting instance");
                // The plugin's own init (and the old instance's shutdown) may block.
                let fresh = slot.clone();
                match tokio::task::spawn_blocking(move || fresh.reinit()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "plugin instance could not be restarted")
                    }
                    Err(e) => tracing::error!(error = %e, "plugin restart failed"),
                }
                let error = format!("panicked: {message}");
                self.finish(job, attempt, Finish::Dead { error }, "panicked")
                    .await;
                return;
            }
            Some(CallOutcome::Retry {
                reason,
                retry_after,
            }) => ("retry", (reason, retry_after)),
            None => (
                "timeout",
                (
                    format!("timed out after {}ms", self.config().timeout.as_millis()),
                    None,
                ),
            ),
        };
        let (reason, retry_after) = retry;
        let config = self.config();
        if attempt >= config.max_attempts {
            tracing::warn!(duration_ms = ms, %reason, "retries exhausted: dead letter");
            let error = format!("{reason} (gave up after {attempt} attempts)");
            self.finish(job, attempt, Finish::Dead { error }, label)
                .await;
            return;
        }
        let delay = backoff::delay(
            attempt,
            config.initial_backoff,
            config.max_backoff,
            retry_after,
            &mut rand::thread_rng(),
        );
        let next_at_ms =
            now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
        if let Some(max_age) = config.max_age {
            if next_at_ms - job.received_at_ms > max_age.as_millis() as i64 {
                tracing::warn!(duration_ms = ms, %reason, "delivery older than max_age: dead letter");
                let error = format!(
                    "{reason} (gave up: the next attempt would exceed max_age {}ms)",
                    max_age.as_millis()
                );
                self.finish(job, attempt, Finish::Dead { error }, label)
                    .await;
                return;
            }
        }
        tracing::info!(duration_ms = ms, %reason, retry_in_ms = delay.as_millis() as u64, "will retry");
        let finish = Finish::Retry {
            next_at_ms,
            error: reason,
        };
        if !self.persist(job, attempt, finish, label).await {
            return;
        }
        metrics::get()
            .retries
            .get_or_create(&metrics::plugin(&job.plugin))
            .inc();
        // Keep the key known while the timer runs so the sweeper does not double-queue it.
        let engine = self.clone();
        let mut next = job.clone();
        next.attempts = attempt;
        let deadline = tokio::time::Instant::now() + delay;
        let retry = async move {
            if let Some(call) = late {
                // Never start the next attempt beside a call that is still running; and if the
                // timed-out call succeeds after all, that is the delivery.
                let finished = tokio::select! {
                    r = call => r.ok(),
                    _ = engine.cancel.cancelled() => {
                        engine.forget(next.key);
                        return;
                    }
                };
                if let Some((CallOutcome::Ok, _permit)) = finished {
                    tracing::info!("the timed-out call succeeded after all: delivered");
                    engine.finish(&next, attempt, Finish::Done, "ok").await;
                    return;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    engine.forget(next.key);
                    engine.submit(next);
                }
                _ = engine.cancel.cancelled() => engine.forget(next.key),
            }
        };
        tokio::spawn(retry.instrument(tracing::Span::current()));
    }

    /// Persists a final (or retry) state and counts it; returns false if it was not recorded
    /// (store failure, or the delivery was replayed meanwhile — then the replay stands).
    async fn persist(&self, job: &Job, attempt: u32, finish: Finish, label: &str) -> bool {
        let m = metrics::get();
        m.deliveries
            .get_or_create(&metrics::OutcomeLabels {
                plugin: job.plugin.clone(),
                outcome: label.to_owned(),
            })
            .inc();
        let dead = matches!(finish, Finish::Dead { .. });
        match self
            .store
            .finish(job.key, job.attempts, attempt, finish)
            .await
        {
            Ok(false) => {
                tracing::info!("outcome not recorded: the delivery was replayed meanwhile");
                self.forget(job.key);
                false
            }
            Ok(true) => {
                if dead {
                    m.dead_letters
                        .get_or_create(&metrics::plugin(&job.plugin))
                        .inc();
                }
                true
            }
            Err(e) => {
                // Still pending in the store: the sweeper will run it again.
                tracing::error!(error = %e, "could not record delivery outcome; will redeliver");
                self.forget(job.key);
                false
            }
        }
    }

    async fn finish(&self, job: &Job, attempt: u32, finish: Finish, label: &str) {
        if self.persist(job, attempt, finish, label).await {
            self.forget(job.key);
        }
    }
}

fn build_payload(job: &Job, attempt: u32) -> Result<Vec<u8>, String> {
    let event: &RawValue =
        serde_json::from_str(&job.body).map_err(|e| format!("stored event is not JSON: {e}"))?;
    serde_json::to_vec(&DeliveryPayload {
        delivery_id: delivery_id(&job.event_id, &job.plugin),
        attempt,
        plugin: &job.plugin,
        app: &job.app,
        event_id: &job.event_id,
        event_type: &job.event_type,
        received_at: job.received_at_ms,
        event,
    })
    .map_err(|e| format!("cannot build delivery: {e}"))
}
