//! The API replay's writes outlive the request: a client that goes away (its request's future
//! dropped by hyper) leaves none of them unwritten.

use std::time::Duration;

use super::*;
use crate::store::sqlite::tests::{accepted, at, event, rt, FinishOne};
use crate::store::sqlite::SqliteStore;
use crate::store::Finish;

/// Two plugins' dead letters, replayed by two writes; the caller's future is polled once (the
/// writes start) and dropped, as hyper drops a request's future when its client closes. Both
/// writes still run: before, the loop ran inside the request's future, and only the first
/// plugin's dead letters went back to the queue.
#[test]
fn a_replay_whose_caller_went_away_still_runs_every_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = Arc::new(SqliteStore::open(&dir.path().join("s.db")).expect("open"));
        for id in ["e1", "e2"] {
            for (key, _) in accepted(&store, event(id, &["alpha", "beta"])).await {
                let dead = Finish::Dead {
                    error: "refused".into(),
                };
                assert!(store.finish(key, at(0), 1, dead).await.expect("dead"));
            }
        }
        assert_eq!(store.dead_letters(None, None).expect("read").len(), 4);
        let selectors = ["alpha", "beta"]
            .map(|p| ReplaySelector::DeadLetters {
                plugin: Some(p.into()),
                force: false,
            })
            .to_vec();
        let shared: Arc<dyn Store> = store.clone();
        // Polled once, then dropped: the deadline has passed at the first check.
        let gone = tokio::time::timeout(Duration::ZERO, write_all(shared, selectors, "test")).await;
        assert!(
            gone.is_err(),
            "the writes had not finished at the first poll"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = store.dead_letters(None, None).expect("read");
            if left.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "dead letters left after the caller went away: {:?}",
                left.iter().map(|d| &d.plugin).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        store.close();
    });
}
