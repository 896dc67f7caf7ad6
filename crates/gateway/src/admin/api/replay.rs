//! `POST /api/v1/replay`: the CLI's replay rules (`ops::replay`) behind the JSON API and the
//! console's buttons.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{no_nul, not_found_or_bad, Admin, ApiError};
use crate::ops::ReplayArgs;
use crate::store::{DeliveryRecord, ReplaySelector};

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
    let req: ReplayRequest =
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
        return Err(ApiError::Unavailable(
            "the gateway is still starting".into(),
        ));
    };
    let store = &*admin.store;
    let (targets, selectors) = if req.deliveries.is_empty() {
        let args = ReplayArgs {
            event_ids: req.event_ids.clone(),
            plugin: req.plugin.clone(),
            dead_letters: req.dead_letters,
            force: req.force,
            dry_run: req.dry_run,
        };
        let targets = crate::ops::replay::targets(&config, store, &args)
            .await
            .map_err(not_found_or_bad)?;
        let selector = if req.dead_letters {
            ReplaySelector::DeadLetters {
                plugin: req.plugin.clone(),
                force: req.force,
            }
        } else {
            ReplaySelector::Events {
                ids: req.event_ids.clone(),
                plugin: req.plugin.clone(),
                force: req.force,
                dead_only: false,
            }
        };
        (targets, vec![selector])
    } else {
        if req.plugin.is_some() {
            return Err(ApiError::BadRequest(
                "plugin: not with deliveries (each names its own)".into(),
            ));
        }
        let mut targets = Vec::new();
        let mut selectors = Vec::new();
        for d in &req.deliveries {
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
    // A dead-letter selection (all of them, or picks of the dead letters page) unforced
    // leaves out what is no dead letter now or whose call runs (the store's write does too)
    // rather than refusing the rest: a call hung for good would block every replay.
    let dead_selection = req.dead_letters || req.dead_only;
    let (skipped, targets): (Vec<DeliveryRecord>, Vec<DeliveryRecord>) = targets
        .into_iter()
        .partition(|d| dead_selection && !req.force && (d.running || d.state != "dead"));
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
        })));
    }
    if req.dry_run {
        return Ok(json!({
            "dry_run": true,
            "would_replay": refs(&targets),
            "skipped": refs(&skipped),
        }));
    }
    let mut replayed = 0;
    for s in selectors {
        replayed += store.replay(s).await?;
    }
    tracing::info!(
        deliveries = replayed,
        "replay requested through the admin API"
    );
    Ok(json!({
        "replayed": replayed,
        "deliveries": refs(&targets),
        "skipped": refs(&skipped),
    }))
}
