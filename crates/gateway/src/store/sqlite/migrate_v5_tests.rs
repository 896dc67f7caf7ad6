//! Migration from version 5 (events in arrival order, a unique index on the id) to the current
//! layout: the same rows, keys and sequence numbers, the id hashes written, the unique index
//! gone, and deduplication of the migrated events intact.

use super::ids::id_hash;
use super::tests::{accepted, event, rt, START};
use super::*;

/// The version 5 layout, as that version created it (the rest as version 4 had it).
const V5_TABLES: &str = "
CREATE TABLE events (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, app TEXT NOT NULL,
    event_type TEXT NOT NULL, schema TEXT NOT NULL, received_at INTEGER NOT NULL,
    body TEXT NOT NULL, routed INTEGER NOT NULL);
CREATE INDEX events_received ON events(received_at);
CREATE TABLE deliveries (key INTEGER PRIMARY KEY, event_seq INTEGER NOT NULL REFERENCES events(seq),
    plugin TEXT NOT NULL, state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'dead')),
    attempts INTEGER NOT NULL, next_at INTEGER NOT NULL, last_error TEXT,
    updated_at INTEGER NOT NULL, generation INTEGER NOT NULL DEFAULT 0,
    started INTEGER NOT NULL DEFAULT 0, crashes INTEGER NOT NULL DEFAULT 0,
    UNIQUE (event_seq, plugin));
";

#[test]
fn a_version_5_store_loses_its_id_index_and_keeps_every_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    {
        let old = Connection::open(&path).expect("open");
        old.execute_batch(&format!(
            "{V5_TABLES}{}PRAGMA user_version = 5;",
            super::migrate_tests::V4_V5_REST
        ))
        .expect("v5 schema");
        old.execute_batch(
            "INSERT INTO events VALUES (3, 'first', 'hire', 't', '2.0', 100, '{\"n\":1}', 1);
             INSERT INTO events VALUES (8, 'second', 'hire', 't', '2.0', 200, '{\"n\":2}', 1);
             INSERT INTO deliveries (key, event_seq, plugin, state, attempts, next_at,
                 last_error, updated_at, generation)
                 VALUES (4, 3, 'a', 'pending', 1, 0, 'HTTP 503', 150, 1),
                        (11, 8, 'a', 'done', 1, 210, NULL, 210, 0);
             INSERT INTO attempts VALUES (4, 1, 1, 'retry', 'HTTP 503', 140, 10, 150),
                                         (11, 0, 1, 'ok', NULL, 205, 5, 210);",
        )
        .expect("v5 rows");
    }
    let store = SqliteStore::open(&path).expect("open migrates");
    let (version, unique, hashes): (i64, bool, Vec<(i64, i64)>) = store
        .read_blocking(|c| {
            let version = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
            let unique = c
                .prepare("SELECT 1 FROM pragma_index_list('events') WHERE \"unique\" = 1")?
                .exists([])?;
            let mut s = c.prepare("SELECT seq, hash FROM event_ids ORDER BY seq")?;
            let rows = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok((version, unique, rows.collect::<Result<_, _>>()?))
        })
        .expect("schema");
    assert_eq!(version, SCHEMA_VERSION);
    assert!(!unique, "no unique index on the id any more");
    assert_eq!(hashes, [(3, id_hash("first")), (8, id_hash("second"))]);
    assert_eq!(store.integrity_check().expect("check"), ["ok"]);
    let second = store.event("second").expect("read").expect("event");
    assert_eq!(second.body, r#"{"n":2}"#);
    assert_eq!(second.deliveries[0].history.len(), 1);
    rt().block_on(async {
        let due = store.due(now_ms(), START, 10).await.expect("due");
        let keys: Vec<_> = due
            .deliveries
            .iter()
            .map(|d| (d.key, d.generation))
            .collect();
        assert_eq!(keys, [(4, 1)]);
        let loaded = store.load_pending(vec![4]).await.expect("load");
        assert_eq!(loaded[0].event_id, "first");
        for id in ["first", "second"] {
            assert_eq!(
                store.accept(event(id, &["a"])).await.expect("accept"),
                Accepted::Duplicate,
                "{id}"
            );
        }
        let fresh = accepted(&store, event("third", &["a"])).await;
        assert!(
            fresh[0].0 > 11,
            "delivery keys continue after the kept ones"
        );
        assert!(store.check().await.expect("check").is_empty());
        store.close();
    });
}
