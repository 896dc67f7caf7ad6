//! `gateway dead-letters` and `gateway replay`: the commands that look at and put back failed
//! deliveries. Names are checked, never silently matched to nothing: an unknown event id or
//! plugin is an error. A delivery that already succeeded is replayed only with `--force` (its
//! plugin acts again, in the real world for payout and notifier); `--dry-run` lists what would be
//! replayed.

use std::process::ExitCode;

use super::names::known_plugin;
use super::out::outln;
use super::timefmt::since_ms;
use super::{with_store, DeadLetterArgs, ReplayArgs};
use crate::config::Config;
use crate::store::{
    sqlite::now_ms, DeadLetterCursor, DeadLetterQuery, DeliveryRecord, ReplaySelector, Store,
};

/// A replay's `--plugin` must be configured: a name only the store knows (its `[[plugins]]`
/// entry removed) has no instance to take its deliveries, which the orphan rule dead-letters
/// again once `[delivery] removed_plugin_grace` passes (the replay said it queued them).
pub(crate) fn configured(config: &Config, plugin: &str) -> Result<(), String> {
    if config.plugins.iter().any(|p| p.name == plugin) {
        return Ok(());
    }
    Err(format!(
        "plugin {plugin:?} is not configured (no [[plugins]] entry has this name, only \
         deliveries in the store): replayed, its deliveries would be dead letters again once \
         [delivery] removed_plugin_grace passes; configure it first"
    ))
}

/// An event-id replay without a plugin: its targets split into those of configured plugins
/// and those of names no `[[plugins]]` entry configures any more (see [`configured`]: replayed,
/// they would die again), which it leaves out. Refused when that leaves nothing.
pub(crate) fn without_unconfigured(
    config: &Config,
    targets: Vec<DeliveryRecord>,
) -> Result<(Vec<DeliveryRecord>, Vec<DeliveryRecord>), String> {
    let (kept, left_out): (Vec<_>, Vec<_>) = targets
        .into_iter()
        .partition(|d| config.plugins.iter().any(|p| p.name == d.plugin));
    if kept.is_empty() {
        let names: std::collections::BTreeSet<&str> =
            left_out.iter().map(|d| d.plugin.as_str()).collect();
        let names: Vec<&str> = names.into_iter().collect();
        return Err(format!(
            "nothing to replay: every delivery of these events is of a plugin no [[plugins]] \
             entry configures any more ({}); replayed, they would be dead letters again once \
             [delivery] removed_plugin_grace passes; configure it first",
            names.join(", ")
        ));
    }
    Ok((kept, left_out))
}

/// The store writes an event-id replay takes: one for all of the events' deliveries (as
/// listed), or, when some were left out, one per delivery kept.
pub(crate) fn event_selectors(
    ids: &[String],
    plugin: Option<&String>,
    kept: &[DeliveryRecord],
    left_out: &[DeliveryRecord],
    force: bool,
) -> Vec<ReplaySelector> {
    if left_out.is_empty() {
        return vec![ReplaySelector::Events {
            ids: unique(ids),
            plugin: plugin.cloned(),
            force,
            dead_only: false,
        }];
    }
    kept.iter()
        .map(|d| ReplaySelector::Events {
            ids: vec![d.event_id.clone()],
            plugin: Some(d.plugin.clone()),
            force,
            dead_only: false,
        })
        .collect()
}

/// One delivery an event-id replay leaves out because its plugin is not configured.
pub(crate) fn not_configured_note(d: &DeliveryRecord) -> String {
    format!(
        "skipped: {}:{} ({}): no [[plugins]] entry configures {:?} any more (replayed, it \
         would be a dead letter again); configure it, then `replay {} --plugin {}`",
        d.event_id, d.plugin, d.state, d.plugin, d.event_id, d.plugin
    )
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

/// `--older-than DURATION`: the Unix ms before which a dead letter died (saturating: a duration
/// longer than the clock has run selects nothing).
fn older_than_ms(text: &str) -> Result<i64, String> {
    let d =
        gateway_plugin::config::parse_duration(text).map_err(|e| format!("--older-than: {e}"))?;
    Ok(now_ms().saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
}

/// The filters of `dead-letters`, read before the store is opened (a bad value is a usage
/// error, exit 2). `--purge` deletes exactly what the listing with the same filters shows.
struct Filters {
    since: Option<i64>,
    /// Only those that died before this (Unix ms).
    before: Option<i64>,
}

fn filters(args: &DeadLetterArgs) -> Result<Filters, String> {
    if args.purge {
        // The store deletes by plugin and age only: a filter it cannot apply is refused, never
        // dropped (a purge must not delete more than the listing with its filters shows). Said
        // first: `--purge --since 1h` alone is not missing a filter, it has the wrong one.
        if args.since.is_some() {
            return Err(
                "--purge takes --plugin and --older-than only; --since selects dead letters it \
                 cannot delete by (list them with --since, purge with --older-than)"
                    .to_owned(),
            );
        }
        if args.plugin.is_none() && args.older_than.is_none() {
            return Err(
                "--purge needs a filter: --plugin NAME and/or --older-than DURATION".to_owned(),
            );
        }
    }
    Ok(Filters {
        since: args.since.as_deref().map(since_ms).transpose()?,
        before: args.older_than.as_deref().map(older_than_ms).transpose()?,
    })
}

/// `gateway dead-letters`.
pub fn dead_letters(config: &Config, args: &DeadLetterArgs) -> ExitCode {
    let filters = match filters(args) {
        Ok(f) => f,
        Err(e) => return super::usage(e),
    };
    with_store(config, |store| async move {
        if let Some(p) = &args.plugin {
            if let Err(e) = known_plugin(config, &*store, p).await {
                return fail(e);
            }
        }
        if args.purge {
            return purge(&*store, args, filters.before.unwrap_or(i64::MAX)).await;
        }
        if !args.json {
            outln!(
                "{:<40} {:<12} {:>8} {:>14}  last error",
                "event id",
                "plugin",
                "attempts",
                "died at (ms)"
            );
        }
        let query = DeadLetterQuery {
            plugin: args.plugin.clone(),
            since_ms: filters.since,
            after: filters.before.map(DeadLetterCursor::before),
            limit: None,
        };
        let listed = each_dead_letter(&*store, query, |r| {
            if args.json {
                outln!("{}", serde_json::to_string(r).unwrap_or_default());
                return;
            }
            // A call hung past its timeout still runs: a replay needs --force meanwhile.
            let running = if r.running { "[call running] " } else { "" };
            outln!(
                "{:<40} {:<12} {:>8} {:>14}  {running}{}",
                r.event_id,
                r.plugin,
                r.attempts,
                r.updated_at_ms,
                r.last_error.as_deref().unwrap_or("")
            );
        })
        .await;
        match listed {
            Ok(n) if !args.json => outln!("{n} dead letter(s)"),
            Ok(_) => {}
            Err(e) => return fail(e),
        }
        ExitCode::SUCCESS
    })
}

/// How many dead letters [`each_dead_letter`] reads at a time: what the command holds in
/// memory, however many there are (after a long outage, millions).
const PAGE: u32 = 1_000;

/// Calls `f` with every dead letter `query` selects (its `limit` ignored), newest first, read
/// a page at a time; returns how many. Those that die meanwhile are newer than the first
/// page and not seen; those replayed meanwhile may still be.
async fn each_dead_letter(
    store: &dyn Store,
    mut query: DeadLetterQuery,
    mut f: impl FnMut(&DeliveryRecord),
) -> Result<u64, crate::store::StoreError> {
    query.limit = Some(PAGE);
    let mut seen = 0u64;
    loop {
        let page = store.dead_letters(query.clone()).await?;
        page.iter().for_each(&mut f);
        seen += page.len() as u64;
        match page.last() {
            Some(last) if page.len() == PAGE as usize => {
                query.after = Some(DeadLetterCursor::after(last));
            }
            _ => return Ok(seen),
        }
    }
}

/// `gateway dead-letters --purge`: the dead letters of `--plugin` (if given) that died before
/// `before` (`--older-than`, else all of them).
async fn purge(store: &dyn Store, args: &DeadLetterArgs, before: i64) -> ExitCode {
    match store.purge_dead_letters(args.plugin.clone(), before).await {
        Ok(n) if args.json => {
            outln!("{}", serde_json::json!({ "deleted": n }));
            ExitCode::SUCCESS
        }
        Ok(n) => {
            outln!("{n} dead letter(s) deleted");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// The deliveries a replay of `args.event_ids` would touch, or why the command is refused
/// (shared with the admin API's `POST /api/v1/replay`). `--dead-letters` is not read here:
/// [`replay_dead_letters`] reads them a page at a time.
pub(crate) async fn targets(
    config: &Config,
    store: &dyn Store,
    args: &ReplayArgs,
) -> Result<Vec<DeliveryRecord>, String> {
    if let Some(p) = &args.plugin {
        known_plugin(config, store, p).await?;
    }
    let mut out = Vec::new();
    for id in &unique(&args.event_ids) {
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
                None => format!(
                    "event {id:?} has no delivery (it was routed to no plugin, or its dead letters \
                     were purged): nothing to replay"
                ),
            });
        }
        out.append(&mut deliveries);
    }
    Ok(out)
}

/// `ids` without repeats, in their order: an id given twice is looked up and replayed once.
pub(crate) fn unique(ids: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    ids.iter().filter(|id| seen.insert(*id)).cloned().collect()
}

/// Why replaying `d` needs `--force`, if it does: it succeeded, or a call of it is running (or
/// was when its gateway stopped) — replayed, that call's own success would be refused and the
/// plugin run again. A mark the gateway's death left is counted as a crash (and the delivery
/// retried) at the gateway's next start, which a forced replay would skip.
pub fn needs_force(d: &DeliveryRecord) -> Option<&'static str> {
    if d.state == "done" {
        Some("already succeeded")
    } else if d.running {
        Some("its call is running, or was when the gateway last stopped")
    } else {
        None
    }
}

/// `gateway replay`.
pub fn replay(config: &Config, args: &ReplayArgs) -> ExitCode {
    if !args.dead_letters && args.event_ids.is_empty() {
        return super::usage("give event ids or --dead-letters");
    }
    with_store(config, |store| async move {
        if let Some(p) = &args.plugin {
            if let Err(e) = known_plugin(config, &*store, p)
                .await
                .and_then(|()| configured(config, p))
            {
                return fail(e);
            }
        }
        if args.dead_letters {
            return replay_dead_letters(config, &*store, args).await;
        }
        let (targets, left_out) = match targets(config, &*store, args).await.and_then(|t| {
            if args.plugin.is_some() {
                Ok((t, Vec::new()))
            } else {
                without_unconfigured(config, t)
            }
        }) {
            Ok(t) => t,
            Err(e) => return fail(e),
        };
        for d in &left_out {
            eprintln!("{}", not_configured_note(d));
        }
        let forced: Vec<(&DeliveryRecord, &str)> = targets
            .iter()
            .filter_map(|d| needs_force(d).map(|why| (d, why)))
            .collect();
        let refused = !forced.is_empty() && !args.force;
        // A dry run lists every target first, then says what the real run would answer.
        if args.dry_run {
            for d in &targets {
                let verb = match needs_force(d) {
                    Some(why) if refused => format!("needs --force ({why})"),
                    _ => "would replay".to_owned(),
                };
                listed(&verb, d);
            }
            if refused {
                return fail(format!(
                    "the replay would be refused: {} deliveries already succeeded or are being \
                     called; add --force to replay them (dry run)",
                    forced.len()
                ));
            }
            outln!(
                "{} deliveries would be queued again (dry run)",
                targets.len()
            );
            return ExitCode::SUCCESS;
        }
        if refused {
            for (d, why) in &forced {
                eprintln!(
                    "refused: {}:{} {why}; replaying it runs the plugin again (payout and \
                     notifier act in the real world)",
                    d.event_id, d.plugin
                );
            }
            return fail(
                "add --force to replay deliveries that succeeded or whose call is running",
            );
        }
        for d in &targets {
            listed("replaying", d);
        }
        let selectors = event_selectors(
            &args.event_ids,
            args.plugin.as_ref(),
            &targets,
            &left_out,
            args.force,
        );
        queue_again(&*store, selectors, None).await
    })
}

/// `gateway replay --dead-letters`: lists them a page at a time, then queues them again in
/// one store operation (in steps). Unforced, it leaves out those whose call runs (the store's
/// write does too) rather than refusing the rest: a call hung for good would block every
/// replay. Nothing here needs `--force` otherwise (a dead letter never succeeded).
async fn replay_dead_letters(config: &Config, store: &dyn Store, args: &ReplayArgs) -> ExitCode {
    if let Some(p) = &args.plugin {
        if let Err(e) = known_plugin(config, store, p).await {
            return fail(e);
        }
    }
    let query = DeadLetterQuery {
        plugin: args.plugin.clone(),
        ..DeadLetterQuery::default()
    };
    let mut queued = 0u64;
    let listed = each_dead_letter(store, query, |d| {
        if !config.plugins.iter().any(|p| p.name == d.plugin) {
            eprintln!("{}", not_configured_note(d));
            return;
        }
        if !args.force && d.running {
            eprintln!(
                "skipped: {}:{} its call is running (hung past its timeout; it may still \
                 succeed), or was when its gateway last stopped (its next start ends that; on \
                 PostgreSQL, the lapse of that replica's lease): \
                 replay it once that call returned, or now with `replay {} --plugin {} --force` \
                 (the plugin then runs again)",
                d.event_id, d.plugin, d.event_id, d.plugin
            );
            return;
        }
        queued += 1;
        let verb = if args.dry_run {
            "would replay"
        } else {
            "replaying"
        };
        listed(verb, d);
    })
    .await;
    if let Err(e) = listed {
        return fail(e);
    }
    if args.dry_run {
        outln!("{queued} deliveries would be queued again (dry run)");
        return ExitCode::SUCCESS;
    }
    queue_again(
        store,
        dead_letter_selectors(config, args.plugin.as_ref(), args.force),
        Some(queued),
    )
    .await
}

/// The store writes a replay of every dead letter takes: one for `plugin`'s, or, without one,
/// one per configured instance name (a name no entry configures is left out: see
/// [`configured`]).
pub(crate) fn dead_letter_selectors(
    config: &Config,
    plugin: Option<&String>,
    force: bool,
) -> Vec<ReplaySelector> {
    match plugin {
        Some(p) => vec![ReplaySelector::DeadLetters {
            plugin: Some(p.clone()),
            force,
        }],
        None => config
            .plugins
            .iter()
            .map(|p| ReplaySelector::DeadLetters {
                plugin: Some(p.name.clone()),
                force,
            })
            .collect(),
    }
}

/// One delivery a replay takes (or would): `VERB event:plugin (state, N attempt(s))`.
fn listed(verb: &str, d: &DeliveryRecord) {
    outln!(
        "{verb} {}:{} ({}, {} attempt(s))",
        d.event_id,
        d.plugin,
        d.state,
        d.attempts
    );
}

/// The replay's writes, and their count. `listed`: how many lines the listing before them
/// said would be replayed, when the writes select by state rather than by those lines (a
/// running gateway may change deliveries between the two: a dead letter's late call returns,
/// a new one dies), so a count that differs is said to differ, not left to look like a bug.
async fn queue_again(
    store: &dyn Store,
    selectors: Vec<ReplaySelector>,
    listed: Option<u64>,
) -> ExitCode {
    let mut n = 0;
    for selector in selectors {
        match store.replay(selector).await {
            Ok(done) => n += done,
            Err(e) if n > 0 => return fail(format!("{e} (after {n} deliveries queued again)")),
            Err(e) => return fail(e),
        }
    }
    match listed {
        Some(m) if m != n => outln!(
            "{n} deliveries queued again (the list above has {m}: deliveries changed state \
             between the listing and the write, e.g. a new dead letter, or a call that returned)"
        ),
        _ => outln!("{n} deliveries queued again"),
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests;
