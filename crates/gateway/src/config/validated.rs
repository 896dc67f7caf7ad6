//! Phase two: a [`Config`] the gateway can run on. Built from a [`RawConfig`] by resolving
//! defaults, expanding `${VAR}`s, parsing durations, making paths absolute against the config
//! file's folder and cross-checking names. Problems are collected, never stopped at the first.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::RawConfig;
use gateway_plugin::config::parse_duration;

mod app;
mod delivery;
mod log;
mod plugin;
mod route;
mod server;
mod store;

pub use super::pattern::EventPattern;
use super::{env, ConfigError};
pub use app::{App, LongConnApp, Transport, WebhookApp};
pub use delivery::DeliveryConfig;
pub use plugin::{load_plugin_config, Isolation};
use server::Listeners;
pub use server::{AdminToken, TlsFiles};
pub use store::{redact_url, PgSettings, StoreConfig};

pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 86_400);
/// The shortest `[store] retention` and `dead_letter_retention`: shorter would purge what was
/// just stored (and dedup with it).
pub const MIN_RETENTION: Duration = Duration::from_secs(60);
/// The longest duration any key takes (`36500d`, 100 years). Durations are used in millisecond
/// arithmetic on `i64` Unix times (`now_ms() - retention.as_millis() as i64`, `next_at + backoff`),
/// which a longer one could wrap: a retention cutoff in the future purges everything.
pub const MAX_DURATION: Duration = Duration::from_secs(36_500 * 86_400);
pub const DEFAULT_MAX_CONCURRENCY: usize = 4;
/// The most plugin calls all `[[plugins]]` entries together may run at once (the sum of their
/// `max_concurrency`): each holds a thread of the gateway's blocking pool until it returns, a
/// hung in-process call included, and the pool has [`BLOCKING_THREADS`].
pub const MAX_PLUGIN_CALLS: usize = 1024;
/// The gateway's blocking pool (tokio's `max_blocking_threads`): plugin calls, the store's
/// reads, the kill of a timed-out isolated call, plugin starts and restarts. Four times
/// [`MAX_PLUGIN_CALLS`], so that configured calls, all hung, and the hung calls of instances a
/// reload replaced still leave threads for the store and for every other plugin (threads are
/// made only when needed).
pub const BLOCKING_THREADS: usize = 4 * MAX_PLUGIN_CALLS;
const _: () = assert!(BLOCKING_THREADS >= 2 * MAX_PLUGIN_CALLS);
/// `[[plugins]] init_timeout` when not given.
pub const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(60);
/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file, absolute.
    pub file: PathBuf,
    /// Its folder: the base of every relative path.
    pub dir: PathBuf,
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    /// `[admin] token`: what the admin API and console ask for (none: no authentication, only
    /// allowed on a loopback `admin_listen`).
    pub admin_token: Option<AdminToken>,
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    pub max_connections: usize,
    /// `[server] max_connections_per_client`: the webhook connections one client (an IPv4
    /// address, an IPv6 /64) holds at most (none: no limit but `max_connections`).
    pub max_connections_per_client: Option<usize>,
    /// Async worker threads (HTTP, TLS, decryption, long connections, the engine); the store's
    /// writer thread and plugin calls run beside them. Taken at start only.
    pub workers: usize,
    /// Peers whose `X-Forwarded-For` is believed (for logs only).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// `[server] tls`: the webhook listener speaks HTTPS with this pair (none: plain HTTP).
    pub tls: Option<TlsFiles>,
    /// `[admin] tls`: the admin listener speaks HTTPS with this pair (none: plain HTTP).
    pub admin_tls: Option<TlsFiles>,
    pub shutdown_grace: Duration,
    pub apps: Vec<App>,
    pub store: StoreConfig,
    pub retention: Duration,
    /// How long a dead letter stays after it died, whatever `retention` says.
    pub dead_letter_retention: Duration,
    pub delivery: DeliveryConfig,
    /// `[libraries] dir`, absolute: the folder `gateway plugins list` shows and bare
    /// `library = "name"`s resolve in.
    pub library_dir: Option<PathBuf>,
    pub plugins: Vec<PluginSpec>,
    pub routes: Vec<Route>,
    pub log_level: Option<String>,
}

/// A plugin instance to create.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSpec {
    pub name: String,
    /// Absolute; a bare name already resolved in `[libraries] dir`.
    pub library: PathBuf,
    /// `sha256 = "..."`: the library file's expected SHA-256, lowercase hex. A file with any
    /// other content is refused before it is loaded (its initialisers never run).
    pub sha256: Option<String>,
    /// The `config` table as JSON, `${VAR}`s expanded.
    pub config: serde_json::Value,
    pub max_concurrency: usize,
    pub isolation: Isolation,
    /// How long the instance's `init` may take (a start, a reload, an isolated restart); past
    /// it the start fails (an in-process `init` still running is left to end on its own).
    pub init_timeout: Duration,
}

impl PluginSpec {
    /// Whether an instance created for `self` serves `other` as it is: all but
    /// `max_concurrency` (a limit the engine applies, not the instance) and `init_timeout`
    /// is the same.
    pub fn same_instance(&self, other: &PluginSpec) -> bool {
        let mut mine = self.clone();
        mine.max_concurrency = other.max_concurrency;
        mine.init_timeout = other.init_timeout;
        mine == *other
    }
}

/// `events` patterns → `plugins`, optionally only for some `apps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub events: Vec<EventPattern>,
    pub plugins: Vec<String>,
    pub apps: Option<Vec<String>>,
}

impl Config {
    /// Reads and validates a config file, expanding `${VAR}` from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(path, &env::from_process)
    }

    pub fn load_with_env(path: &Path, lookup: &env::Lookup<'_>) -> Result<Config, ConfigError> {
        let (shown, raw) = read_raw(path)?;
        let (file, dir) = locate(path)?;
        let mut v = Validator::new(&dir, lookup);
        let config = v.config(raw, file.clone());
        if v.problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: shown,
                problems: v.problems,
            })
        }
    }

    /// Only `[libraries] dir` of a config file (absolute), for `gateway plugins list` when the
    /// rest of the config has problems: listing the folder is how one fixes a `library` name.
    pub fn library_dir_of(path: &Path) -> Result<Option<PathBuf>, ConfigError> {
        let (shown, raw) = read_raw(path)?;
        let (_, dir) = locate(path)?;
        let mut v = Validator::new(&dir, &env::from_process);
        let found = raw
            .libraries
            .dir
            .as_deref()
            .map(|d| v.path("libraries.dir", d));
        if v.problems.is_empty() {
            Ok(found)
        } else {
            Err(ConfigError::Invalid {
                path: shown,
                problems: v.problems,
            })
        }
    }

    /// The app served at `path`, if any.
    pub fn app_by_name(&self, name: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.name == name)
    }
}

/// `line L, column C: message`, without the source excerpt toml's own `Display` prints: that
/// excerpt can be a line holding a secret (a mistyped `encrypt_key = "..."`, say), and this message
/// goes to logs.
fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_owned(),
    }
}

/// A config file's text parsed into its raw form, with the path as shown in errors.
fn read_raw(path: &Path) -> Result<(String, RawConfig), ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    let raw = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
        path: shown.clone(),
        message: syntax_message(&text, &e),
    })?;
    Ok((shown, raw))
}

/// A file's absolute path and its folder (the base of the relative paths it holds).
pub(super) fn locate(path: &Path) -> Result<(PathBuf, PathBuf), ConfigError> {
    let file = std::path::absolute(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok((file, dir))
}

struct Validator<'a> {
    dir: &'a Path,
    lookup: &'a env::Lookup<'a>,
    problems: Vec<String>,
    /// Locations whose `${VAR}` expansion failed: that problem is the only one reported there
    /// (the value checked after it would be a stand-in, and its problems misleading).
    unexpanded: HashSet<String>,
}

impl<'a> Validator<'a> {
    fn new(dir: &'a Path, lookup: &'a env::Lookup<'a>) -> Self {
        Validator {
            dir,
            lookup,
            problems: Vec::new(),
            unexpanded: HashSet::new(),
        }
    }

    fn problem(&mut self, at: &str, message: impl std::fmt::Display) {
        if self.unexpanded.contains(at) {
            return;
        }
        self.problems.push(format!("{at}: {message}"));
    }

    /// `text` with its `${VAR}`s expanded; on failure the problem is reported, the location
    /// remembered (no further problem is reported there) and `""` stands in.
    fn expand(&mut self, at: &str, text: &str) -> String {
        match env::expand(text, self.lookup) {
            Ok(s) => s,
            Err(e) => {
                self.problem(at, e);
                self.unexpanded.insert(at.to_owned());
                String::new()
            }
        }
    }

    /// A duration key: at most [`MAX_DURATION`]; `default` when unset or unusable.
    fn duration(&mut self, at: &str, text: Option<&str>, default: Duration) -> Duration {
        let Some(text) = text else { return default };
        let text = self.expand(at, text);
        match parse_duration(&text) {
            Ok(d) if d > MAX_DURATION => {
                self.problem(
                    at,
                    format!("{text:?} is too long: at most 36500d (100 years)"),
                );
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.problem(at, e);
                default
            }
        }
    }

    /// [`Self::duration`], and at least `min` (else the problem `message`).
    fn duration_at_least(
        &mut self,
        at: &str,
        text: Option<&str>,
        default: Duration,
        min: Duration,
        message: &str,
    ) -> Duration {
        let d = self.duration(at, text, default);
        if d < min {
            self.problem(at, message);
            return default;
        }
        d
    }

    fn addr(&mut self, at: &str, text: &str) -> Option<SocketAddr> {
        let text = self.expand(at, text);
        self.parse_addr(at, &text)
    }

    /// [`Self::addr`] of a value already expanded.
    fn parse_addr(&mut self, at: &str, text: &str) -> Option<SocketAddr> {
        match text.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.problem(
                    at,
                    format!("{text:?} is not an address like \"127.0.0.1:7777\""),
                );
                None
            }
        }
    }

    fn path(&mut self, at: &str, text: &str) -> PathBuf {
        let text = self.expand(at, text);
        let p = PathBuf::from(text);
        if p.is_absolute() {
            p
        } else {
            self.dir.join(p)
        }
    }

    fn config(&mut self, raw: RawConfig, file: PathBuf) -> Config {
        let Listeners {
            listen,
            admin_listen,
            admin_token,
            admin_tls,
            max_body_bytes,
            body_timeout,
            max_connections,
            max_connections_per_client,
            workers,
            trusted_proxies,
            tls,
            shutdown_grace,
        } = self.listeners(&raw.server, &raw.admin);

        if raw.apps.is_empty() {
            self.problem("apps", "at least one [[apps]] entry is required");
        }
        let apps: Vec<App> = raw
            .apps
            .iter()
            .enumerate()
            .map(|(i, a)| self.app(i, a))
            .collect();
        self.unique("apps", apps.iter().map(|a| a.name.as_str()), "name");
        self.unique(
            "apps",
            apps.iter()
                .map(|a| a.webhook().map_or("", |w| w.path.as_str())),
            "path",
        );
        // Lark hands each event of an app to one of its connections: two websocket apps of one
        // app_id on one platform (`domain`) would each see some of its events (a route naming
        // one misses the others).
        let mut seen = HashSet::new();
        for (i, a) in apps.iter().enumerate() {
            if let Transport::LongConnection(ws) = &a.transport {
                if !ws.app_id.is_empty() && !seen.insert((ws.app_id.as_str(), ws.domain.as_str())) {
                    self.problem(
                        &format!("apps[{i}].app_id"),
                        format!(
                            "duplicate app_id {:?} at {}: Lark hands each event of an app to \
                             one of its connections, so each of these apps would see only some",
                            ws.app_id, ws.domain
                        ),
                    );
                }
            }
        }

        let retention = self.duration_at_least(
            "store.retention",
            raw.store.retention.as_deref(),
            DEFAULT_RETENTION,
            MIN_RETENTION,
            "must be at least 1m (finished events and their ids, kept for deduplication, are \
             purged once older than this)",
        );
        let dead_letter_retention = self.duration_at_least(
            "store.dead_letter_retention",
            raw.store.dead_letter_retention.as_deref(),
            Duration::from_secs(30 * 86_400),
            MIN_RETENTION,
            "must be at least 1m (dead letters are deleted once they died longer ago than this)",
        );

        let delivery = self.delivery(&raw.delivery);
        let store = self.store(&raw.store, delivery.timeout);
        if delivery.max_backoff < delivery.initial_backoff {
            self.problem(
                "delivery.max_backoff",
                "must not be smaller than delivery.initial_backoff",
            );
        }

        let library_dir = raw.libraries.dir.as_deref().map(|d| {
            let dir = self.path("libraries.dir", d);
            if !dir.is_dir() {
                self.problem(
                    "libraries.dir",
                    format!("{} is not a folder", dir.display()),
                );
            }
            dir
        });
        let plugins: Vec<PluginSpec> = raw
            .plugins
            .iter()
            .enumerate()
            .map(|(i, p)| self.plugin(i, p, library_dir.as_deref()))
            .collect();
        self.unique("plugins", plugins.iter().map(|p| p.name.as_str()), "name");
        self.plugin_calls(&plugins);

        let plugin_names: HashSet<&str> = plugins.iter().map(|p| p.name.as_str()).collect();
        let app_names: HashSet<&str> = apps.iter().map(|a| a.name.as_str()).collect();
        let routes = raw
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| self.route(i, r, &plugin_names, &app_names))
            .collect();

        Config {
            file,
            dir: self.dir.to_path_buf(),
            listen,
            admin_listen,
            admin_token,
            admin_tls,
            max_body_bytes,
            body_timeout,
            max_connections,
            max_connections_per_client,
            workers,
            trusted_proxies,
            tls,
            shutdown_grace,
            apps,
            store,
            retention,
            dead_letter_retention,
            delivery,
            library_dir,
            plugins,
            routes,
            log_level: raw.log.level.as_deref().map(|l| {
                let l = self.expand("log.level", l);
                match log::log_filter(&l) {
                    Ok(f) => f,
                    Err(e) => {
                        self.problem("log.level", e);
                        l
                    }
                }
            }),
        }
    }
}

#[cfg(test)]
mod app_tests;
#[cfg(test)]
mod delivery_tests;
#[cfg(test)]
mod library_tests;
#[cfg(test)]
mod server_tests;
#[cfg(test)]
mod store_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod transport_tests;
#[cfg(test)]
mod trap_tests;
