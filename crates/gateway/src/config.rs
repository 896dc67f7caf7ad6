//! The gateway configuration, read in two phases (ripgrep's LowArgs → HiArgs):
//! [`raw`] is what the TOML says (serde, unknown keys rejected, with line/column on errors);
//! [`validated`] is what the gateway runs on (`${VAR}`s expanded, durations parsed, paths absolute,
//! names cross-checked). Every problem found in phase two is collected, so `gateway check` can
//! report them all at once, each with its location (`apps[1].path`).
//!
//! Nothing here opens a socket, a store or a plugin library.

pub(crate) mod env;
mod pattern;
pub mod raw;
pub mod schema;
pub mod validated;

pub use validated::{
    load_plugin_config, redact_url, AdminToken, App, Config, DeliveryConfig, EventPattern,
    Isolation, LongConnApp, PgSettings, PluginSpec, Route, StoreConfig, TlsFiles, WebhookApp,
    BLOCKING_THREADS,
};

/// Why a config cannot be used: every problem, each prefixed with its location.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("{path}: {} problem(s):\n  - {}", .problems.len(), .problems.join("\n  - "))]
    Invalid { path: String, problems: Vec<String> },
}
