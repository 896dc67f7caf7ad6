//! `loadgen`: load generator and baseline receiver for benchmarking the gateway on loopback.
//!
//! - `loadgen make` writes pre-built deliveries for `wrk` + `tests/load/lark.lua`;
//! - `loadgen run` sends unique signed + encrypted deliveries in a closed or open loop, reports
//!   latency percentiles, throughput and errors, and optionally waits for the gateway to deliver
//!   what it stored (end-to-end rate);
//! - `loadgen baseline` is the bare one-thread receiver the gateway is compared with;
//! - `loadgen disk` measures the disk's own write + `fsync` latency (the control for the tail).
//!
//! See `bench/loadgen/README.md`.

mod baseline;
mod client;
mod delivery;
mod disk;
mod make;
mod metrics;
mod pool;
mod run;
mod schedule;
mod stats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "Load generator and baseline receiver for the gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write N pre-built deliveries (ts \t nonce \t sig \t body) for wrk + tests/load/lark.lua.
    Make {
        /// Output file (created or truncated).
        #[arg(long)]
        out: PathBuf,
        /// Number of deliveries (lines).
        #[arg(long)]
        count: u64,
        /// The app's Encrypt Key.
        #[arg(long)]
        key: String,
        /// The app's Verification Token.
        #[arg(long)]
        token: String,
    },
    /// Send unique signed + encrypted deliveries and measure the receiver.
    Run(Box<RunArgs>),
    /// Run the bare baseline receiver (1 thread: verify, decrypt, parse, check token, 200).
    Baseline {
        /// Address to listen on, e.g. 127.0.0.1:7801.
        #[arg(long)]
        listen: SocketAddr,
        /// The app's Encrypt Key.
        #[arg(long)]
        key: String,
        /// The app's Verification Token.
        #[arg(long)]
        token: String,
    },
    /// Measure the disk alone: write + fsync in a loop, one thread, as the store commits.
    Disk {
        /// Folder for the scratch file (removed at the end), on the disk to measure.
        #[arg(long)]
        dir: PathBuf,
        /// How long to write and sync: 15s, 500ms, 2m or plain seconds.
        #[arg(long, short = 'd', default_value = "15s", value_parser = parse_duration)]
        duration: Duration,
        /// Bytes per write (a commit's WAL frames are ~40 KiB under load).
        #[arg(long, default_value_t = 40_960)]
        write: usize,
        /// Size of the file the writes cycle through (SQLite's WAL restarts at ~4 MiB).
        #[arg(long, default_value_t = 4 << 20)]
        file: u64,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Webhook URL (http:// only), e.g. http://127.0.0.1:7799/webhook/event.
    #[arg(long)]
    url: String,
    /// The app's Encrypt Key.
    #[arg(long)]
    key: String,
    /// The app's Verification Token.
    #[arg(long)]
    token: String,
    /// Keep-alive HTTP/1.1 connections.
    #[arg(long, short = 'c', default_value_t = 32)]
    connections: usize,
    /// Load duration: 15s, 500ms, 2m or plain seconds.
    #[arg(long, short = 'd', default_value = "15s", value_parser = parse_duration)]
    duration: Duration,
    /// Open loop at this many requests per second (default: closed loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Gateway admin metrics URL; after the load, wait until delivered >= stored.
    #[arg(long)]
    metrics: Option<String>,
    /// Series summed as "delivered" for the drain.
    #[arg(long, default_value = r#"gateway_deliveries_total{outcome="ok"}"#)]
    wait_delivered: metrics::Selector,
    /// Series summed as "stored" for the drain.
    #[arg(long, default_value = "gateway_events_stored_total")]
    stored_series: metrics::Selector,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Tokio worker threads of the load generator.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Per-request timeout (the connection is then replaced).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// At most this many requests are built before the load starts; later ones on the fly.
    #[arg(long, default_value_t = 100_000)]
    prebuild: u64,
    /// Write every request at least `--slow-ms` slow to this file, one line each: when it was
    /// (intended to be) sent, in ms from the start of the load, then its latency in ms.
    #[arg(long)]
    slow_log: Option<std::path::PathBuf>,
    /// The threshold of `--slow-log`, in milliseconds.
    #[arg(long, default_value_t = 10.0, requires = "slow_log")]
    slow_ms: f64,
}

/// `15s`, `500ms`, `2m`, `1.5s` or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("bad duration {s:?} (try 15s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown duration unit {other:?} in {s:?}")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("bad duration {s:?}: {e}"))
}

fn main() -> std::process::ExitCode {
    match dispatch(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Make {
            out,
            count,
            key,
            token,
        } => make::make(&out, count, &key, &token),
        Command::Baseline { listen, key, token } => baseline::serve(listen, &key, &token),
        Command::Disk {
            dir,
            duration,
            write,
            file,
            json,
        } => {
            let report = disk::run(disk::Plan {
                dir,
                duration,
                write,
                file,
            })?;
            if json {
                println!("{}", report.json());
            } else {
                print!("{}", report.text());
            }
            Ok(())
        }
        Command::Run(args) => {
            let args = *args;
            let watch = match &args.metrics {
                Some(url) => Some(metrics::Watch {
                    target: client::Target::parse(url)?,
                    stored: args.stored_series.clone(),
                    delivered: args.wait_delivered.clone(),
                }),
                None => None,
            };
            let report = run::run(run::Plan {
                target: client::Target::parse(&args.url)?,
                key: args.key,
                token: args.token,
                connections: args.connections,
                duration: args.duration,
                rate: args.rate,
                timeout: args.timeout,
                prebuild: args.prebuild,
                threads: args.threads,
                watch,
                slow: match &args.slow_log {
                    Some(_) if !(args.slow_ms.is_finite() && args.slow_ms >= 0.0) => {
                        anyhow::bail!("--slow-ms must be a number of milliseconds >= 0")
                    }
                    Some(_) => Some(Duration::from_secs_f64(args.slow_ms / 1000.0)),
                    None => None,
                },
            })?;
            if let Some(path) = &args.slow_log {
                std::fs::write(path, report.slow_lines())
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            }
            if args.json {
                println!("{}", report.json());
            } else {
                print!("{}", report.text());
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3d").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
