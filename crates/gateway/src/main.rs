//! `gateway`: the Lark/Feishu event gateway binary. This file is the CLI edge: argument parsing,
//! logging setup and exit codes. Exit codes: 0 success, 1 runtime failure, 2 invalid config or
//! usage, 3 `check` found problems, 4 `send` got a non-2xx answer, and for `plugins call` 5 the
//! plugin asked for a retry, 6 it rejected the delivery, 7 it panicked.

mod admin;
mod config;
mod delivery;
mod ingress;
mod intake;
mod isolation;
mod longconn;
mod metrics;
mod ops;
mod plugins;
mod reload;
mod router;
mod send;
mod server;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "gateway",
    version,
    about = "Lark/Feishu event gateway with plugin delivery"
)]
struct Cli {
    /// The config file (for `plugins call`: the plugin's own config, a .toml or .json file).
    #[arg(
        long,
        short,
        global = true,
        default_value = "gateway.toml",
        env = "GATEWAY_CONFIG"
    )]
    config: PathBuf,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (the default). SIGHUP reloads the config.
    Run {
        /// Also reload when the config file changes.
        #[arg(long)]
        watch: bool,
    },
    /// Validate the config, open and ABI-check every plugin, print the route table. Connects to
    /// nothing unless --connect is given.
    Check {
        /// Also bootstrap each websocket app's long connection once and report the result.
        #[arg(long)]
        connect: bool,
    },
    /// Sign, encrypt and POST a sample (or given) event to the running gateway.
    Send(send::SendArgs),
    /// List dead letters.
    DeadLetters(ops::DeadLetterArgs),
    /// Put deliveries back in the queue with fresh attempts (works while the gateway runs).
    Replay(ops::ReplayArgs),
    /// Inspect stored events.
    #[command(subcommand)]
    Events(ops::EventsCommand),
    /// Inspect deliveries.
    #[command(subcommand)]
    Deliveries(ops::DeliveriesCommand),
    /// Store maintenance.
    #[command(subcommand)]
    Store(ops::StoreCommand),
    /// Plugin libraries: inspect, list a folder, try one without a server (`inspect` and `call`
    /// need no gateway config; for `call`, --config is the plugin's own config file).
    #[command(subcommand)]
    Plugins(ops::PluginsCommand),
}

fn main() -> ExitCode {
    // A plugin-host child (isolation = "process") needs no config: it gets everything on stdin.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).and_then(|a| a.to_str()) == Some(isolation::SUBCOMMAND) {
        return match (args.get(2).and_then(|a| a.to_str()), args.get(3)) {
            (Some("--library"), Some(path)) => isolation::serve(std::path::Path::new(path)),
            _ => {
                eprintln!(
                    "usage: gateway {} --library PATH (started by the gateway itself)",
                    isolation::SUBCOMMAND
                );
                ExitCode::from(2)
            }
        };
    }
    let matches = Cli::command().get_matches();
    // `plugins call` reads --config as the plugin's config file, only when it was written on
    // the command line (not the default, not $GATEWAY_CONFIG, both meant for the gateway).
    let config_given =
        matches.value_source("config") == Some(clap::parser::ValueSource::CommandLine);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.format(&mut Cli::command()).exit(),
    };
    if let Some(Command::Plugins(cmd)) = &cli.command {
        init_logging(cli.log_format, None);
        return ops::plugins(cmd, &cli.config, config_given);
    }
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(cli.log_format, config.log_level.as_deref());
    match cli.command.unwrap_or(Command::Run { watch: false }) {
        Command::Run { watch } => with_runtime(|| server::run(config, watch)),
        Command::Check { connect } => ops::check(&config, connect),
        Command::Send(args) => match runtime().map(|rt| rt.block_on(send::send(&config, &args))) {
            Ok(Ok(status)) if (200..300).contains(&status) => ExitCode::SUCCESS,
            Ok(Ok(_)) => ExitCode::from(4),
            Ok(Err(e)) | Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::DeadLetters(args) => ops::dead_letters(&config, &args),
        Command::Replay(args) => ops::replay(&config, &args),
        Command::Events(cmd) => ops::events(&config, &cmd),
        Command::Deliveries(cmd) => ops::deliveries(&config, &cmd),
        Command::Store(cmd) => ops::store(&config, &cmd),
        Command::Plugins(cmd) => ops::plugins(&cmd, &cli.config, config_given),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gateway")
        .build()?)
}

fn with_runtime<F, Fut>(f: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let result = runtime().and_then(|rt| {
        let result = rt.block_on(f());
        // Dropping a runtime waits for every blocking thread, including a plugin call that
        // hangs past its timeout; after the grace period `run` already honoured, don't.
        rt.shutdown_timeout(std::time::Duration::from_millis(500));
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level.unwrap_or("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // The "listening on" lines are logged at every level (`off` included): scripts and
    // supervisors wait for them.
    let filter = match "gateway::ready=info".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    // Colours only on a terminal (not in files, pipes or journald) and never with NO_COLOR.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
