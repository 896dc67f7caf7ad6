//! Deduplication without an index on the id: the in-memory id index follows commits, purges
//! and failed transactions; a hash match is confirmed against the stored id; one gateway per
//! store; `store check` finds a missing or wrong hash and an id stored twice.

use super::ids::id_hash;
use super::tests::{accepted, event, rt};
use super::*;
use crate::store::PURGE_CHUNK;

fn raw(path: &Path) -> Connection {
    open_connection(path).expect("raw connection")
}

#[test]
fn a_purged_event_is_accepted_again_and_a_kept_one_stays_a_duplicate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    rt().block_on(async {
        let store = SqliteStore::open(&path).expect("open");
        accepted(&store, event("gone", &[])).await;
        let mut kept = event("kept", &[]);
        kept.received_at_ms = 9_000;
        store.accept(kept).await.expect("kept");
        assert_eq!(store.purge(2_000, i64::MIN).await.expect("purge"), 1);
        accepted(&store, event("gone", &[])).await;
        let mut again = event("kept", &[]);
        again.received_at_ms = 9_000;
        assert_eq!(store.accept(again).await.expect("dup"), Accepted::Duplicate);
        store.close();
    });
    // After a restart the index is read back from the table: the same answers.
    rt().block_on(async {
        let store = SqliteStore::open(&path).expect("reopen");
        for id in ["gone", "kept"] {
            assert_eq!(
                store.accept(event(id, &[])).await.expect("dup"),
                Accepted::Duplicate,
                "{id}"
            );
        }
        assert!(store.check().await.expect("check").is_empty());
        store.close();
    });
}

#[test]
fn a_failed_transaction_leaves_its_ids_out_of_the_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    rt().block_on(async {
        let store = SqliteStore::open(&path).expect("open");
        accepted(&store, event("before", &["a"])).await;
        raw(&path)
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON deliveries WHEN NEW.plugin = 'boom'
                 BEGIN SELECT RAISE(ABORT, 'injected'); END;",
            )
            .expect("trigger");
        assert!(store.accept(event("x", &["boom"])).await.is_err());
        raw(&path)
            .execute_batch("DROP TRIGGER refuse")
            .expect("drop trigger");
        accepted(&store, event("x", &["a"])).await;
        assert_eq!(
            store.accept(event("x", &["a"])).await.expect("dup"),
            Accepted::Duplicate
        );
        store.close();
    });
    // What the writer held matches the table: no hash of the rolled-back insert.
    let conn = raw(&path);
    let index = super::ids::IdIndex::load_after(&conn, i64::MIN).expect("load");
    assert_eq!(index.len(), 2);
    let hashes: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM event_ids WHERE hash = ?1",
            [id_hash("x")],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(hashes, 1);
}

#[test]
fn the_writer_index_follows_commits_and_roll_backs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    SqliteStore::open(&path).expect("create").close();
    let mut conn = raw(&path);
    conn.execute_batch(
        "CREATE TRIGGER refuse BEFORE INSERT ON deliveries WHEN NEW.plugin = 'boom'
         BEGIN SELECT RAISE(ABORT, 'injected'); END;",
    )
    .expect("trigger");
    let accept = |id: &str, plugins: &[&str]| {
        Write::Accept(
            event(id, plugins),
            std::time::Instant::now(),
            oneshot::channel().0,
        )
    };
    let mut ids = None;
    // One batch: the second copy of an id is a duplicate of the first, inside the transaction.
    let batch = [accept("a", &[]), accept("a", &[]), accept("b", &[])];
    let outcomes = writer::apply_and_settle_for_tests(&mut conn, &batch, &mut ids);
    assert_eq!(outcomes.expect("batch"), ["new", "duplicate", "new"]);
    let index = ids.as_ref().expect("loaded on the first accept");
    assert_eq!(index.len(), 2);
    // A failing batch: its accepted ids leave the index again.
    let batch = [accept("c", &[]), accept("d", &["boom"])];
    assert!(writer::apply_and_settle_for_tests(&mut conn, &batch, &mut ids).is_err());
    let index = ids.as_ref().expect("index");
    assert_eq!(index.len(), 2);
    assert!(index
        .candidates(id_hash("c"))
        .expect("candidates")
        .is_empty());
}

#[test]
fn a_hash_match_whose_event_is_gone_is_not_a_duplicate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    rt().block_on(async {
        let store = SqliteStore::open(&path).expect("open");
        accepted(&store, event("e", &[])).await;
        // Removed behind the writer's back (its index still holds the hash).
        raw(&path)
            .execute_batch("DELETE FROM events WHERE id = 'e'")
            .expect("delete");
        accepted(&store, event("e", &[])).await;
        store.close();
    });
}

#[test]
fn one_gateway_per_store_while_operator_commands_still_open_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let first = SqliteStore::open(&path).expect("first");
    let err = SqliteStore::open(&path).expect_err("second gateway");
    assert!(err.0.contains("in use by another running gateway"), "{err}");
    let operator = SqliteStore::open_existing(&path).expect("operator command");
    operator.close();
    first.close();
    SqliteStore::open(&path).expect("free again").close();
}

#[test]
fn check_reports_missing_and_wrong_hashes_and_twice_stored_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    rt().block_on(async {
        let store = SqliteStore::open(&path).expect("open");
        for id in ["a", "b", "c"] {
            accepted(&store, event(id, &[])).await;
        }
        assert!(store.check().await.expect("sound").is_empty());
        let conn = raw(&path);
        conn.execute_batch(
            "UPDATE event_ids SET hash = 0 WHERE seq = (SELECT seq FROM events WHERE id = 'a');
             DELETE FROM event_ids WHERE seq = (SELECT seq FROM events WHERE id = 'b');
             INSERT INTO event_ids (seq, hash) VALUES (999, 1);
             INSERT INTO events (id, app, event_type, schema, received_at, body, routed)
                 SELECT id, app, event_type, schema, received_at, body, routed
                 FROM events WHERE id = 'c';",
        )
        .expect("damage");
        let problems = store.check().await.expect("check");
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].starts_with("3 events without their id hash"),
            "{problems:?}"
        );
        assert_eq!(problems[1], "1 id hashes in event_ids without their event");
        assert_eq!(problems[2], "event c is stored more than once");
        store.close();
    });
}

#[test]
fn a_whole_purge_chunk_leaves_the_index_with_the_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    rt().block_on(async {
        let store = SqliteStore::open(&path).expect("open");
        let total = PURGE_CHUNK as usize + 10;
        let accepts: Vec<_> = (0..total)
            .map(|i| store.accept(event(&format!("e{i}"), &[])))
            .collect();
        for a in accepts {
            a.await.expect("accept");
        }
        assert_eq!(
            store.purge(i64::MAX, i64::MIN).await.expect("purge"),
            PURGE_CHUNK
        );
        // The oldest chunk is new again; the ten left are duplicates.
        accepted(&store, event("e0", &[])).await;
        accepted(&store, event(&format!("e{}", PURGE_CHUNK - 1), &[])).await;
        for i in PURGE_CHUNK as usize..total {
            assert_eq!(
                store
                    .accept(event(&format!("e{i}"), &[]))
                    .await
                    .expect("dup"),
                Accepted::Duplicate
            );
        }
        store.close();
    });
}

#[test]
fn replay_by_id_finds_events_through_the_index_or_one_scan_when_it_missed_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    rt().block_on(async {
        let gateway = SqliteStore::open(&path).expect("open");
        accepted(&gateway, event("a", &["p"])).await;
        accepted(&gateway, event("b", &["p", "q"])).await;
        // An operator command's own store: it reads the index on its first replay by id.
        let operator = SqliteStore::open_existing(&path).expect("operator");
        let ids = |ids: &[&str]| ReplaySelector::Events {
            ids: ids.iter().map(|s| s.to_string()).collect(),
            plugin: None,
            force: true,
            dead_only: false,
        };
        let n = operator
            .replay(ids(&["a", "b", "a", "nope"]))
            .await
            .expect("replay");
        assert_eq!(
            n, 3,
            "a's one delivery (once), b's two, nothing for an unknown id"
        );
        // Accepted by the gateway after the operator's index was read: found by the scan.
        accepted(&gateway, event("c", &["p"])).await;
        assert_eq!(operator.replay(ids(&["c"])).await.expect("replay"), 1);
        // The gateway's own replay (its index knows every event) and one plugin only.
        let one = ReplaySelector::Events {
            ids: vec!["b".into()],
            plugin: Some("q".into()),
            force: true,
            dead_only: false,
        };
        assert_eq!(gateway.replay(one).await.expect("replay"), 1);
        let due = gateway
            .due(now_ms() + 60_000, super::tests::START, 10)
            .await
            .expect("due");
        let mut generations: Vec<(String, u32)> = due
            .deliveries
            .iter()
            .map(|d| (d.plugin.clone(), d.generation))
            .collect();
        generations.sort();
        // a:p, b:p and c:p replayed once; b:q twice (the operator's, then the gateway's).
        let expected = [("p", 1), ("p", 1), ("p", 1), ("q", 2)];
        assert_eq!(
            generations,
            expected.map(|(p, g)| (p.to_string(), g)).to_vec()
        );
        operator.close();
        gateway.close();
    });
}
