//! The plugin registry: opens every `[[plugins]]` library once and creates the instances (their
//! concurrency limit lives with the delivery engine's queue, so it holds across reloads). An
//! in-process library is loaded here: that open file's content checked against a pinned
//! `sha256`, then that same file loaded and ABI-checked by `gateway_plugin::host`. An isolated
//! one (`isolation = "process"`) is never loaded in this process: the file is only opened,
//! hashed and checked against its pin (`library::Examined`); its child loads it (refusing any other
//! file) and reports the descriptor back. A panicked instance is replaced here by a fresh one
//! built from the same config.
//!
//! Plugin log lines flow into `tracing` under the target `plugin`, inside the span of the delivery
//! being handled (so they carry its event id).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use gateway_plugin::host::{CallOutcome, DescriptorSummary, InitError, LibraryFile, LogSink};
use gateway_plugin::Level;

use crate::config::{Config, Isolation, PluginSpec};
use crate::isolation::parent::{Isolated, StartError};

mod called;
mod in_process;
mod library;
mod shutdowns;

pub use shutdowns::{dropping_and_waiting, shutdowns_ended, shutdowns_idle};

pub use called::Called;
pub(crate) use in_process::{restart_failed, unavailable};
pub use library::{check_examined, file_sha256, open_all};

use in_process::InProcess;
use library::{changed_on_disk, examine, loaded, open, Opened};

/// How an instance runs.
enum Runner {
    /// In the gateway's process: the library is loaded here ([`in_process`]: the instance,
    /// and its replacement after a panic).
    InProcess(Box<InProcess>),
    /// `isolation = "process"`: the instance's child process, which loads the file that hashes
    /// to `sha256` (what the gateway examined).
    ///
    /// `hidden`: how many `${NAME}` variables the config loads had read when its first child
    /// started (the names kept out of its environment: [`crate::config::env`]); a reload whose
    /// config reads a new one replaces the instance, so no running child keeps that secret.
    Isolated {
        process: Isolated,
        sha256: String,
        hidden: usize,
    },
}

/// One configured plugin instance and its call limit.
pub struct PluginSlot {
    pub spec: PluginSpec,
    /// The library's descriptor: read here for an in-process library, reported by the child
    /// for an isolated one.
    descriptor: DescriptorSummary,
    config_dir: std::path::PathBuf,
    runner: Runner,
}

impl std::fmt::Debug for PluginSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginSlot")
            .field("name", &self.spec.name)
            .field("library", &self.spec.library)
            .field("descriptor", &self.descriptor)
            .finish()
    }
}

impl PluginSlot {
    /// The library's descriptor (for an isolated instance, as its process reported it).
    pub fn descriptor(&self) -> &DescriptorSummary {
        &self.descriptor
    }

    pub(crate) fn isolated(&self) -> Option<&Isolated> {
        match &self.runner {
            Runner::Isolated { process, .. } => Some(process),
            Runner::InProcess(_) => None,
        }
    }
}

impl PluginSlot {
    /// Calls the plugin (blocking).
    pub fn call(&self, delivery_json: &[u8]) -> CallOutcome {
        if let Some(iso) = self.isolated() {
            return iso
                .call_batch(&[delivery_json])
                .outcomes
                .pop()
                .unwrap_or_else(|| CallOutcome::Retry {
                    reason: "no outcome".into(),
                    retry_after: None,
                });
        }
        match self.instance() {
            Ok(current) => self.handle_on(current, delivery_json),
            Err(reason) => CallOutcome::Retry {
                reason,
                retry_after: None,
            },
        }
    }

    /// Calls the plugin with a batch (blocking): one outcome per delivery. When the plugin's
    /// batch entry panics as a whole, the instance is replaced and each delivery is handed to
    /// `handle` on its own, so one poison delivery ends only itself. A plugin without a batch
    /// entry (ABI 1.0) gets `handle` once per delivery. Either way, a delivery that panics has
    /// its instance replaced before the next one is handed over ([`PluginSlot::one_by_one`]).
    pub fn call_batch(&self, deliveries: &[&[u8]]) -> Called {
        if let Some(iso) = self.isolated() {
            return iso.call_batch(deliveries);
        }
        Called::once(match self.instance() {
            Ok(current) => return self.call_batch_on(current, deliveries),
            Err(reason) => unavailable(deliveries.len(), &reason),
        })
    }

    fn call_batch_on(&self, current: in_process::Current, deliveries: &[&[u8]]) -> Called {
        if deliveries.len() == 1 {
            return Called::once(vec![self.handle_on(current, deliveries[0])]);
        }
        if !current.instance.has_batch() {
            drop(current);
            return Called::once(self.one_by_one(deliveries).0);
        }
        match current.instance.handle_batch(deliveries) {
            Ok(outcomes) => {
                if outcomes
                    .iter()
                    .any(|o| matches!(o, CallOutcome::Panicked { .. }))
                {
                    self.retire(current);
                }
                Called::once(outcomes)
            }
            Err(message) => {
                self.retire(current);
                let shown = crate::delivery::detail::cap(message.clone());
                tracing::error!(panic = %shown, deliveries = deliveries.len(),
                    "plugin panicked in a batch: restarting the instance and handling each delivery on its own");
                match self.restart_now() {
                    Ok(()) => Called::again(
                        self.one_by_one(deliveries),
                        &format!("its batch panicked as a whole ({shown})"),
                    ),
                    // Which delivery panicked is not known: each is retried, the panic named.
                    Err(reason) => Called::once(unavailable(
                        deliveries.len(),
                        &format!("the batch panicked ({message}); {reason}"),
                    )),
                }
            }
        }
    }

    /// Replaces the instance with a fresh one (after a panic). The old one is shut down when
    /// its last in-flight call returns; if the fresh one cannot be made, the old one is
    /// retired all the same and calls try again after a backoff ([`in_process`]).
    pub fn reinit(&self) -> Result<(), InitError> {
        match &self.runner {
            // The call that panicked already retired its process (it leaves once its other
            // calls return) and the next call starts a new one: nothing is killed here (a kill
            // would reach calls running beside it, or in the new process).
            Runner::Isolated { .. } => Ok(()),
            Runner::InProcess(runner) => runner.replace(|library| self.instantiate(library)),
        }
    }
}

impl PluginSlot {
    /// A call outlived `[delivery] timeout`: an isolated instance's process is killed (its calls
    /// end as retries; the next call starts a new one). In-process native code cannot be
    /// stopped: its call keeps its permit until it returns. Blocking (a signal, short-held
    /// locks): the engine runs it on the blocking pool, see [`PluginSlot::on_timeout_task`].
    pub fn on_timeout(&self) {
        if let Some(iso) = self.isolated() {
            tracing::warn!(plugin = %self.spec.name, "call past its timeout: killing the plugin process");
            iso.kill();
        }
    }

    /// [`PluginSlot::on_timeout`] as a task for `tokio::task::spawn_blocking`, carrying the
    /// caller's span: an async worker must never take the locks it takes. The engine does not
    /// await it: the timed-out attempt is recorded as a retry at once either way, and the call
    /// itself (which the engine keeps watching) returns when its process is gone.
    pub fn on_timeout_task(self: &Arc<Self>) -> impl FnOnce() + Send + 'static {
        let slot = self.clone();
        let span = tracing::Span::current();
        move || span.in_scope(|| slot.on_timeout())
    }
}

/// All plugin instances by name.
#[derive(Debug, Default, Clone)]
pub struct Plugins {
    slots: HashMap<String, Arc<PluginSlot>>,
    /// Each name's `max_concurrency` in the config these instances serve: an instance kept
    /// across a reload that changed only that still has the old value in its spec.
    limits: HashMap<String, usize>,
    /// Each name's `init_timeout` in that config, for the same reason: given to a kept isolated
    /// instance (its restarts) only once these are installed ([`Plugins::installed`]), never
    /// by a reload that is refused.
    init_timeouts: HashMap<String, std::time::Duration>,
}

impl Plugins {
    pub fn iter(&self) -> impl Iterator<Item = &Arc<PluginSlot>> {
        self.slots.values()
    }

    /// Whether an in-process instance of these is not among `next`'s: replacing these with
    /// `next` lets it go, and its `shutdown` (native code) runs when its last user drops it.
    pub fn lets_go_in_process(&self, next: &Plugins) -> bool {
        self.slots
            .values()
            .any(|s| s.isolated().is_none() && !next.slots.values().any(|n| Arc::ptr_eq(n, s)))
    }

    /// These instances are the running ones now (a reload installed them): a kept isolated
    /// instance's restarts take its `init_timeout` as configured now.
    pub fn installed(&self) {
        for slot in self.slots.values() {
            if let (Some(process), Some(t)) =
                (slot.isolated(), self.init_timeouts.get(&slot.spec.name))
            {
                process.set_init_timeout(*t);
            }
        }
    }

    /// How many calls of `slot`'s name may run at once (its `max_concurrency`).
    pub fn limit(&self, slot: &PluginSlot) -> usize {
        self.limits
            .get(&slot.spec.name)
            .copied()
            .unwrap_or(slot.spec.max_concurrency)
    }
}

/// Opens every library and creates every instance.
pub fn start(config: &Config) -> Result<Plugins, Vec<String>> {
    reload(&Plugins::default(), config, || ())
}

/// Whether `slot` can serve `spec` as it is. An isolated instance is kept while the file at its
/// path still hashes to what its child loaded: a new build installed at the same path is
/// examined and started by the reload (its child would refuse it at the next restart anyway).
/// A file that cannot be examined now (missing mid-deploy, unreadable, or no longer matching
/// its pin) does not refuse a reload that leaves the instance unchanged: the running child
/// keeps running what it loaded, with a warning (a restart of it refuses any other file). An
/// in-process instance is kept while the file at its path holds the bytes it loaded (a new file
/// with the same bytes too); other bytes refuse the reload (libraries are never unloaded), an
/// unreadable file only warns.
fn reusable(slot: &PluginSlot, spec: &PluginSpec, dir: &Path) -> Result<bool, String> {
    if !slot.spec.same_instance(spec) || slot.config_dir != dir {
        return Ok(false);
    }
    match &slot.runner {
        // The instance keeps the library it loaded; other bytes at the path now (a rebuild
        // renamed over it, or written into it) are refused as in `open`: reusing the instance
        // silently would leave the operator believing the new build runs. The same bytes
        // installed again (a new file) keep it: what runs is what is on disk.
        Runner::InProcess(_) => {
            let path = spec.library.as_path();
            match LibraryFile::open(path) {
                Ok(now) => {
                    let first = loaded().lock().ok().and_then(|l| l.get(path).cloned());
                    if first.is_some_and(|(sha256, _)| sha256 != now.sha256()) {
                        return Err(changed_on_disk(path));
                    }
                    Ok(true)
                }
                Err(error) => {
                    tracing::warn!(plugin = %spec.name, %error,
                        "the library of an unchanged instance cannot be read: keeping the instance as it runs");
                    Ok(true)
                }
            }
        }
        // A variable read with `${NAME}` since its child started is a secret that child
        // still holds in its environment (a process's environment is set when it starts):
        // replaced, its successor starts without it.
        Runner::Isolated { hidden, .. }
            if crate::config::env::config_variable_count() > *hidden =>
        {
            tracing::info!(plugin = %spec.name,
                "the config reads a variable it did not read when this isolated instance started: its process is replaced, so that it no longer holds it");
            Ok(false)
        }
        Runner::Isolated { sha256, .. } => match examine(spec) {
            Ok(found) => Ok(found.sha256 == *sha256),
            Err(error) => {
                tracing::warn!(plugin = %spec.name, %error,
                    "the library of an unchanged isolated instance cannot be examined: keeping the instance as it runs");
                Ok(true)
            }
        },
    }
}

/// Builds the instances of `config`, reusing from `current` every instance whose spec (library,
/// config, isolation, pin; `max_concurrency` aside, the engine applies it) is unchanged (and,
/// isolated, whose file is); the others are created fresh. Nothing is swapped here: on error the new instances are dropped (and shut down) and
/// `current` is untouched.
pub fn reload<G>(
    current: &Plugins,
    config: &Config,
    native: impl FnOnce() -> G,
) -> Result<Plugins, Vec<String>> {
    let mut problems = Vec::new();
    let mut slots = HashMap::new();
    let mut fresh = Vec::new();
    // Held from the first in-process library this reload loads (its constructors, then its
    // `init`, run in this process) to the end: `native()` (the engine's gate, shared).
    let mut native = Some(native);
    let mut held = None;
    for (i, spec) in config.plugins.iter().enumerate() {
        let kept = match current.slots.get(&spec.name) {
            Some(slot) => reusable(slot, spec, &config.dir).map(|ok| ok.then(|| slot.clone())),
            None => Ok(None),
        };
        let opened = match kept {
            Ok(Some(slot)) => {
                // Kept: an isolated one's restarts take its `init_timeout` as configured now,
                // once this reload is installed (`Plugins::installed`).
                slots.insert(spec.name.clone(), slot);
                continue;
            }
            Ok(None) => {
                if spec.isolation == Isolation::None && held.is_none() {
                    held = native.take().map(|f| f());
                }
                open(spec)
            }
            Err(e) => Err(e),
        };
        match opened {
            Ok(opened) => fresh.push((i, spec.clone(), opened)),
            Err(e) => problems.push(format!("plugins[{i}] ({}): {e}", spec.name)),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    for (i, spec, opened) in fresh {
        match start_one(&spec, opened, &config.dir) {
            Ok(slot) => {
                let d = &slot.descriptor;
                tracing::info!(
                    plugin = %spec.name,
                    library = %spec.library.display(),
                    version = d.version,
                    isolation = spec.isolation.as_str(),
                    "plugin started"
                );
                slots.insert(spec.name.clone(), Arc::new(slot));
            }
            // The library was not loaded (by the child): placed like a load error here.
            Err(StartError::Load(e)) => problems.push(format!("plugins[{i}] ({}): {e}", spec.name)),
            Err(StartError::Init(e)) => problems.push(e.to_string()),
        }
    }
    if !problems.is_empty() {
        // The fresh instances of a refused reload are let go here: their `shutdown`s (native
        // code) end before the share is given up.
        dropping_and_waiting(config.delivery.timeout, move || drop(slots));
        drop(held);
        return Err(problems);
    }
    drop(held);
    {
        let limits = config
            .plugins
            .iter()
            .map(|p| (p.name.clone(), p.max_concurrency))
            .collect();
        let init_timeouts = config
            .plugins
            .iter()
            .map(|p| (p.name.clone(), p.init_timeout))
            .collect();
        Ok(Plugins {
            slots,
            limits,
            init_timeouts,
        })
    }
}

/// Creates the instance of an opened library: here, or in its child process.
fn start_one(spec: &PluginSpec, opened: Opened, dir: &Path) -> Result<PluginSlot, StartError> {
    let (descriptor, runner) = match opened {
        Opened::Loaded(library) => {
            let instance =
                in_process::instantiate_within(&library, spec, dir).map_err(StartError::Init)?;
            let runner = Runner::InProcess(Box::new(InProcess::new(library.clone(), instance)));
            (library.summary(), runner)
        }
        Opened::Examined(examined) => {
            // Before the child starts: it starts without at least these (the set only grows).
            let hidden = crate::config::env::config_variable_count();
            let (process, descriptor) = Isolated::start(
                &spec.name,
                &spec.library,
                (&examined.sha256, examined.pinned),
                (&spec.config, spec.init_timeout),
                dir,
                log_sink(),
            )?;
            let runner = Runner::Isolated {
                process,
                sha256: examined.sha256,
                hidden,
            };
            (descriptor, runner)
        }
    };
    Ok(PluginSlot {
        spec: spec.clone(),
        descriptor,
        config_dir: dir.to_path_buf(),
        runner,
    })
}

/// Routes plugin log lines into tracing (target `plugin`).
pub fn log_sink() -> LogSink {
    Arc::new(|instance: &str, level: Level, message: &str| match level {
        Level::Error => tracing::error!(target: "plugin", plugin = instance, "{message}"),
        Level::Warn => tracing::warn!(target: "plugin", plugin = instance, "{message}"),
        Level::Info => tracing::info!(target: "plugin", plugin = instance, "{message}"),
        Level::Debug => tracing::debug!(target: "plugin", plugin = instance, "{message}"),
        Level::Trace => tracing::trace!(target: "plugin", plugin = instance, "{message}"),
    })
}
