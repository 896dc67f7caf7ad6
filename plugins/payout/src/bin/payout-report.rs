//! `payout-report`: reads the payout plugin's ledger.
//!
//! ```text
//! payout-report list --ledger PATH|URL [--from TIME] [--to TIME]
//! payout-report unfinished --ledger PATH|URL [--older-than DURATION]
//! payout-report reconcile --ledger PATH|URL --base-url URL --app-id ID --app-secret-env VAR
//!                         --from TIME --to TIME [--timeout 10s]
//! ```
//! The ledger is an SQLite file or a `postgres://` URL (password from the URL or `$PGPASSWORD`),
//! opened read-only. TIME is Unix milliseconds or ISO 8601 (UTC unless an offset is given);
//! ranges are inclusive.
//! Exit codes: 0 done (no mismatches, nothing unfinished), 1 reconciliation found mismatches or
//! `unfinished` found payouts, 2 usage or other error.

use std::collections::BTreeMap;
use std::process::ExitCode;

use payout::api::LarkClient;
use payout::config::{parse_duration, DEFAULT_TIMEOUT};
use payout::ledger::{Ledger, LedgerLocation};
use payout::{report, timefmt};

const USAGE: &str = "usage:
  payout-report list --ledger PATH|URL [--from TIME] [--to TIME]
  payout-report unfinished --ledger PATH|URL [--older-than DURATION]
  payout-report reconcile --ledger PATH|URL --base-url URL --app-id ID --app-secret-env VAR --from TIME --to TIME [--timeout 10s]
PATH|URL: the SQLite file, or postgres://USER@HOST/DB (password from the URL or $PGPASSWORD).
TIME: Unix milliseconds or ISO 8601 (2024-05-01, 2024-05-01T08:00:00Z); ranges are inclusive
(a --to date alone is its whole day: --from 2024-05-01 --to 2024-05-31 is all of May).
DURATION: e.g. 30m, 1h, 2d (unfinished: only payouts recorded at least that long ago).
Exit codes: 0 done, 1 mismatches (reconcile) or unfinished payouts found, 2 usage or other error.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("payout-report: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<ExitCode, String> {
    let Some((command, rest)) = args.split_first() else {
        return Err(USAGE.to_owned());
    };
    if matches!(command.as_str(), "-h" | "--help" | "help") {
        println!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    }
    let allowed: &[&str] = match command.as_str() {
        "list" => &["ledger", "from", "to"],
        "unfinished" => &["ledger", "older-than"],
        "reconcile" => &[
            "ledger",
            "base-url",
            "app-id",
            "app-secret-env",
            "from",
            "to",
            "timeout",
        ],
        other => return Err(format!("unknown command {other:?}\n{USAGE}")),
    };
    let opts = options(rest, allowed)?;
    let need = |key: &str| {
        opts.get(key)
            .cloned()
            .ok_or_else(|| format!("--{key} is required\n{USAGE}"))
    };
    let time = |key: &str| -> Result<Option<u64>, String> {
        let parse = if key == "to" {
            timefmt::parse_until
        } else {
            timefmt::parse_time
        };
        opts.get(key)
            .map(|v| parse(v).map_err(|e| format!("--{key}: {e}")))
            .transpose()
    };
    let location = LedgerLocation::parse(&need("ledger")?).map_err(|e| format!("--ledger: {e}"))?;
    if let LedgerLocation::File(path) = &location {
        if !path.exists() {
            return Err(format!("no ledger at {}", path.display()));
        }
    }
    let ledger = Ledger::open_at(&location, true).map_err(|e| e.to_string())?;
    let (from, to) = (time("from")?, time("to")?);
    let mut out = std::io::stdout().lock();
    if command == "list" {
        report::list(&ledger, from, to, &mut out).map_err(|e| e.to_string())?;
        return Ok(ExitCode::SUCCESS);
    }
    if command == "unfinished" {
        let age = match opts.get("older-than") {
            Some(d) => parse_duration(d).map_err(|e| format!("--older-than: {e}"))?,
            None => std::time::Duration::ZERO,
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| format!("the clock is before 1970: {e}"))?;
        let before = now.saturating_sub(age).as_millis();
        let before = u64::try_from(before).unwrap_or(u64::MAX);
        let found = report::unfinished(&ledger, before, &mut out).map_err(|e| e.to_string())?;
        return Ok(if found == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let (Some(from), Some(to)) = (from, to) else {
        return Err(format!("reconcile needs --from and --to\n{USAGE}"));
    };
    if from > to {
        return Err("--from is after --to".to_owned());
    }
    let var = need("app-secret-env")?;
    let secret = std::env::var(&var)
        .ok()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("environment variable {var} (--app-secret-env) is not set"))?;
    let timeout = match opts.get("timeout") {
        Some(t) => parse_duration(t).map_err(|e| format!("--timeout: {e}"))?,
        None => DEFAULT_TIMEOUT,
    };
    let client = LarkClient::new(&need("base-url")?, &need("app-id")?, &secret, timeout);
    let mismatches =
        report::reconcile(&ledger, &client, from, to, &mut out).map_err(|e| e.to_string())?;
    Ok(if mismatches.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `--key value` or `--key=value` pairs, each at most once, from `allowed`.
fn options(args: &[String], allowed: &[&str]) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(format!("unexpected argument {arg:?}\n{USAGE}"));
        };
        let (key, value) = match flag.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => {
                let v = it.next().ok_or_else(|| format!("--{flag} needs a value"))?;
                (flag.to_owned(), v.clone())
            }
        };
        if !allowed.contains(&key.as_str()) {
            return Err(format!("unknown option --{key}\n{USAGE}"));
        }
        if out.insert(key.clone(), value).is_some() {
            return Err(format!("--{key} given twice"));
        }
    }
    Ok(out)
}
