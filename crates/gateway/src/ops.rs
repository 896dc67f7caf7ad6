//! Operator commands that work on the config and the store without running the server:
//! `check`, `dead-letters`, `replay`, `events show`, `store check`, and `plugins ...` (which
//! needs neither: [`mod@plugins`]). They open the store alongside running gateways (SQLite WAL
//! allows it; PostgreSQL is shared by design); a replay is picked up by a running gateway's
//! sweeper within a few seconds.

use std::process::ExitCode;

use crate::config::Config;
use std::future::Future;
use std::sync::Arc;

use crate::store::Store;

#[derive(Debug, Clone, clap::Args)]
pub struct DeadLetterArgs {
    /// Only this plugin's.
    #[arg(long)]
    pub plugin: Option<String>,
    /// Only those that died in the last DURATION ("2h", "1h30m"), or at or after an RFC 3339
    /// time ("2026-12-02T14:00:00Z") or date, or this Unix time in milliseconds.
    #[arg(long)]
    pub since: Option<String>,
    /// Print JSON lines instead of a table (with --purge: `{"deleted": N}`).
    #[arg(long)]
    pub json: bool,
    /// Delete the dead letters selected by --plugin and/or --older-than (one is required; not
    /// --since) instead of listing them: exactly those the listing with the same filters shows.
    /// They cannot be replayed afterwards.
    #[arg(long)]
    pub purge: bool,
    /// Only those that died longer ago than this (e.g. "7d", "12h").
    #[arg(long)]
    pub older_than: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Event ids whose deliveries to replay.
    pub event_ids: Vec<String>,
    /// Only this plugin's deliveries (a configured `[[plugins]]` name: a name only the store
    /// still has would be dead-lettered again).
    #[arg(long)]
    pub plugin: Option<String>,
    /// Replay every dead letter (optionally of --plugin); one whose call is still running (hung
    /// past its timeout) is left out and named, unless --force.
    #[arg(long, conflicts_with = "event_ids")]
    pub dead_letters: bool,
    /// Also replay deliveries that already succeeded or whose call is running (their plugin
    /// runs again: payout and notifier act in the real world).
    #[arg(long)]
    pub force: bool,
    /// List what would be replayed (and what needs --force); change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum EventsCommand {
    /// Print a stored event and its deliveries, with their attempt history, as JSON.
    Show { event_id: String },
    /// List stored events, newest first.
    List(list::EventListArgs),
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum DeliveriesCommand {
    /// List deliveries in a state, most recently changed first.
    List(list::DeliveryListArgs),
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum StoreCommand {
    /// Verify the store's integrity.
    Check,
    /// Write a consistent copy of the embedded store to a new file, while the gateway runs
    /// (a PostgreSQL store is backed up with PostgreSQL's tools).
    Backup {
        /// The new file (refused if it exists).
        dest: std::path::PathBuf,
    },
}

mod check;

pub(crate) mod list;
pub(crate) mod names;
pub(crate) mod out;
mod plugins;
pub(crate) mod replay;
pub(crate) mod timefmt;

pub use check::check;
pub(crate) use check::config_warnings;
pub use plugins::{plugins, PluginsCommand};
pub use replay::{dead_letters, replay};

use out::outln;

/// A usage error (a bad argument value, a missing filter): reported, exit 2.
fn usage(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

/// Runs `f` on the store `config` names, which must exist (an operator command never creates
/// one), in a runtime of its own; closes the store afterwards.
fn with_store<'c, F, Fut>(config: &'c Config, f: F) -> ExitCode
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ExitCode> + 'c,
{
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let store = match crate::store::open(&config.store, true).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let code = f(store.clone()).await;
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
        code
    })
}

/// `gateway deliveries list`.
pub fn deliveries(config: &Config, cmd: &DeliveriesCommand) -> ExitCode {
    let DeliveriesCommand::List(args) = cmd;
    list::deliveries(config, args)
}

/// `gateway events show`.
pub fn events(config: &Config, cmd: &EventsCommand) -> ExitCode {
    let event_id = match cmd {
        EventsCommand::Show { event_id } => event_id,
        EventsCommand::List(args) => return list::events(config, args),
    };
    with_store(config, |store| async move {
        match store.event(event_id.clone()).await {
            Ok(Some(mut event)) => {
                // The verification token never leaves the store through the CLI.
                if let Some(redacted) = lark_core::redact::redact_token(&event.body) {
                    event.body = redacted;
                }
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&event).unwrap_or_default()
                );
                ExitCode::SUCCESS
            }
            Ok(None) => {
                eprintln!("error: no event {event_id:?} in the store");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// `gateway store check`.
pub fn store(config: &Config, cmd: &StoreCommand) -> ExitCode {
    if let StoreCommand::Backup { dest } = cmd {
        return backup(config, dest.clone());
    }
    with_store(config, |store| async move {
        match store.check().await {
            Ok(problems) if problems.is_empty() => {
                outln!("store {} is sound", store.describe());
                ExitCode::SUCCESS
            }
            Ok(problems) => {
                for p in problems {
                    eprintln!("{p}");
                }
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// `gateway store backup DEST`.
fn backup(config: &Config, dest: std::path::PathBuf) -> ExitCode {
    if matches!(config.store, crate::config::StoreConfig::Postgres(_)) {
        eprintln!("error: {}", crate::store::postgres::BACKUP_REFUSED);
        return ExitCode::FAILURE;
    }
    with_store(config, |store| async move {
        match store.backup(dest.clone()).await {
            Ok(events) => {
                outln!(
                    "backed up {} ({events} events) to {}",
                    store.describe(),
                    dest.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
