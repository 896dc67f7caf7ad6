//! The JSON API under `/api/v1` on the admin listener: events (filters, cursor pagination), one
//! event with its deliveries, deliveries by state, dead letters, per-plugin status, an overview for
//! the console, replay and config reload. Built on the same store queries and the same replay
//! rules as the CLI (`ops::list`, `ops::replay`): one implementation, three faces.
//!
//! Never: answers with a verification token (event bodies go through
//! `lark_core::redact::redact_token`, plugin configs through [`super::redact::redact_config`]), or changes
//! anything on a GET. Authentication and CSRF are checked before a handler runs (`admin.rs`). A
//! NUL byte in a query parameter or a replay's names is a 400, in an event's path a 404, before
//! any store query: no id or name holds one, and PostgreSQL would fail the query (a 503).

use hyper::Method;
use serde_json::{json, Value};

use super::redact::{redact_config, redacted_body};
use super::{history, Admin};

mod error;
mod replay;
use crate::ops::list::{delivery_row, event_row};
use crate::ops::timefmt::{rfc3339, since_ms};
use crate::store::{sqlite::now_ms, AttemptRecord, DeadLetterQuery, DeliveryFilter, EventFilter};
pub use replay::replay;

/// The largest request body the API reads: the console's "Replay selected" on a full page
/// ([`MAX_LIMIT`] dead letters) of the longest ids (256 bytes, each byte a control character
/// JSON writes as `\u00XX`) is about 0.8 MB with plugin names of a few dozen bytes.
pub const MAX_BODY: usize = 1024 * 1024;
/// The most rows one page lists.
const MAX_LIMIT: u32 = 500;
const DEFAULT_LIMIT: u32 = 50;

pub use error::ApiError;

/// What a NUL byte in a request's name or id is refused with: no event id or type holds one
/// (the envelope parser refuses them), nor any name the store keeps, and PostgreSQL's text
/// cannot even be compared with one (the query would fail: a 503). So it is refused before any
/// store query, and both stores answer alike.
fn nul_refused(what: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "{what} holds a NUL byte (%00, \\u0000), which no event id or name can hold"
    ))
}

/// Refuses a query string with a NUL byte in any parameter (`app`, `type`, `plugin`, `cursor`,
/// the console's `id` search...): 400, before any store query ([`nul_refused`]).
pub fn no_nul_in_query(q: &[(String, String)]) -> Result<(), ApiError> {
    match q.iter().find(|(k, v)| k.contains('\0') || v.contains('\0')) {
        Some((k, _)) => Err(nul_refused(&format!("query parameter {k:?}"))),
        None => Ok(()),
    }
}

/// Refuses a NUL byte in one of a request body's names or ids, `what` saying which.
pub fn no_nul(what: &str, value: &str) -> Result<(), ApiError> {
    if value.contains('\0') {
        return Err(nul_refused(what));
    }
    Ok(())
}

/// Refuses (400) a query parameter a listing does not take, or one given empty: either would
/// be dropped, widening what the listing (or a replay of its rows) selects (`?plugn=x`,
/// `?plugin=` from a script's unset variable).
fn only(q: &[(String, String)], names: &[&str]) -> Result<(), ApiError> {
    for (k, v) in q {
        if !names.contains(&k.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "query parameter {k:?} is not one of {}",
                names.join(", ")
            )));
        }
        if v.is_empty() {
            return Err(ApiError::BadRequest(format!(
                "query parameter {k:?} is empty (leave it out to not filter)"
            )));
        }
    }
    Ok(())
}

fn limit(q: &[(String, String)]) -> Result<u32, ApiError> {
    match super::form::get(q, "limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(l) => match l.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::BadRequest(format!(
                "limit: {l:?} is not a number from 1 to {MAX_LIMIT}"
            ))),
        },
    }
}

fn state(q: &[(String, String)], allowed: &[&str]) -> Result<Option<String>, ApiError> {
    match super::form::get(q, "state") {
        None => Ok(None),
        Some(s) if allowed.contains(&s) => Ok(Some(s.to_owned())),
        Some(s) => Err(ApiError::BadRequest(format!(
            "state: {s:?} is not one of {}",
            allowed.join(", ")
        ))),
    }
}

fn since(q: &[(String, String)]) -> Result<Option<i64>, ApiError> {
    super::form::get(q, "since")
        .map(|s| since_ms(s).map_err(|e| ApiError::BadRequest(e.replace("--since", "since"))))
        .transpose()
}

/// A page cursor: `<received_at_ms>.<event id>` (the last row of the previous page).
fn cursor(q: &[(String, String)]) -> Result<Option<(i64, String)>, ApiError> {
    let Some(c) = super::form::get(q, "cursor") else {
        return Ok(None);
    };
    c.split_once('.')
        .and_then(|(ms, id)| Some((ms.parse().ok()?, id.to_owned())))
        .map(Some)
        .ok_or_else(|| ApiError::BadRequest(format!("cursor: {c:?} is not a cursor this API gave")))
}

/// The event list, one page: `{"events": [...], "next_cursor": "..." | null}`.
pub async fn events(admin: &Admin, q: &[(String, String)]) -> Result<Value, ApiError> {
    let limit = limit(q)?;
    known_names(admin, super::form::get(q, "app"), None).await?;
    if let Some(event_type) = super::form::get(q, "type") {
        let Some((config, _)) = admin.live_ready().await.and_then(|l| l.current()) else {
            return Err(admin.unready());
        };
        crate::ops::names::known_type(&config, &*admin.store, event_type)
            .await
            .map_err(not_found_or_bad)?;
    }
    let filter = EventFilter {
        app: super::form::get(q, "app").map(str::to_owned),
        event_type: super::form::get(q, "type").map(str::to_owned),
        since_ms: since(q)?.unwrap_or(i64::MIN),
        state: state(q, &["pending", "done", "dead"])?,
        before: cursor(q)?,
        limit: limit + 1,
    };
    let mut rows = admin.store.list_events(filter).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next = more
        .then(|| {
            rows.last()
                .map(|e| format!("{}.{}", e.received_at_ms, e.id))
        })
        .flatten();
    Ok(json!({
        "events": rows.iter().map(event_row).collect::<Vec<_>>(),
        "next_cursor": next,
    }))
}

/// One event: its record, the envelope (token redacted) as text and parsed, its deliveries with
/// every recorded attempt (`history`, oldest first, across replays).
pub async fn event(admin: &Admin, id: &str) -> Result<Value, ApiError> {
    // No event id holds a NUL (the envelope parser refuses it): not in the store, said without
    // asking it (PostgreSQL would fail the query: a 503, where SQLite finds nothing).
    if id.contains('\0') {
        return Err(ApiError::NotFound(format!(
            "no event {id:?} in the store (an event id never holds a NUL byte)"
        )));
    }
    let Some(e) = admin.store.event(id.to_owned()).await? else {
        return Err(ApiError::NotFound(format!("no event {id:?} in the store")));
    };
    let body = redacted_body(&e.body);
    let envelope: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    Ok(json!({
        "id": e.id,
        "app": e.app,
        "event_type": e.event_type,
        "schema": e.schema,
        "received_at_ms": e.received_at_ms,
        "received_at": rfc3339(e.received_at_ms),
        "body": body,
        "envelope": envelope,
        "deliveries": e.deliveries.iter().map(|d| {
            let mut row = delivery_row(d);
            row["history"] = d.history.iter().map(attempt_row).collect();
            row
        }).collect::<Vec<_>>(),
    }))
}

/// One attempt of a delivery's history, with its times also in RFC 3339.
fn attempt_row(a: &AttemptRecord) -> Value {
    json!({
        "generation": a.generation,
        "attempt": a.attempt,
        "outcome": a.outcome,
        "reason": a.reason,
        "started_at_ms": a.started_at_ms,
        "started_at": a.started_at_ms.map(rfc3339),
        "duration_ms": a.duration_ms,
        "recorded_at_ms": a.recorded_at_ms,
        "recorded_at": rfc3339(a.recorded_at_ms),
    })
}

/// Deliveries in a state (`pending`, `retrying`, `done`, `dead`; default `pending`).
pub async fn deliveries(admin: &Admin, q: &[(String, String)]) -> Result<Value, ApiError> {
    let state = state(q, &["pending", "retrying", "done", "dead"])?;
    known_names(admin, None, super::form::get(q, "plugin")).await?;
    let (state, retrying) = match state.as_deref() {
        None => ("pending", false),
        Some("retrying") => ("pending", true),
        Some(s) => (s, false),
    };
    let rows = admin
        .store
        .list_deliveries(DeliveryFilter {
            state: state.to_owned(),
            retrying,
            plugin: super::form::get(q, "plugin").map(str::to_owned),
            limit: limit(q)?,
        })
        .await?;
    Ok(json!({ "deliveries": rows.iter().map(delivery_row).collect::<Vec<_>>() }))
}

/// Dead letters, newest first (`plugin`, `since` filters).
/// The dead letters, newest first, at most `limit` (default 50, at most 500): `{"dead_letters":
/// [...], "truncated": bool}` (`truncated`: there are more; narrow with `plugin` or `since`).
pub async fn dead_letters(admin: &Admin, q: &[(String, String)]) -> Result<Value, ApiError> {
    let limit = limit(q)?;
    known_names(admin, None, super::form::get(q, "plugin")).await?;
    let plugin = super::form::get(q, "plugin").map(str::to_owned);
    let mut rows = admin
        .store
        .dead_letters(DeadLetterQuery {
            plugin,
            since_ms: since(q)?,
            after: None,
            limit: Some(limit + 1),
        })
        .await?;
    let truncated = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    Ok(json!({
        "dead_letters": rows.iter().map(delivery_row).collect::<Vec<_>>(),
        "truncated": truncated,
    }))
}

/// Per plugin instance: what `/status` says (health, pending, calls running, queued), plus its
/// library, descriptor and config (secrets redacted).
pub async fn plugins(admin: &Admin) -> Result<Value, ApiError> {
    let status = admin.status().await;
    let current = admin.live_ready().await.and_then(|l| l.current());
    let mut out = Vec::new();
    let mut names: Vec<String> = status["plugins"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    if let Some((config, _)) = &current {
        for p in &config.plugins {
            if !names.contains(&p.name) {
                names.push(p.name.clone());
            }
        }
    }
    names.sort();
    for name in names {
        let mut v = json!({ "name": name, "status": status["plugins"][&name] });
        if let Some((config, plugins)) = &current {
            if let Some(spec) = config.plugins.iter().find(|p| p.name == name) {
                v["library"] = spec.library.display().to_string().into();
                v["sha256"] = spec.sha256.clone().into();
                v["isolation"] = spec.isolation.as_str().into();
                v["max_concurrency"] = spec.max_concurrency.into();
                v["config"] = redact_config(&spec.config);
            }
            // In process or isolated alike: an isolated instance's process reported it.
            if let Some(slot) = plugins.iter().find(|s| s.spec.name == name) {
                let d = slot.descriptor();
                v["descriptor"] = json!({
                    "name": d.name,
                    "version": d.version,
                    "build_tag": d.build_tag,
                    "abi_minor": d.abi_minor,
                    "batch_entry": d.batch_entry,
                });
            }
        }
        out.push(v);
    }
    Ok(json!({ "plugins": out }))
}

/// What the console's overview shows: readiness, backlog, per-plugin health, and the last hour
/// per minute.
pub async fn overview(admin: &Admin) -> Result<Value, ApiError> {
    let status = admin.status().await;
    let backlog = admin.backlog().await?;
    let now = now_ms();
    // Sampled now too, so the current minute is up to date (the sampler runs every few seconds).
    let totals = history::Totals::from_metrics(&crate::metrics::get().encode());
    admin.history.sample(now.div_euclid(60_000), totals);
    let hour = admin.history.last_hour(now.div_euclid(60_000));
    let last = |n: usize, f: fn(&history::Minute) -> u64| -> u64 {
        // Complete minutes only (the current one is still filling).
        hour.iter().rev().skip(1).take(n).map(f).sum()
    };
    Ok(json!({
        "ready": status["ready"],
        "reason": status["reason"],
        "version": status["version"],
        "pending": backlog.pending,
        "oldest_pending_age_s": backlog.oldest_pending_ms.map(|t| (now - t).max(0) / 1000),
        "dead_letters": backlog.dead,
        "per_minute": {
            "stored": last(5, |m| m.stored) as f64 / 5.0,
            "delivered": last(5, |m| m.delivered) as f64 / 5.0,
            "failed": last(5, |m| m.failed) as f64 / 5.0,
        },
        "plugins": status["plugins"],
        "websocket_apps": status["websocket_apps"],
        "last_hour": hour,
    }))
}

/// The CLI's rule for a filter's name: one neither configured nor found in the store is a 404,
/// not an empty list (a mistyped name would read as "nothing there").
async fn known_names(
    admin: &Admin,
    app: Option<&str>,
    plugin: Option<&str>,
) -> Result<(), ApiError> {
    if app.is_none() && plugin.is_none() {
        return Ok(());
    }
    let Some((config, _)) = admin.live_ready().await.and_then(|l| l.current()) else {
        return Err(admin.unready());
    };
    if let Some(app) = app {
        crate::ops::names::known_app(&config, &*admin.store, app)
            .await
            .map_err(not_found_or_bad)?;
    }
    if let Some(plugin) = plugin {
        crate::ops::names::known_plugin(&config, &*admin.store, plugin)
            .await
            .map_err(not_found_or_bad)?;
    }
    Ok(())
}

/// The replay checks' messages: "no event ...", an unknown name, or a delivery an event does not
/// have ("event ... has no delivery for plugin ...", the README's "unknown ... delivery") is a
/// 404, a store failure a 503, the rest 400.
fn not_found_or_bad(message: String) -> ApiError {
    if message.starts_with("no event")
        || (message.starts_with("event ") && message.contains(" has no delivery for plugin "))
        || message.starts_with("unknown plugin")
        || message.starts_with("unknown app")
        || message.starts_with("unknown event type")
    {
        ApiError::NotFound(message)
    } else if message.starts_with("store:") {
        ApiError::Unavailable(message)
    } else {
        ApiError::BadRequest(message)
    }
}

/// `POST /api/v1/reload`: the same reload as SIGHUP; the answer says whether it applied, and
/// what of it waits for a restart or was refused (`not_applied`).
pub async fn reload(admin: &Admin) -> Result<Value, ApiError> {
    let Some(live) = admin.live_ready().await else {
        return Err(admin.unready());
    };
    match crate::reload::apply(live, "admin API").await {
        Ok(notes) => Ok(json!({ "result": "ok", "not_applied": notes })),
        Err(e) => Err(ApiError::Unprocessable(format!(
            "reload refused, the running config stays: {e}"
        ))),
    }
}

/// Routes `/api/v1/<rest>`.
pub async fn route(
    admin: &Admin,
    method: &Method,
    rest: &str,
    q: &[(String, String)],
    body: &[u8],
) -> Result<Value, ApiError> {
    let get = |allowed: bool| -> Result<(), ApiError> {
        if allowed {
            Ok(())
        } else {
            Err(ApiError::MethodNotAllowed("GET"))
        }
    };
    let post = || -> Result<(), ApiError> {
        if method == Method::POST {
            Ok(())
        } else {
            Err(ApiError::MethodNotAllowed("POST"))
        }
    };
    let is_get = method == Method::GET || method == Method::HEAD;
    no_nul_in_query(q)?;
    match rest {
        "events" => {
            get(is_get)?;
            only(q, &["app", "type", "state", "since", "limit", "cursor"])?;
            events(admin, q).await
        }
        "deliveries" => {
            get(is_get)?;
            only(q, &["state", "plugin", "limit"])?;
            deliveries(admin, q).await
        }
        "dead-letters" => {
            get(is_get)?;
            only(q, &["plugin", "since", "limit"])?;
            dead_letters(admin, q).await
        }
        "plugins" => {
            get(is_get)?;
            plugins(admin).await
        }
        "overview" => {
            get(is_get)?;
            overview(admin).await
        }
        "replay" => {
            post()?;
            replay(admin, body).await
        }
        "reload" => {
            post()?;
            reload(admin).await
        }
        _ => match rest.strip_prefix("events/") {
            Some(id) if !id.is_empty() => {
                get(is_get)?;
                let id = super::form::decode_path(id)
                    .ok_or_else(|| ApiError::BadRequest("bad event id escape".into()))?;
                event(admin, &id).await
            }
            _ => Err(ApiError::NotFound(format!(
                "no API endpoint /api/v1/{rest}"
            ))),
        },
    }
}

#[cfg(test)]
mod tests;
