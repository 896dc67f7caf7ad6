//! Operator commands that work on the config and the store without running the server:
//! `check`, `dead-letters`, `replay`, `events show`, `store check`. They open the store
//! alongside a running gateway (SQLite WAL allows it); a replay is picked up by the running
//! gateway's sweeper within a few seconds.

use std::process::ExitCode;

use lark_longconn::ClientConfig;

use crate::config::{Config, Isolation};
use crate::longconn::bootstrap_blocking;
use crate::plugins;
use crate::store::SqliteStore;

#[derive(Debug, Clone, clap::Args)]
pub struct DeadLetterArgs {
    /// Only this plugin's.
    #[arg(long)]
    pub plugin: Option<String>,
    /// Only those that died at or after this Unix time in milliseconds.
    #[arg(long)]
    pub since: Option<i64>,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Delete the dead letters selected by --plugin and/or --older-than (one is required)
    /// instead of listing them. They cannot be replayed afterwards.
    #[arg(long)]
    pub purge: bool,
    /// With --purge: only those that died longer ago than this (e.g. "7d", "12h").
    #[arg(long, requires = "purge")]
    pub older_than: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Event ids whose deliveries to replay.
    pub event_ids: Vec<String>,
    /// Only this plugin's deliveries.
    #[arg(long)]
    pub plugin: Option<String>,
    /// Replay every dead letter (optionally of --plugin).
    #[arg(long, conflicts_with = "event_ids")]
    pub dead_letters: bool,
    /// Also replay deliveries that already succeeded (their plugin runs again: payout and
    /// notifier act in the real world).
    #[arg(long)]
    pub force: bool,
    /// List what would be replayed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum EventsCommand {
    /// Print a stored event and its deliveries as JSON.
    Show { event_id: String },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum StoreCommand {
    /// Verify the store's integrity.
    Check,
}

mod replay;

pub use replay::{dead_letters, replay};

fn open_store(config: &Config) -> Result<SqliteStore, ExitCode> {
    SqliteStore::open_existing(&config.store_path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    })
}

/// `gateway check`. Validates without connecting anywhere; with `connect`, also bootstraps
/// every websocket app's long connection once (no dial) and reports the result.
pub fn check(config: &Config, connect: bool) -> ExitCode {
    println!("config {} is valid", config.file.display());
    println!(
        "listen {}  max_body_bytes {}",
        config.listen, config.max_body_bytes
    );
    for app in &config.apps {
        match (app.webhook(), app.long_connection()) {
            (Some(w), _) => println!(
                "app {:<16} webhook   path {:<24} token {:<3} encrypt_key {:<3} app_id {}",
                app.name,
                w.path,
                yes(app.verification_token.is_some()),
                yes(w.encrypt_key.is_some()),
                app.app_id.as_deref().unwrap_or("-")
            ),
            (_, Some(l)) => println!(
                "app {:<16} websocket domain {:<22} token {:<3} app_id {}",
                app.name,
                l.domain,
                yes(app.verification_token.is_some()),
                l.app_id
            ),
            _ => {}
        }
    }
    println!("store {}", config.store_path.display());
    let libs = match plugins::open_all(config) {
        Ok(libs) => libs,
        Err(problems) => {
            for p in problems {
                eprintln!("error: {p}");
            }
            return ExitCode::from(3);
        }
    };
    for (spec, lib) in &libs {
        println!(
            "plugin {:<12} {} {} ({}) max_concurrency {} isolation {}  [{}]",
            spec.name,
            lib.name(),
            lib.version(),
            lib.path().display(),
            spec.max_concurrency,
            spec.isolation.as_str(),
            lib.build_tag()
        );
        if spec.isolation == Isolation::None && !crash_contained(lib.build_tag()) {
            println!(
                "warning: plugin {} ({}) was not built by the Rust SDK with panic = \"unwind\" \
                 (build tag: {}): a crash or panic in it ends the whole gateway; consider \
                 isolation = \"process\"",
                spec.name,
                lib.path().display(),
                lib.build_tag()
            );
        }
    }
    println!("routes:");
    if config.routes.is_empty() {
        println!("  (none: every event is stored as unrouted)");
    }
    for r in &config.routes {
        let events: Vec<String> = r.events.iter().map(|e| e.to_string()).collect();
        let apps = r
            .apps
            .as_ref()
            .map_or("any app".to_owned(), |a| format!("apps {}", a.join(", ")));
        println!(
            "  {} ({apps}) -> {}",
            events.join(", "),
            r.plugins.join(", ")
        );
    }
    if connect && !bootstrap_all(config) {
        return ExitCode::from(3);
    }
    println!("ok");
    ExitCode::SUCCESS
}

/// `check --connect`: one bootstrap per websocket app; false if any failed.
fn bootstrap_all(config: &Config) -> bool {
    let mut ok = true;
    for app in &config.apps {
        let Some(l) = app.long_connection() else {
            continue;
        };
        match bootstrap_blocking(l) {
            Ok(endpoint) => {
                let mut cc = ClientConfig::default();
                if let Some(update) = &endpoint.client_config {
                    cc.apply(update);
                }
                println!(
                    "app {}: long connection bootstrap ok (service_id {}, ping every {}s, \
                     reconnect count {} every {}s)",
                    app.name,
                    endpoint.service_id,
                    cc.ping_interval.as_secs(),
                    cc.reconnect_count,
                    cc.reconnect_interval.as_secs()
                );
            }
            Err(e) => {
                eprintln!(
                    "error: app {}: long connection bootstrap failed: {e}",
                    app.name
                );
                ok = false;
            }
        }
    }
    ok
}

/// Whether a panic in a library with this build tag stays inside the call (the Rust SDK, built
/// with `panic = "unwind"`, catches it). Anything else (another language, `panic = "abort"`, an
/// SDK build that predates the tag) can take the process down.
fn crash_contained(build_tag: &str) -> bool {
    build_tag.starts_with("gateway-plugin ") && build_tag.contains("; panic=unwind")
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// `gateway events show`.
pub fn events(config: &Config, cmd: &EventsCommand) -> ExitCode {
    let EventsCommand::Show { event_id } = cmd;
    let store = match open_store(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let result = store.event(event_id);
    store.close();
    match result {
        Ok(Some(mut event)) => {
            // The verification token never leaves the store through the CLI.
            if let Some(redacted) = lark_core::redact::redact_token(&event.body) {
                event.body = redacted;
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&event).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!("no event {event_id:?} in the store");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `gateway store check`.
pub fn store(config: &Config, cmd: &StoreCommand) -> ExitCode {
    let StoreCommand::Check = cmd;
    let store = match open_store(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let result = store.integrity_check();
    store.close();
    match result {
        Ok(lines) if lines == ["ok"] => {
            println!("store {} is sound", config.store_path.display());
            ExitCode::SUCCESS
        }
        Ok(lines) => {
            for l in lines {
                eprintln!("{l}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
