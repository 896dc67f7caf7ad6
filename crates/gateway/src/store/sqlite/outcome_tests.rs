//! Which outcome a delivery keeps: an outcome never overwrites a replay made meanwhile, a
//! delivery being called is replayed only when forced, a late success replaces only its own
//! attempt's dead letter, attempts marked started count as crashes at the next start, and a
//! delivery done after failures shows no old error.

use super::tests::{accepted, at, event, rt, FinishOne, START};
use super::*;
use crate::store::{Finish, Guard};

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
                    .expect("recover")
                    .found,
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
                .expect("again")
                .found,
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
            crate::store::Recovered {
                found: 1,
                dead: vec![("poison".into(), 1)],
            },
            "found, and made a dead letter of poison's"
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
