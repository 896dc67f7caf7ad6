//! The store writer's per-event statements, each looked up in the connection's statement cache
//! once per transaction rather than at every use (a look-up hashes the statement's whole text;
//! a batch runs these thousands of times a second).

use rusqlite::{CachedStatement, Connection};

use crate::store::StoreError;

/// A statement the writer runs for each event or delivery.
#[derive(Debug, Clone, Copy)]
pub(super) enum Sql {
    InsertEvent,
    InsertId,
    InsertDelivery,
    Finish,
    History,
    Unmark,
}

impl Sql {
    #[cfg(test)]
    const ALL: [Sql; 6] = [
        Sql::InsertEvent,
        Sql::InsertId,
        Sql::InsertDelivery,
        Sql::Finish,
        Sql::History,
        Sql::Unmark,
    ];

    fn text(self) -> &'static str {
        match self {
            Sql::InsertEvent => {
                "INSERT INTO events (seq, id, app, event_type, schema, received_at, body, routed)
                 VALUES (?8, ?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            }
            // Seqs are never reused, so no row should be at this one; if one is (written by
            // hand), it is stale: replaced.
            Sql::InsertId => "INSERT OR REPLACE INTO event_ids (seq, hash) VALUES (?1, ?2)",
            Sql::InsertDelivery => {
                "INSERT INTO deliveries (key, event_seq, plugin, state, attempts, next_at,
                     updated_at)
                 VALUES (?4, ?1, ?2, 'pending', 0, ?3, ?3)"
            }
            // A success's history entry is the row's `done_*` columns (see `writer`).
            Sql::Finish => {
                "UPDATE deliveries SET state = ?2, attempts = ?3, next_at = ?4,
                     started = CASE WHEN ?10 THEN started ELSE 0 END,
                     last_error = CASE WHEN ?2 = 'done' THEN NULL ELSE COALESCE(?5, last_error) END,
                     updated_at = ?6,
                     done_outcome = CASE WHEN ?2 = 'done' THEN ?11 END,
                     done_started_at = CASE WHEN ?2 = 'done' THEN ?12 END,
                     done_duration_ms = CASE WHEN ?2 = 'done' THEN ?13 END
                 WHERE key = ?1 AND attempts = ?7 AND generation = ?8
                   AND (state = 'pending' OR (?9 AND ?2 = 'done' AND state = 'dead'))
                   AND (NOT ?14 OR started = ?3)"
            }
            Sql::History => {
                "INSERT INTO attempts (delivery_key, generation, attempt, outcome, reason,
                     started_at, duration_ms, recorded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            }
            // The mark a returned call left on the dead letter its delivery became.
            // A dead letter of the plugin's own (its rejection, a panic, its last attempt)
            // becomes the dead letter's reason: the plugin's verdict, not the orphan rule's.
            Sql::Unmark => {
                "UPDATE deliveries SET started = 0, last_error = COALESCE(?4, last_error)
                 WHERE key = ?1 AND generation = ?2 AND state = 'dead' AND started = ?3"
            }
        }
    }
}

/// The statements taken from the cache so far in one transaction; dropping it puts them back.
pub(super) struct Hot<'c> {
    conn: &'c Connection,
    slots: [Option<CachedStatement<'c>>; 6],
}

impl<'c> Hot<'c> {
    pub(super) fn new(conn: &'c Connection) -> Hot<'c> {
        Hot {
            conn,
            slots: Default::default(),
        }
    }

    /// `sql`, prepared (or taken from the cache) on first use in this transaction.
    pub(super) fn get(&mut self, sql: Sql) -> Result<&mut CachedStatement<'c>, StoreError> {
        let slot = &mut self.slots[sql as usize];
        if slot.is_none() {
            *slot = Some(self.conn.prepare_cached(sql.text())?);
        }
        slot.as_mut()
            .ok_or_else(|| StoreError("internal: statement not prepared".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection to a new store in `dir`, as the gateway creates it.
    fn new_store(dir: &tempfile::TempDir) -> Connection {
        drop(super::super::SqliteStore::open(&dir.path().join("s.db")).expect("open"));
        let conn = Connection::open(dir.path().join("s.db")).expect("conn");
        conn.pragma_update(None, "foreign_keys", "ON").expect("fk");
        conn
    }

    #[test]
    fn every_statement_prepares_against_the_schema_and_is_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = new_store(&dir);
        let mut hot = Hot::new(&conn);
        for sql in Sql::ALL {
            let first = hot.get(sql).expect("prepares") as *const _;
            assert_eq!(hot.get(sql).expect("again") as *const _, first, "{sql:?}");
        }
    }

    /// A temporary index built at each execution (SQLite's `OpenEphemeral`: a page cache and a
    /// zeroed page, as an `IN` list in a check constraint costs) has no place on the hot path.
    #[test]
    fn no_statement_builds_a_temporary_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = new_store(&dir);
        for sql in Sql::ALL {
            let mut explain = conn
                .prepare(&format!("EXPLAIN {}", sql.text()))
                .expect("explain");
            let nulls = vec![rusqlite::types::Null; explain.parameter_count()];
            let ops = explain
                .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(1))
                .expect("rows")
                .collect::<Result<Vec<_>, _>>()
                .expect("ops");
            assert!(!ops.is_empty(), "{sql:?}");
            assert!(
                !ops.iter().any(|op| op == "OpenEphemeral"),
                "{sql:?} builds a temporary index: {ops:?}"
            );
        }
    }
}
