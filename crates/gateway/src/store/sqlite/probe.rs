//! The readiness probe's write ([`crate::store::Store::probe`]) on the embedded store: one row of
//! `floors`, [`PROBE`], set to the time of the probe, in a transaction of the writer like any
//! other write (it shares a batch's commit and fsync), so a store that cannot write (a full disk,
//! a read-only file system, a write lock held elsewhere) fails it as it fails an event.
//!
//! Never: touches the floors of keys and seqs ([`super::floors`] reads its own rows by name
//! only), or any table another reader looks at. The row takes no schema change, is copied by a
//! backup like the rest, and older binaries read past it.

use rusqlite::{params, Connection};

use crate::store::StoreError;

/// The `floors` row the probe rewrites; its value is when (Unix ms), for whoever looks.
pub(super) const PROBE: &str = "readiness_probe";

/// Sets the probe's row to `now`: a page changed, written at the transaction's commit.
pub(super) fn write(conn: &Connection, now: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO floors (name, value) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![PROBE, now])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{accepted, event, locked, rt};
    use super::super::*;

    fn probe_row(path: &Path) -> Option<i64> {
        Connection::open(path)
            .expect("conn")
            .query_row(
                "SELECT value FROM floors WHERE name = ?1",
                [super::PROBE],
                |r| r.get(0),
            )
            .optional()
            .expect("read")
    }

    #[test]
    fn the_probe_commits_a_row_and_leaves_the_floors_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        rt().block_on(async {
            let store = SqliteStore::open(&path).expect("open");
            let key = accepted(&store, event("one", &["a"])).await[0].0;
            let before = now_ms();
            store.probe().await.expect("probe");
            let written = probe_row(&path).expect("the probe's row is committed");
            assert!(written >= before, "{written} < {before}");
            store.probe().await.expect("probe again");
            assert!(probe_row(&path).expect("row") >= written);
            // The floors of keys and seqs are read by name: the row changes no numbering.
            let next = accepted(&store, event("two", &["a"])).await[0].0;
            assert_eq!(next, key + 1);
            assert!(store.check().await.expect("check").is_empty(), "sound");
            store.close();
        });
    }

    #[test]
    fn the_probe_fails_while_another_process_holds_the_write_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        rt().block_on(async {
            let (store, other) = locked(&path);
            assert!(store.probe().await.is_err(), "a locked store took a write");
            other.execute_batch("ROLLBACK").expect("unlock");
            store.probe().await.expect("probe once released");
            store.close();
        });
    }
}
