//! The embedded store: SQLite in WAL mode with `synchronous = FULL`, so a committed transaction
//! survives power loss.
//!
//! All writes go through one writer thread that **group-commits**: it takes every write waiting
//! at that moment (under a moderate steady load, after waiting up to 400 µs for more: see
//! `batch`), applies them in one transaction, fsyncs once, then answers each caller. Under
//! load, N concurrent requests cost one fsync instead of N. Reads use connections of their own
//! (WAL lets readers run beside the writer; the engine's, the monitor's and the operators' apart:
//! `readers`) on
//! the blocking pool. No SQLite call ever runs on an async worker thread.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

mod batch;
mod deadline;
mod dedup;
mod floors;
mod hot;
mod ids;
mod inspect;
mod migrate;
mod open;
mod probe;
mod purge;
mod readers;
mod replay;
mod runs;
mod schema;
mod writer;

use inspect::{SOUND_COUNTERS, SOUND_EVENT};
use open::{lock, open_connection};
use readers::Readers;
pub use replay::ReplaySelector;
#[cfg(test)]
use rusqlite::Connection;
use rusqlite::{params, OptionalExtension};
use schema::{SCHEMA, SCHEMA_VERSION};
use tokio::sync::oneshot;

use super::{
    Accepted, Backlog, DeadLetterCounts, DeadLetterQuery, DeliveryFilter, DeliveryRecord, Due,
    DueDelivery, EventFilter, EventRecord, EventSummary, FinishRecord, Guard, NewEvent, OrphanRun,
    Orphaned, PendingDelivery, PurgeCursor, PurgeStep, Store, StoreError, StoreFuture,
};

/// The most writes applied in one transaction.
const MAX_BATCH: usize = 512;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Write {
    /// An event, with the moment its transaction must have begun by ([`deadline`]).
    Accept(NewEvent, std::time::Instant, Reply<Accepted>),
    Finish(Vec<FinishRecord>, Reply<Vec<bool>>),
    /// One step of `dead_letter_plugin`: the plugin's pending deliveries with keys in the range.
    DeadLetterPlugin(String, String, i64, (i64, i64), Reply<Vec<Orphaned>>),
    Start(Vec<(i64, Guard)>, Reply<Vec<bool>>),
    RecoverCrashed(u32, u32, Reply<crate::store::Recovered>),
    Purge(i64, i64, (i64, i64), Reply<PurgeStep>),
    /// One step of `purge_dead_letters`: the dead letters with keys in the range.
    PurgeDeadLetters(Option<String>, i64, (i64, i64), Reply<u64>),
    Replay(ReplaySelector, Reply<u64>),
    /// One step of a replay of every dead letter: those with keys in the range (`replay`).
    /// The last field: when the replay was asked for (a dead letter since is left for the next).
    ReplayDeadRange(Option<String>, bool, (i64, i64), i64, Reply<u64>),
    Probe(Reply<()>),
}

/// The SQLite-backed [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writes: Mutex<Option<mpsc::Sender<Write>>>,
    readers: Readers,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Opened by an operator command (no store lock): the gateway may be writing beside it,
    /// from another process, waiting for the write lock in SQLite's busy handler.
    operator: bool,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens an existing store (for the operator commands): refuses a path with no store
    /// rather than creating an empty one and reporting on it, and a store of another schema
    /// version rather than migrating it under the gateway that may be running on it.
    pub fn open_existing(path: &Path) -> Result<SqliteStore, StoreError> {
        if !path.is_file() {
            return Err(StoreError(format!(
                "no store at {} (is this the config the gateway runs with?)",
                path.display()
            )));
        }
        migrate::require_current(path)?;
        Self::start(path, None)
    }

    /// For `gateway check`: what `run` would make of the store file at `path`, which exists,
    /// read without changing it: `Ok(None)` current, `Ok(Some(version))` an older schema `run`
    /// migrates, an error for a store `run` refuses (a newer schema, not a database).
    pub fn check_existing(path: &Path) -> Result<Option<i64>, StoreError> {
        migrate::check_version(path)
    }

    /// Opens (creating if needed) the database at `path` for a gateway that accepts events:
    /// takes the store's lock (one such process per store: deduplication is in its memory),
    /// migrates an older store, and starts the writer thread, which first reads the id index.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        }
        let lock = lock(path)?;
        open::create_private(path)?;
        migrate::migrate(&open_connection(path)?)?;
        Self::start(path, Some((lock, dedup::SPILL_AT)))
    }

    /// [`SqliteStore::open`] spilling ids to disk at `spill_at` (for the tests).
    #[cfg(test)]
    pub(super) fn open_spilling_at(
        path: &Path,
        spill_at: usize,
    ) -> Result<SqliteStore, StoreError> {
        let lock = lock(path)?;
        migrate::migrate(&open_connection(path)?)?;
        Self::start(path, Some((lock, spill_at)))
    }

    /// Starts the writer thread (holding `lock` until it stops, and reading the id index at
    /// once, spilling it to disk at the given size, when given one) and opens the reader
    /// connection.
    fn start(path: &Path, lock: Option<(std::fs::File, usize)>) -> Result<SqliteStore, StoreError> {
        let writer = open_connection(path)?;
        let readers = Readers::open(path)?;
        let spill_at = lock.as_ref().map(|(_, at)| *at);
        let operator = lock.is_none();
        let store = path.to_path_buf();
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                writer::writer_loop(writer, rx, store, spill_at);
                drop(lock);
            })
            .map_err(|e| StoreError(format!("cannot start writer thread: {e}")))?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                writes: Mutex::new(Some(tx)),
                readers,
                writer_thread: Mutex::new(Some(handle)),
                operator,
            }),
        })
    }

    fn submit<T: Send + 'static>(&self, make: impl FnOnce(Reply<T>) -> Write) -> StoreFuture<T> {
        let (tx, rx) = oneshot::channel();
        let sent = match self.inner.writes.lock() {
            Ok(guard) => match guard.as_ref() {
                Some(sender) => sender.send(make(tx)).is_ok(),
                None => false,
            },
            Err(_) => false,
        };
        Box::pin(async move {
            if !sent {
                return Err(StoreError("store is closed".into()));
            }
            rx.await
                .map_err(|_| StoreError("store writer stopped".into()))?
        })
    }

    /// Stops the writer after the writes already queued, and waits for it.
    fn stop_writer(&self) {
        if let Ok(mut w) = self.inner.writes.lock() {
            w.take();
        }
        if let Ok(mut t) = self.inner.writer_thread.lock() {
            if let Some(handle) = t.take() {
                let _ = handle.join();
            }
        }
    }
}

impl Store for SqliteStore {
    fn accept(&self, event: NewEvent) -> StoreFuture<Accepted> {
        self.submit(|r| Write::Accept(event, deadline::accept_deadline(), r))
    }

    fn finish_many(&self, records: Vec<FinishRecord>) -> StoreFuture<Vec<bool>> {
        self.submit(|r| Write::Finish(records, r))
    }

    fn due(&self, now_ms: i64, after: (i64, i64), limit: usize) -> StoreFuture<Due> {
        self.read(move |c| {
            // A row whose counters are out of range (a file edited by hand, a corrupted page)
            // is passed over, not a failure of the page: it would stop the sweeper there, for
            // every delivery after it, round after round. `store check` reports it.
            let mut stmt = c.prepare_cached(&format!(
                "SELECT key, plugin, attempts, next_at, generation FROM deliveries
                 WHERE state = 'pending' AND next_at <= ?1 AND (next_at, key) > (?2, ?3)
                   AND {SOUND_COUNTERS}
                 ORDER BY next_at, key LIMIT ?4"
            ))?;
            let deliveries = stmt
                .query_map(params![now_ms, after.0, after.1, limit as i64], |r| {
                    Ok(DueDelivery {
                        key: r.get(0)?,
                        plugin: r.get(1)?,
                        attempts: r.get(2)?,
                        next_at_ms: r.get(3)?,
                        generation: r.get(4)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let next_due_ms = c
                .prepare_cached(
                    "SELECT MIN(next_at) FROM deliveries WHERE state = 'pending' AND next_at > ?1",
                )?
                .query_row(params![now_ms], |r| r.get::<_, Option<i64>>(0))?;
            Ok(Due {
                deliveries,
                next_due_ms,
            })
        })
    }

    fn load_pending(&self, keys: Vec<i64>) -> StoreFuture<Vec<PendingDelivery>> {
        self.read(move |c| {
            // Damaged rows are passed over as in `due` (one would fail every key loaded with
            // it); `store check` reports them.
            let mut stmt = c.prepare_cached(&format!(
                "SELECT d.key, e.id, d.plugin, d.attempts,
                        e.app, e.event_type, e.received_at, e.body, d.generation, d.crashes
                 FROM deliveries d JOIN events e ON e.seq = d.event_seq
                 WHERE d.key = ?1 AND d.state = 'pending' AND {SOUND_COUNTERS}
                   AND {SOUND_EVENT}"
            ))?;
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                let row = stmt
                    .query_row(params![key], |r| {
                        Ok(PendingDelivery {
                            key: r.get(0)?,
                            event_id: r.get(1)?,
                            plugin: r.get(2)?,
                            attempts: r.get(3)?,
                            app: r.get(4)?,
                            event_type: r.get(5)?,
                            received_at_ms: r.get(6)?,
                            body: super::Body::stored(Arc::from(r.get::<_, String>(7)?)),
                            generation: r.get(8)?,
                            crashes: r.get(9)?,
                        })
                    })
                    .optional()?;
                out.extend(row);
            }
            Ok(out)
        })
    }

    fn purge_step(
        &self,
        before_ms: i64,
        dead_before_ms: i64,
        after: Option<PurgeCursor>,
    ) -> StoreFuture<PurgeStep> {
        let after = match after {
            None => (i64::MIN, i64::MIN),
            Some(PurgeCursor::Seq(at, seq)) => (at, seq),
            Some(other) => {
                return Box::pin(async move {
                    Err(StoreError(format!(
                        "not this store's purge cursor: {other:?}"
                    )))
                })
            }
        };
        self.submit(|r| Write::Purge(before_ms, dead_before_ms, after, r))
    }

    fn probe(&self) -> StoreFuture<()> {
        self.submit(Write::Probe)
    }

    fn pending_plugins(&self) -> StoreFuture<Vec<String>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT DISTINCT plugin FROM deliveries WHERE state = 'pending' ORDER BY plugin",
            )?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn dead_letter_plugin(
        &self,
        plugin: String,
        error: String,
        before_ms: i64,
        _running: Vec<i64>,
    ) -> StoreFuture<OrphanRun> {
        // What is marked started runs: the writer needs no list (see its `DeadLetterPlugin`).
        // In steps of keys, each its own write: a backlog of millions in one transaction held
        // the write lock for seconds (events waiting past their 1 s get 503).
        let store = self.clone();
        Box::pin(async move {
            let name = plugin.clone();
            let Some(range) = store
                .inspect(move |c| replay::pending_key_range(c, &name))
                .await?
            else {
                return Ok(OrphanRun::default());
            };
            let step = |keys| {
                let (plugin, error) = (plugin.clone(), error.clone());
                store.submit(|r| Write::DeadLetterPlugin(plugin, error, before_ms, keys, r))
            };
            crate::store::key_steps::orphan_steps(range, replay::DEAD_LETTER_STEP, step).await
        })
    }

    fn start_attempts(&self, deliveries: Vec<(i64, Guard)>) -> StoreFuture<Vec<bool>> {
        self.submit(|r| Write::Start(deliveries, r))
    }

    fn recover_crashed(
        &self,
        max_attempts: u32,
        max_crashes: u32,
        running: Vec<i64>,
    ) -> StoreFuture<crate::store::Recovered> {
        // Runs at start only, before any call.
        debug_assert!(running.is_empty());
        self.submit(|r| Write::RecoverCrashed(max_attempts, max_crashes, r))
    }

    fn shared(&self) -> bool {
        false
    }

    fn release_claims(&self, _running: Vec<i64>) -> StoreFuture<u64> {
        Box::pin(async { Ok(0) })
    }

    fn lease(&self) -> Option<std::time::Duration> {
        None // one process: nothing to claim
    }

    fn renew_claims(&self, _keys: Vec<i64>) -> StoreFuture<u64> {
        Box::pin(async { Ok(0) })
    }

    fn describe(&self) -> String {
        self.inner.path.display().to_string()
    }

    fn close(&self) {
        self.stop_writer();
    }

    fn event(&self, id: String) -> StoreFuture<Option<EventRecord>> {
        self.inspect(move |c| inspect::event(c, &id))
    }

    fn dead_letters(&self, query: DeadLetterQuery) -> StoreFuture<Vec<DeliveryRecord>> {
        self.inspect(move |c| inspect::dead_letters(c, &query))
    }

    fn dead_letter_counts(&self, plugin: Option<String>) -> StoreFuture<DeadLetterCounts> {
        self.inspect(move |c| inspect::dead_letter_counts(c, plugin.as_deref()))
    }

    fn plugin_names(&self) -> StoreFuture<Vec<String>> {
        self.inspect(inspect::plugin_names)
    }

    fn list_events(&self, filter: EventFilter) -> StoreFuture<Vec<EventSummary>> {
        self.inspect(move |c| inspect::list_events(c, &filter))
    }

    fn list_deliveries(&self, filter: DeliveryFilter) -> StoreFuture<Vec<DeliveryRecord>> {
        self.inspect(move |c| inspect::list_deliveries(c, &filter))
    }

    fn check(&self) -> StoreFuture<Vec<String>> {
        let path = self.inner.path.clone();
        self.inspect(move |c| {
            // Findings first; a check that cannot finish is one more (never an error that
            // hides the findings made before it).
            let mut problems = inspect::check(c);
            match dedup::check_runs(c, &path) {
                Ok(found) => problems.extend(found),
                Err(e) => problems.push(format!("the id runs could not be checked: {e}")),
            }
            Ok(problems)
        })
    }

    fn replay(&self, selector: ReplaySelector) -> StoreFuture<u64> {
        match selector {
            ReplaySelector::DeadLetters { plugin, force } => {
                let asked = now_ms();
                self.dead_letter_steps("replay", plugin.clone(), move |keys, r| {
                    Write::ReplayDeadRange(plugin.clone(), force, keys, asked, r)
                })
            }
            selector => self.submit(|r| Write::Replay(selector, r)),
        }
    }

    fn backup(&self, dest: PathBuf) -> StoreFuture<u64> {
        self.inspect(move |c| inspect::backup(c, &dest))
    }

    fn purge_dead_letters(&self, plugin: Option<String>, before_ms: i64) -> StoreFuture<u64> {
        // Only what was dead when asked, as a replay's steps (and PostgreSQL's one statement):
        // a delivery that dies while the steps run is left for the next purge, never deleted
        // unseen (it could not be replayed after: its event would have no delivery left).
        let before_ms = before_ms.min(now_ms().saturating_add(1));
        self.dead_letter_steps("purge", plugin.clone(), move |keys, r| {
            Write::PurgeDeadLetters(plugin.clone(), before_ms, keys, r)
        })
    }

    fn backlog(&self) -> StoreFuture<Backlog> {
        self.monitor(|c| {
            let (pending, oldest) = c
                .prepare_cached(
                    "SELECT COUNT(*), MIN(e.received_at) FROM deliveries d
                     JOIN events e ON e.seq = d.event_seq WHERE d.state = 'pending'",
                )?
                .query_row([], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?))
                })?;
            let pending_by_plugin = c
                .prepare_cached(
                    "SELECT plugin, COUNT(*) FROM deliveries WHERE state = 'pending' GROUP BY plugin",
                )?
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64)))?
                .collect::<Result<Vec<_>, _>>()?;
            let dead: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM deliveries WHERE state = 'dead'")?
                .query_row([], |r| r.get(0))?;
            Ok(Backlog {
                pending: pending.max(0) as u64,
                oldest_pending_ms: oldest,
                pending_by_plugin,
                dead: dead.max(0) as u64,
            })
        })
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod backup_tests;
#[cfg(test)]
mod dedup_tests;
#[cfg(test)]
mod history_tests;
#[cfg(test)]
mod inspect_tests;
#[cfg(test)]
mod migrate_tests;
#[cfg(test)]
mod migrate_v5_tests;
#[cfg(test)]
mod outcome_tests;
#[cfg(test)]
mod purge_tests;
#[cfg(test)]
mod running_tests;
#[cfg(test)]
mod steps_tests;
#[cfg(test)]
pub(crate) mod tests;
