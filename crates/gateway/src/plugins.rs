//! The plugin registry: opens every `[[plugins]]` library (ABI-checked by `gateway_plugin::host`),
//! creates the instances, and owns each instance's concurrency limit. A panicked instance is
//! replaced here by a fresh one built from the same config.
//!
//! Plugin log lines flow into `tracing` under the target `plugin`, inside the span of the delivery
//! being handled (so they carry its event id).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use gateway_plugin::host::{CallOutcome, InitError, Instance, Library, LoadError, LogSink};
use gateway_plugin::Level;
use tokio::sync::Semaphore;

use crate::config::{Config, PluginSpec};

/// One configured plugin instance and its call limit.
pub struct PluginSlot {
    pub spec: PluginSpec,
    library: Library,
    config_dir: std::path::PathBuf,
    instance: RwLock<Instance>,
    /// At most `max_concurrency` calls of this instance run at once.
    pub permits: Arc<Semaphore>,
}

impl std::fmt::Debug for PluginSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginSlot")
            .field("name", &self.spec.name)
            .field("library", &self.library)
            .finish()
    }
}

impl PluginSlot {
    /// The current instance (a cheap clone; keeps it alive for the call).
    pub fn instance(&self) -> Option<Instance> {
        self.instance.read().ok().map(|i| i.clone())
    }

    /// Calls the plugin (blocking).
    pub fn call(&self, delivery_json: &[u8]) -> CallOutcome {
        match self.instance() {
            Some(i) => i.handle(delivery_json),
            None => CallOutcome::Retry {
                reason: "plugin instance unavailable".into(),
                retry_after: None,
            },
        }
    }

    /// Replaces the instance with a fresh one (after a panic). The old one is shut down when
    /// its last in-flight call returns.
    pub fn reinit(&self) -> Result<(), InitError> {
        let fresh = self.library.instantiate(
            &self.spec.name,
            &self.spec.config,
            &self.config_dir,
            log_sink(),
        )?;
        if let Ok(mut guard) = self.instance.write() {
            *guard = fresh;
        }
        Ok(())
    }
}

/// All plugin instances by name.
#[derive(Debug, Default, Clone)]
pub struct Plugins {
    slots: HashMap<String, Arc<PluginSlot>>,
}

impl Plugins {
    pub fn iter(&self) -> impl Iterator<Item = &Arc<PluginSlot>> {
        self.slots.values()
    }
}

/// Opens and ABI-checks every library of the config; all problems are returned together.
pub fn open_all(config: &Config) -> Result<Vec<(PluginSpec, Library)>, Vec<String>> {
    let mut problems = Vec::new();
    let mut out = Vec::new();
    for (i, spec) in config.plugins.iter().enumerate() {
        match Library::open(&spec.library) {
            Ok(lib) => out.push((spec.clone(), lib)),
            Err(e) => problems.push(format!("plugins[{i}] ({}): {}", spec.name, describe(&e))),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn describe(e: &LoadError) -> String {
    e.to_string()
}

/// Opens every library and creates every instance.
pub fn start(config: &Config) -> Result<Plugins, Vec<String>> {
    let libs = open_all(config)?;
    let mut problems = Vec::new();
    let mut slots = HashMap::new();
    for (spec, library) in libs {
        match instantiate(&spec, &library, &config.dir) {
            Ok(instance) => {
                tracing::info!(
                    plugin = %spec.name,
                    library = %library.path().display(),
                    version = library.version(),
                    "plugin started"
                );
                slots.insert(
                    spec.name.clone(),
                    Arc::new(PluginSlot {
                        permits: Arc::new(Semaphore::new(spec.max_concurrency)),
                        spec,
                        library,
                        config_dir: config.dir.clone(),
                        instance: RwLock::new(instance),
                    }),
                );
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    if problems.is_empty() {
        Ok(Plugins { slots })
    } else {
        Err(problems)
    }
}

fn instantiate(spec: &PluginSpec, library: &Library, dir: &Path) -> Result<Instance, InitError> {
    library.instantiate(&spec.name, &spec.config, dir, log_sink())
}

/// Routes plugin log lines into tracing (target `plugin`).
fn log_sink() -> LogSink {
    Arc::new(|instance: &str, level: Level, message: &str| match level {
        Level::Error => tracing::error!(target: "plugin", plugin = instance, "{message}"),
        Level::Warn => tracing::warn!(target: "plugin", plugin = instance, "{message}"),
        Level::Info => tracing::info!(target: "plugin", plugin = instance, "{message}"),
        Level::Debug => tracing::debug!(target: "plugin", plugin = instance, "{message}"),
        Level::Trace => tracing::trace!(target: "plugin", plugin = instance, "{message}"),
    })
}
