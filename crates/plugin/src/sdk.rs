//! The safe side of the plugin contract: the [`Plugin`] trait, the [`Delivery`] a plugin receives,
//! the [`Outcome`] it returns and the [`Host`] services it may use. No `unsafe` here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::abi;
use crate::events::{EventError, TypedEvent};

/// A plugin: built once per `[[plugins]]` entry from its JSON config, then asked to handle
/// deliveries, possibly from several threads at once (hence `Send + Sync`).
pub trait Plugin: Send + Sync + Sized + 'static {
    /// Builds an instance. `config` is the entry's `config` table as JSON (an empty object when
    /// absent), with `${VAR}`s already expanded by the host. An `Err` refuses the gateway's start
    /// (or `gateway check`, or a reload: the running instances stay) with the message shown to
    /// the operator; when `new` runs again to replace an instance after a panic, an `Err` makes
    /// the calls meanwhile retries (see "Crashes and isolation" in `docs/plugins.md`).
    fn new(config: serde_json::Value, host: Host) -> Result<Self, String>;

    /// Handles one delivery. Classify, don't retry: the host owns retries, backoff and dead
    /// letters. Blocking I/O is fine (this runs on a host blocking thread). Must be idempotent per
    /// `delivery.delivery_id`: delivery is at-least-once.
    fn handle(&self, delivery: &Delivery) -> Outcome;

    /// Handles several deliveries in one call; returns one outcome per delivery, in order. The
    /// host calls this (ABI 1.1) with up to `[delivery] max_batch` ready deliveries, so a plugin
    /// can amortise its own I/O (one write and one fsync for the batch). The default calls
    /// [`Plugin::handle`] for each. Missing outcomes count as `Retry`, extra ones are ignored. A
    /// panic fails the whole batch: the host then replaces the instance and calls `handle` for
    /// each delivery of the batch.
    fn handle_batch(&self, deliveries: &[Delivery]) -> Vec<Outcome> {
        deliveries.iter().map(|d| self.handle(d)).collect()
    }

    /// Called at most once before the instance is dropped, after every `handle` call on it has
    /// returned. Best effort: never while a call on it hangs, skipped by a crash or `kill -9`, and
    /// cut off when the gateway's stop runs out of `[server] shutdown_grace`. Make each call's
    /// work durable in the call, not here.
    fn shutdown(&self) {}
}

/// What a plugin says about one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done; the host marks the delivery delivered and never sends it to this instance again.
    Ok,
    /// Transient failure (network, 5xx, rate limit): the host retries later with exponential
    /// backoff and jitter, not sooner than `retry_after` when given (cut to the gateway's
    /// `[delivery] max_backoff` when longer), until `max_attempts`, after
    /// which the delivery is dead-lettered with `reason`.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Permanent failure (bad data, business error): the host dead-letters the delivery at once.
    Reject { reason: String },
}

impl Outcome {
    pub fn retry(reason: impl Into<String>) -> Outcome {
        Outcome::Retry {
            reason: reason.into(),
            retry_after: None,
        }
    }

    pub fn reject(reason: impl Into<String>) -> Outcome {
        Outcome::Reject {
            reason: reason.into(),
        }
    }
}

/// The JSON detail carried in a returned buffer for Retry/Reject/Panicked.
#[derive(Debug, Serialize, Deserialize)]
pub struct OutcomeDetail {
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// One delivery of one event to one plugin instance, as the host serialises it for `handle`.
/// Plugins in other languages read the same JSON object: `crates/plugin/delivery.schema.json`
/// (JSON Schema 2020-12) describes it, and a test checks this struct against that file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    /// Stable across every attempt of this (event, instance) pair: derived from the event id and
    /// the instance name. Use it as an idempotency key.
    pub delivery_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The plugin instance name (`[[plugins]] name`).
    pub plugin: String,
    /// The app (`[[apps]] name`) the event arrived on.
    pub app: String,
    /// `header.event_id` (schema 2.0) or `uuid` (1.0).
    pub event_id: String,
    /// `header.event_type` (2.0) or `event.type` (1.0).
    pub event_type: String,
    /// When the gateway durably accepted the event, Unix milliseconds.
    pub received_at: u64,
    /// The full decrypted envelope (`schema`, `header`, `event`), byte-exact as Lark sent it.
    /// Read it typed with [`Delivery::event`]. Its `header.token` (`token` in schema 1.0) is the
    /// app's verification token, a secret: never log it.
    pub event: Box<RawValue>,
}

impl Delivery {
    /// The raw envelope JSON text.
    pub fn event_json(&self) -> &str {
        self.event.get()
    }

    /// The event in its typed form, e.g. `d.event::<AssetsUpdateV1>()`:
    /// [`EventError::WrongType`] when this delivery carries
    /// another `event_type` (typically `Outcome::Ok`: not yours), any other error when it has
    /// that type but not its documented shape (typically `Outcome::reject`: retrying cannot fix
    /// the event). See [`crate::events`].
    pub fn event<T: TypedEvent>(&self) -> Result<T, EventError> {
        crate::events::typed(&self.event_type, self.event_json())
    }
}

/// Log levels a plugin may use with [`Host::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl Level {
    pub fn to_abi(self) -> u32 {
        match self {
            Level::Error => abi::LOG_ERROR,
            Level::Warn => abi::LOG_WARN,
            Level::Info => abi::LOG_INFO,
            Level::Debug => abi::LOG_DEBUG,
            Level::Trace => abi::LOG_TRACE,
        }
    }

    /// The level of an ABI log call. A number that is no `LOG_*` level (a C plugin's `0`, a
    /// level of its own) is a warning: shown, where `Trace` (as it was) hid the line.
    pub fn from_abi(level: u32) -> Level {
        match level {
            abi::LOG_ERROR => Level::Error,
            abi::LOG_WARN => Level::Warn,
            abi::LOG_INFO => Level::Info,
            abi::LOG_DEBUG => Level::Debug,
            abi::LOG_TRACE => Level::Trace,
            _ => Level::Warn,
        }
    }
}

/// Services of the host, handed to [`Plugin::new`]. Cheap to clone, usable from any thread. It
/// may be kept past the instance (in a static, in a thread): once the instance is shut down (or
/// its `new` failed), [`Host::log`] drops its lines instead of calling the host.
#[derive(Clone)]
pub struct Host {
    pub(crate) logger: crate::export::HostLogger,
    pub(crate) config_dir: PathBuf,
    pub(crate) instance_name: String,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("config_dir", &self.config_dir)
            .field("instance_name", &self.instance_name)
            .finish_non_exhaustive()
    }
}

/// Set to `1` by the gateway in the environment of the process an isolated instance runs in
/// (`isolation = "process"`); see [`Host::isolated`].
pub const ISOLATED_ENV: &str = "GATEWAY_PLUGIN_ISOLATED";

impl Host {
    /// A host for unit tests of a plugin: logs go to stderr.
    pub fn for_tests(config_dir: impl Into<PathBuf>, instance_name: &str) -> Host {
        Host {
            logger: crate::export::HostLogger::Stderr,
            config_dir: config_dir.into(),
            instance_name: instance_name.to_owned(),
        }
    }

    /// Writes a line to the gateway's log, tagged with this instance (and with the event id
    /// when the gateway called it for one delivery, in process; in a batch, and from an isolated
    /// instance, only the instance: name the delivery in the message when it matters). Never log
    /// secrets. After the instance's shutdown the line is dropped.
    pub fn log(&self, level: Level, message: &str) {
        self.logger.log(level, message);
    }

    /// The folder of the gateway's config file.
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// Resolves a path from plugin config the way the gateway resolves its own: relative paths are
    /// relative to the config file's folder.
    pub fn resolve_path(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.config_dir.join(path)
        }
    }

    /// This instance's name (`[[plugins]] name`).
    pub fn instance_name(&self) -> &str {
        &self.instance_name
    }

    /// Whether this instance runs in a process of its own (`isolation = "process"`). Its
    /// standard output is then not the gateway's: it is sent to the gateway's log stream
    /// (stderr), shared with the gateway's own lines and other plugin processes.
    pub fn isolated(&self) -> bool {
        std::env::var_os(ISOLATED_ENV).is_some_and(|v| v == "1")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels_round_trip_and_an_unknown_one_is_shown_as_a_warning() {
        for level in [
            Level::Error,
            Level::Warn,
            Level::Info,
            Level::Debug,
            Level::Trace,
        ] {
            assert_eq!(Level::from_abi(level.to_abi()), level);
        }
        for unknown in [0, 6, u32::MAX] {
            assert_eq!(Level::from_abi(unknown), Level::Warn, "{unknown}");
        }
    }
}
