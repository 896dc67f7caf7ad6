//! What the store's inspection side hands out and takes: an event's and a delivery's records
//! with their attempt history (`events show`, `dead-letters`), the listings' rows, and the
//! filters, queries and cursors of those listings.

#[cfg(doc)]
use super::{Store, Trace};

/// One attempt in a delivery's history: every recorded outcome, oldest first, across replays.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AttemptRecord {
    /// The delivery's generation the attempt belongs to (bumped by every replay).
    pub generation: u32,
    /// The attempt's number within its generation (from 1).
    pub attempt: u32,
    /// As in [`Trace::outcome`], or `crashed`: the gateway died during the call.
    pub outcome: String,
    /// The reason given (a retry's, a dead letter's, a crash's); none for a success.
    pub reason: Option<String>,
    /// When the call started; unknown for a crashed attempt.
    pub started_at_ms: Option<i64>,
    /// How long the call ran; unknown for a crashed attempt.
    pub duration_ms: Option<u64>,
    /// When the outcome was recorded.
    pub recorded_at_ms: i64,
}

/// A delivery's record, for `dead-letters` and `events show` (its JSON: `ops/list.rs`).
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    pub event_id: String,
    pub plugin: String,
    pub state: String,
    pub attempts: u32,
    pub next_at_ms: i64,
    pub last_error: Option<String>,
    pub updated_at_ms: i64,
    /// Attempts during which the gateway died (a crash in a plugin, or `kill -9`).
    pub crashes: u32,
    /// A call of it is running, or was when its gateway stopped (marked started, no outcome
    /// recorded yet): a replay runs it again only when forced. In its JSON only when true.
    pub running: bool,
    /// Every recorded attempt, oldest first (filled by [`Store::event`] only; empty in lists).
    pub history: Vec<AttemptRecord>,
}

/// A stored event, for `events show`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EventRecord {
    pub id: String,
    pub app: String,
    pub event_type: String,
    pub schema: String,
    pub received_at_ms: i64,
    pub body: String,
    pub deliveries: Vec<DeliveryRecord>,
}

/// A stored event in a listing (`events list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSummary {
    pub id: String,
    pub app: String,
    pub event_type: String,
    pub received_at_ms: i64,
    pub deliveries: u64,
    pub pending: u64,
    pub dead: u64,
}

/// Filters of [`Store::list_events`]; newest first (ties by id, descending).
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub app: Option<String>,
    pub event_type: Option<String>,
    pub since_ms: i64,
    /// Only events with a delivery in this state.
    pub state: Option<String>,
    /// A cursor: only events strictly older than this `(received_at_ms, id)` in the listing's
    /// order (received time, then id, both descending). The last row of a page is the next
    /// page's cursor.
    pub before: Option<(i64, String)>,
    pub limit: u32,
}

/// Filters of [`Store::list_deliveries`]; most recently changed first.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// `pending`, `done` or `dead`.
    pub state: String,
    /// Only deliveries with at least one attempt made.
    pub retrying: bool,
    pub plugin: Option<String>,
    pub limit: u32,
}

/// Which dead letters [`Store::dead_letters`] lists: newest first (by the time each died, then
/// event id, then plugin, all descending), optionally one plugin's, optionally died since a
/// time, optionally only those after a cursor in that order, at most `limit` (none: all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterQuery {
    pub plugin: Option<String>,
    pub since_ms: Option<i64>,
    pub after: Option<DeadLetterCursor>,
    pub limit: Option<u32>,
}

/// A place in the dead-letter listing's order: the next page starts after it. Made from the
/// last record of a page, or from a time alone ([`DeadLetterCursor::before`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterCursor {
    pub updated_at_ms: i64,
    pub event_id: String,
    pub plugin: String,
}

impl DeadLetterCursor {
    /// The place just after the last record of a page.
    pub fn after(d: &DeliveryRecord) -> Self {
        Self {
            updated_at_ms: d.updated_at_ms,
            event_id: d.event_id.clone(),
            plugin: d.plugin.clone(),
        }
    }

    /// Only those that died before `ms` (no event id sorts below the empty one).
    pub fn before(ms: i64) -> Self {
        Self {
            updated_at_ms: ms,
            event_id: String::new(),
            plugin: String::new(),
        }
    }
}

/// [`Store::dead_letter_counts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeadLetterCounts {
    /// Dead letters.
    pub dead: u64,
    /// Of those, the ones whose call is running (or was when its gateway stopped).
    pub running: u64,
}
