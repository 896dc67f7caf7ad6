//! `POST /api/v1/replay`: the CLI's replay rules (`ops::replay`) behind the JSON API and the
//! console's buttons.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{no_nul, not_found_or_bad, Admin, ApiError};
use crate::ops::ReplayArgs;
use std::sync::Arc;

use crate::store::{DeliveryRecord, ReplaySelector, Store};

/// One delivery to replay, by event and plugin.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveryRef {
    event_id: String,
    plugin: String,
}

/// `POST /api/v1/replay`: exactly one of `event_ids`, `dead_letters`, `deliveries`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    #[serde(default)]
    event_ids: Vec<String>,
    #[serde(default)]
    dead_letters: bool,
    #[serde(default)]
    deliveries: Vec<DeliveryRef>,
    plugin: Option<String>,
    #[serde(default)]
    force: bool,
    /// With `deliveries`: replay only those still dead letters (the console's dead letters page).
    #[serde(default)]
    dead_only: bool,
    #[serde(default)]
    dry_run: bool,
}

fn refs(ds: &[DeliveryRecord]) -> Vec<Value> {
    ds.iter()
        .map(|d| json!({"event_id": d.event_id, "plugin": d.plugin, "state": d.state, "attempts": d.attempts}))
        .collect()
}

/// Replays what the body selects, with the CLI's rules: unknown names are errors, a success is
/// re-run only with `force`, and so is a delivery whose call is running (else 409 naming them;
/// a dead-letter selection, `dead_letters` or `dead_only` picks, leaves those out instead and
/// names them in `skipped`), `dry_run` changes nothing.
pub async fn replay(admin: &Admin, body: &[u8]) -> Result<Value, ApiError> {
    let mut req: ReplayRequest =
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("body: {e}")))?;
    // Before any store query: PostgreSQL would fail one with a NUL in it (a 503).
    for (i, id) in req.event_ids.iter().enumerate() {
        no_nul(&format!("event_ids[{i}]"), id)?;
    }
    for (i, d) in req.deliveries.iter().enumerate() {
        no_nul(&format!("deliveries[{i}].event_id"), &d.event_id)?;
        no_nul(&format!("deliveries[{i}].plugin"), &d.plugin)?;
    }
    if let Some(plugin) = &req.plugin {
        no_nul("plugin", plugin)?;
    }
    // A delivery named twice is looked up and replayed once.
    req.event_ids = crate::ops::replay::unique(&req.event_ids);
    let mut seen = std::collections::HashSet::new();
    req.deliveries
        .retain(|d| seen.insert((d.event_id.clone(), d.plugin.clone())));
    let chosen = [
        !req.event_ids.is_empty(),
        req.dead_letters,
        !req.deliveries.is_empty(),
    ];
    if chosen.iter().filter(|c| **c).count() != 1 {
        return Err(ApiError::BadRequest(
            "give exactly one of event_ids, dead_letters: true, deliveries".into(),
        ));
    }
    if req.dead_only && req.deliveries.is_empty() {
        return Err(ApiError::BadRequest(
            "dead_only: only with deliveries (dead_letters: true replays every dead letter)".into(),
        ));
    }
    let Some((config, _)) = admin.live_ready().await.and_then(|l| l.current()) else {
        return Err(admin.unready());
    };
    let store = &*admin.store;
    if req.dead_letters {
        return every_dead_letter(&config, admin.store.clone(), &req).await;
    }
    let mut not_configured = Vec::new();
    let (targets, selectors) = if req.deliveries.is_empty() {
        let args = ReplayArgs {
            event_ids: req.event_ids.clone(),
            plugin: req.plugin.clone(),
            dead_letters: req.dead_letters,
            force: req.force,
            dry_run: req.dry_run,
        };
        if let Some(p) = &req.plugin {
            crate::ops::names::known_plugin(&config, store, p)
                .await
                .and_then(|()| crate::ops::replay::configured(&config, p))
                .map_err(not_found_or_bad)?;
        }
        let targets = crate::ops::replay::targets(&config, store, &args)
            .await
            .map_err(not_found_or_bad)?;
        // Without a plugin, deliveries of names no entry configures are left out (see
        // `configured`), and listed in `not_configured`.
        let (targets, left_out) = if req.plugin.is_some() {
            (targets, Vec::new())
        } else {
            crate::ops::replay::without_unconfigured(&config, targets)
                .map_err(ApiError::BadRequest)?
        };
        let selectors = crate::ops::replay::event_selectors(
            &req.event_ids,
            req.plugin.as_ref(),
            &targets,
            &left_out,
            req.force,
        );
        not_configured = left_out;
        (targets, selectors)
    } else {
        if req.plugin.is_some() {
            return Err(ApiError::BadRequest(
                "plugin: not with deliveries (each names its own)".into(),
            ));
        }
        let mut targets = Vec::new();
        let mut selectors = Vec::new();
        for d in &req.deliveries {
            // A delivery of a name no entry configures would die again (see `configured`).
            crate::ops::names::known_plugin(&config, store, &d.plugin)
                .await
                .and_then(|()| crate::ops::replay::configured(&config, &d.plugin))
                .map_err(not_found_or_bad)?;
            let args = ReplayArgs {
                event_ids: vec![d.event_id.clone()],
                plugin: Some(d.plugin.clone()),
                dead_letters: false,
                force: req.force,
                dry_run: req.dry_run,
            };
            targets.extend(
                crate::ops::replay::targets(&config, store, &args)
                    .await
                    .map_err(not_found_or_bad)?,
            );
            selectors.push(ReplaySelector::Events {
                ids: vec![d.event_id.clone()],
                plugin: Some(d.plugin.clone()),
                force: req.force,
                dead_only: req.dead_only,
            });
        }
        (targets, selectors)
    };
    // Picks of the dead letters page unforced leave out what is no dead letter now or whose
    // call runs (the store's write does too) rather than refusing the rest: a call hung for
    // good would block every replay.
    let (skipped, targets): (Vec<DeliveryRecord>, Vec<DeliveryRecord>) = targets
        .into_iter()
        .partition(|d| req.dead_only && !req.force && (d.running || d.state != "dead"));
    let succeeded: Vec<DeliveryRecord> = targets
        .iter()
        .filter(|d| d.state == "done")
        .cloned()
        .collect();
    let running: Vec<DeliveryRecord> = targets
        .iter()
        .filter(|d| d.state != "done" && d.running)
        .cloned()
        .collect();
    if (!succeeded.is_empty() || !running.is_empty()) && !req.force {
        return Err(ApiError::Conflict(json!({
            "error": "refused: some deliveries already succeeded or are being called; replaying \
                      them runs their plugin again (payout and notifier act in the real world): \
                      send force: true",
            "succeeded": refs(&succeeded),
            "running": refs(&running),
            "would_replay": refs(&targets),
            "not_configured": refs(&not_configured),
        })));
    }
    if req.dry_run {
        return Ok(json!({
            "dry_run": true,
            "would_replay": refs(&targets),
            "skipped": refs(&skipped),
            "not_configured": refs(&not_configured),
        }));
    }
    let replayed = write_all(
        admin.store.clone(),
        selectors,
        "replay requested through the admin API",
    )
    .await?;
    Ok(json!({
        "replayed": replayed,
        "deliveries": refs(&targets),
        "skipped": refs(&skipped),
        "not_configured": refs(&not_configured),
    }))
}

/// At most this many deliveries are listed in each list of a reply about every dead letter
/// (there may be hundreds of thousands after an outage: the reply gives their counts).
const LISTED: usize = 500;

/// `{"dead_letters": true}`: every dead letter (of `plugin`), those whose call runs left out
/// unless forced (a call hung for good must not block the others; the store's write keeps the
/// rule). Counted in the store, never all read: the reply lists at most [`LISTED`] of each
/// kind, the most recent first, with `*_count` for all of them and `truncated` when a list is
/// cut.
async fn every_dead_letter(
    config: &crate::config::Config,
    store_owned: Arc<dyn Store>,
    req: &ReplayRequest,
) -> Result<Value, ApiError> {
    let store = &*store_owned;
    if let Some(p) = &req.plugin {
        crate::ops::names::known_plugin(config, store, p)
            .await
            .and_then(|()| crate::ops::replay::configured(config, p))
            .map_err(not_found_or_bad)?;
    }
    let selectors =
        crate::ops::replay::dead_letter_selectors(config, req.plugin.as_ref(), req.force);
    // Counted per configured name: without `plugin`, the dead letters of names no entry
    // configures any more are left out (see `configured`), counted in `not_configured_count`.
    let mut counts = crate::store::DeadLetterCounts::default();
    for s in &selectors {
        if let ReplaySelector::DeadLetters { plugin, .. } = s {
            let c = store.dead_letter_counts(plugin.clone()).await?;
            counts.dead += c.dead;
            counts.running += c.running;
        }
    }
    let not_configured_count = match &req.plugin {
        Some(_) => 0,
        None => store
            .dead_letter_counts(None)
            .await?
            .dead
            .saturating_sub(counts.dead),
    };
    // The newest `LISTED` of each kind are among the newest `LISTED` + running ones (those
    // are few: calls hung past their timeout), and those of names not configured.
    let sample_size = LISTED as u64
        + counts.running.min(LISTED as u64)
        + not_configured_count.min(LISTED as u64)
        + 1;
    let sample = store
        .dead_letters(crate::store::DeadLetterQuery {
            plugin: req.plugin.clone(),
            limit: Some(u32::try_from(sample_size).unwrap_or(u32::MAX)),
            ..Default::default()
        })
        .await?;
    let (sample, not_configured): (Vec<DeliveryRecord>, Vec<DeliveryRecord>) = sample
        .into_iter()
        .partition(|d| config.plugins.iter().any(|p| p.name == d.plugin));
    let (skipped, targets): (Vec<DeliveryRecord>, Vec<DeliveryRecord>) =
        sample.into_iter().partition(|d| !req.force && d.running);
    let (would, left_out) = if req.force {
        (counts.dead, 0)
    } else {
        (counts.dead.saturating_sub(counts.running), counts.running)
    };
    let listed = |ds: &[DeliveryRecord]| refs(&ds[..ds.len().min(LISTED)]);
    let shown = |ds: &[DeliveryRecord]| ds.len().min(LISTED) as u64;
    let truncated = shown(&targets) < would
        || shown(&skipped) < left_out
        || shown(&not_configured) < not_configured_count;
    if req.dry_run {
        return Ok(json!({
            "dry_run": true,
            "would_replay": listed(&targets),
            "would_replay_count": would,
            "skipped": listed(&skipped),
            "skipped_count": left_out,
            "not_configured": listed(&not_configured),
            "not_configured_count": not_configured_count,
            "truncated": truncated,
        }));
    }
    let replayed = write_all(
        store_owned,
        selectors,
        "replay of every dead letter requested through the admin API",
    )
    .await?;
    Ok(json!({
        "replayed": replayed,
        "deliveries": listed(&targets),
        "skipped": listed(&skipped),
        "skipped_count": left_out,
        "not_configured": listed(&not_configured),
        "not_configured_count": not_configured_count,
        "truncated": truncated,
    }))
}

/// Runs a replay's writes (one per selector, each in its own steps) on a task of their own and
/// logs `done` with the count once they all ran: they go on if the client that asked goes away
/// (hyper drops the request's future then), as the README says, never leaving some plugins'
/// deliveries replayed and the rest not, unsaid. A write that fails ends them; its error says how
/// many the writes before it queued again.
async fn write_all(
    store: Arc<dyn Store>,
    selectors: Vec<ReplaySelector>,
    done: &'static str,
) -> Result<u64, ApiError> {
    let writes = tokio::spawn(async move {
        let mut replayed = 0;
        for s in selectors {
            match store.replay(s).await {
                Ok(n) => replayed += n,
                Err(e) => {
                    let e = match replayed {
                        0 => e.to_string(),
                        n => format!("{e} (after {n} deliveries queued again)"),
                    };
                    tracing::warn!(error = %e, "{done}: a write failed");
                    return Err(ApiError::Unavailable(e));
                }
            }
        }
        tracing::info!(deliveries = replayed, "{done}");
        Ok(replayed)
    });
    writes
        .await
        .map_err(|e| ApiError::Unavailable(format!("the replay's writes ended: {e}")))?
}

#[cfg(test)]
mod tests;
