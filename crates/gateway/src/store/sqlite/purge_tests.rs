//! Purges and dead letters: a purge keeps pending and recent events and removes bounded chunks
//! oldest first, dead letters outlive the dedup retention until their own and are deleted on
//! purpose, and a plugin's deliveries are dead-lettered together.

use super::tests::{accepted, at, event, rt, FinishOne};
use super::*;
use crate::store::{Finish, PURGE_CHUNK};

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
            .orphans
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
