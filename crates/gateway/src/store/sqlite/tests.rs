//! The embedded store: dedup, delivery state machine, group commit, persistence across reopen.

use super::*;
use crate::store::{Finish, Guard, PURGE_CHUNK};

pub(super) const START: (i64, i64) = (i64::MIN, i64::MIN);

/// One outcome at a time, for these tests.
trait FinishOne {
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
    }
}

/// Accepts a new event; its deliveries (store key, plugin).
pub(super) async fn accepted(store: &SqliteStore, e: NewEvent) -> Vec<(i64, String)> {
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

/// A guard for generation 0 at `attempts`.
fn at(attempts: u32) -> Guard {
    Guard {
        generation: 0,
        attempts,
        dead_too: false,
        own_mark: false,
    }
}

pub(super) fn event(id: &str, plugins: &[&str]) -> NewEvent {
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

pub(super) fn rt() -> tokio::runtime::Runtime {
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
fn purge_keeps_pending_and_recent() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let deliveries = accepted(&store, event("old-done", &["a"])).await;
        store
            .finish(deliveries[0].0, at(0), 1, Finish::Done)
            .await
            .expect("done");
        store.accept(event("old-pending", &["a"])).await.expect("b");
        let mut recent = event("recent", &[]);
        recent.received_at_ms = 5_000;
        store.accept(recent).await.expect("c");
        assert_eq!(store.purge(2_000, i64::MIN).await.expect("purge"), 1);
        assert!(store.event("old-done").expect("read").is_none());
        assert!(store.event("old-pending").expect("read").is_some());
        assert!(store.event("recent").expect("read").is_some());
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
fn an_outcome_does_not_overwrite_a_replay_made_meanwhile() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let deliveries = accepted(&store, event("e", &["a"])).await;
        let key = deliveries[0].0;
        let retry = Finish::Retry {
            next_at_ms: now_ms(),
            error: "x".into(),
        };
        assert!(store.finish(key, at(0), 1, retry.clone()).await.expect("1"));
        assert!(store.finish(key, at(1), 2, retry).await.expect("2"));
        // Attempt 3 is running when an operator replays the delivery...
        let n = store
            .replay(ReplaySelector::Events {
                ids: vec!["e".into()],
                plugin: None,
                force: true,
                dead_only: false,
            })
            .await
            .expect("replay");
        assert_eq!(n, 1);
        // ...so attempt 3's outcome is not recorded: the replay stands.
        let dead = Finish::Dead {
            error: "late".into(),
        };
        assert!(!store
            .finish(key, at(2), 3, dead)
            .await
            .expect("late outcome"));
        let shown = store.event("e").expect("read").expect("exists");
        assert_eq!(shown.deliveries[0].state, "pending");
        assert_eq!(shown.deliveries[0].attempts, 0);
        store.close();
    });
}

/// A delivery whose call is running (marked started, no outcome yet) is shown as running and
/// replayed only when forced: replayed, the call's own success would be refused (the
/// generation changed) and the plugin run again.
#[test]
fn a_delivery_being_called_is_replayed_only_when_forced() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let key = accepted(&store, event("e", &["a"])).await[0].0;
        let replay = |force| ReplaySelector::Events {
            ids: vec!["e".into()],
            plugin: None,
            force,
            dead_only: false,
        };
        let running = |store: &SqliteStore| {
            store.event("e").expect("read").expect("exists").deliveries[0].running
        };
        assert!(!running(&store));
        let marked = store.start_attempts(vec![(key, at(0))]).await;
        assert_eq!(marked.expect("start"), vec![true]);
        assert!(running(&store), "a started call shows as running");
        assert_eq!(store.replay(replay(false)).await.expect("replay"), 0);
        assert!(store
            .finish(key, at(0), 1, Finish::Done)
            .await
            .expect("the call's own outcome still applies"));
        assert!(!running(&store));
        // Forced, a running call's delivery is replayed (the operator's choice).
        let key2 = accepted(&store, event("f", &["a"])).await[0].0;
        assert_eq!(
            store
                .start_attempts(vec![(key2, at(0))])
                .await
                .expect("start"),
            vec![true]
        );
        let forced = ReplaySelector::Events {
            ids: vec!["f".into()],
            plugin: None,
            force: true,
            dead_only: false,
        };
        assert_eq!(store.replay(forced).await.expect("replay"), 1);
        store.close();
    });
}

#[test]
fn a_replay_during_the_first_attempt_is_not_overwritten_by_its_outcome() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let deliveries = accepted(&store, event("e", &["a"])).await;
        let key = deliveries[0].0;
        // Attempt 1 (from 0 attempts) is running when an operator replays the delivery: the
        // replay also leaves 0 attempts, so only the generation tells them apart.
        store
            .replay(ReplaySelector::Events {
                ids: vec!["e".into()],
                plugin: None,
                force: true,
                dead_only: false,
            })
            .await
            .expect("replay");
        let dead = Finish::Dead {
            error: "late".into(),
        };
        assert!(!store.finish(key, at(0), 1, dead).await.expect("outcome"));
        let shown = store.event("e").expect("read").expect("exists");
        assert_eq!(shown.deliveries[0].state, "pending");
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
fn a_late_success_replaces_the_dead_letter_of_its_own_attempt_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let deliveries = accepted(&store, event("e", &["a", "b"])).await;
        let (ka, kb) = (deliveries[0].0, deliveries[1].0);
        let dead = Finish::Dead {
            error: "timed out".into(),
        };
        assert!(store
            .finish(ka, at(0), 1, dead.clone())
            .await
            .expect("dead"));
        let late = Guard {
            generation: 0,
            attempts: 1,
            dead_too: true,
            own_mark: false,
        };
        assert!(!store
            .finish(ka, at(1), 1, Finish::Done)
            .await
            .expect("not without dead_too"));
        // Only a success replaces a dead letter, whatever the guard says.
        let retry = Finish::Retry {
            next_at_ms: 0,
            error: "again".into(),
        };
        for other in [retry, Finish::Dead { error: "x".into() }] {
            assert!(!store
                .finish(ka, late, 1, other)
                .await
                .expect("not a success"));
        }
        assert!(store
            .finish(ka, late, 1, Finish::Done)
            .await
            .expect("late ok"));
        // A replayed dead letter is another generation: the late success does not apply.
        assert!(store.finish(kb, at(0), 1, dead).await.expect("dead"));
        store
            .replay(ReplaySelector::DeadLetters {
                plugin: None,
                force: false,
            })
            .await
            .expect("replay");
        assert!(!store
            .finish(kb, late, 1, Finish::Done)
            .await
            .expect("stale"));
        let shown = store.event("e").expect("read").expect("exists");
        let states: Vec<&str> = shown.deliveries.iter().map(|d| d.state.as_str()).collect();
        assert_eq!(states, ["done", "pending"]);
        let due = store.due(now_ms(), START, 10).await.expect("due");
        assert_eq!(due.deliveries[0].generation, 1);
        store.close();
    });
}

#[test]
fn deliveries_of_one_plugin_are_dead_lettered_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        store
            .accept(event("e1", &["gone", "stay"]))
            .await
            .expect("e1");
        store.accept(event("e2", &["gone"])).await.expect("e2");
        assert_eq!(
            store.pending_plugins().await.expect("plugins"),
            ["gone", "stay"]
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
        let cutoff = now_ms();
        // Accepted after the caller's look (a reload configured `gone` again meanwhile): spared.
        std::thread::sleep(std::time::Duration::from_millis(2));
        store.accept(event("e3", &["gone"])).await.expect("e3");
        let mut ids: Vec<String> = store
            .dead_letter_plugin(
                "gone".into(),
                "no longer configured".into(),
                cutoff,
                Vec::new(),
            )
            .await
            .expect("dead-letter")
            .into_iter()
            .map(|o| o.event_id)
            .collect();
        ids.sort();
        assert_eq!(ids, ["e1", "e2"]);
        assert_eq!(
            store.pending_plugins().await.expect("plugins"),
            ["gone", "stay"],
            "e3's delivery stays pending"
        );
        let dead = store.dead_letters(Some("gone"), None).expect("list");
        assert_eq!(dead.len(), 2);
        assert_eq!(dead[0].last_error.as_deref(), Some("no longer configured"));
        store.close();
    });
}

#[test]
fn purge_removes_bounded_chunks_oldest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let total = PURGE_CHUNK as usize * 2 + 500;
        let accepts: Vec<_> = (0..total)
            .map(|i| {
                let mut e = event(&format!("old-{i:05}"), &[]);
                e.received_at_ms = 1_000 + i as i64;
                store.accept(e)
            })
            .collect();
        for a in accepts {
            a.await.expect("accept");
        }
        assert_eq!(
            store.purge(i64::MAX, i64::MIN).await.expect("1"),
            PURGE_CHUNK
        );
        assert!(
            store.event("old-00000").expect("read").is_none(),
            "oldest first"
        );
        assert!(store.event("old-02499").expect("read").is_some());
        assert_eq!(
            store.purge(i64::MAX, i64::MIN).await.expect("2"),
            PURGE_CHUNK
        );
        assert_eq!(store.purge(i64::MAX, i64::MIN).await.expect("3"), 500);
        assert_eq!(store.purge(i64::MAX, i64::MIN).await.expect("4"), 0);
        store.close();
    });
}

#[test]
fn attempts_marked_started_count_as_crashes_at_the_next_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let deliveries = accepted(&store, event("e", &["poison", "done", "stale"])).await;
        let (kp, kd, ks) = (deliveries[0].0, deliveries[1].0, deliveries[2].0);
        let stale = Guard {
            generation: 7,
            attempts: 0,
            dead_too: false,
            own_mark: false,
        };
        let marked = store
            .start_attempts(vec![(kp, at(0)), (kd, at(0)), (ks, stale)])
            .await
            .expect("start");
        assert_eq!(marked, [true, true, false], "a stale guard marks nothing");
        // One call finished (clears its mark); the process died during the other.
        assert!(store
            .finish(kd, at(0), 1, Finish::Done)
            .await
            .expect("done"));
        for crash in 1..=3u32 {
            assert_eq!(
                store
                    .recover_crashed(12, 3, Vec::new())
                    .await
                    .expect("recover"),
                1
            );
            let shown = store.event("e").expect("read").expect("exists");
            let p = &shown
                .deliveries
                .iter()
                .find(|d| d.plugin == "poison")
                .expect("p");
            assert_eq!((p.attempts, p.crashes), (crash, crash));
            if crash < 3 {
                assert_eq!(p.state, "pending");
                store
                    .start_attempts(vec![(kp, at(crash))])
                    .await
                    .expect("start again");
            } else {
                assert_eq!(p.state, "dead");
                assert_eq!(
                    p.last_error.as_deref(),
                    Some("the gateway died during this call 3 times")
                );
            }
        }
        assert_eq!(
            store
                .recover_crashed(12, 3, Vec::new())
                .await
                .expect("again"),
            0,
            "nothing left"
        );
        // max_attempts ends it too, and a replay starts the count afresh.
        store
            .replay(ReplaySelector::DeadLetters {
                plugin: None,
                force: false,
            })
            .await
            .expect("replay");
        let fresh = Guard {
            generation: 1,
            attempts: 0,
            dead_too: false,
            own_mark: false,
        };
        store
            .start_attempts(vec![(kp, fresh)])
            .await
            .expect("start");
        assert_eq!(
            store
                .recover_crashed(1, 3, Vec::new())
                .await
                .expect("recover"),
            1
        );
        let shown = store.event("e").expect("read").expect("exists");
        let p = shown
            .deliveries
            .iter()
            .find(|d| d.plugin == "poison")
            .expect("p");
        assert_eq!((p.state.as_str(), p.crashes), ("dead", 1));
        store.close();
    });
}

#[test]
fn a_delivery_done_after_failures_shows_no_old_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let deliveries = accepted(&store, event("e", &["a"])).await;
        let key = deliveries[0].0;
        let retry = Finish::Retry {
            next_at_ms: 0,
            error: "remote 503".into(),
        };
        assert!(store.finish(key, at(0), 1, retry).await.expect("retry"));
        assert!(store
            .finish(key, at(1), 2, Finish::Done)
            .await
            .expect("done"));
        let shown = store.event("e").expect("read").expect("exists");
        assert_eq!(shown.deliveries[0].state, "done");
        assert_eq!(shown.deliveries[0].last_error, None);
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

#[test]
fn dead_letters_outlive_the_dedup_retention_until_their_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let deliveries = accepted(&store, event("old", &["a"])).await;
        let dead = Finish::Dead {
            error: "rejected".into(),
        };
        assert!(store
            .finish(deliveries[0].0, at(0), 1, dead)
            .await
            .expect("dead"));
        let died_at = now_ms();
        // Far past the dedup retention (received at 1 000 ms), within the dead-letter one.
        assert_eq!(
            store.purge(2_000, died_at - 60_000).await.expect("purge"),
            0
        );
        assert_eq!(store.dead_letters(None, None).expect("list").len(), 1);
        // Once the dead-letter retention passes too, the event goes.
        assert_eq!(store.purge(2_000, died_at + 1).await.expect("purge"), 1);
        assert!(store.event("old").expect("read").is_none());
        store.close();
    });
}

#[test]
fn dead_letters_can_be_deleted_on_purpose() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let deliveries = accepted(&store, event("e", &["a", "b"])).await;
        for (key, _) in &deliveries {
            let dead = Finish::Dead { error: "x".into() };
            assert!(store.finish(*key, at(0), 1, dead).await.expect("dead"));
        }
        let n = store
            .purge_dead_letters(Some("a".into()), i64::MAX)
            .await
            .expect("purge a");
        assert_eq!(n, 1);
        let left = store.dead_letters(None, None).expect("list");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].plugin, "b");
        store.close();
    });
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
