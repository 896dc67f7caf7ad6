//! `gateway events list` and `gateway deliveries list`: what the store holds, newest first, with
//! filters, as a table (times in RFC 3339 UTC with the Unix milliseconds alongside) or JSON lines.
//! Finished deliveries show no `next_at` (here, and in `dead-letters --json` and `events show`:
//! the JSON of a [`DeliveryRecord`] is written here). A plugin or app name filtered by must exist (in the
//! config or the store), as for `dead-letters` and `replay`: a typo is an error, not an empty
//! list.

use std::process::ExitCode;

use super::names::{known_app, known_plugin, known_type};
use super::out::outln;
use super::timefmt::{rfc3339, since_ms};
use super::with_store;
use crate::config::Config;
use crate::store::{DeliveryFilter, DeliveryRecord, EventFilter, EventSummary, StoreError};

/// Filters of `events list`.
#[derive(Debug, Clone, clap::Args)]
pub struct EventListArgs {
    /// Only this app's events.
    #[arg(long)]
    pub app: Option<String>,
    /// Only this event type.
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// Only events received in the last DURATION ("2h", "1h30m"), or since an RFC 3339 time
    /// ("2026-12-02T14:00:00Z") or date, or this Unix time in ms.
    #[arg(long)]
    pub since: Option<String>,
    /// Only events with a delivery in this state.
    #[arg(long, value_parser = ["pending", "done", "dead"])]
    pub state: Option<String>,
    /// At most this many (newest first; at least 1).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
    /// JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Filters of `deliveries list`.
#[derive(Debug, Clone, clap::Args)]
pub struct DeliveryListArgs {
    /// `pending` (not finished), `retrying` (pending after at least one failed attempt) or `dead`.
    #[arg(long, value_parser = ["pending", "retrying", "dead"])]
    pub state: String,
    /// Only this plugin instance's.
    #[arg(long)]
    pub plugin: Option<String>,
    /// At most this many (most recently changed first; at least 1).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
    /// JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One `events list` row as JSON (also the admin API's `GET /api/v1/events` items).
pub(crate) fn event_row(e: &EventSummary) -> serde_json::Value {
    serde_json::json!({
        "id": e.id,
        "app": e.app,
        "event_type": e.event_type,
        "received_at_ms": e.received_at_ms,
        "received_at": rfc3339(e.received_at_ms),
        "deliveries": e.deliveries,
        "pending": e.pending,
        "dead": e.dead,
    })
}

/// One `deliveries list` row as JSON (also the admin API's deliveries and dead letters); a
/// finished delivery shows no `next_at`; `"running": true` only for one whose call runs.
pub(crate) fn delivery_row(d: &DeliveryRecord) -> serde_json::Value {
    let mut v = serde_json::json!({
        "event_id": d.event_id,
        "plugin": d.plugin,
        "state": d.state,
        "attempts": d.attempts,
        "last_error": d.last_error,
        "updated_at_ms": d.updated_at_ms,
        "updated_at": rfc3339(d.updated_at_ms),
        "crashes": d.crashes,
    });
    if d.running {
        v["running"] = true.into();
    }
    if d.state == "pending" {
        v["next_at_ms"] = d.next_at_ms.into();
        v["next_at"] = rfc3339(d.next_at_ms).into();
    }
    v
}

/// `dead-letters --json` and `events show` (the fields as stored, no RFC 3339 copies): by hand
/// for one rule, `next_at_ms` only while the delivery is pending, as [`delivery_row`] does (a
/// finished delivery has no next attempt; its stored `next_at` is stale); `"running": true` only
/// for a delivery whose call runs; `history` when filled.
impl serde::Serialize for DeliveryRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("DeliveryRecord", 10)?;
        st.serialize_field("event_id", &self.event_id)?;
        st.serialize_field("plugin", &self.plugin)?;
        st.serialize_field("state", &self.state)?;
        st.serialize_field("attempts", &self.attempts)?;
        if self.state == "pending" {
            st.serialize_field("next_at_ms", &self.next_at_ms)?;
        } else {
            st.skip_field("next_at_ms")?;
        }
        st.serialize_field("last_error", &self.last_error)?;
        st.serialize_field("updated_at_ms", &self.updated_at_ms)?;
        st.serialize_field("crashes", &self.crashes)?;
        if self.running {
            st.serialize_field("running", &true)?;
        } else {
            st.skip_field("running")?;
        }
        if self.history.is_empty() {
            st.skip_field("history")?;
        } else {
            st.serialize_field("history", &self.history)?;
        }
        st.end()
    }
}

/// Prints `rows` as JSON lines when `json` (then `None`: done), else hands them back.
fn json_lines(
    rows: Result<Vec<serde_json::Value>, StoreError>,
    json: bool,
) -> Result<Option<Vec<serde_json::Value>>, StoreError> {
    let rows = rows?;
    if !json {
        return Ok(Some(rows));
    }
    for r in &rows {
        outln!("{r}");
    }
    Ok(None)
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::FAILURE
}

/// `gateway events list`.
pub fn events(config: &Config, args: &EventListArgs) -> ExitCode {
    let since = match args.since.as_deref().map(since_ms).transpose() {
        Ok(s) => s.unwrap_or(i64::MIN),
        Err(e) => return super::usage(e),
    };
    let filter = EventFilter {
        app: args.app.clone(),
        event_type: args.event_type.clone(),
        since_ms: since,
        state: args.state.clone(),
        before: None,
        limit: args.limit,
    };
    with_store(config, |store| async move {
        if let Some(app) = &args.app {
            if let Err(e) = known_app(config, &*store, app).await {
                return fail(e);
            }
        }
        if let Some(event_type) = &args.event_type {
            if let Err(e) = known_type(config, &*store, event_type).await {
                return fail(e);
            }
        }
        let rows = store
            .list_events(filter)
            .await
            .map(|rows| rows.iter().map(event_row).collect());
        print_events(rows, args.json)
    })
}

fn print_events(rows: Result<Vec<serde_json::Value>, StoreError>, json: bool) -> ExitCode {
    let rows = match json_lines(rows, json) {
        Ok(Some(rows)) => rows,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => return fail(e),
    };
    outln!(
        "{:<24} {:>14}  {:<40} {:<12} {:<40} deliveries (pending, dead)",
        "received",
        "(ms)",
        "event id",
        "app",
        "event type"
    );
    for r in &rows {
        outln!(
            "{:<24} {:>14}  {:<40} {:<12} {:<40} {} ({}, {})",
            r["received_at"].as_str().unwrap_or(""),
            r["received_at_ms"],
            r["id"].as_str().unwrap_or(""),
            r["app"].as_str().unwrap_or(""),
            r["event_type"].as_str().unwrap_or(""),
            r["deliveries"],
            r["pending"],
            r["dead"]
        );
    }
    outln!("{} event(s)", rows.len());
    ExitCode::SUCCESS
}

/// `gateway deliveries list`.
pub fn deliveries(config: &Config, args: &DeliveryListArgs) -> ExitCode {
    let (state, retrying) = match args.state.as_str() {
        "retrying" => ("pending", true),
        other => (other, false),
    };
    let filter = DeliveryFilter {
        state: state.to_owned(),
        retrying,
        plugin: args.plugin.clone(),
        limit: args.limit,
    };
    with_store(config, |store| async move {
        if let Some(plugin) = &args.plugin {
            if let Err(e) = known_plugin(config, &*store, plugin).await {
                return fail(e);
            }
        }
        let rows = store
            .list_deliveries(filter)
            .await
            .map(|rows| rows.iter().map(delivery_row).collect());
        print_deliveries(rows, args.json)
    })
}

fn print_deliveries(rows: Result<Vec<serde_json::Value>, StoreError>, json: bool) -> ExitCode {
    let rows = match json_lines(rows, json) {
        Ok(Some(rows)) => rows,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => return fail(e),
    };
    outln!(
        "{:<40} {:<12} {:<8} {:>8} {:<24} {:<24} last error",
        "event id",
        "plugin",
        "state",
        "attempts",
        "updated",
        "next attempt"
    );
    for r in &rows {
        outln!(
            "{:<40} {:<12} {:<8} {:>8} {:<24} {:<24} {}",
            r["event_id"].as_str().unwrap_or(""),
            r["plugin"].as_str().unwrap_or(""),
            r["state"].as_str().unwrap_or(""),
            r["attempts"],
            r["updated_at"].as_str().unwrap_or(""),
            r["next_at"].as_str().unwrap_or("-"),
            r["last_error"].as_str().unwrap_or("")
        );
    }
    outln!("{} deliver(ies)", rows.len());
    ExitCode::SUCCESS
}
