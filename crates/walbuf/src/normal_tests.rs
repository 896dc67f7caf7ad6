//! Commits under `synchronous = NORMAL` (no sync after a commit, so nothing but the VFS's own
//! rules puts the commit's last bytes in the file): a commit whose page crosses the hold limit,
//! and the frame headers SQLite rewrites at commit (new checksums) after a page spilled earlier
//! in the transaction was written again.

use std::path::Path;

use rusqlite::Connection;

fn normal(path: &Path) -> Connection {
    let conn = super::tests::buffered(path);
    conn.pragma_update(None, "synchronous", "NORMAL")
        .expect("normal");
    conn
}

/// What a crash would leave: the database and its WAL copied while the writer is still open,
/// opened by a plain connection elsewhere (it recovers the WAL).
fn recovered(path: &Path, dir: &Path) -> Connection {
    let copy = dir.join("copy.db");
    std::fs::copy(path, &copy).expect("copy db");
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let mut wal_copy = copy.as_os_str().to_owned();
    wal_copy.push("-wal");
    std::fs::copy(wal, wal_copy).expect("copy wal");
    Connection::open(copy).expect("open copy")
}

fn intact(conn: &Connection) -> i64 {
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(ok, "ok");
    conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .expect("count")
}

#[test]
fn a_commit_whose_page_crosses_the_hold_limit_is_whole_in_the_file() {
    for rows in 1005..1025_i64 {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let conn = normal(&path);
        conn.execute_batch(
            "PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = 100000;
             CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB);",
        )
        .expect("schema");
        conn.execute(
            "INSERT INTO t WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c
                 WHERE x < ?1) SELECT x, randomblob(3900) FROM c",
            [rows],
        )
        .expect("one commit");
        assert_eq!(intact(&recovered(&path, dir.path())), rows, "{rows} rows");
    }
}

#[test]
fn frame_headers_rewritten_at_commit_are_in_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let conn = normal(&path);
    conn.execute_batch(
        "PRAGMA cache_size = 10; CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB);
         BEGIN;
         INSERT INTO t WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c
             WHERE x < 300) SELECT x, randomblob(1500) FROM c;
         UPDATE t SET v = randomblob(1500) WHERE k < 5;
         COMMIT;",
    )
    .expect("a transaction that spills, then writes spilled pages again");
    assert_eq!(intact(&recovered(&path, dir.path())), 300);
}
