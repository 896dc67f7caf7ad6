//! Delivery keys and event seqs are never given twice, even after the rows that held the
//! highest ones were purged.
//!
//! SQLite numbers a new row one past the highest rowid in its table *now*; once retention has
//! purged the newest delivery (a quiet app: every event old and finished), the next delivery
//! would get a key an earlier one had. A call of that earlier delivery still running in the
//! gateway (hung past its timeout, the delivery dead-lettered, then purged) would then finish
//! the new delivery with its own late outcome — a delivery done that never ran. So every
//! transaction that deletes deliveries or events first records the highest key and seq in
//! `floors` ([`raise`]), and the writer numbers deliveries itself ([`Keys`]), past both the
//! highest key stored and that floor; seqs likewise (the id index's numbering starts past
//! [`floor`] of [`EVENT_SEQ`], which also holds the end of the index's runs on disk:
//! [`raise_event_seq`]). The table also holds the readiness probe's row
//! ([`super::probe`]): every reader here names its row, so that one is never a floor.

use rusqlite::{Connection, OptionalExtension};

use crate::store::StoreError;

/// The `floors` row for delivery keys.
const DELIVERY_KEY: &str = "delivery_key";
/// The `floors` row for event seqs.
pub(super) const EVENT_SEQ: &str = "event_seq";

/// Raises the stored floors to the highest key and seq present, inside the transaction that is
/// about to delete rows (before the deletes).
pub(super) fn raise(conn: &Connection) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO floors (name, value) VALUES
             (?1, COALESCE((SELECT MAX(key) FROM deliveries), 0)),
             (?2, MAX(COALESCE((SELECT MAX(seq) FROM events), 0),
                      COALESCE((SELECT MAX(seq) FROM event_ids), 0)))
         ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)",
    )?
    .execute([DELIVERY_KEY, EVENT_SEQ])?;
    Ok(())
}

/// Raises the event seq floor to `seq` (the end of the id index's chain of runs, which may be
/// past every seq stored: a run covers the seqs a rolled-back batch took). In the transaction
/// that records the chain: no seq inside a run's range is given again, whichever index numbers
/// the next events (the memory-only fallback does not read the runs).
pub(super) fn raise_event_seq(conn: &Connection, seq: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO floors (name, value) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)",
    )?
    .execute(rusqlite::params![EVENT_SEQ, seq])?;
    Ok(())
}

/// The floor recorded under `name` (0: none).
pub(super) fn floor(conn: &Connection, name: &str) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT value FROM floors WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// The writer's numbering of new deliveries: past every key stored or purged, and only ever
/// increasing while the writer runs (a key taken by a transaction that rolled back is skipped).
#[derive(Debug)]
pub(super) struct Keys {
    next: i64,
}

impl Keys {
    pub(super) fn load(conn: &Connection) -> Result<Keys, StoreError> {
        let stored: i64 =
            conn.query_row("SELECT COALESCE(MAX(key), 0) FROM deliveries", [], |r| {
                r.get(0)
            })?;
        Ok(Keys {
            next: stored.max(floor(conn, DELIVERY_KEY)?) + 1,
        })
    }

    pub(super) fn take(&mut self) -> i64 {
        let key = self.next;
        self.next += 1;
        key
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{accepted, event, rt};
    use super::super::*;
    use crate::store::{Finish, FinishRecord, Guard, Trace};

    fn done(key: i64) -> FinishRecord {
        FinishRecord {
            write: crate::store::WriteId::fresh(),
            key,
            guard: Guard {
                generation: 0,
                attempts: 0,
                dead_too: false,
                own_mark: false,
            },
            attempts: 1,
            finish: Finish::Done,
            trace: Trace {
                outcome: "ok",
                started_at_ms: 1,
                duration_ms: 1,
                discarded_run: None,
            },
        }
    }

    fn seq_of(path: &Path, id: &str) -> i64 {
        Connection::open(path)
            .expect("conn")
            .query_row("SELECT seq FROM events WHERE id = ?1", [id], |r| r.get(0))
            .expect("seq")
    }

    /// One event routed to `a`, delivered, then purged with everything else: its key and seq.
    async fn delivered_and_purged(store: &SqliteStore, path: &Path, id: &str) -> (i64, i64) {
        let key = accepted(store, event(id, &["a"])).await[0].0;
        let seq = seq_of(path, id);
        let finished = store.finish_many(vec![done(key)]).await.expect("finish");
        assert_eq!(finished, vec![true]);
        assert_eq!(store.purge(i64::MAX, i64::MAX).await.expect("purge"), 1);
        (key, seq)
    }

    #[test]
    fn keys_and_seqs_are_not_given_again_once_the_newest_rows_are_purged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let newest = rt().block_on(async {
            let store = SqliteStore::open(&path).expect("open");
            let (first, _) = delivered_and_purged(&store, &path, "one").await;
            let key = accepted(&store, event("two", &["a"])).await[0].0;
            assert!(key > first, "key {key} given again");
            // The late outcome of the purged delivery's call finds no delivery to finish.
            let late = store.finish_many(vec![done(first)]).await;
            assert_eq!(late.expect("late"), vec![false]);
            let seq = seq_of(&path, "two");
            assert_eq!(
                store.finish_many(vec![done(key)]).await.expect("done"),
                [true]
            );
            assert_eq!(store.purge(i64::MAX, i64::MAX).await.expect("purge"), 1);
            store.close();
            (key, seq)
        });
        rt().block_on(async {
            // Restarted after the last run purged its newest delivery and event.
            let store = SqliteStore::open(&path).expect("reopen");
            let key = accepted(&store, event("three", &["a"])).await[0].0;
            assert!(key > newest.0, "key {key} given again after a restart");
            assert!(seq_of(&path, "three") > newest.1, "seq given again");
            store.close();
        });
    }

    /// A chain of id runs records its end as the floor (`next_seq` also reads the runs' ends
    /// while the store names them; the floor stays when it no longer does).
    #[test]
    fn the_event_seq_floor_rises_to_a_chain_end_and_never_falls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        SqliteStore::open(&path).expect("create").close();
        let conn = Connection::open(&path).expect("conn");
        let at = || super::floor(&conn, super::EVENT_SEQ).expect("floor");
        super::raise_event_seq(&conn, 10).expect("raise");
        assert_eq!(at(), 10);
        super::raise_event_seq(&conn, 5).expect("lower");
        assert_eq!(at(), 10, "never lowered");
        super::raise_event_seq(&conn, 12).expect("raise");
        assert_eq!(at(), 12);
    }

    #[test]
    fn dead_letters_deleted_on_purpose_raise_the_floor_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        rt().block_on(async {
            let store = SqliteStore::open(&path).expect("open");
            let key = accepted(&store, event("one", &["a"])).await[0].0;
            let mut dead = done(key);
            dead.finish = Finish::Dead { error: "x".into() };
            assert_eq!(store.finish_many(vec![dead]).await.expect("dead"), [true]);
            let purged = store.purge_dead_letters(None, i64::MAX).await;
            assert_eq!(purged.expect("purge"), 1);
            store.close();
            let store = SqliteStore::open(&path).expect("reopen");
            let again = accepted(&store, event("two", &["a"])).await[0].0;
            assert!(again > key, "key {again} given again");
            store.close();
        });
    }

    #[test]
    fn a_version_7_store_gets_the_table_at_the_gateways_start_not_from_a_command() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        SqliteStore::open(&path).expect("create").close();
        Connection::open(&path)
            .and_then(|c| c.execute_batch("DROP TABLE floors; PRAGMA user_version = 7;"))
            .expect("as version 7 left it");
        let refused = SqliteStore::open_existing(&path).map(|s| s.close());
        let err = refused.expect_err("the operator commands never migrate");
        assert!(err.0.contains("schema version 7"), "{}", err.0);
        rt().block_on(async {
            let store = SqliteStore::open(&path).expect("migrates");
            delivered_and_purged(&store, &path, "one").await;
            store.close();
        });
        let conn = Connection::open(&path).expect("conn");
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(super::floor(&conn, super::DELIVERY_KEY).expect("floor"), 1);
    }
}
