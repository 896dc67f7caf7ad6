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
mod tls;

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

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the JSON Schema of gateway.toml (no config needed), for editors: save it and put
    /// `#:schema ./gateway.schema.json` at the top of gateway.toml (taplo / Even Better TOML).
    Schema,
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
    /// Validate the config, open and ABI-check every plugin, print the route table. Opens no
    /// long connection unless --connect is given (a PostgreSQL store is connected to).
    Check {
        /// Also bootstrap and dial each websocket app's long connection once (closed at once)
        /// and report the result.
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
    /// Print a shell completion script to stdout (no config needed), e.g.
    /// `gateway completions bash > /etc/bash_completion.d/gateway`.
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The config file's format.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print the man page (roff) to stdout (no config needed): `gateway man | man -l -`.
    /// deploy/man/gateway.1 is this output.
    Man,
}

fn main() -> ExitCode {
    // Before any thread exists, so every thread (and so every child process) has it empty.
    isolation::clear_ambient_capabilities();
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
    // Only the plugin processes this gateway starts are isolated: an inherited marker (a
    // gateway started from a plugin's process, a shell that exported it) would make
    // in-process plugins believe they are (`Host::isolated`). Still one thread here.
    std::env::remove_var(gateway_plugin::ISOLATED_ENV);
    let matches = Cli::command().get_matches();
    // `plugins call` reads --config as the plugin's config file, only when it was written on
    // the command line (not the default, not $GATEWAY_CONFIG, both meant for the gateway).
    let config_given =
        matches.value_source("config") == Some(clap::parser::ValueSource::CommandLine);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.format(&mut Cli::command()).exit(),
    };
    // `run` writes only logs (stderr); every other command's output goes through
    // `ops::out`: a reader that went away (`| head`) ends it quietly, never with a panic.
    if matches!(cli.command, None | Some(Command::Run { .. })) {
        return command(cli, config_given);
    }
    ops::out::quiet_broken_pipe();
    let code = command(cli, config_given);
    ops::out::finish(code)
}

/// Runs the command `cli` names (`run` when none).
fn command(cli: Cli, config_given: bool) -> ExitCode {
    match &cli.command {
        Some(Command::Plugins(cmd)) => {
            init_logging(cli.log_format, None);
            return ops::plugins(cmd, &cli.config, config_given);
        }
        Some(Command::Completions { shell }) => return completions(*shell),
        Some(Command::Man) => return man_page(),
        Some(Command::Config(ConfigCommand::Schema)) => return config_schema(),
        _ => {}
    }
    // Before it is read: `run --watch` reloads an edit made while the gateway starts.
    let read = reload::file_stamp(&cli.config);
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(cli.log_format, config.log_level.as_deref());
    match cli.command.unwrap_or(Command::Run { watch: false }) {
        Command::Run { watch } => {
            let workers = config.workers;
            with_runtime(workers, || server::run(config, watch.then_some(read)))
        }
        Command::Check { connect } => ops::check(&config, connect),
        Command::Send(args) => send(&config, &args),
        Command::DeadLetters(args) => ops::dead_letters(&config, &args),
        Command::Replay(args) => ops::replay(&config, &args),
        Command::Events(cmd) => ops::events(&config, &cmd),
        Command::Deliveries(cmd) => ops::deliveries(&config, &cmd),
        Command::Store(cmd) => ops::store(&config, &cmd),
        Command::Plugins(cmd) => ops::plugins(&cmd, &cli.config, config_given),
        Command::Completions { shell } => completions(shell),
        Command::Man => man_page(),
        Command::Config(ConfigCommand::Schema) => config_schema(),
    }
}

/// `gateway send`: 4 for a non-2xx answer; 2 for an event file that cannot be read (as for
/// `plugins call`), checked before anything is built or sent.
fn send(config: &Config, args: &send::SendArgs) -> ExitCode {
    if let Some(path) = &args.event {
        if let Err(e) = std::fs::read_to_string(path) {
            eprintln!("error: cannot read event file {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    match runtime_with(config.workers).map(|rt| rt.block_on(send::send(config, args))) {
        Ok(Ok(status)) if (200..300).contains(&status) => ExitCode::SUCCESS,
        Ok(Ok(_)) => ExitCode::from(4),
        Ok(Err(e)) | Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `gateway config schema`.
fn config_schema() -> ExitCode {
    let text = serde_json::to_string_pretty(&config::schema::json_schema()).unwrap_or_default();
    write_stdout(format!("{text}\n").as_bytes())
}

/// Writes generated text to stdout; a closed pipe (`| head`) is not a panic (`ops::out`).
fn write_stdout(bytes: &[u8]) -> ExitCode {
    ops::out::bytes(bytes);
    ExitCode::SUCCESS
}

/// `gateway completions SHELL`.
fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "gateway", &mut out);
    write_stdout(&out)
}

/// `gateway man`: clap_mangen's page of the whole CLI, then what `--help` cannot say (exit
/// codes, signals, files). Deterministic (no date), so the shipped deploy/man/gateway.1 can be
/// compared with it (tests/e2e/cli_extras.rs).
fn man_page() -> ExitCode {
    use std::io::Write;
    let man = clap_mangen::Man::new(Cli::command());
    let mut out = Vec::new();
    let rendered = man
        .render_title(&mut out)
        .and_then(|()| man.render_name_section(&mut out))
        .and_then(|()| man.render_synopsis_section(&mut out))
        .and_then(|()| man.render_description_section(&mut out))
        .and_then(|()| man.render_options_section(&mut out))
        .and_then(|()| man.render_subcommands_section(&mut out))
        .and_then(|()| out.write_all(MAN_EXTRA.as_bytes()))
        .and_then(|()| man.render_version_section(&mut out));
    match rendered {
        Ok(()) => write_stdout(&out),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The man page's sections beyond the CLI's own help (roff).
const MAN_EXTRA: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
success
.TP
\fB1\fR
a runtime failure
.TP
\fB2\fR
an invalid config or usage
.TP
\fB3\fR
\fBcheck\fR found problems
.TP
\fB4\fR
\fBsend\fR got a non\-2xx answer
.TP
\fB5\fR, \fB6\fR, \fB7\fR
\fBplugins call\fR: the plugin asked for a retry, rejected the delivery, panicked (with several
\fB\-\-event\fR files: the first delivery whose outcome is not ok; \fB7\fR also when the batch
entry failed as a whole)
.SH SIGNALS
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
graceful shutdown: in\-flight requests finish, plugin calls get \fB[server] shutdown_grace\fR;
a second signal exits at once (everything acknowledged is already stored)
.TP
\fBSIGHUP\fR
reload the config (validated whole first; the running one stays on any problem) and the
TLS certificate pair
.SH FILES
.TP
\fIgateway.toml\fR
the config (\fB\-\-config\fR, \fBGATEWAY_CONFIG\fR); \fBgateway config schema\fR prints its JSON Schema
.TP
\fI/etc/systemd/system/gateway.service\fR
the systemd unit shipped in deploy/systemd
.SH "SEE ALSO"
README.md (Running in production), ARCHITECTURE.md, docs/plugins.md
"#;

/// The async runtime with `workers` worker threads (`[server] workers`).
fn runtime_with(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .max_blocking_threads(config::BLOCKING_THREADS)
        .enable_all()
        .thread_name("gateway")
        .build()?)
}

fn with_runtime<F, Fut>(workers: usize, f: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let result = runtime_with(workers).and_then(|rt| {
        let result = rt.block_on(f());
        // Dropping a runtime waits for every blocking thread, including a plugin call that
        // hangs past its timeout; after the grace period `run` already honoured, don't.
        rt.shutdown_timeout(std::time::Duration::from_millis(500));
        result
    });
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            1
        }
    };
    if gateway_plugin::host::plugin_code_running() {
        // An in-process plugin's code still runs on some thread (a call hung past its timeout,
        // a `shutdown` or an `init` that outlived the grace): a normal exit would run the C
        // runtime's exit handlers and the libraries' destructors beside it (freeing what it
        // uses, or waiting for a lock it holds). End the process without them; everything
        // acknowledged is already in the store, and the log goes straight to stderr.
        tracing::warn!("in-process plugin code still running: exiting without exit handlers");
        gateway_plugin::host::exit_beside_plugins(code);
    }
    ExitCode::from(code as u8)
}

/// The log filter: `RUST_LOG` when set, else `level` (`[log] level`, checked with the same
/// parser when the config was read), else `info`. A filter the parser refuses is never replaced
/// silently: a warning says so, in the log, or on stderr when the filter in force hides it.
fn init_logging(format: LogFormat, level: Option<&str>) {
    use tracing_subscriber::filter::filter_fn;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::EnvFilter;
    let mut refused = Vec::new();
    let from_env = match std::env::var_os("RUST_LOG") {
        None => None,
        Some(_) => EnvFilter::try_from_default_env()
            .map_err(|e| {
                refused.push(format!(
                    "RUST_LOG is not a log filter ({e}): using [log] level instead"
                ))
            })
            .ok(),
    };
    let filter = from_env.unwrap_or_else(|| {
        let level = level.unwrap_or("info");
        EnvFilter::try_new(level).unwrap_or_else(|e| {
            refused.push(format!(
                "[log] level {level:?} is not a log filter ({e}): using info"
            ));
            EnvFilter::new("info")
        })
    });
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
        LogFormat::Text => builder.finish().with(filter_fn(not_secret)).try_init(),
        LogFormat::Json => builder
            .json()
            .finish()
            .with(filter_fn(not_secret))
            .try_init(),
    };
    for warning in refused {
        if tracing::enabled!(tracing::Level::WARN) {
            tracing::warn!("{warning}");
        } else {
            // The filter in force hides warnings; this one must still be seen.
            eprintln!("warning: {warning}");
        }
    }
}

/// Whether a log line may be written whatever the filter says: tungstenite's trace lines are
/// never (its client handshake logs the whole request line, whose query holds the long
/// connection's `access_key` and `ticket`; they reach tracing through its `log` bridge).
fn not_secret(meta: &tracing::Metadata<'_>) -> bool {
    !(*meta.level() == tracing::Level::TRACE && meta.target().starts_with("tungstenite"))
}
