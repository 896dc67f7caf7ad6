//! `gateway check`: a dry run. It validates the config, opens and ABI-checks every plugin
//! library, creates every instance (so each plugin checks its own config) and shuts it down,
//! checks the store can be opened for writing and that the listen addresses can be bound (a
//! warning: the gateway itself may be running), and prints the route table. "valid" is printed
//! only when nothing failed; problems exit 3.

use std::path::Path;
use std::process::ExitCode;

use lark_longconn::ClientConfig;
use tokio_postgres::config::SslMode;

use super::out::outln;
use crate::config::{Config, Isolation, PgSettings, StoreConfig, TlsFiles};
use crate::longconn::{bootstrap_blocking, dial_and_close_blocking, ConnectError};
use crate::plugins;
use crate::tls;

/// `gateway check`: everything `run` would refuse, found without running. The gateway itself
/// connects to nothing but a PostgreSQL store (read only: the store's migrations run at start,
/// not here) unless `connect` (then it bootstraps each websocket app's long connection once,
/// no dial). Every plugin instance is created as `run` creates it, so each plugin's own `init`
/// runs, with whatever it does to its own storage (the payout plugin opens its ledger, creating
/// or migrating it).
pub fn check(config: &Config, connect: bool) -> ExitCode {
    outln!("config {}", config.file.display());
    outln!(
        "listen {} ({})  max_body_bytes {}",
        config.listen,
        if config.tls.is_some() {
            "https"
        } else {
            "http"
        },
        config.max_body_bytes
    );
    for app in &config.apps {
        match (app.webhook(), app.long_connection()) {
            (Some(w), _) => outln!(
                "app {:<16} webhook   path {:<24} token {:<3} encrypt_key {:<3} app_id {}",
                app.name,
                w.path,
                yes(app.verification_token.is_some()),
                yes(w.encrypt_key.is_some()),
                app.app_id.as_deref().unwrap_or("-")
            ),
            (_, Some(l)) => outln!(
                "app {:<16} websocket domain {:<22} token {:<3} app_id {}",
                app.name,
                l.domain,
                yes(app.verification_token.is_some()),
                l.app_id
            ),
            _ => {}
        }
    }
    outln!("store {}", config.store.describe());
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    if let Some(files) = &config.tls {
        check_tls("server.tls", files, &mut problems, &mut warnings);
    }
    if let Some(files) = &config.admin_tls {
        check_tls("admin.tls", files, &mut problems, &mut warnings);
    }
    warnings.extend(config_warnings(config));
    if let Some(w) = crate::server::fd_limit::expected_warning(config.max_connections) {
        warnings.push(format!("server.max_connections: {w}"));
    }
    match &config.store {
        StoreConfig::Sqlite { path } => {
            if let Err(e) = store_writable(path) {
                problems.push(format!("store.path: {e}"));
            } else if path.is_file() {
                match crate::store::SqliteStore::check_existing(path) {
                    Ok(None) => {}
                    Ok(Some(version)) => outln!(
                        "  the store is at the older schema version {version}: `run` migrates it at start (back it up first)"
                    ),
                    Err(e) => problems.push(format!("store.path: {e}")),
                }
            }
        }
        StoreConfig::Postgres(pg) => {
            let (hosts, mode) = url_hosts(pg);
            for dir in &hosts.sockets {
                outln!(
                    "  Unix socket {}: no TLS (sslmode does not apply to a socket, as with libpq)",
                    dir.display()
                );
            }
            for host in &hosts.nameless {
                let how = if mode == SslMode::Disable {
                    "plain text (sslmode=disable)"
                } else {
                    "plain text to a server that offers no TLS; one that offers TLS is given up \
                     on (no name to check its certificate against: set host to that name for \
                     TLS, or sslmode=disable)"
                };
                outln!("  {host}: over TCP, without a host name: {how}");
            }
            match database_state(pg) {
                Ok(line) => outln!("  {line}"),
                Err(e) => problems.push(format!("store.url: {e}")),
            }
        }
    }
    for (key, addr) in [
        ("server.listen", Some(config.listen)),
        ("admin.listen", config.admin_listen),
    ] {
        let Some(addr) = addr.filter(|a| a.port() != 0) else {
            continue;
        };
        match std::net::TcpListener::bind(addr) {
            Ok(_) => {}
            // Held: maybe by this gateway, running.
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => warnings.push(format!(
                "{key}: cannot bind {addr} now ({e}); `run` will fail unless it is this gateway, \
                 already running, that holds it"
            )),
            // Anything else fails `run` as well (a port below 1024 without
            // CAP_NET_BIND_SERVICE, an address this host does not have).
            Err(e) => problems.push(format!("{key}: cannot bind {addr}: {e}")),
        }
    }
    let libs = match plugins::open_all(config) {
        Ok(libs) => libs,
        Err(found) => {
            problems.extend(found);
            return report(config, problems, warnings, ConnectFailures::default());
        }
    };
    for (spec, d) in &libs {
        outln!(
            "plugin {:<12} {} {} ({}) max_concurrency {} isolation {}  [{}]",
            spec.name,
            d.name,
            d.version,
            spec.library.display(),
            spec.max_concurrency,
            spec.isolation.as_str(),
            d.build_tag
        );
        if spec.isolation == Isolation::None && !crash_contained(&d.build_tag) {
            warnings.push(format!(
                "plugin {} ({}) was not built by the Rust SDK with panic = \"unwind\" \
                 (build tag: {}): a crash or panic in it ends the whole gateway; consider \
                 isolation = \"process\"",
                spec.name,
                spec.library.display(),
                d.build_tag
            ));
        }
    }
    // Create every instance as `run` would (the plugins check their own config), then shut
    // them down again.
    match plugins::start(config) {
        Ok(instances) => drop(instances),
        Err(found) => problems.extend(found),
    }
    outln!("routes:");
    if config.routes.is_empty() {
        outln!("  (none: every event is stored as unrouted)");
    }
    for r in &config.routes {
        let events: Vec<String> = r.events.iter().map(|e| e.to_string()).collect();
        let apps = r
            .apps
            .as_ref()
            .map_or("any app".to_owned(), |a| format!("apps {}", a.join(", ")));
        outln!(
            "  {} ({apps}) -> {}",
            events.join(", "),
            r.plugins.join(", ")
        );
    }
    let connect_failed = if connect {
        connect_all(config)
    } else {
        ConnectFailures::default()
    };
    report(config, problems, warnings, connect_failed)
}

/// `[server] tls` or `[admin] tls` (`at`): the pair loads as `run` would load it (readable, PEM parses, the key matches
/// the leaf); its subject, serial and expiry are printed. Expired is a problem (`run` refuses
/// it), under [`tls::EXPIRY_WARNING`] a warning, not yet valid a warning.
fn check_tls(at: &str, files: &TlsFiles, problems: &mut Vec<String>, warnings: &mut Vec<String>) {
    let pair = match tls::load(files) {
        Ok(pair) => pair,
        Err(e) => {
            problems.push(format!("{at}: {e}"));
            return;
        }
    };
    let info = &pair.info;
    let now = tls::now_secs();
    let left = info.seconds_left(now);
    outln!(
        "{at} cert {} key {}: {} serial {} ({} in the chain), expires {} ({})",
        files.cert.display(),
        files.key.display(),
        info.subject,
        info.serial,
        info.chain_len,
        info.not_after_text(),
        if left > 0 {
            format!("in {} days", left / 86_400)
        } else {
            format!("{} days ago", -left / 86_400)
        }
    );
    if let Err(e) = pair.clone().refuse_expired(files, now) {
        problems.push(format!("{at}.cert: {e}"));
    } else if left < tls::EXPIRY_WARNING.as_secs() as i64 {
        warnings.push(format!(
            "{at}.cert: {} expires in {} days ({}): renew it (the running gateway picks \
             the new files up without a restart)",
            files.cert.display(),
            left / 86_400,
            info.not_after_text()
        ));
    }
    if info.not_before > now {
        warnings.push(format!(
            "{at}.cert: {} is not valid before {} (clients will refuse it until then)",
            files.cert.display(),
            crate::ops::timefmt::rfc3339(info.not_before.saturating_mul(1000))
        ));
    }
}

/// Prints warnings and problems; "valid" only when there is no problem.
/// `connect_failed`: what `--connect` could not do. `run` does not refuse that (it starts, and
/// retries or shows the app as failed until a reload, by the failure's verdict), so it is told
/// apart from the problems.
fn report(
    config: &Config,
    problems: Vec<String>,
    warnings: Vec<String>,
    connect_failed: ConnectFailures,
) -> ExitCode {
    for w in &warnings {
        outln!("warning: {w}");
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("error: {p}");
        }
        eprintln!(
            "config {} has {} problem(s): `run` would refuse it",
            config.file.display(),
            problems.len()
        );
    }
    if connect_failed.fatal {
        eprintln!(
            "error: Lark refused a long connection (see above): `run` would start, and report \
             that app as failed until a reload"
        );
    }
    if connect_failed.retry {
        eprintln!(
            "error: a long connection could not be made, for a reason worth retrying (see \
             above): `run` would start, and keep retrying it (Lark's ReconnectCount), showing \
             that app as connecting or reconnecting meanwhile"
        );
    }
    if !problems.is_empty() || connect_failed.any() {
        return ExitCode::from(3);
    }
    outln!("config {} is valid", config.file.display());
    ExitCode::SUCCESS
}

/// The store URL's hosts (the Unix-socket folders among them are connected to without TLS, and
/// so are the `hostaddr`s without a host name) and its `sslmode`.
fn url_hosts(pg: &PgSettings) -> (gateway_pgtls::Hosts, SslMode) {
    match pg.url.parse::<tokio_postgres::Config>() {
        Ok(c) => (
            gateway_pgtls::Hosts::of(c.get_hosts(), c.get_hostaddrs()),
            c.get_ssl_mode(),
        ),
        // Validated already: not reached.
        Err(_) => (gateway_pgtls::Hosts::of(&[], &[]), SslMode::Prefer),
    }
}

/// Connects to the database and reads its schema version (nothing is written).
fn database_state(pg: &PgSettings) -> Result<String, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(crate::store::postgres::schema_state(pg))
        .map_err(|e| e.0)
}

/// Whether the store at `path`, its lock file (`<path>.lock`, which `run` holds) and its folder
/// of event-id runs (`<path>.ids/`) can be written, without creating anything.
fn store_writable(path: &Path) -> Result<(), String> {
    file_writable(path)?;
    let mut lock = path.as_os_str().to_owned();
    lock.push(".lock");
    file_writable(Path::new(&lock))?;
    let mut ids = path.as_os_str().to_owned();
    ids.push(".ids");
    let ids = Path::new(&ids);
    if !ids.exists() {
        return file_writable(ids);
    }
    if !ids.is_dir() {
        return Err(format!("{} is not a folder", ids.display()));
    }
    let probe = ids.join(format!(".gateway-check-{}", std::process::id()));
    std::fs::File::create(&probe)
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| format!("{} does not take new files: {e}", ids.display()))
}

/// An existing file must open for writing; otherwise the nearest existing folder must take a new
/// file (tried with a temporary one, removed at once).
fn file_writable(path: &Path) -> Result<(), String> {
    if path.exists() {
        return std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop)
            .map_err(|e| format!("{} cannot be opened for writing: {e}", path.display()));
    }
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d.exists() {
            if !d.is_dir() {
                return Err(format!(
                    "{} cannot be created: {} is not a folder",
                    path.display(),
                    d.display()
                ));
            }
            let probe = d.join(format!(".gateway-check-{}", std::process::id()));
            return std::fs::File::create(&probe)
                .and_then(|_| std::fs::remove_file(&probe))
                .map_err(|e| {
                    format!(
                        "{} cannot be created in {}: {e}",
                        path.display(),
                        d.display()
                    )
                });
        }
        dir = d.parent();
    }
    Err(format!("{} has no existing parent folder", path.display()))
}

/// What `check --connect` could not do, by verdict.
#[derive(Debug, Default, Clone, Copy)]
struct ConnectFailures {
    /// Refused for good (bad credentials, long connections not enabled, ...).
    fatal: bool,
    /// Worth retrying (busy, unreachable, a 5xx, ...).
    retry: bool,
}

impl ConnectFailures {
    fn any(self) -> bool {
        self.fatal || self.retry
    }

    fn note(&mut self, app: &str, step: &str, e: &ConnectError) {
        eprintln!("error: app {app}: long connection {step} failed: {e}");
        if e.is_fatal() {
            self.fatal = true;
        } else {
            self.retry = true;
        }
    }
}

/// `check --connect`: per websocket app, one bootstrap and one dial (closed at once), as `run`
/// makes them.
fn connect_all(config: &Config) -> ConnectFailures {
    let mut failed = ConnectFailures::default();
    for app in &config.apps {
        let Some(l) = app.long_connection() else {
            continue;
        };
        let endpoint = match bootstrap_blocking(l) {
            Ok(endpoint) => endpoint,
            Err(e) => {
                failed.note(&app.name, "bootstrap", &e);
                continue;
            }
        };
        if let Err(e) = dial_and_close_blocking(&endpoint.url, config.max_body_bytes) {
            failed.note(&app.name, "handshake", &e);
            continue;
        }
        let mut cc = ClientConfig::default();
        if let Some(update) = &endpoint.client_config {
            for c in cc.apply(update).clamped {
                outln!(
                    "warning: app {}: Lark's {} of {}s is above the gateway's cap; {}s is used",
                    app.name,
                    c.key,
                    c.sent,
                    c.used.as_secs()
                );
            }
        }
        outln!(
            "app {}: long connection ok (bootstrap and handshake; service_id {}, ping every \
             {}s, reconnect count {} every {}s)",
            app.name,
            endpoint.service_id,
            cc.ping_interval.as_secs(),
            cc.reconnect_count,
            cc.reconnect_interval.as_secs()
        );
    }
    failed
}

/// Whether a panic in a library with this build tag stays inside the call (the Rust SDK, built
/// with `panic = "unwind"`, catches it). Anything else (another language, `panic = "abort"`, an
/// SDK build that predates the tag) can take the process down.
pub(super) fn crash_contained(build_tag: &str) -> bool {
    build_tag.starts_with("gateway-plugin ") && build_tag.contains("; panic=unwind")
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

mod warnings;
pub(crate) use warnings::config_warnings;
#[cfg(test)]
use warnings::{per_client_behind_proxy, short_retention, unauthenticated};

#[cfg(test)]
mod tests;
