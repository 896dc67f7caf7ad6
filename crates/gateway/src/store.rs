//! The durable store: accepted events (the deduplication set) and one delivery record per
//! (event, routed plugin). [`Store`] is the seam for other backends (PostgreSQL for replicas);
//! [`sqlite`] is the embedded default.
//!
//! Contract every backend keeps:
//! - `accept` resolves `Ok` only once the event and its deliveries are durable (fsync'd); a
//!   duplicate id resolves `Duplicate` and records nothing.
//! - Delivery state only moves `pending → done | dead`, `dead → done` (a call that succeeded
//!   after its delivery was dead-lettered: timed out, or orphaned while it ran; only a success
//!   replaces a dead letter), or back to `pending` through `replay`, which bumps the
//!   delivery's `generation`: an outcome names the generation and attempt count it started
//!   from and is recorded only if both still hold, so a replay is never overwritten.
//! - Nothing is ever answered from memory alone: the store is the truth after a crash.
//! - Every outcome that applies, and every crash found, adds a row to the delivery's attempt
//!   history in the same write; the history goes when its delivery goes (retention, purge).
//! - A shared store ([`Store::shared`]: several gateway processes on one database) lets a
//!   delivery's attempt start in one process only: [`Store::start_attempts`] claims it with a
//!   lease, which the process renews while the call and its outcome write are in flight
//!   ([`Store::renew_claims`]); a process whose lease expired mid-call (it died, or could not
//!   reach the store for a whole lease) is counted as crashed by the others.
//! - A delivery whose call runs is shown as running (`DeliveryRecord::running`) until that
//!   call's outcome is recorded, a call hung past its timeout whose delivery is already a dead
//!   letter included; a replay leaves it alone unless forced (in the write itself). The
//!   outcome of a call whose delivery became a dead letter meanwhile is not recorded, but it
//!   ends the "running" (the call has returned).
//! - A finished delivery becomes pending again only through [`Store::replay`]; a retention
//!   [`Store::purge_step`] never removes an event whose delivery a concurrent replay made pending.

mod key_steps;
mod outcome;
pub mod postgres;
mod records;
pub mod sqlite;
mod write_id;

#[cfg(test)]
pub(crate) use outcome::first_call_guard;
pub use outcome::{Finish, FinishRecord, Guard, Trace, DISCARDED, LATE_RETRY, TIMED_OUT};
pub use records::{
    AttemptRecord, DeadLetterCounts, DeadLetterCursor, DeadLetterQuery, DeliveryFilter,
    DeliveryRecord, EventFilter, EventRecord, EventSummary,
};
pub use write_id::WriteId;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use postgres::PgStore;
pub use sqlite::{ReplaySelector, SqliteStore};

/// The most events one [`Store::purge_step`] examines.
pub const PURGE_CHUNK: u64 = 1_000;

/// Where a retention purge goes on from: the last event its previous step examined, in the
/// order the step reads them (arrival time, then the store's own key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeCursor {
    /// The embedded store's events: `(received_at, seq)`.
    Seq(i64, i64),
    /// PostgreSQL's events: `(received_at, id)`.
    Id(i64, String),
}

/// What one step of a retention purge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeStep {
    pub removed: u64,
    /// Where the next step goes on from; `None` once no old event is left to examine.
    pub next: Option<PurgeCursor>,
}

/// The reason of a `crashed` attempt in a delivery's history.
pub const CRASHED: &str = "the gateway died during this call";

/// A boxed future resolving to a store result.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

/// The store could not do what was asked; the event or update was not recorded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(e.to_string())
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError(postgres::error_text(&e))
    }
}

/// An event to record, with the plugin instances it is routed to.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    pub app: String,
    pub event_type: String,
    pub schema: &'static str,
    pub received_at_ms: i64,
    /// The decrypted envelope exactly as received.
    pub body: Arc<str>,
    /// Plugin instance names; empty means unrouted.
    pub plugins: Vec<String>,
}

/// What `accept` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Recorded; one delivery per routed plugin (store key, plugin name).
    New { deliveries: Vec<(i64, String)> },
    /// The id was already recorded; nothing changed.
    Duplicate,
}

/// An event's envelope text, and whether this process has parsed it as JSON: the ingest path
/// has (the body of a fresh hand-off); one read back from a store is checked again before a
/// plugin gets it (a store can be edited by hand).
#[derive(Debug, Clone)]
pub struct Body {
    text: Arc<str>,
    parsed: bool,
}

impl Body {
    /// An envelope the ingest path has parsed.
    pub fn parsed(text: Arc<str>) -> Body {
        Body { text, parsed: true }
    }

    /// An envelope read back from a store.
    pub fn stored(text: Arc<str>) -> Body {
        Body {
            text,
            parsed: false,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether it is known to be JSON.
    pub fn is_parsed(&self) -> bool {
        self.parsed
    }
}

/// A pending delivery with everything needed to call its plugin.
#[derive(Debug, Clone)]
pub struct PendingDelivery {
    pub key: i64,
    pub event_id: String,
    pub plugin: String,
    /// Attempts already made.
    pub attempts: u32,
    /// Bumped by every replay.
    pub generation: u32,
    /// Attempts of this generation during which the gateway died.
    pub crashes: u32,
    pub app: String,
    pub event_type: String,
    pub received_at_ms: i64,
    pub body: Body,
}

/// A due delivery as listed by [`Store::due`] (without the event body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    pub key: i64,
    pub plugin: String,
    pub attempts: u32,
    pub generation: u32,
    pub next_at_ms: i64,
}

/// One page of due deliveries and when the next not-yet-due one is.
#[derive(Debug, Clone, Default)]
pub struct Due {
    pub deliveries: Vec<DueDelivery>,
    pub next_due_ms: Option<i64>,
}

/// A delivery [`Store::dead_letter_plugin`] made a dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphaned {
    pub key: i64,
    /// The delivery's generation (the dead letter's: a replay bumps it).
    pub generation: u32,
    pub event_id: String,
    /// Its call runs in this process (or, in a shared store, is listed as running: its claim is
    /// kept): shown as running until that call's outcome is recorded, or the claim lapses.
    pub running: bool,
}

/// What [`Store::dead_letter_plugin`] did. It goes in steps of keys, each its own write, so a
/// step that fails leaves the steps before it in: their dead letters are listed here all the
/// same (the caller's put-back, when a reload brought the name back meanwhile, needs exactly
/// them), with the error that stopped the rest (still pending, for the next round).
#[derive(Debug, Default)]
pub struct OrphanRun {
    /// The deliveries made dead letters, by every step that went in.
    pub orphans: Vec<Orphaned>,
    /// The error of the step that failed, when one did after others went in.
    pub stopped: Option<StoreError>,
}

/// Counts for metrics and readiness.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backlog {
    pub pending: u64,
    pub oldest_pending_ms: Option<i64>,
    /// Pending deliveries per plugin instance name.
    pub pending_by_plugin: Vec<(String, u64)>,
    /// Dead letters now in the store.
    pub dead: u64,
}

/// What [`Store::recover_crashed`] found: how many crashed attempts it counted, and how many
/// of those deliveries it made dead letters, per plugin (for `gateway_dead_letters_total`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    pub found: u64,
    pub dead: Vec<(String, u64)>,
}

impl Recovered {
    /// Counts its dead letters in `gateway_dead_letters_total`.
    pub fn count_dead_letters(&self) {
        for (plugin, n) in &self.dead {
            crate::metrics::get()
                .dead_letters
                .get_or_create(&crate::metrics::plugin(plugin))
                .inc_by(*n);
        }
    }
}

/// A durable event store.
pub trait Store: Send + Sync + 'static {
    /// Records an event and its deliveries durably, or reports a duplicate.
    fn accept(&self, event: NewEvent) -> StoreFuture<Accepted>;
    /// Persists the end of attempts (`attempts` = attempts made, including this one), each only
    /// if the delivery still matches `guard` (same generation, same attempt count, pending — or
    /// dead when `guard.dead_too`; with `guard.own_mark`, only while the attempt's mark is
    /// still this process's): nobody replayed or finished it meanwhile. Returns whether it
    /// applied. A record of a call that has returned and did not apply to a dead letter its
    /// delivery became meanwhile (the timeout's, or the orphan rule's) ends that dead letter's
    /// "running": the mark, or in a shared store this process's claim, goes; a dead letter of
    /// the call's own (a rejection, a panic, its last attempt) gives it its reason.
    ///
    /// Takes several records in one durable write (a batch's outcomes): all or none are
    /// persisted; one `applied` flag per record, in order.
    fn finish_many(&self, records: Vec<FinishRecord>) -> StoreFuture<Vec<bool>>;
    /// One page of pending deliveries due at `now_ms`, ordered by `(next_at, key)` and strictly
    /// after the cursor `after` (use `(i64::MIN, i64::MIN)` for the first page), at most `limit`.
    fn due(&self, now_ms: i64, after: (i64, i64), limit: usize) -> StoreFuture<Due>;
    /// The deliveries with these keys that are still pending, with their events.
    fn load_pending(&self, keys: Vec<i64>) -> StoreFuture<Vec<PendingDelivery>>;
    /// Forgets finished events received before `before_ms` (the dedup retention) among the
    /// [`PURGE_CHUNK`] oldest ones after `after` (from the oldest: `None`), so one step examines
    /// a bounded number of events however many old ones are still held and never stalls the
    /// writer; returns how many it removed and where the next step goes on from (`None`: no
    /// event left to examine). An event with a pending delivery stays, and so does one with a
    /// dead letter that died at or after `dead_before_ms` (the dead-letter retention): dead
    /// letters wait for an operator.
    fn purge_step(
        &self,
        before_ms: i64,
        dead_before_ms: i64,
        after: Option<PurgeCursor>,
    ) -> StoreFuture<PurgeStep>;
    /// One [`Store::purge_step`] from the oldest event: how many it removed (for the tests).
    #[cfg(test)]
    fn purge(&self, before_ms: i64, dead_before_ms: i64) -> StoreFuture<u64> {
        let step = self.purge_step(before_ms, dead_before_ms, None);
        Box::pin(async move { Ok(step.await?.removed) })
    }
    /// Writes and commits one small row that nothing else reads (the readiness probe: `Ok`
    /// only when the store took a write just now, as an event's would be taken).
    fn probe(&self) -> StoreFuture<()>;
    /// The pending count and the oldest pending delivery's time.
    fn backlog(&self) -> StoreFuture<Backlog>;
    /// The plugin instance names that have pending deliveries.
    fn pending_plugins(&self) -> StoreFuture<Vec<String>>;
    /// Dead-letters every pending delivery of `plugin` last changed before `before_ms` with
    /// `error`; returns them. (A delivery accepted since is spared: its name may have been
    /// configured again by a reload after the caller last looked.) One whose call runs in this
    /// process (marked started, or among `running`: a call of the removed instance hung past
    /// its timeout, say, whose forced replay cleared its mark) stays shown as running (its
    /// mark, or in a shared store this process's claim, kept) until that call's outcome is
    /// recorded: a success replaces the dead letter, any other outcome only ends the running.
    /// Written in steps of keys: an error when nothing went in; a step failing after others
    /// went in is [`OrphanRun::stopped`], beside the dead letters of the steps before it.
    fn dead_letter_plugin(
        &self,
        plugin: String,
        error: String,
        before_ms: i64,
        running: Vec<i64>,
    ) -> StoreFuture<OrphanRun>;
    /// Durably marks attempts as started, before their plugin is called (one write for a
    /// batch): a process that dies during the call leaves the mark behind. Deliveries no longer
    /// matching their guard are skipped, and so (in a shared store) are those another process
    /// holds a live lease on. One flag per delivery, in order: call only the marked ones.
    fn start_attempts(&self, deliveries: Vec<(i64, Guard)>) -> StoreFuture<Vec<bool>>;
    /// Every pending delivery still marked started whose caller is gone — at start, for the
    /// embedded store, every one; in a shared store, those whose lease expired — was being
    /// called when its process died. Counts that attempt and the crash; dead-letters it ("the
    /// gateway died during this call N times") once `max_crashes` or `max_attempts` is
    /// reached. Returns how many were found. A call that timed out and was retried while it
    /// still ran keeps its mark too ([`FinishRecord::call_still_runs`]): its attempt is
    /// counted already, so only the crash is added. (A dead letter whose timed-out call was
    /// running when its process died is left a dead letter; the embedded store records that
    /// crash in its history at start and clears the mark, a shared store's claim on it simply
    /// expires.) Never one of `running` (the deliveries this
    /// process is calling). A shared store finds none until this process has gone a whole
    /// lease without a failed operation (after an outage every lease may have run out while
    /// every replica was alive: they renew first).
    fn recover_crashed(
        &self,
        max_attempts: u32,
        max_crashes: u32,
        running: Vec<i64>,
    ) -> StoreFuture<Recovered>;
    /// Whether other gateway processes may use this store at the same time (then the sweeper
    /// also runs [`Store::recover_crashed`] as it goes).
    fn shared(&self) -> bool;
    /// At shutdown, after the last call: gives up this process's claims on pending deliveries
    /// that are not running (neither marked started nor among `running`: calls hung past their
    /// timeout still run until the process exits), so other replicas take them at once rather
    /// than after the lease. Returns how many (always 0 for a store that is not shared).
    fn release_claims(&self, running: Vec<i64>) -> StoreFuture<u64>;
    /// How long a claim taken by [`Store::start_attempts`] holds, in a store that has claims
    /// (a shared one); `None` otherwise. The engine renews the claims of what it runs well
    /// within it ([`Store::renew_claims`]).
    fn lease(&self) -> Option<std::time::Duration>;
    /// Extends to a whole [`Store::lease`] from now the claims this process still holds on
    /// `keys`: deliveries whose call, or whose outcome write, is in flight here. A claim another
    /// process holds, or one given up, is left alone (never taken back), and no lease is
    /// shortened. Returns how many were extended (always 0 for a store without claims).
    fn renew_claims(&self, keys: Vec<i64>) -> StoreFuture<u64>;
    /// Where the store is, for logs and the CLI (a database password is never shown).
    fn describe(&self) -> String;
    /// Stops background work after the writes already queued, and waits for it (blocking).
    fn close(&self);

    // Operator commands (`gateway events`, `deliveries`, `dead-letters`, `replay`, `store`).

    /// One event and its deliveries, each with its attempt history.
    fn event(&self, id: String) -> StoreFuture<Option<EventRecord>>;
    /// Dead letters as `query` selects them (newest first). Commands that may meet many read
    /// them a page at a time.
    fn dead_letters(&self, query: DeadLetterQuery) -> StoreFuture<Vec<DeliveryRecord>>;
    /// How many dead letters there are (optionally one plugin's), and how many of them show as
    /// running (`DeliveryRecord::running`): what a replay of every dead letter would queue
    /// and leave out, counted without reading them all.
    fn dead_letter_counts(&self, plugin: Option<String>) -> StoreFuture<DeadLetterCounts>;
    /// Every plugin name that has a delivery in the store.
    fn plugin_names(&self) -> StoreFuture<Vec<String>>;
    /// Stored events, newest first.
    fn list_events(&self, filter: EventFilter) -> StoreFuture<Vec<EventSummary>>;
    /// Deliveries in one state, most recently changed first.
    fn list_deliveries(&self, filter: DeliveryFilter) -> StoreFuture<Vec<DeliveryRecord>>;
    /// Checks the store's consistency; returns the problems found (none: sound).
    fn check(&self) -> StoreFuture<Vec<String>>;
    /// Puts deliveries back to `pending` with fresh attempts and a new generation; returns
    /// how many.
    fn replay(&self, selector: ReplaySelector) -> StoreFuture<u64>;
    /// Deletes dead letters (optionally one plugin's) that died before `before_ms`; returns
    /// how many. Their events go with the next retention purge once nothing else holds them.
    fn purge_dead_letters(&self, plugin: Option<String>, before_ms: i64) -> StoreFuture<u64>;
    /// Writes a consistent copy of the store to the new file `dest` (while the gateway runs)
    /// and syncs it; returns how many events it holds. A database server's store refuses: its
    /// own tools back it up.
    fn backup(&self, dest: std::path::PathBuf) -> StoreFuture<u64>;
}

/// Opens the store `config` names: the embedded SQLite file (created if missing unless
/// `existing`, which the operator commands ask for) or the PostgreSQL database (migrated).
pub async fn open(
    config: &crate::config::StoreConfig,
    existing: bool,
) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    use crate::config::StoreConfig;
    Ok(match config {
        StoreConfig::Sqlite { path } => {
            let path = path.clone();
            let store = tokio::task::spawn_blocking(move || match existing {
                true => SqliteStore::open_existing(&path),
                false => SqliteStore::open(&path),
            })
            .await
            .map_err(|e| StoreError(format!("opening the store: {e}")))??;
            std::sync::Arc::new(store)
        }
        StoreConfig::Postgres(settings) => {
            std::sync::Arc::new(PgStore::open(settings, !existing).await?)
        }
    })
}
