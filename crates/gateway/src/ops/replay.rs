//! `gateway dead-letters` and `gateway replay`: the commands that look at and put back failed
//! deliveries. Names are checked, never silently matched to nothing: an unknown event id or
//! plugin is an error. A delivery that already succeeded is replayed only with `--force` (its
//! plugin acts again, in the real world for payout and notifier); `--dry-run` lists what would be
//! replayed.

use std::process::ExitCode;

use super::timefmt::since_ms;
use super::{with_store, DeadLetterArgs, ReplayArgs};
use crate::config::Config;
use crate::store::{sqlite::now_ms, DeliveryRecord, ReplaySelector, Store};

/// Fails when `plugin` is neither configured nor named by any delivery in the store.
pub(crate) async fn known_plugin(
    config: &Config,
    store: &dyn Store,
    plugin: &str,
) -> Result<(), String> {
    if config.plugins.iter().any(|p| p.name == plugin) {
        return Ok(());
    }
    match store.plugin_names().await {
        Ok(names) if names.iter().any(|n| n == plugin) => Ok(()),
        Ok(_) => Err(format!(
            "unknown plugin {plugin:?}: no [[plugins]] entry and no delivery in the store has this name"
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

/// `gateway dead-letters`.
pub fn dead_letters(config: &Config, args: &DeadLetterArgs) -> ExitCode {
    with_store(config, |store| async move {
        if let Some(p) = &args.plugin {
            if let Err(e) = known_plugin(config, &*store, p).await {
                return fail(e);
            }
        }
        if args.purge {
            return purge(&*store, args).await;
        }
        let since = match args.since.as_deref().map(since_ms).transpose() {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
        let rows = match store.dead_letters(args.plugin.clone(), since).await {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        if args.json {
            for r in &rows {
                println!("{}", serde_json::to_string(r).unwrap_or_default());
            }
            return ExitCode::SUCCESS;
        }
        println!(
            "{:<40} {:<12} {:>8} {:>14}  last error",
            "event id", "plugin", "attempts", "died at (ms)"
        );
        for r in &rows {
            println!(
                "{:<40} {:<12} {:>8} {:>14}  {}",
                r.event_id,
                r.plugin,
                r.attempts,
                r.updated_at_ms,
                r.last_error.as_deref().unwrap_or("")
            );
        }
        println!("{} dead letter(s)", rows.len());
        ExitCode::SUCCESS
    })
}

/// `gateway dead-letters --purge`.
async fn purge(store: &dyn Store, args: &DeadLetterArgs) -> ExitCode {
    if args.plugin.is_none() && args.older_than.is_none() {
        return fail("--purge needs a filter: --plugin NAME and/or --older-than DURATION");
    }
    let before = match &args.older_than {
        None => i64::MAX,
        Some(text) => match gateway_plugin::config::parse_duration(text) {
            Ok(d) => now_ms() - d.as_millis() as i64,
            Err(e) => return fail(format!("--older-than: {e}")),
        },
    };
    match store.purge_dead_letters(args.plugin.clone(), before).await {
        Ok(n) => {
            println!("{n} dead letter(s) deleted");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// The deliveries a replay would touch, or why the command is refused (shared with the admin
/// API's `POST /api/v1/replay`).
pub(crate) async fn targets(
    config: &Config,
    store: &dyn Store,
    args: &ReplayArgs,
) -> Result<Vec<DeliveryRecord>, String> {
    if let Some(p) = &args.plugin {
        known_plugin(config, store, p).await?;
    }
    if args.dead_letters {
        return store
            .dead_letters(args.plugin.clone(), None)
            .await
            .map_err(|e| e.to_string());
    }
    let mut out = Vec::new();
    for id in &args.event_ids {
        let event = store
            .event(id.clone())
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no event {id:?} in the store"))?;
        let mut deliveries: Vec<DeliveryRecord> = event
            .deliveries
            .into_iter()
            .filter(|d| args.plugin.as_ref().is_none_or(|p| &d.plugin == p))
            .collect();
        if deliveries.is_empty() {
            return Err(match &args.plugin {
                Some(p) => format!("event {id:?} has no delivery for plugin {p:?}"),
                None => format!("event {id:?} was routed to no plugin: nothing to replay"),
            });
        }
        out.append(&mut deliveries);
    }
    Ok(out)
}

/// `gateway replay`.
pub fn replay(config: &Config, args: &ReplayArgs) -> ExitCode {
    if !args.dead_letters && args.event_ids.is_empty() {
        eprintln!("error: give event ids or --dead-letters");
        return ExitCode::from(2);
    }
    with_store(config, |store| async move {
        let targets = match targets(config, &*store, args).await {
            Ok(t) => t,
            Err(e) => return fail(e),
        };
        let done: Vec<&DeliveryRecord> = targets.iter().filter(|d| d.state == "done").collect();
        if !done.is_empty() && !args.force {
            for d in &done {
                eprintln!(
                    "refused: {}:{} already succeeded; replaying it runs the plugin again \
                     (payout and notifier act in the real world)",
                    d.event_id, d.plugin
                );
            }
            return fail("add --force to replay deliveries that succeeded");
        }
        let verb = if args.dry_run {
            "would replay"
        } else {
            "replaying"
        };
        for d in &targets {
            println!(
                "{verb} {}:{} ({}, {} attempt(s))",
                d.event_id, d.plugin, d.state, d.attempts
            );
        }
        if args.dry_run {
            println!(
                "{} deliveries would be queued again (dry run)",
                targets.len()
            );
            return ExitCode::SUCCESS;
        }
        let selector = if args.dead_letters {
            ReplaySelector::DeadLetters {
                plugin: args.plugin.clone(),
            }
        } else {
            ReplaySelector::Events {
                ids: args.event_ids.clone(),
                plugin: args.plugin.clone(),
            }
        };
        match store.replay(selector).await {
            Ok(n) => {
                println!("{n} deliveries queued again");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        }
    })
}
