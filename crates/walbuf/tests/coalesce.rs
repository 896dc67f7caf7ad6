//! The point of the VFS, counted: a commit's frames reach the file in one write. Alone in its
//! test binary, so no other test's writes are counted with it.

use rusqlite::{params, Connection, OpenFlags};

#[test]
fn a_commit_of_many_pages_is_one_write() {
    sqlite_walbuf::register().expect("register");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let mut conn =
        Connection::open_with_flags_and_vfs(&path, OpenFlags::default(), sqlite_walbuf::VFS_NAME)
            .expect("open");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("full");
    conn.execute_batch(
        "CREATE TABLE a (k INTEGER PRIMARY KEY, v TEXT); CREATE INDEX a_v ON a(v);
         CREATE TABLE b (k INTEGER PRIMARY KEY, v TEXT); CREATE INDEX b_v ON b(v);",
    )
    .expect("schema");
    for round in 0..10_i64 {
        let before = sqlite_walbuf::stats();
        let tx = conn.transaction().expect("tx");
        for i in 0..40 {
            let k = round * 40 + i;
            let v = format!("{k:0>200}");
            tx.execute("INSERT INTO a VALUES (?1, ?2)", params![k, v])
                .expect("a");
            tx.execute("INSERT INTO b VALUES (?1, ?2)", params![k, v])
                .expect("b");
        }
        tx.commit().expect("commit");
        let after = sqlite_walbuf::stats();
        let asked = after.asked - before.asked;
        let made = after.made - before.made;
        // Four B-trees of 40 rows of 200 bytes: several pages, two writes each.
        assert!(asked >= 8, "round {round}: SQLite wrote {asked} times");
        assert_eq!(made, 1, "round {round}: {asked} writes asked, {made} made");
    }
}
