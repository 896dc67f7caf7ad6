//! The embedded store: dedup, the delivery life cycle, group commit, due pages, a fresh
//! delivery's stamp, persistence across reopen, read-only openings and how every connection
//! syncs; and the helpers the store's other test modules share (and the admin API's replay tests). Which outcome a delivery keeps
//! (replays, running calls, late successes, crashes): `outcome_tests.rs`; purges and dead
//! letters: `purge_tests.rs`.

use super::*;
use crate::store::{Finish, Guard};

pub(super) const START: (i64, i64) = (i64::MIN, i64::MIN);

/// One outcome at a time, for these tests.
pub(crate) trait FinishOne {
    fn finish(&self, key: i64, guard: Guard, attempts: u32, finish: Finish) -> StoreFuture<bool>;
}

impl FinishOne for SqliteStore {
    fn finish(&self, key: i64, guard: Guard, attempts: u32, finish: Finish) -> StoreFuture<bool> {
        let trace = trace_of(&finish);
        let many = self.finish_many(vec![FinishRecord {
            write: crate::store::WriteId::fresh(),
            key,
            guard,
            attempts,
            finish,
            trace,
        }]);
        Box::pin(async move { Ok(many.await?.first().copied().unwrap_or(false)) })
    }
}

/// The history row a test outcome writes.
pub(super) fn trace_of(finish: &Finish) -> crate::store::Trace {
    crate::store::Trace {
        outcome: match finish {
            Finish::Done => "ok",
            Finish::Retry { .. } => "retry",
            Finish::Dead { .. } => "reject",
        },
        started_at_ms: 5_000,
        duration_ms: 7,
        discarded_run: None,
    }
}

/// Accepts a new event; its deliveries (store key, plugin).
pub(crate) async fn accepted(store: &SqliteStore, e: NewEvent) -> Vec<(i64, String)> {
    match store.accept(e).await.expect("accept") {
        Accepted::New { deliveries } => deliveries,
        Accepted::Duplicate => panic!("expected a new event"),
    }
}

/// A store at `path`, and another connection holding its write lock (`BEGIN IMMEDIATE`).
pub(super) fn locked(path: &std::path::Path) -> (SqliteStore, Connection) {
    let store = SqliteStore::open(path).expect("open");
    let other = Connection::open(path).expect("other");
    other.execute_batch("BEGIN IMMEDIATE").expect("lock");
    (store, other)
}

/// The guard of generation 0 at `attempts` (no mark asked, no dead letter replaced).
pub(crate) use crate::store::first_call_guard as at;

pub(crate) fn event(id: &str, plugins: &[&str]) -> NewEvent {
    NewEvent {
        id: id.into(),
        app: "hire".into(),
        event_type: "t".into(),
        schema: "2.0",
        received_at_ms: 1_000,
        body: Arc::from(format!(r#"{{"id":"{id}"}}"#)),
        plugins: plugins.iter().map(|p| p.to_string()).collect(),
    }
}

pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn accept_dedup_and_delivery_lifecycle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    rt().block_on(async {
        let store = SqliteStore::open(&path).expect("open");
        let deliveries = accepted(&store, event("e1", &["a", "b"])).await;
        assert_eq!(deliveries.len(), 2);
        assert_eq!(
            store.accept(event("e1", &["a"])).await.expect("dup"),
            Accepted::Duplicate
        );
        assert_eq!(
            store.accept(event("e2", &[])).await.expect("unrouted"),
            Accepted::New { deliveries: vec![] }
        );

        let due = store.due(now_ms(), START, 100).await.expect("due");
        assert_eq!(due.deliveries.len(), 2);
        let loaded = store
            .load_pending(due.deliveries.iter().map(|d| d.key).collect())
            .await
            .expect("load");
        assert_eq!(loaded[0].body.as_str(), r#"{"id":"e1"}"#);
        assert!(!loaded[0].body.is_parsed(), "read back: checked before use");
        assert_eq!(loaded[0].event_id, "e1");

        let (ka, kb) = (deliveries[0].0, deliveries[1].0);
        assert!(store
            .finish(ka, at(0), 1, Finish::Done)
            .await
            .expect("done"));
        // A second outcome for the same attempt is not recorded (already finished).
        assert!(!store
            .finish(ka, at(0), 1, Finish::Done)
            .await
            .expect("stale"));
        let later = now_ms() + 60_000;
        store
            .finish(
                kb,
                at(0),
                1,
                Finish::Retry {
                    next_at_ms: later,
                    error: "boom".into(),
                },
            )
            .await
            .expect("retry");
        let due = store.due(now_ms(), START, 100).await.expect("due");
        assert!(due.deliveries.is_empty());
        assert_eq!(due.next_due_ms, Some(later));
        assert_eq!(store.backlog().await.expect("backlog").pending, 1);

        store
            .finish(
                kb,
                at(1),
                2,
                Finish::Dead {
                    error: "gave up".into(),
                },
            )
            .await
            .expect("dead");
        let dead = store.dead_letters(None, None).expect("dead letters");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].plugin, "b");
        assert_eq!(dead[0].last_error.as_deref(), Some("gave up"));

        let n = store
            .replay(ReplaySelector::DeadLetters {
                plugin: Some("b".into()),
                force: false,
            })
            .await
            .expect("replay");
        assert_eq!(n, 1);
        let due = store.due(now_ms(), START, 100).await.expect("due");
        assert_eq!(due.deliveries.len(), 1);
        assert_eq!(due.deliveries[0].attempts, 0);
        store.close();
    });
    // Reopen: everything persisted, dedup survives.
    rt().block_on(async {
        let store = SqliteStore::open(&path).expect("reopen");
        assert_eq!(
            store.accept(event("e1", &["a"])).await.expect("dup"),
            Accepted::Duplicate
        );
        let shown = store.event("e1").expect("read").expect("exists");
        assert_eq!(shown.deliveries.len(), 2);
        assert_eq!(
            store.integrity_check().expect("check"),
            vec!["ok".to_string()]
        );
        store.close();
    });
}

#[test]
fn concurrent_accepts_are_group_committed_and_deduplicated() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let mut tasks = Vec::new();
        for i in 0..400 {
            let store = store.clone();
            // 200 distinct ids, each sent twice concurrently.
            tasks.push(tokio::spawn(async move {
                store.accept(event(&format!("e{}", i % 200), &["a"])).await
            }));
        }
        let mut new = 0;
        let mut dup = 0;
        for t in tasks {
            match t.await.expect("join").expect("accept") {
                Accepted::New { .. } => new += 1,
                Accepted::Duplicate => dup += 1,
            }
        }
        assert_eq!((new, dup), (200, 200));
        assert_eq!(store.backlog().await.expect("backlog").pending, 200);
        store.close();
    });
}

#[test]
fn closed_store_refuses_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        store.close();
        assert!(store.accept(event("e", &[])).await.is_err());
    });
}

/// One process owns an embedded store: it is not shared and has no lease, so the engine starts
/// no claim renewals and the orphan rule waits no lease for another replica; it is named by its
/// path (`gateway check`, `store check`'s "store PATH is sound", a reload's store comparison).
#[test]
fn an_embedded_store_is_one_process_s_and_named_by_its_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let store = SqliteStore::open(&path).expect("open");
    assert!(!store.shared());
    assert_eq!(store.lease(), None);
    assert_eq!(store.describe(), path.display().to_string());
    assert_eq!(
        format!("{store:?}"),
        format!("SqliteStore {{ path: {path:?} }}")
    );
    store.close();
}

#[test]
fn due_pages_with_a_cursor_and_load_skips_finished() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        for i in 0..25 {
            store
                .accept(event(&format!("e{i:02}"), &["a"]))
                .await
                .expect("accept");
        }
        let now = now_ms() + 1;
        let mut cursor = START;
        let mut seen = Vec::new();
        loop {
            let page = store.due(now, cursor, 10).await.expect("due");
            let Some(last) = page.deliveries.last() else {
                break;
            };
            cursor = (last.next_at_ms, last.key);
            seen.extend(page.deliveries.iter().map(|d| d.key));
        }
        let mut sorted = seen.clone();
        sorted.dedup();
        assert_eq!(seen.len(), 25);
        assert_eq!(sorted.len(), 25, "no key twice across pages");
        store
            .finish(seen[0], at(0), 1, Finish::Done)
            .await
            .expect("done");
        let loaded = store
            .load_pending(vec![seen[0], seen[1]])
            .await
            .expect("load");
        assert_eq!(loaded.len(), 1, "a finished delivery is not loaded");
        assert_eq!(loaded[0].key, seen[1]);
        store.close();
    });
}

#[test]
fn a_fresh_delivery_is_stamped_after_the_write_lock_is_taken() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    rt().block_on(async {
        let (store, other) = locked(&path);
        let released = std::thread::spawn(move || {
            // Within the 1 s an accept waits for the lock (`deadline::ACCEPT_WAIT`).
            std::thread::sleep(std::time::Duration::from_millis(600));
            let at = now_ms();
            other.execute_batch("ROLLBACK").expect("unlock");
            at
        });
        store.accept(event("e", &["a"])).await.expect("accept");
        let released_at = released.join().expect("thread");
        let due = store.due(now_ms(), START, 10).await.expect("due");
        // The hand-off grace counts from here, so a busy wait never eats into it.
        assert!(
            due.deliveries[0].next_at_ms >= released_at - 5,
            "stamped {} ms before the lock was released",
            released_at - due.deliveries[0].next_at_ms
        );
        store.close();
    });
}

#[test]
fn read_only_openings_refuse_a_store_that_does_not_exist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nope/gateway.db");
    let err = SqliteStore::open_existing(&path).expect_err("refused");
    assert!(err.to_string().contains("no store at"), "{err}");
    assert!(!path.exists(), "nothing was created");
    assert!(!dir.path().join("nope").exists());
    SqliteStore::open(&path).expect("created").close();
    SqliteStore::open_existing(&path)
        .expect("now it exists")
        .close();
}

/// Every store connection syncs each commit (`synchronous = FULL`: durable before the answer)
/// and writes its WAL through the VFS that hands a commit's frames over in one write.
#[test]
fn store_connections_sync_every_commit_through_the_wal_vfs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let conn = open_connection(&path).expect("open");
    let synchronous: i64 = conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .expect("synchronous");
    assert_eq!(synchronous, 2, "FULL");
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
    let before = sqlite_walbuf::stats();
    conn.execute_batch("CREATE TABLE t (v); INSERT INTO t VALUES (1);")
        .expect("write");
    assert!(
        sqlite_walbuf::stats().asked > before.asked,
        "the WAL is written through the VFS"
    );
}

/// A delivery whose counters were corrupted (negative) is shown with them clamped, as on
/// PostgreSQL: `events show` and the listings work, `store check` reports the row.
#[test]
fn negative_counters_show_clamped_instead_of_failing_the_listing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    rt().block_on(async {
        let store = SqliteStore::open(&path).expect("open");
        accepted(&store, event("e1", &["a"])).await;
        let other = Connection::open(&path).expect("other");
        other
            .execute("UPDATE deliveries SET attempts = -3, crashes = -1", [])
            .expect("corrupt");
        let shown = store.event("e1").expect("shown").expect("found");
        assert_eq!(
            (shown.deliveries[0].attempts, shown.deliveries[0].crashes),
            (0, 0)
        );
        let found = store.integrity_check().expect("check");
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("1 deliveries with counters out of range")),
            "{found:?}"
        );
    });
}

/// A pending delivery whose stored row is damaged (a counter out of the engine's range or not
/// an integer, an event body that is not text) is passed over by `due` and `load_pending`
/// instead of failing them (which stopped the sweeper at that row, for every delivery after
/// it, round after round), and `store check` reports it.
#[test]
fn a_damaged_pending_row_is_passed_over_and_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    rt().block_on(async {
        let store = SqliteStore::open(&path).expect("open");
        for id in ["e1", "e2", "e3", "e4"] {
            accepted(&store, event(id, &["a"])).await;
        }
        let keys: Vec<i64> = store
            .due(now_ms() + 1, START, 10)
            .await
            .expect("due")
            .deliveries
            .iter()
            .map(|d| d.key)
            .collect();
        assert_eq!(keys.len(), 4);
        let other = Connection::open(&path).expect("other");
        let corrupt = |sql: &str, key: i64| {
            other.execute(sql, [key]).expect("corrupt");
        };
        corrupt(
            "UPDATE deliveries SET attempts = -1 WHERE key = ?1",
            keys[0],
        );
        corrupt(
            "UPDATE deliveries SET generation = 8589934592 WHERE key = ?1",
            keys[1],
        );
        corrupt(
            "UPDATE events SET body = CAST(body AS BLOB)
             WHERE seq = (SELECT event_seq FROM deliveries WHERE key = ?1)",
            keys[2],
        );
        let due: Vec<i64> = store
            .due(now_ms() + 1, START, 10)
            .await
            .expect("a damaged row fails no page")
            .deliveries
            .iter()
            .map(|d| d.key)
            .collect();
        assert_eq!(due, [keys[2], keys[3]], "counters out of range passed over");
        let loaded: Vec<i64> = store
            .load_pending(keys.clone())
            .await
            .expect("a damaged row fails no load")
            .iter()
            .map(|d| d.key)
            .collect();
        assert_eq!(loaded, [keys[3]]);
        let found = store.integrity_check().expect("check");
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("2 deliveries with counters out of range")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("1 events with a damaged")),
            "{found:?}"
        );
    });
}

/// A new store is readable by its owner only, and so are the WAL and shared-memory files
/// SQLite makes beside it (every event body holds its app's verification token: they were
/// 0644 under the usual umask); an existing file keeps its mode.
#[test]
fn a_new_store_and_its_wal_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    rt().block_on(async {
        let store = SqliteStore::open(&path).expect("open");
        accepted(&store, event("e1", &["a"])).await;
        assert_eq!(mode(&path), 0o600);
        for suffix in ["-wal", "-shm"] {
            let side = dir.path().join(format!("s.db{suffix}"));
            assert_eq!(mode(&side), 0o600, "{}", side.display());
        }
        store.close();
    });
    // Through a symbolic link whose target does not exist yet: the target is made private.
    let target = dir.path().join("target.db");
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    SqliteStore::open(&link).expect("open").close();
    assert_eq!(mode(&target), 0o600, "the link's target");
    let kept = dir.path().join("kept.db");
    std::fs::write(&kept, b"").expect("create");
    std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    SqliteStore::open(&kept).expect("open").close();
    assert_eq!(mode(&kept), 0o640, "an existing file keeps its mode");
}
