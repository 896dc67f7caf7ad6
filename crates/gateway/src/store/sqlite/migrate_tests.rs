//! Migrations at open: a version 1 store (no generation, no crash counts, no history) and a
//! version 4 store (events ordered by id) come up in the current layout with every row, key,
//! state and attempt kept, and behave as if written by this version.

use super::tests::{accepted, event, rt, START};
use super::*;
use crate::store::{Finish, Guard, Trace};

fn version(store: &SqliteStore) -> i64 {
    store
        .read_blocking(|c| Ok(c.pragma_query_value(None, "user_version", |r| r.get(0))?))
        .expect("version")
}

#[test]
fn a_version_1_store_is_migrated_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    {
        let old = Connection::open(&path).expect("open");
        old.execute_batch(
            "CREATE TABLE events (id TEXT PRIMARY KEY, app TEXT NOT NULL, event_type TEXT NOT NULL,
                 schema TEXT NOT NULL, received_at INTEGER NOT NULL, body TEXT NOT NULL,
                 routed INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE deliveries (key INTEGER PRIMARY KEY, event_id TEXT NOT NULL REFERENCES events(id),
                 plugin TEXT NOT NULL, state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'dead')),
                 attempts INTEGER NOT NULL, next_at INTEGER NOT NULL, last_error TEXT,
                 updated_at INTEGER NOT NULL, UNIQUE (event_id, plugin));
             INSERT INTO events VALUES ('old', 'hire', 't', '2.0', 1, '{}', 1);
             INSERT INTO deliveries (event_id, plugin, state, attempts, next_at, updated_at)
                 VALUES ('old', 'a', 'pending', 2, 1, 1);
             PRAGMA user_version = 1;",
        )
        .expect("old schema");
    }
    rt().block_on(async {
        let store = SqliteStore::open(&path).expect("open migrates");
        let due = store.due(now_ms(), START, 10).await.expect("due");
        assert_eq!(due.deliveries.len(), 1);
        assert_eq!(due.deliveries[0].generation, 0);
        assert_eq!(due.deliveries[0].attempts, 2);
        store.close();
    });
    let store = SqliteStore::open(&path).expect("reopen: migration is idempotent");
    let version: i64 = store
        .read_blocking(|c| Ok(c.pragma_query_value(None, "user_version", |r| r.get(0))?))
        .expect("version");
    assert_eq!(version, SCHEMA_VERSION);
    store.close();
}

/// The version 4 layout, as that version created it.
const V4_TABLES: &str = "
CREATE TABLE events (id TEXT PRIMARY KEY, app TEXT NOT NULL, event_type TEXT NOT NULL,
    schema TEXT NOT NULL, received_at INTEGER NOT NULL, body TEXT NOT NULL,
    routed INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX events_received ON events(received_at);
CREATE TABLE deliveries (key INTEGER PRIMARY KEY, event_id TEXT NOT NULL REFERENCES events(id),
    plugin TEXT NOT NULL, state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'dead')),
    attempts INTEGER NOT NULL, next_at INTEGER NOT NULL, last_error TEXT,
    updated_at INTEGER NOT NULL, generation INTEGER NOT NULL DEFAULT 0,
    started INTEGER NOT NULL DEFAULT 0, crashes INTEGER NOT NULL DEFAULT 0,
    UNIQUE (event_id, plugin));
";

/// What versions 4 and 5 created after their `events` and `deliveries` tables.
pub(super) const V4_V5_REST: &str = "
CREATE INDEX deliveries_due ON deliveries(next_at) WHERE state = 'pending';
CREATE INDEX deliveries_dead ON deliveries(updated_at) WHERE state = 'dead';
CREATE TABLE attempts (delivery_key INTEGER NOT NULL REFERENCES deliveries(key) ON DELETE CASCADE,
    generation INTEGER NOT NULL, attempt INTEGER NOT NULL, outcome TEXT NOT NULL, reason TEXT,
    started_at INTEGER, duration_ms INTEGER, recorded_at INTEGER NOT NULL);
CREATE INDEX attempts_delivery ON attempts(delivery_key);
";

/// A version 4 store: `zz-pending` (received first) waits for `a` after a retry; `aa-done` was
/// delivered to `a` and dead-lettered by `b`.
fn version_4_store(path: &std::path::Path) {
    let old = Connection::open(path).expect("open");
    old.execute_batch(&format!("{V4_TABLES}{V4_V5_REST}PRAGMA user_version = 4;"))
        .expect("v4 schema");
    old.execute_batch(
        "INSERT INTO events VALUES ('zz-pending', 'hire', 't', '2.0', 100, '{\"n\":1}', 1);
         INSERT INTO events VALUES ('aa-done', 'hire', 't', '2.0', 200, '{\"n\":2}', 1);
         INSERT INTO deliveries (key, event_id, plugin, state, attempts, next_at, last_error,
             updated_at, generation)
             VALUES (7, 'zz-pending', 'a', 'pending', 1, 0, 'HTTP 503', 150, 2),
                    (8, 'aa-done', 'a', 'done', 1, 210, NULL, 210, 0),
                    (9, 'aa-done', 'b', 'dead', 3, 220, 'refused', 220, 0);
         INSERT INTO attempts VALUES (7, 2, 1, 'retry', 'HTTP 503', 140, 10, 150),
                                     (8, 0, 1, 'ok', NULL, 205, 5, 210),
                                     (9, 0, 1, 'retry', 'x', 211, 1, 212),
                                     (9, 0, 2, 'retry', 'y', 213, 1, 214),
                                     (9, 0, 3, 'reject', 'refused', 215, 5, 220);",
    )
    .expect("v4 rows");
}

#[test]
fn a_version_4_store_is_rebuilt_in_arrival_order_with_every_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    version_4_store(&path);
    let store = SqliteStore::open(&path).expect("open migrates");
    let wal = dir.path().join("s.db-wal");
    assert_eq!(
        std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0),
        0,
        "the copy's WAL is given back"
    );
    assert_eq!(version(&store), SCHEMA_VERSION);
    assert_eq!(store.integrity_check().expect("check"), ["ok"]);
    let seqs: Vec<String> = store
        .read_blocking(|c| {
            let mut s = c.prepare("SELECT id FROM events ORDER BY seq")?;
            let ids = s.query_map([], |r| r.get(0))?;
            Ok(ids.collect::<Result<_, _>>()?)
        })
        .expect("ids");
    assert_eq!(
        seqs,
        ["zz-pending", "aa-done"],
        "arrival order, not id order"
    );

    let done = store.event("aa-done").expect("read").expect("event");
    assert_eq!(done.body, r#"{"n":2}"#);
    let states: Vec<_> = done
        .deliveries
        .iter()
        .map(|d| {
            (
                d.plugin.as_str(),
                d.state.as_str(),
                d.attempts,
                d.history.len(),
            )
        })
        .collect();
    assert_eq!(states, [("a", "done", 1, 1), ("b", "dead", 3, 3)]);
    let reasons: Vec<_> = done.deliveries[1]
        .history
        .iter()
        .map(|h| h.reason.as_deref())
        .collect();
    assert_eq!(
        reasons,
        [Some("x"), Some("y"), Some("refused")],
        "attempt order kept"
    );
    let dead = store.dead_letters(Some("b"), None).expect("dead");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event_id, "aa-done");

    rt().block_on(async {
        let due = store.due(now_ms(), START, 10).await.expect("due");
        assert_eq!(due.deliveries.len(), 1);
        let d = &due.deliveries[0];
        assert_eq!(
            (d.key, d.plugin.as_str(), d.attempts, d.generation),
            (7, "a", 1, 2)
        );
        let loaded = store.load_pending(vec![7]).await.expect("load");
        assert_eq!(loaded[0].event_id, "zz-pending");
        assert_eq!(loaded[0].body.as_str(), r#"{"n":1}"#);
        assert!(!loaded[0].body.is_parsed(), "read back: checked before use");
        // The outcome lands on the kept key and guard, after the old history row.
        let record = FinishRecord {
            write: crate::store::WriteId::fresh(),
            key: 7,
            guard: Guard {
                generation: 2,
                attempts: 1,
                dead_too: false,
                own_mark: false,
            },
            attempts: 2,
            finish: Finish::Done,
            trace: Trace {
                outcome: "ok",
                started_at_ms: 300,
                duration_ms: 1,
                discarded_run: None,
            },
        };
        assert_eq!(
            store.finish_many(vec![record]).await.expect("finish"),
            [true]
        );
        // Lark's retry of a migrated event is still a duplicate; a new one gets the next seq.
        assert!(matches!(
            store
                .accept(event("aa-done", &["a"]))
                .await
                .expect("accept"),
            Accepted::Duplicate
        ));
        let fresh = accepted(&store, event("mm-new", &["a"])).await;
        assert!(fresh[0].0 > 9, "delivery keys continue after the kept ones");
        // Retention still finds the migrated events: one delivered, one with an old dead letter.
        assert_eq!(store.purge(1_000, 1_000).await.expect("purge"), 2);
        store.close();
    });
    let store = SqliteStore::open(&path).expect("reopen: nothing left to migrate");
    assert!(store.event("zz-pending").expect("read").is_none());
    assert!(store.event("aa-done").expect("read").is_none());
    assert!(store.event("mm-new").expect("read").is_some());
    store.close();
}

#[test]
fn operator_commands_refuse_an_older_store_and_leave_it_as_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    version_4_store(&path);
    let err = SqliteStore::open_existing(&path).expect_err("an older store is refused");
    assert!(err.0.contains("schema version 4"), "{}", err.0);
    assert!(err.0.contains("gateway run"), "{}", err.0);
    let old = Connection::open(&path).expect("open");
    let version: i64 = old
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("version");
    assert_eq!(version, 4, "not migrated");
    let id_ordered: bool = old
        .prepare("SELECT 1 FROM pragma_table_info('events') WHERE name = 'seq'")
        .and_then(|mut s| s.exists([]))
        .map(|seq| !seq)
        .expect("columns");
    assert!(id_ordered, "the old layout is untouched");
    drop(old);
    // The gateway itself migrates it; then the operator commands open it.
    SqliteStore::open(&path).expect("run migrates").close();
    SqliteStore::open_existing(&path)
        .expect("current now")
        .close();
}

#[test]
fn a_store_written_by_a_newer_gateway_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    SqliteStore::open(&path).expect("create").close();
    // A newer layout, as far as this version can tell: another version number, one index gone.
    Connection::open(&path)
        .and_then(|c| {
            c.execute_batch("DROP INDEX events_received")?;
            c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        })
        .expect("bump");
    for err in [
        SqliteStore::open(&path).expect_err("run refuses"),
        SqliteStore::open_existing(&path).expect_err("commands refuse"),
    ] {
        assert!(err.0.contains("newer gateway"), "{}", err.0);
    }
    let recreated: bool = Connection::open(&path)
        .and_then(|c| {
            c.prepare("SELECT 1 FROM sqlite_master WHERE name = 'events_received'")?
                .exists([])
        })
        .expect("schema");
    assert!(!recreated, "nothing was written to the newer store");
}

#[test]
fn the_state_check_is_rewritten_as_comparisons_in_place_and_still_holds() {
    use super::migrate::{STATE_CHECK, STATE_CHECK_LIST};
    assert!(
        SCHEMA.contains(STATE_CHECK),
        "new stores get the comparisons"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    {
        // A store as the previous release created it: this schema with the IN list.
        let old = Connection::open(&path).expect("open");
        old.execute_batch(&format!(
            "{}PRAGMA user_version = {SCHEMA_VERSION};
             INSERT INTO events VALUES (1, 'e1', 'hire', 't', '2.0', 100, '{{}}', 1);
             INSERT INTO deliveries (key, event_seq, plugin, state, attempts, next_at, updated_at)
                 VALUES (7, 1, 'a', 'done', 1, 100, 100), (8, 1, 'b', 'pending', 0, 100, 100);",
            SCHEMA.replace(STATE_CHECK, STATE_CHECK_LIST)
        ))
        .expect("old schema");
    }
    let schema_version = |c: &Connection| -> rusqlite::Result<i64> {
        c.pragma_query_value(None, "schema_version", |r| r.get(0))
    };
    let before = Connection::open(&path)
        .and_then(|c| schema_version(&c))
        .expect("schema version");
    let store = SqliteStore::open(&path).expect("open rewrites");
    assert_eq!(version(&store), SCHEMA_VERSION, "no version change");
    // The edit is announced as SQLite asks: its schema cookie one up, so every connection
    // reads the new schema.
    let after = store
        .read_blocking(|c| Ok(schema_version(c)?))
        .expect("schema version");
    assert_eq!(after, before + 1);
    let (sql, integrity, rows, bad) = store
        .read_blocking(|c| {
            let sql: String = c.query_row(
                "SELECT sql FROM sqlite_schema WHERE name = 'deliveries'",
                [],
                |r| r.get(0),
            )?;
            let integrity: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
            let mut s = c.prepare("SELECT key, state FROM deliveries ORDER BY key")?;
            let rows = s
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<(i64, String)>, _>>()?;
            let bad = c
                .execute("UPDATE deliveries SET state = 'gone' WHERE key = 7", [])
                .map_err(|e| e.to_string());
            Ok((sql, integrity, rows, bad))
        })
        .expect("read");
    assert!(
        sql.contains(STATE_CHECK) && !sql.contains(STATE_CHECK_LIST),
        "{sql}"
    );
    assert_eq!(integrity, "ok");
    assert_eq!(rows, [(7, "done".to_owned()), (8, "pending".to_owned())]);
    assert!(bad.expect_err("the check still holds").contains("CHECK"));
    store.close();
    // Opening again finds nothing to do.
    let again = SqliteStore::open(&path).expect("reopen");
    assert_eq!(version(&again), SCHEMA_VERSION);
}

#[test]
fn check_reads_the_version_from_the_files_header_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let check = |path: &Path| SqliteStore::check_existing(path);
    let err = check(&path).expect_err("missing").0;
    assert!(err.contains("cannot read"), "{err}");
    std::fs::write(&path, b"").expect("write");
    assert_eq!(check(&path).expect("empty: run creates it"), None);
    // Not a database: another format, or the right magic but no whole header.
    let mut header = b"SQLite format 3\0".to_vec();
    header.resize(99, 0);
    for bytes in [vec![b'x'; 4096], header] {
        std::fs::write(&path, &bytes).expect("write");
        let err = check(&path).expect_err("not a database").0;
        assert!(err.contains("not an SQLite database"), "{err}");
    }
    std::fs::remove_file(&path).expect("remove");
    SqliteStore::open(&path).expect("create").close();
    assert_eq!(check(&path).expect("current"), None);
    for (version, expected) in [
        (SCHEMA_VERSION - 1, Ok(Some(SCHEMA_VERSION - 1))),
        (1, Ok(Some(1))),
        (SCHEMA_VERSION + 1, Err("newer gateway")),
    ] {
        // Written through a connection out of WAL mode, so the header holds it.
        Connection::open(&path)
            .and_then(|c| {
                c.pragma_update(None, "journal_mode", "DELETE")?;
                c.pragma_update(None, "user_version", version)
            })
            .expect("set version");
        let listing = |dir: &Path| {
            let mut names: Vec<_> = std::fs::read_dir(dir)
                .expect("dir")
                .map(|e| e.expect("entry").file_name())
                .collect();
            names.sort();
            names
        };
        let files = listing(dir.path());
        match (check(&path), expected) {
            (Ok(found), Ok(want)) => assert_eq!(found, want),
            (Err(e), Err(want)) => assert!(e.0.contains(want), "{}", e.0),
            (found, want) => panic!("version {version}: {found:?}, expected {want:?}"),
        }
        assert_eq!(
            listing(dir.path()),
            files,
            "nothing created beside the store"
        );
    }
}

#[test]
fn a_rebuild_that_would_lose_a_row_or_leave_one_pointing_nowhere_is_refused() {
    // Each alone: a delivery of an event that is not there (the copy joins them), an attempt
    // of a delivery that is not there.
    for (extra, why) in [
        (
            "INSERT INTO deliveries (key, event_id, plugin, state, attempts, next_at, last_error,
                 updated_at, generation) VALUES (10, 'gone', 'a', 'pending', 0, 0, NULL, 100, 0);",
            // (the old delivery row points nowhere too)
            "1 deliveries without their event, 1 rows pointing nowhere",
        ),
        (
            "INSERT INTO attempts VALUES (99, 0, 1, 'retry', 'x', 1, 1, 2);",
            // (in the old table and in its copy)
            "0 deliveries without their event, 2 rows pointing nowhere",
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        version_4_store(&path);
        Connection::open(&path)
            .and_then(|c| c.execute_batch(&format!("PRAGMA foreign_keys = OFF; {extra}")))
            .expect("the extra row");
        let state = || -> (i64, i64, i64) {
            Connection::open(&path)
                .and_then(|c| {
                    c.query_row(
                        "SELECT (SELECT user_version FROM pragma_user_version),
                                (SELECT COUNT(*) FROM deliveries), (SELECT COUNT(*) FROM attempts)",
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                })
                .expect("read")
        };
        let before = state();
        assert_eq!(before.0, 4);
        let err = SqliteStore::open(&path).expect_err("refused").0;
        assert!(err.contains(why), "{err}");
        assert_eq!(state(), before, "left as it was");
    }
}

#[test]
fn a_current_store_opens_without_a_rebuild() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    SqliteStore::open(&path).expect("create").close();
    // A rebuild makes every table anew: other root pages.
    let roots = || -> Vec<(String, i64)> {
        Connection::open(&path)
            .and_then(|c| {
                c.prepare("SELECT name, rootpage FROM sqlite_schema ORDER BY name")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .expect("schema")
    };
    let before = roots();
    SqliteStore::open(&path).expect("reopen").close();
    assert_eq!(roots(), before);
}
