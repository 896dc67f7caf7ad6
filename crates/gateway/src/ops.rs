//! Operator commands that work on the config and the store without running the server:
//! `check`, `dead-letters`, `replay`, `events show`, `store check`. They open the store
//! alongside a running gateway (SQLite WAL allows it); a replay is picked up by the running
//! gateway's sweeper within a few seconds.

use std::process::ExitCode;

use crate::config::Config;
use crate::store::SqliteStore;

#[derive(Debug, Clone, clap::Args)]
pub struct DeadLetterArgs {
    /// Only this plugin's.
    #[arg(long)]
    pub plugin: Option<String>,
    /// Only those that died in the last DURATION ("2h", "1h30m") or at or after this Unix time
    /// in milliseconds.
    #[arg(long)]
    pub since: Option<String>,
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
    /// List stored events, newest first.
    List(list::EventListArgs),
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum DeliveriesCommand {
    /// List deliveries in a state, most recently changed first.
    List(list::DeliveryListArgs),
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum PluginsCommand {
    /// Show a library's descriptor without calling it: name, version, ABI, build tag, whether
    /// it exports the batch entry, whether its crashes are contained.
    Inspect { library: std::path::PathBuf },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum StoreCommand {
    /// Verify the store's integrity.
    Check,
}

mod check;

/// `gateway plugins inspect`.
pub fn plugins(cmd: &PluginsCommand) -> ExitCode {
    let PluginsCommand::Inspect { library } = cmd;
    let lib = match gateway_plugin::host::Library::open(library) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("library   {}", lib.path().display());
    println!("name      {}", lib.name());
    println!("version   {}", lib.version());
    println!(
        "abi       {}.{} (descriptor {} bytes)",
        gateway_plugin::abi::ABI_MAJOR,
        lib.abi_minor(),
        lib.struct_size()
    );
    println!(
        "batch     {}",
        if lib.has_batch_entry() {
            "yes (handle_batch)"
        } else {
            "no (the host calls handle once per delivery)"
        }
    );
    println!("build     {}", lib.build_tag());
    println!(
        "crashes   {}",
        if check::crash_contained(lib.build_tag()) {
            "panics contained (Rust SDK, panic = \"unwind\")"
        } else {
            "not contained: a crash ends the gateway unless isolation = \"process\""
        }
    );
    ExitCode::SUCCESS
}
mod list;
mod replay;

pub use check::check;
pub use replay::{dead_letters, replay};

fn open_store(config: &Config) -> Result<SqliteStore, ExitCode> {
    SqliteStore::open_existing(&config.store_path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
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
