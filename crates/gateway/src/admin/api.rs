//! The JSON API under `/api/v1` on the admin listener: events (filters, cursor pagination), one
//! event with its deliveries, deliveries by state, dead letters, per-plugin status, an overview for
//! the console, replay and config reload. Built on the same store queries and the same replay
//! rules as the CLI (`ops::list`, `ops::replay`): one implementation, three faces.
//!
//! Never: answers with a verification token (event bodies go through
//! `lark_core::redact::redact_token`, plugin configs through [`redact_config`]), or changes
//! anything on a GET. Authentication and CSRF are checked before a handler runs (`admin.rs`).

use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{history, Admin};
use crate::ops::list::{delivery_row, event_row};
use crate::ops::timefmt::{rfc3339, since_ms};
use crate::ops::ReplayArgs;
use crate::store::{
    sqlite::now_ms, AttemptRecord, DeliveryFilter, DeliveryRecord, EventFilter, ReplaySelector,
};

/// The largest request body the API reads.
pub const MAX_BODY: usize = 64 * 1024;
/// The most rows one page lists.
const MAX_LIMIT: u32 = 500;
const DEFAULT_LIMIT: u32 = 50;

/// Every way an API call fails, each with its status; rendered as `{"error": "..."}` (plus
/// details for a refused replay).
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    BadRequest(String),
    Unauthorized,
    /// A cookie-authenticated POST without the session's CSRF token, or a cross-site POST.
    Csrf,
    NotFound(String),
    MethodNotAllowed(&'static str),
    /// A replay that would re-run deliveries that succeeded, without `force`.
    Conflict(Value),
    TooLarge,
    /// The body did not arrive within `admin::BODY_TIMEOUT`.
    RequestTimeout,
    UnsupportedMediaType,
    /// The reload was refused: the config has problems (the running one stays).
    Unprocessable(String),
    TooManyRequests(u64),
    /// The store failed, or the gateway is still starting.
    Unavailable(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Csrf => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn body(&self) -> Value {
        let error = match self {
            ApiError::BadRequest(m)
            | ApiError::NotFound(m)
            | ApiError::Unprocessable(m)
            | ApiError::Unavailable(m) => m.clone(),
            ApiError::Unauthorized => {
                "authentication required: send `Authorization: Bearer <[admin] token>`".into()
            }
            ApiError::Csrf => "refused: a state-changing call needs the session's CSRF token \
                 (X-CSRF-Token) and must come from the console's own origin"
                .into(),
            ApiError::MethodNotAllowed(allow) => format!("method not allowed (use {allow})"),
            ApiError::Conflict(v) => return v.clone(),
            ApiError::TooLarge => format!("request body over {MAX_BODY} bytes"),
            ApiError::RequestTimeout => format!(
                "the request body did not arrive within {} s",
                super::BODY_TIMEOUT.as_secs()
            ),
            ApiError::UnsupportedMediaType => "send the body as application/json".into(),
            ApiError::TooManyRequests(s) => {
                format!("too many failed logins from this address; try again in {s} s")
            }
        };
        json!({ "error": error })
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::Unavailable(e.to_string())
    }
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

/// The verification token is redacted from an event body wherever it leaves the store.
pub fn redacted_body(body: &str) -> String {
    lark_core::redact::redact_token(body).unwrap_or_else(|| body.to_owned())
}

/// Key fragments whose values are secrets in a plugin's config.
const SECRET_KEYS: [&str; 11] = [
    "token",
    "secret",
    "key",
    "password",
    "passwd",
    "credential",
    "auth",
    "signature",
    "webhook",
    "url",
    "dsn",
];

/// `text` with the password of every URL in it redacted: `scheme://user:password@host/...` →
/// `scheme://user:<redacted>@host/...`, and a user alone (often a token:
/// `https://TOKEN@host`) → `scheme://<redacted>@host`. The userinfo is what precedes the last
/// `@` before the URL's first `/` (or whitespace).
fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let start = at + 3;
        let after = &rest[start..];
        let end = after
            .find(|c: char| c == '/' || c.is_whitespace())
            .unwrap_or(after.len());
        let authority = &after[..end];
        out.push_str(&rest[..start]);
        match authority.rfind('@') {
            Some(sign) if sign > 0 => {
                match authority[..sign].split_once(':') {
                    Some((user, _)) => {
                        out.push_str(user);
                        out.push_str(":<redacted>");
                    }
                    None => out.push_str("<redacted>"),
                }
                out.push_str(&authority[sign..]);
            }
            _ => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// A plugin config with every value under a secret-looking key replaced by `"<redacted>"`, and
/// the password of any URL in any other string (at any depth) by `<redacted>`.
pub fn redact_config(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let lower = k.to_ascii_lowercase();
                    let secret = SECRET_KEYS.iter().any(|s| lower.contains(s));
                    let v = if secret && !v.is_null() {
                        Value::String("<redacted>".into())
                    } else {
                        redact_config(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact_config).collect()),
        Value::String(text) => Value::String(redact_userinfo(text)),
        other => other.clone(),
    }
}

/// The event list, one page: `{"events": [...], "next_cursor": "..." | null}`.
pub async fn events(admin: &Admin, q: &[(String, String)]) -> Result<Value, ApiError> {
    let limit = limit(q)?;
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
pub async fn dead_letters(admin: &Admin, q: &[(String, String)]) -> Result<Value, ApiError> {
    let rows = admin
        .store
        .dead_letters(super::form::get(q, "plugin").map(str::to_owned), since(q)?)
        .await?;
    Ok(json!({ "dead_letters": rows.iter().map(delivery_row).collect::<Vec<_>>() }))
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
            let instance = plugins
                .iter()
                .find(|s| s.spec.name == name)
                .and_then(|s| s.instance());
            if let Some(i) = instance {
                let lib = i.library();
                v["descriptor"] = json!({
                    "name": lib.name(),
                    "version": lib.version(),
                    "build_tag": lib.build_tag(),
                    "abi_minor": lib.abi_minor(),
                    "batch_entry": lib.has_batch_entry(),
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
    let backlog = admin.store.backlog().await?;
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
    #[serde(default)]
    dry_run: bool,
}

fn refs(ds: &[DeliveryRecord]) -> Vec<Value> {
    ds.iter()
        .map(|d| json!({"event_id": d.event_id, "plugin": d.plugin, "state": d.state, "attempts": d.attempts}))
        .collect()
}

/// Replays what the body selects, with the CLI's rules: unknown names are errors, a success is
/// re-run only with `force` (else 409 naming what would re-run), `dry_run` changes nothing.
pub async fn replay(admin: &Admin, body: &[u8]) -> Result<Value, ApiError> {
    let req: ReplayRequest =
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("body: {e}")))?;
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
            }
        } else {
            ReplaySelector::Events {
                ids: req.event_ids.clone(),
                plugin: req.plugin.clone(),
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
            });
        }
        (targets, selectors)
    };
    let succeeded: Vec<DeliveryRecord> = targets
        .iter()
        .filter(|d| d.state == "done")
        .cloned()
        .collect();
    if !succeeded.is_empty() && !req.force {
        return Err(ApiError::Conflict(json!({
            "error": "refused: some deliveries already succeeded; replaying them runs their plugin \
                      again (payout and notifier act in the real world): send force: true",
            "succeeded": refs(&succeeded),
            "would_replay": refs(&targets),
        })));
    }
    if req.dry_run {
        return Ok(json!({ "dry_run": true, "would_replay": refs(&targets) }));
    }
    let mut replayed = 0;
    for s in selectors {
        replayed += store.replay(s).await?;
    }
    tracing::info!(
        deliveries = replayed,
        "replay requested through the admin API"
    );
    Ok(json!({ "replayed": replayed, "deliveries": refs(&targets) }))
}

/// The replay checks' messages: "no event ..." is a 404, the rest 400.
fn not_found_or_bad(message: String) -> ApiError {
    if message.starts_with("no event") || message.starts_with("unknown plugin") {
        ApiError::NotFound(message)
    } else if message.starts_with("store:") {
        ApiError::Unavailable(message)
    } else {
        ApiError::BadRequest(message)
    }
}

/// `POST /api/v1/reload`: the same reload as SIGHUP; the answer says whether it applied.
pub async fn reload(admin: &Admin) -> Result<Value, ApiError> {
    let Some(live) = admin.live_ready().await else {
        return Err(ApiError::Unavailable(
            "the gateway is still starting".into(),
        ));
    };
    match crate::reload::apply(live, "admin API").await {
        Ok(()) => Ok(json!({ "result": "ok" })),
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
    match rest {
        "events" => {
            get(is_get)?;
            events(admin, q).await
        }
        "deliveries" => {
            get(is_get)?;
            deliveries(admin, q).await
        }
        "dead-letters" => {
            get(is_get)?;
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
                let id = super::form::decode(id)
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
mod tests {
    use super::*;

    #[test]
    fn plugin_configs_lose_their_secrets() {
        let c = json!({"path": "data/x.jsonl", "bot_url": "https://x/hook/abc", "nested": {"app_secret": "s", "n": 1}, "list": [{"token": "t"}]});
        assert_eq!(
            redact_config(&c),
            json!({"path": "data/x.jsonl", "bot_url": "<redacted>", "nested": {"app_secret": "<redacted>", "n": 1}, "list": [{"token": "<redacted>"}]})
        );
    }

    #[test]
    fn passwords_in_urls_are_redacted_under_any_key_at_any_depth() {
        let c = json!({
            "ledger": "postgres://payout:hunter2-pw@db.internal:5432/payout?sslmode=require",
            "path": "data/x.jsonl",
            "n": 3,
            "forward": {"targets": [
                "https://ops:p%40ss@pay.example/hook",
                "https://pay.example/no-userinfo?a=b@c",
                {"mirror": "mysql://root:r00t@10.0.0.2/db and amqp://guest:guest-pw@mq:5672/"},
            ]},
            "clone": "https://ghp_tokenvalue@github.com/org/repo.git",
            "odd": "a://u:p@w@host/x",
            "empty": "scheme://@host",
        });
        assert_eq!(
            redact_config(&c),
            json!({
                "ledger": "postgres://payout:<redacted>@db.internal:5432/payout?sslmode=require",
                "path": "data/x.jsonl",
                "n": 3,
                "forward": {"targets": [
                    "https://ops:<redacted>@pay.example/hook",
                    "https://pay.example/no-userinfo?a=b@c",
                    {"mirror": "mysql://root:<redacted>@10.0.0.2/db and amqp://guest:<redacted>@mq:5672/"},
                ]},
                "clone": "https://<redacted>@github.com/org/repo.git",
                "odd": "a://u:<redacted>@host/x",
                "empty": "scheme://@host",
            })
        );
        let text = redact_config(&c).to_string();
        for secret in ["hunter2", "p%40ss", "r00t", "guest-pw", "ghp_tokenvalue"] {
            assert!(!text.contains(secret), "{secret}: {text}");
        }
    }

    #[test]
    fn cursors_parse_or_are_refused() {
        let q = |c: &str| vec![("cursor".to_owned(), c.to_owned())];
        assert_eq!(cursor(&q("12.ev.1")), Ok(Some((12, "ev.1".to_owned()))));
        assert!(cursor(&q("x")).is_err());
    }
}
