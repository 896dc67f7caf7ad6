use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{params, Connection, OpenFlags};

use super::*;

/// A connection through this VFS, set up as the gateway's store sets up its own.
pub(super) fn buffered(path: &Path) -> Connection {
    register().expect("register");
    let conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), VFS_NAME)
        .expect("open through the VFS");
    attach(&conn);
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("full");
    conn
}

/// A connection of the default VFS: another reader, as the CLI's or a second process's.
fn plain(path: &Path) -> Connection {
    Connection::open(path).expect("open")
}

/// A connection through this VFS with a page cache of 10 pages (a transaction of more spills
/// pages to the WAL), and the table `t`.
fn spilling(path: &Path) -> Connection {
    let conn = buffered(path);
    conn.execute_batch("PRAGMA cache_size = 10; CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB);")
        .expect("schema");
    conn
}

/// Inserts rows of 1,500 bytes at `keys`: more pages than the cache holds.
fn insert_spilling(tx: &Connection, keys: std::ops::Range<i64>) {
    for k in keys {
        tx.execute("INSERT INTO t VALUES (?1, zeroblob(1500))", [k])
            .expect("insert");
    }
}

/// The database at `conn` passes SQLite's integrity check and `t` has `rows` rows.
fn assert_intact(conn: &Connection, rows: i64) {
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(ok, "ok");
    let n: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n, rows);
}

fn wal_len(path: &Path) -> u64 {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    std::fs::metadata(name).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn registering_twice_is_fine_and_the_name_is_found() {
    register().expect("first");
    register().expect("second");
    // SAFETY: a NUL-terminated name; the result is only compared with NULL.
    let found = unsafe { ffi::sqlite3_vfs_find(VFS_NAME_C.as_ptr()) };
    assert!(!found.is_null());
    // SAFETY: as above.
    let default = unsafe { ffi::sqlite3_vfs_find(ptr::null()) };
    assert_ne!(found, default, "registered beside the default, not as it");
    // SAFETY: both are registered VFSes, never freed.
    let (ours, real) = unsafe { (&*found, &*default) };
    assert_eq!(
        usize::try_from(ours.szOsFile).expect("size"),
        REAL_OFFSET + usize::try_from(real.szOsFile).expect("size"),
        "room for our file object and the real one after it"
    );
}

#[test]
fn attach_sets_the_rollback_hook_on_the_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = buffered(&dir.path().join("s.db"));
    // SAFETY: the connection's handle; the hook is put back as it was right after.
    unsafe {
        let db = conn.handle();
        let previous = ffi::sqlite3_rollback_hook(db, None, ptr::null_mut());
        assert_eq!(previous, db.cast(), "the hook's argument is the connection");
        ffi::sqlite3_rollback_hook(db, Some(on_rollback), previous);
    }
}

#[test]
fn a_registration_error_names_the_vfs_and_the_code() {
    assert_eq!(
        RegisterError(1).to_string(),
        "cannot register the SQLite VFS gateway-walbuf (SQLite code 1)"
    );
}

/// What a commit returned is in the WAL file (every frame, not held back) and visible to a
/// connection that reads the file itself. The index on `v` makes later commits touch every one
/// of its pages: from round 18 a commit is over 128 KiB, more than the unix VFS writes at once
/// (it masks a length with `0x1ffff`; a longer write handed to it whole fails as a full disk).
#[test]
fn a_commit_is_in_the_file_when_it_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let mut conn = buffered(&path);
    conn.execute_batch(
        "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL);
         CREATE INDEX t_v ON t(v);",
    )
    .expect("schema");
    let reader = plain(&path);
    for round in 0..20_i64 {
        let before = wal_len(&path);
        let tx = conn.transaction().expect("tx");
        for i in 0..50 {
            tx.execute(
                "INSERT INTO t (k, v) VALUES (?1, ?2)",
                params![round * 50 + i, "x".repeat(100 + i as usize)],
            )
            .expect("insert");
        }
        tx.commit().expect("commit");
        let after = wal_len(&path);
        // The WAL only grows here (no checkpoint yet), by whole frames (24 + page bytes).
        let page: u64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .expect("page size");
        assert!(after > before, "round {round}: the frames are in the file");
        assert_eq!((after - 32) % (24 + page), 0, "round {round}: whole frames");
        let n: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, (round + 1) * 50, "another connection sees the commit");
    }
    assert_intact(&reader, 20 * 50);
}

/// A transaction larger than the page cache spills pages to the WAL and reads them back
/// before it commits; then checkpoints copy frames into the database and the WAL restarts.
/// Checked against a model after every commit, through this VFS and through a plain reader,
/// and once more after reopening with the default VFS alone.
#[test]
fn spills_checkpoints_and_restarts_keep_every_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let mut model = BTreeMap::new();
    {
        let mut conn = buffered(&path);
        conn.execute_batch(
            "PRAGMA cache_size = 10; PRAGMA wal_autocheckpoint = 20;
             CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL);",
        )
        .expect("schema");
        let reader = plain(&path);
        let mut seed = 7_u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 33
        };
        for round in 0..40 {
            let tx = conn.transaction().expect("tx");
            // Every 10th round is large enough to spill: 400 rows of up to 2 KB.
            let rows = if round % 10 == 9 {
                400
            } else {
                1 + next() % 30
            };
            for _ in 0..rows {
                let k = (next() % 2_000) as i64;
                match next() % 4 {
                    0 => {
                        tx.execute("DELETE FROM t WHERE k = ?1", [k])
                            .expect("delete");
                        model.remove(&k);
                    }
                    _ => {
                        let v = vec![(next() % 251) as u8; 1 + (next() % 2_000) as usize];
                        tx.execute(
                            "INSERT OR REPLACE INTO t (k, v) VALUES (?1, ?2)",
                            params![k, v],
                        )
                        .expect("upsert");
                        model.insert(k, v);
                    }
                }
            }
            // Read back inside the transaction: spilled pages come from the WAL.
            let n: usize = tx
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .expect("count");
            assert_eq!(n, model.len(), "round {round}: inside the transaction");
            tx.commit().expect("commit");
            for c in [&conn, &reader] {
                assert_eq!(contents(c), model, "round {round}");
            }
        }
    }
    let conn = plain(&path);
    assert_eq!(contents(&conn), model, "reopened with the default VFS");
    assert_intact(&conn, model.len() as i64);
}

fn contents(conn: &Connection) -> BTreeMap<i64, Vec<u8>> {
    let mut stmt = conn.prepare("SELECT k, v FROM t").expect("select");
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows");
    rows.collect::<Result<_, _>>().expect("read")
}

/// A rolled-back transaction leaves nothing held that a later commit would write over its
/// frames out of order.
#[test]
fn a_rollback_then_a_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let mut conn = spilling(&path);
    let tx = conn.transaction().expect("tx");
    insert_spilling(&tx, 0..300);
    tx.rollback().expect("rollback");
    conn.execute("INSERT INTO t VALUES (1, x'01')", [])
        .expect("insert");
    drop(conn);
    assert_intact(&plain(&path), 1);
}

/// The hazard of holding frames: a transaction spills frames (held here), is rolled back,
/// another connection commits at the same place in the WAL, then the first connection reads
/// and writes again. Held frames written late would overwrite the other commit. (SQLite's
/// rollback reads frames back, which writes what is held while the rollback still holds the
/// WAL's write lock; the rollback hook, tested below, is there for a rollback that reads none.)
#[test]
fn a_rolled_back_spill_never_overwrites_another_connections_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let mut conn = spilling(&path);
    let other = plain(&path);
    for round in 0..5_i64 {
        let tx = conn.transaction().expect("tx");
        insert_spilling(&tx, 1_000_000..1_000_200);
        drop(tx); // Rolled back.
        other
            .execute("INSERT INTO t VALUES (?1, x'0102')", [round])
            .expect("the other connection commits");
        let seen: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("read");
        assert_eq!(seen, 2 * round + 1, "round {round}");
        conn.execute("INSERT INTO t VALUES (?1, x'03')", [100 + round])
            .expect("write again");
        let both: i64 = other
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("read");
        assert_eq!(both, 2 * (round + 1), "round {round}");
    }
    drop(conn);
    assert_intact(&other, 10);
}

/// Without a sync at commit (`synchronous = NORMAL`), a commit's frames are still in the file
/// before another connection can see the commit.
#[test]
fn commits_are_written_without_a_sync_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let conn = buffered(&path);
    conn.pragma_update(None, "synchronous", "NORMAL")
        .expect("normal");
    conn.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
        .expect("schema");
    let reader = plain(&path);
    for k in 0..200_i64 {
        conn.execute("INSERT INTO t VALUES (?1, ?2)", params![k, "v".repeat(300)])
            .expect("insert");
        let (n, total): (i64, i64) = reader
            .query_row("SELECT count(*), sum(length(v)) FROM t", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("read");
        assert_eq!((n, total), (k + 1, 300 * (k + 1)), "commit {k}");
    }
}

/// The rollback hook finds the connection's WAL file and drops what it holds.
#[test]
fn the_rollback_hook_drops_what_is_held() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let mut conn = spilling(&path);
    let tx = conn.transaction().expect("tx");
    insert_spilling(&tx, 0..200);
    let before = stats().dropped_bytes;
    // SAFETY: the connection's own handle, on its own thread, mid-transaction, as SQLite calls
    // the hook.
    unsafe { on_rollback(tx.handle().cast()) };
    assert!(
        stats().dropped_bytes > before,
        "the spilled frames were held, then dropped"
    );
    drop(tx);
    conn.execute("INSERT INTO t VALUES (1, x'01')", [])
        .expect("insert");
    drop(conn);
    assert_intact(&plain(&path), 1);
}

/// Pages spilled in one run (appended rows: each page spilled once, so the run stays held)
/// and read back before the commit come from what was held, written first.
#[test]
fn pages_spilled_and_read_back_in_the_same_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let mut conn = spilling(&path);
    let tx = conn.transaction().expect("tx");
    for k in 0..300_i64 {
        tx.execute(
            "INSERT INTO t VALUES (?1, ?2)",
            params![k, vec![(k % 251) as u8; 1_000]],
        )
        .expect("insert");
    }
    let mut stmt = tx.prepare("SELECT k, v FROM t ORDER BY k").expect("select");
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
        .expect("rows");
    let mut n = 0;
    for row in rows {
        let (k, v) = row.expect("row");
        assert_eq!(v, vec![(k % 251) as u8; 1_000], "row {k}");
        n += 1;
    }
    assert_eq!(n, 300);
    drop(stmt);
    tx.commit().expect("commit");
}
