//! Bringing a store written by an older version up to [`SCHEMA_VERSION`] at open.
//!
//! Version 5 changed the layout: events live in a table ordered by arrival (`seq`, SQLite's
//! rowid) with their id in a separate unique index, and deliveries point at `seq`. Lark's event
//! ids are random, so the version 4 table (ordered by id, the body inside the ordering) took each
//! new event into a random page, splitting pages full of bodies; now a new event is appended.
//! Version 6 dropped the unique index on the id too (it still took a random page per event):
//! ids are deduplicated in memory from the `event_ids` table of id hashes (see [`super::ids`]).
//! Both changes rebuild the tables, once, at the first `gateway run` of the new version.
//! Version 7 added the `id_runs` table (the id index's runs on disk), version 8 the `floors`
//! table (the highest delivery key and event seq ever purged: see [`super::floors`]); both are
//! created empty by the schema's `IF NOT EXISTS`. Version 9 added the `done_*` columns of
//! `deliveries` (a success's history entry is kept in its delivery's row: see
//! `super::writer`); older deliveries have them empty, and their history rows as before.
//!
//! Stores created before the deliveries' state check was spelled as comparisons get that
//! check rewritten in place (see [`comparisons_for_state_check`]); the version stays, as the
//! two spellings accept the same rows and either binary reads both.

use std::cmp::Ordering;
use std::path::Path;

use rusqlite::Connection;

use super::ids::id_hash;
use super::{SCHEMA, SCHEMA_VERSION};
use crate::store::StoreError;

/// Creates the schema, or brings a store written by an older version up to [`SCHEMA_VERSION`]
/// (idempotent); refuses, writing nothing, a store written by a newer version.
pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(newer(version));
    }
    // Creates a new store; on an older one, only what is missing (the v3 attempts table).
    conn.execute_batch(SCHEMA)?;
    // Version 1 had no generation (replays were told apart by attempt count only); version 2
    // no started / crashes (a crash mid-call was not counted); version 3 no attempts table
    // (created by SCHEMA's `IF NOT EXISTS`: older deliveries just have no history).
    for column in ["generation", "started", "crashes"] {
        if !has_column(conn, "deliveries", column)? {
            conn.execute_batch(&format!(
                "ALTER TABLE deliveries ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0"
            ))?;
        }
    }
    // Version 8 kept a success's history entry as a row of `attempts` (it still has those).
    for (column, kind) in [
        ("done_outcome", "TEXT"),
        ("done_started_at", "INTEGER"),
        ("done_duration_ms", "INTEGER"),
    ] {
        if !has_column(conn, "deliveries", column)? {
            conn.execute_batch(&format!(
                "ALTER TABLE deliveries ADD COLUMN {column} {kind}"
            ))?;
        }
    }
    // Version 4 kept events in a table ordered by their (random) ids; version 5 had a unique
    // index on the id.
    let from = if !has_column(conn, "events", "seq")? {
        Some(Layout::ById)
    } else if has_unique_index(conn, "events")? {
        Some(Layout::UniqueId)
    } else {
        None
    };
    let rebuilt = from.is_some();
    if let Some(from) = from {
        to_current_layout(conn, from)?;
    }
    comparisons_for_state_check(conn)?;
    if version != SCHEMA_VERSION {
        // Older (a newer one was refused above).
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    if rebuilt {
        // The copy went through the WAL (as large as the store), and SQLite reuses that file at
        // its size: give the space back. The main file keeps its size; the old tables' pages
        // are free pages that new events fill.
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    Ok(())
}

/// The deliveries' state check as earlier releases spelled it ([`STATE_CHECK_LIST`]) and as it
/// is now ([`STATE_CHECK`]). SQLite evaluates an `IN` list of three constants by building a
/// temporary index for it (its own page cache and a zeroed page) each time a row is inserted or
/// its state changed: twice per delivery. Measured under callgrind (the gateway with the logger
/// routed, closed loop): 15% of the instructions per event. Three comparisons cost a few opcodes.
pub(super) const STATE_CHECK_LIST: &str = "CHECK (state IN ('pending', 'done', 'dead'))";
pub(super) const STATE_CHECK: &str =
    "CHECK (state = 'pending' OR state = 'done' OR state = 'dead')";

/// Rewrites the `deliveries` table's state check from the `IN` list to comparisons, in place:
/// the change SQLite documents for a constraint every stored row already meets (its "ALTER
/// TABLE" page: edit `sqlite_schema` with `writable_schema` on and bump `schema_version`, in one
/// transaction). No row is read or written, so a store of any size is done at once. Nothing
/// happens if the table does not hold the old spelling.
fn comparisons_for_state_check(conn: &Connection) -> Result<(), StoreError> {
    let sql: String = conn.query_row(
        "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'deliveries'",
        [],
        |r| r.get(0),
    )?;
    if !sql.contains(STATE_CHECK_LIST) {
        return Ok(());
    }
    let tx = conn.unchecked_transaction()?;
    let schema_version: i64 = tx.pragma_query_value(None, "schema_version", |r| r.get(0))?;
    tx.pragma_update(None, "writable_schema", true)?;
    let edited = tx
        .execute(
            "UPDATE sqlite_schema SET sql = ?1 WHERE type = 'table' AND name = 'deliveries'",
            [sql.replace(STATE_CHECK_LIST, STATE_CHECK)],
        )
        .and_then(|_| tx.pragma_update(None, "schema_version", schema_version + 1));
    // Off again whatever happened; an error rolls the transaction back with the edit.
    tx.pragma_update(None, "writable_schema", false)?;
    edited?;
    tx.commit()?;
    tracing::info!(
        "the store's delivery state check is now spelled as comparisons (no data changed)"
    );
    Ok(())
}

/// For the operator commands, which never migrate (the gateway that wrote the store may still be
/// running): an error unless the store at `path` is at [`SCHEMA_VERSION`]. Nothing is written.
pub(super) fn require_current(path: &Path) -> Result<(), StoreError> {
    let conn = Connection::open(path)
        .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    match version.cmp(&SCHEMA_VERSION) {
        Ordering::Equal => Ok(()),
        Ordering::Greater => Err(newer(version)),
        Ordering::Less => Err(StoreError(format!(
            "the store at {} is at schema version {version}; this gateway reads version \
             {SCHEMA_VERSION} and migrates a store only when `gateway run` starts on it (back it \
             up first); until then use the gateway binary that wrote it",
            path.display()
        ))),
    }
}

/// What `gateway run` would make of the existing store at `path` (for `gateway check`):
/// `Ok(None)` when it is current (or empty: `run` creates the schema), `Ok(Some(version))` for
/// an older one that `run` migrates, an error for what `run` refuses (a newer version, not a
/// database). Read from the file's header, not through SQLite, so nothing is created beside
/// it (a read-only connection to a stopped store leaves `-wal` and `-shm` files, owned by
/// whoever ran `check`: root's would lock the service's user out). A version only in the WAL
/// (a migration not yet checkpointed) is not seen.
pub(super) fn check_version(path: &Path) -> Result<Option<i64>, StoreError> {
    use std::io::Read;
    let mut header = Vec::with_capacity(100);
    std::fs::File::open(path)
        .and_then(|f| f.take(100).read_to_end(&mut header))
        .map_err(|e| StoreError(format!("cannot read {}: {e}", path.display())))?;
    if header.is_empty() {
        return Ok(None);
    }
    if header.len() < 100 || !header.starts_with(b"SQLite format 3\0") {
        return Err(StoreError(format!(
            "{} cannot be read as a store: it is not an SQLite database",
            path.display()
        )));
    }
    // The header's user_version: 4 bytes, big-endian, at offset 60.
    let version = i64::from(u32::from_be_bytes([
        header[60], header[61], header[62], header[63],
    ]));
    match version.cmp(&SCHEMA_VERSION) {
        Ordering::Equal => Ok(None),
        Ordering::Greater => Err(newer(version)),
        Ordering::Less => Ok(Some(version)),
    }
}

fn newer(version: i64) -> StoreError {
    StoreError(format!(
        "the store is at schema version {version}, written by a newer gateway; this one reads \
         version {SCHEMA_VERSION} (restore the backup taken before the upgrade, or run the newer \
         binary)"
    ))
}

fn has_unique_index(conn: &Connection, table: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM pragma_index_list(?1) WHERE \"unique\" = 1")?
        .exists([table])?)
}

fn has_column(conn: &Connection, table: &str, column: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")?
        .exists([table, column])?)
}

/// The older layouts a rebuild starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Versions 1–4: events ordered by id, deliveries pointing at the id.
    ById,
    /// Version 5: events in arrival order with a unique index on the id.
    UniqueId,
}

/// Rebuilds an older store in the current layout, in one transaction: the old tables are renamed
/// aside, the current schema created, every row copied (delivery keys and the order of attempts
/// kept), the id hashes written, the old tables dropped. Foreign keys are off during the copy (a
/// dropped old table must not cascade) and checked before the commit.
fn to_current_layout(conn: &Connection, from: Layout) -> Result<(), StoreError> {
    let events: i64 = conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?;
    tracing::info!(
        events,
        "migrating the store to schema version {SCHEMA_VERSION} (once; may take a while)"
    );
    conn.execute_batch("PRAGMA foreign_keys = OFF")?;
    let rebuilt = rebuild(conn, from);
    let restored = conn.execute_batch("PRAGMA foreign_keys = ON");
    rebuilt?;
    Ok(restored?)
}

fn rebuild(conn: &Connection, from: Layout) -> Result<(), StoreError> {
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(
        "DROP INDEX IF EXISTS events_received;
         DROP INDEX IF EXISTS deliveries_due;
         DROP INDEX IF EXISTS deliveries_dead;
         DROP INDEX IF EXISTS attempts_delivery;
         DROP TABLE IF EXISTS event_ids;
         ALTER TABLE events RENAME TO old_events;
         ALTER TABLE deliveries RENAME TO old_deliveries;
         ALTER TABLE attempts RENAME TO old_attempts;",
    )?;
    tx.execute_batch(SCHEMA)?;
    tx.execute_batch(match from {
        Layout::ById => {
            "INSERT INTO events (id, app, event_type, schema, received_at, body, routed)
                 SELECT id, app, event_type, schema, received_at, body, routed FROM old_events
                 ORDER BY received_at, id;
             INSERT INTO deliveries (key, event_seq, plugin, state, attempts, next_at,
                     last_error, updated_at, generation, started, crashes)
                 SELECT d.key, e.seq, d.plugin, d.state, d.attempts, d.next_at, d.last_error,
                     d.updated_at, d.generation, d.started, d.crashes
                 FROM old_deliveries d JOIN events e ON e.id = d.event_id;"
        }
        Layout::UniqueId => {
            "INSERT INTO events (seq, id, app, event_type, schema, received_at, body, routed)
                 SELECT seq, id, app, event_type, schema, received_at, body, routed
                 FROM old_events ORDER BY seq;
             INSERT INTO deliveries (key, event_seq, plugin, state, attempts, next_at,
                     last_error, updated_at, generation, started, crashes)
                 SELECT key, event_seq, plugin, state, attempts, next_at, last_error,
                     updated_at, generation, started, crashes
                 FROM old_deliveries ORDER BY key;"
        }
    })?;
    tx.execute_batch(
        "INSERT INTO attempts (delivery_key, generation, attempt, outcome, reason, started_at,
                 duration_ms, recorded_at)
             SELECT delivery_key, generation, attempt, outcome, reason, started_at, duration_ms,
                 recorded_at
             FROM old_attempts ORDER BY rowid;",
    )?;
    {
        let mut read = tx.prepare("SELECT seq, id FROM events ORDER BY seq")?;
        let mut write = tx.prepare("INSERT INTO event_ids (seq, hash) VALUES (?1, ?2)")?;
        let mut rows = read.query([])?;
        while let Some(row) = rows.next()? {
            let id: String = row.get(1)?;
            write.execute(rusqlite::params![row.get::<_, i64>(0)?, id_hash(&id)])?;
        }
    }
    let (lost, dangling): (i64, i64) = tx.query_row(
        "SELECT (SELECT COUNT(*) FROM old_deliveries) - (SELECT COUNT(*) FROM deliveries),
                (SELECT COUNT(*) FROM pragma_foreign_key_check)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if lost != 0 || dangling != 0 {
        return Err(StoreError(format!(
            "migrating to schema version {SCHEMA_VERSION}: {lost} deliveries without their \
             event, {dangling} rows pointing nowhere; its rows are left as they were (only the \
             new layout's empty tables and columns were added)"
        )));
    }
    tx.execute_batch(
        "DROP TABLE old_attempts;
         DROP TABLE old_deliveries;
         DROP TABLE old_events;",
    )?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    Ok(tx.commit()?)
}
