//! The operator commands' queries on the embedded store (`events show/list`, `deliveries list`,
//! `dead-letters`, `store check`), run on the reader connection.

use rusqlite::{params, Connection, OptionalExtension};

use crate::store::{
    AttemptRecord, DeadLetterCounts, DeadLetterQuery, DeliveryFilter, DeliveryRecord, EventFilter,
    EventRecord, EventSummary, StoreError,
};

/// The columns [`delivery_record`] reads, from [`DELIVERIES`].
const DELIVERY_COLUMNS: &str = "e.id, d.plugin, d.state, d.attempts, d.next_at, d.last_error, \
     d.updated_at, d.crashes, d.started > 0";

/// Deliveries with their event's id (`d` and `e`).
const DELIVERIES: &str = "deliveries d JOIN events e ON e.seq = d.event_seq";

/// A stored counter as shown: clamped to `0..=u32::MAX`.
fn counter(stored: i64) -> u32 {
    u32::try_from(stored.max(0)).unwrap_or(u32::MAX)
}

fn delivery_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryRecord> {
    Ok(DeliveryRecord {
        event_id: r.get(0)?,
        plugin: r.get(1)?,
        state: r.get(2)?,
        // Counters out of range (a file edited by hand, a corrupted page) show as the nearest
        // value, as on PostgreSQL, instead of failing the whole listing; `store check` reports
        // them.
        attempts: counter(r.get(3)?),
        next_at_ms: r.get(4)?,
        last_error: r.get(5)?,
        updated_at_ms: r.get(6)?,
        crashes: counter(r.get(7)?),
        running: r.get(8)?,
        history: Vec::new(),
    })
}

/// The dead letters' page query: `?1` plugin, `?2` since, `?3` limit, `?4`..`?6` the cursor.
/// The bounds on `updated_at` stand on their own, outside any `OR` (a missing one is the
/// widest value), so the partial index of dead letters is searched from the cursor on: inside
/// `?4 IS NULL OR (...)` they were no index range, and each page scanned every newer dead
/// letter (and looked its event up) before its own, a listing of all of them quadratic.
pub(super) fn dead_letters_sql() -> String {
    format!(
        "SELECT {DELIVERY_COLUMNS} FROM {DELIVERIES} WHERE d.state = 'dead'
           AND (?1 IS NULL OR d.plugin = ?1)
           AND d.updated_at >= COALESCE(?2, -9223372036854775808)
           AND d.updated_at <= COALESCE(?4, 9223372036854775807)
           AND (?4 IS NULL OR (d.updated_at, e.id, d.plugin) < (?4, ?5, ?6))
         ORDER BY d.updated_at DESC, e.id DESC, d.plugin DESC LIMIT COALESCE(?3, -1)"
    )
}

pub(super) fn dead_letters(
    c: &Connection,
    q: &DeadLetterQuery,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    let mut stmt = c.prepare_cached(&dead_letters_sql())?;
    let after = q.after.as_ref();
    let rows = stmt.query_map(
        params![
            q.plugin,
            q.since_ms,
            q.limit,
            after.map(|a| a.updated_at_ms),
            after.map(|a| a.event_id.as_str()),
            after.map(|a| a.plugin.as_str()),
        ],
        delivery_record,
    )?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

pub(super) fn dead_letter_counts(
    c: &Connection,
    plugin: Option<&str>,
) -> Result<DeadLetterCounts, StoreError> {
    // The partial index of dead letters holds every one: no scan of the other deliveries.
    let (dead, running) = c.query_row(
        "SELECT COUNT(*), COALESCE(SUM(started > 0), 0) FROM deliveries
         WHERE state = 'dead' AND (?1 IS NULL OR plugin = ?1)",
        params![plugin],
        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
    )?;
    Ok(DeadLetterCounts {
        dead: dead.max(0) as u64,
        running: running.max(0) as u64,
    })
}

pub(super) fn plugin_names(c: &Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt = c.prepare_cached("SELECT DISTINCT plugin FROM deliveries ORDER BY plugin")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

pub(super) fn event(c: &Connection, id: &str) -> Result<Option<EventRecord>, StoreError> {
    let event = c
        .query_row(
            // No index on the id: the narrow `event_ids` table is scanned for its hash.
            "SELECT e.id, e.app, e.event_type, e.schema, e.received_at, e.body, e.seq
             FROM event_ids i CROSS JOIN events e ON e.seq = i.seq
             WHERE i.hash = ?2 AND e.id = ?1",
            params![id, super::ids::id_hash(id)],
            |r| {
                Ok((
                    EventRecord {
                        id: r.get(0)?,
                        app: r.get(1)?,
                        event_type: r.get(2)?,
                        schema: r.get(3)?,
                        received_at_ms: r.get(4)?,
                        body: r.get(5)?,
                        deliveries: Vec::new(),
                    },
                    r.get::<_, i64>(6)?,
                ))
            },
        )
        .optional()?;
    let Some((mut event, seq)) = event else {
        return Ok(None);
    };
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {DELIVERY_COLUMNS}, d.key, d.generation, d.done_outcome, d.done_started_at,
             d.done_duration_ms
         FROM {DELIVERIES} WHERE d.event_seq = ?1
         ORDER BY d.plugin"
    ))?;
    let rows = stmt
        .query_map(params![seq], |r| {
            let delivery = delivery_record(r)?;
            // A success's entry is kept in its row (see `writer`): the last of its generation.
            let success = match r.get::<_, Option<String>>(11)? {
                Some(outcome) if delivery.state == "done" => Some(AttemptRecord {
                    generation: r.get(10)?,
                    attempt: delivery.attempts,
                    outcome,
                    reason: None,
                    started_at_ms: r.get(12)?,
                    duration_ms: r.get::<_, Option<i64>>(13)?.map(|d| d.max(0) as u64),
                    recorded_at_ms: delivery.updated_at_ms,
                }),
                _ => None,
            };
            Ok((delivery, r.get::<_, i64>(9)?, success))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut history = c.prepare_cached(
        "SELECT generation, attempt, outcome, reason, started_at, duration_ms, recorded_at
         FROM attempts WHERE delivery_key = ?1 ORDER BY rowid",
    )?;
    for (mut delivery, key, success) in rows {
        delivery.history = history
            .query_map(params![key], |r| {
                Ok(AttemptRecord {
                    generation: r.get(0)?,
                    attempt: r.get(1)?,
                    outcome: r.get(2)?,
                    reason: r.get(3)?,
                    started_at_ms: r.get(4)?,
                    duration_ms: r.get::<_, Option<i64>>(5)?.map(|d| d.max(0) as u64),
                    recorded_at_ms: r.get(6)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        delivery.history.extend(success);
        event.deliveries.push(delivery);
    }
    Ok(Some(event))
}

/// `VACUUM INTO` a new file: a consistent snapshot (one read transaction, the writer goes on),
/// compacted; then synced (file and folder) and checked by opening it. Returns its event count.
pub(super) fn backup(c: &Connection, dest: &std::path::Path) -> Result<u64, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let text = dest
        .to_str()
        .ok_or_else(|| StoreError(format!("{} is not valid UTF-8", dest.display())))?;
    // Readable by the owner only, as the store is meant to be: events hold payroll data and
    // their verification token. Created here (never over an existing file), then filled.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => StoreError(format!(
                "{} exists: give a new file (a backup never overwrites)",
                dest.display()
            )),
            _ => StoreError(format!("backing up to {}: {e}", dest.display())),
        })?;
    let made = fill_and_check(c, dest, text);
    if made.is_err() {
        // No half-made or unsound copy is left to be taken for a backup.
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut name = dest.as_os_str().to_owned();
            name.push(suffix);
            let _ = std::fs::remove_file(std::path::PathBuf::from(name));
        }
    }
    made
}

/// Fills the new file `dest` (`text`: its path) with a copy of the store, settles, syncs and
/// checks it; returns how many events it holds.
fn fill_and_check(c: &Connection, dest: &std::path::Path, text: &str) -> Result<u64, StoreError> {
    c.execute("VACUUM INTO ?1", params![text])
        .map_err(|e| StoreError(format!("backing up to {}: {e}", dest.display())))?;
    settle_copy(dest)?;
    // The copy, then its folder (its directory entry).
    let absolute =
        std::path::absolute(dest).map_err(|e| StoreError(format!("{}: {e}", dest.display())))?;
    for p in [Some(absolute.as_path()), absolute.parent()]
        .into_iter()
        .flatten()
    {
        std::fs::File::open(p)
            .and_then(|f| f.sync_all())
            .map_err(|e| StoreError(format!("syncing {}: {e}", p.display())))?;
    }
    let copy = Connection::open_with_flags(dest, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let problems = check(&copy);
    if !problems.is_empty() {
        return Err(StoreError(format!(
            "the backup at {} fails its integrity check (removed): {}",
            dest.display(),
            problems.join("; ")
        )));
    }
    let events: i64 = copy.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?;
    Ok(events.max(0) as u64)
}

/// Makes the copy one self-contained file (no WAL beside it) and clears its deliveries'
/// "started" marks: a call running while the copy was taken did not die, and a store restored
/// from the copy must not count it as a crash (it runs that delivery again, as every delivery
/// pending in the copy); and names no id run (the copy has none of their files).
fn settle_copy(dest: &std::path::Path) -> Result<(), StoreError> {
    let copy = Connection::open(dest)?;
    copy.pragma_update(None, "journal_mode", "DELETE")?;
    let tx = copy.unchecked_transaction()?;
    tx.execute("UPDATE deliveries SET started = 0 WHERE started > 0", [])?;
    // The copy goes without the id runs' folder, so it names no run (a restored store reads
    // its ids from the database at start and writes runs anew; `store check` found the runs
    // it named missing). The runs' end stays a seq floor: no seq inside one is given again.
    let end: Option<i64> = tx.query_row("SELECT MAX(hi) FROM id_runs", [], |r| r.get(0))?;
    if let Some(end) = end {
        super::floors::raise_event_seq(&tx, end)?;
    }
    tx.execute("DELETE FROM id_runs", [])?;
    tx.commit()?;
    copy.close()
        .map_err(|(_, e)| StoreError(format!("closing {}: {e}", dest.display())))
}

/// SQLite's integrity check (its messages, none when it says "ok"), then the id hashes: one per
/// event, each the hash of its event's id, and no id stored twice. Every finding is kept: a
/// check that cannot run to its end (a damaged page stops a scan: "database disk image is
/// malformed") is one more finding, after those made before it.
pub(super) fn check(c: &Connection) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = integrity(c, &mut problems) {
        problems.push(format!("SQLite's integrity check could not finish: {e}"));
    }
    if let Err(e) = id_hashes(c, &mut problems) {
        problems.push(format!("the events' id hashes could not be checked: {e}"));
    }
    if let Err(e) = counters(c, &mut problems) {
        problems.push(format!(
            "the deliveries' counters could not be checked: {e}"
        ));
    }
    problems
}

/// What a delivery row's counters are when the engine can use them: integers in its range
/// (`u32`). A row that is not so (a file edited by hand, a corrupted page) is shown clamped by
/// the listings, passed over by the sweeper (a pending one is not delivered), and reported by
/// `store check`. Its columns' names are the `deliveries` table's alone (usable in a join with
/// `events`).
pub(super) const SOUND_COUNTERS: &str = "typeof(attempts) = 'integer'
    AND attempts BETWEEN 0 AND 4294967295 AND typeof(generation) = 'integer'
    AND generation BETWEEN 0 AND 4294967295 AND typeof(crashes) = 'integer'
    AND crashes BETWEEN 0 AND 4294967295";

/// What an event row's columns a delivery reads are when they can be read: text and an integer
/// time. Its columns' names are the `events` table's alone.
pub(super) const SOUND_EVENT: &str = "typeof(id) = 'text' AND typeof(app) = 'text'
    AND typeof(event_type) = 'text' AND typeof(received_at) = 'integer'
    AND typeof(body) = 'text'";

/// Deliveries whose counters are out of range, and events whose columns a delivery reads are
/// not what the store writes, into `problems`. (A finished delivery marked started is no
/// finding here: a dead letter whose call still runs keeps its mark until that call returns.)
fn counters(c: &Connection, problems: &mut Vec<String>) -> Result<(), StoreError> {
    let bad: i64 = c.query_row(
        &format!("SELECT COUNT(*) FROM deliveries WHERE NOT ({SOUND_COUNTERS})"),
        [],
        |r| r.get(0),
    )?;
    if bad > 0 {
        problems.push(format!(
            "{bad} deliveries with counters out of range (shown clamped; a pending one is not \
             delivered)"
        ));
    }
    let bad: i64 = c.query_row(
        &format!("SELECT COUNT(*) FROM events WHERE NOT ({SOUND_EVENT})"),
        [],
        |r| r.get(0),
    )?;
    if bad > 0 {
        problems.push(format!(
            "{bad} events with a damaged id, app, type, time or body (their pending deliveries \
             are not delivered)"
        ));
    }
    Ok(())
}

/// SQLite's `integrity_check` messages into `problems` (none when it says "ok").
fn integrity(c: &Connection, problems: &mut Vec<String>) -> Result<(), StoreError> {
    let mut stmt = c.prepare("PRAGMA integrity_check")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let line: String = row.get(0)?;
        if line != "ok" {
            problems.push(line);
        }
    }
    Ok(())
}

/// The id hashes' findings into `problems`: one per event, each its id's, no id stored twice.
fn id_hashes(c: &Connection, problems: &mut Vec<String>) -> Result<(), StoreError> {
    let mut wrong = 0u64;
    let mut first = None;
    let mut rows = c.prepare(
        "SELECT e.seq, e.id, i.hash FROM events e LEFT JOIN event_ids i ON i.seq = e.seq",
    )?;
    let mut rows = rows.query([])?;
    while let Some(row) = rows.next()? {
        let id: String = row.get(1)?;
        if row.get::<_, Option<i64>>(2)? != Some(super::ids::id_hash(&id)) {
            wrong += 1;
            first.get_or_insert(id);
        }
    }
    if let Some(id) = first {
        problems.push(format!(
            "{wrong} events without their id hash in event_ids (the first: {id})"
        ));
    }
    let (orphans, duplicated): (i64, Option<String>) = c.query_row(
        "SELECT (SELECT COUNT(*) FROM event_ids i WHERE NOT EXISTS
                    (SELECT 1 FROM events e WHERE e.seq = i.seq)),
                (SELECT id FROM events GROUP BY id HAVING COUNT(*) > 1 LIMIT 1)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if orphans > 0 {
        problems.push(format!(
            "{orphans} id hashes in event_ids without their event"
        ));
    }
    if let Some(id) = duplicated {
        problems.push(format!("event {id} is stored more than once"));
    }
    Ok(())
}

pub(super) fn list_events(
    c: &Connection,
    f: &EventFilter,
) -> Result<Vec<EventSummary>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT e.id, e.app, e.event_type, e.received_at,
                (SELECT COUNT(*) FROM deliveries d WHERE d.event_seq = e.seq),
                (SELECT COUNT(*) FROM deliveries d WHERE d.event_seq = e.seq AND d.state = 'pending'),
                (SELECT COUNT(*) FROM deliveries d WHERE d.event_seq = e.seq AND d.state = 'dead')
         FROM events e
         WHERE (?1 IS NULL OR e.app = ?1) AND (?2 IS NULL OR e.event_type = ?2)
           AND e.received_at >= ?3
           AND (?4 IS NULL OR EXISTS
                (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND d.state = ?4))
           AND (?6 IS NULL OR e.received_at < ?6 OR (e.received_at = ?6 AND e.id < ?7))
         ORDER BY e.received_at DESC, e.id DESC LIMIT ?5",
    )?;
    let (before_ms, before_id) = f.before.clone().unzip();
    let rows = stmt.query_map(
        params![
            f.app,
            f.event_type,
            f.since_ms,
            f.state,
            f.limit,
            before_ms,
            before_id
        ],
        |r| {
            Ok(EventSummary {
                id: r.get(0)?,
                app: r.get(1)?,
                event_type: r.get(2)?,
                received_at_ms: r.get(3)?,
                deliveries: r.get::<_, i64>(4)?.max(0) as u64,
                pending: r.get::<_, i64>(5)?.max(0) as u64,
                dead: r.get::<_, i64>(6)?.max(0) as u64,
            })
        },
    )?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

pub(super) fn list_deliveries(
    c: &Connection,
    f: &DeliveryFilter,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM {DELIVERIES}
         WHERE d.state = ?1 AND (?2 = 0 OR d.attempts > 0) AND (?3 IS NULL OR d.plugin = ?3)
         ORDER BY d.updated_at DESC LIMIT ?4"
    ))?;
    let rows = stmt.query_map(
        params![f.state, f.retrying, f.plugin, f.limit],
        delivery_record,
    )?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Blocking forms for the store's tests.
#[cfg(test)]
impl super::SqliteStore {
    /// Dead letters, newest first, optionally filtered.
    pub fn dead_letters(
        &self,
        plugin: Option<&str>,
        since_ms: Option<i64>,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let query = DeadLetterQuery {
            plugin: plugin.map(str::to_owned),
            since_ms,
            ..DeadLetterQuery::default()
        };
        self.read_blocking(|c| dead_letters(c, &query))
    }

    /// One event and its deliveries.
    pub fn event(&self, id: &str) -> Result<Option<EventRecord>, StoreError> {
        self.read_blocking(|c| event(c, id))
    }

    /// Runs SQLite's integrity check; returns its messages (`["ok"]` when sound).
    pub fn integrity_check(&self) -> Result<Vec<String>, StoreError> {
        self.read_blocking(|c| {
            let problems = check(c);
            Ok(if problems.is_empty() {
                vec!["ok".to_owned()]
            } else {
                problems
            })
        })
    }
}
