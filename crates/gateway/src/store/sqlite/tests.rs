//! The embedded store: dedup, delivery state machine, group commit, persistence across reopen.

use super::*;

const START: (i64, i64) = (i64::MIN, i64::MIN);

fn event(id: &str, plugins: &[&str]) -> NewEvent {
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

fn rt() -> tokio::runtime::Runtime {
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
        let Accepted::New { deliveries } = store
            .accept(event("e1", &["a", "b"]))
            .await
            .expect("accept")
        else {
            panic!("expected new")
        };
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
        assert_eq!(&*loaded[0].body, r#"{"id":"e1"}"#);
        assert_eq!(loaded[0].event_id, "e1");

        let (ka, kb) = (deliveries[0].0, deliveries[1].0);
        assert!(store.finish(ka, 0, 1, Finish::Done).await.expect("done"));
        // A second outcome for the same attempt is not recorded (already finished).
        assert!(!store.finish(ka, 0, 1, Finish::Done).await.expect("stale"));
        let later = now_ms() + 60_000;
        store
            .finish(
                kb,
                0,
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
                1,
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
        let Accepted::New { deliveries } =
            store.accept(event("old-done", &["a"])).await.expect("a")
        else {
            panic!("new")
        };
        store
            .finish(deliveries[0].0, 0, 1, Finish::Done)
            .await
            .expect("done");
        store.accept(event("old-pending", &["a"])).await.expect("b");
        let mut recent = event("recent", &[]);
        recent.received_at_ms = 5_000;
        store.accept(recent).await.expect("c");
        assert_eq!(store.purge(2_000).await.expect("purge"), 1);
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
            .finish(seen[0], 0, 1, Finish::Done)
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
        let Accepted::New { deliveries } = store.accept(event("e", &["a"])).await.expect("accept")
        else {
            panic!("new")
        };
        let key = deliveries[0].0;
        let retry = Finish::Retry {
            next_at_ms: now_ms(),
            error: "x".into(),
        };
        assert!(store.finish(key, 0, 1, retry.clone()).await.expect("1"));
        assert!(store.finish(key, 1, 2, retry).await.expect("2"));
        // Attempt 3 is running when an operator replays the delivery...
        let n = store
            .replay(ReplaySelector::Events {
                ids: vec!["e".into()],
                plugin: None,
            })
            .await
            .expect("replay");
        assert_eq!(n, 1);
        // ...so attempt 3's outcome is not recorded: the replay stands.
        let dead = Finish::Dead {
            error: "late".into(),
        };
        assert!(!store.finish(key, 2, 3, dead).await.expect("late outcome"));
        let shown = store.event("e").expect("read").expect("exists");
        assert_eq!(shown.deliveries[0].state, "pending");
        assert_eq!(shown.deliveries[0].attempts, 0);
        store.close();
    });
}
