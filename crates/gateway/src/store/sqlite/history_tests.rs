//! The attempt history: one entry per applied outcome and per crash found, oldest first, kept
//! across replays, gone with its delivery (a success's entry kept in its delivery's row until
//! a replay makes it a row); and `backup`, a checked copy of the store.

use super::tests::{rt, trace_of};
use super::*;
use crate::store::{AttemptRecord, Finish, Guard, Trace, CRASHED};

fn guard(generation: u32, attempts: u32, dead_too: bool) -> Guard {
    Guard {
        generation,
        attempts,
        dead_too,
        own_mark: false,
    }
}

/// Records attempt `g.attempts + 1`, or (a late outcome: `g.dead_too`) attempt `g.attempts`
/// again, as the engine does.
async fn finish(store: &SqliteStore, key: i64, g: Guard, finish: Finish, trace: Trace) -> bool {
    let record = FinishRecord {
        write: crate::store::WriteId::fresh(),
        key,
        guard: g,
        attempts: if g.dead_too {
            g.attempts
        } else {
            g.attempts + 1
        },
        finish,
        trace,
    };
    store.finish_many(vec![record]).await.expect("finish")[0]
}

fn history(store: &SqliteStore, id: &str) -> Vec<AttemptRecord> {
    let e = store.event(id).expect("read").expect("event");
    e.deliveries.into_iter().next().expect("a delivery").history
}

fn shape(h: &[AttemptRecord]) -> Vec<(u32, u32, &str, Option<&str>)> {
    h.iter()
        .map(|a| {
            (
                a.generation,
                a.attempt,
                a.outcome.as_str(),
                a.reason.as_deref(),
            )
        })
        .collect()
}

fn new_event(id: &str) -> NewEvent {
    NewEvent {
        id: id.into(),
        app: "hire".into(),
        event_type: "t".into(),
        schema: "2.0",
        received_at_ms: 1_000,
        body: Arc::from("{}"),
        plugins: vec!["p".into()],
    }
}

async fn key_of(store: &SqliteStore, id: &str) -> i64 {
    match store.accept(new_event(id)).await.expect("accept") {
        Accepted::New { deliveries } => deliveries[0].0,
        Accepted::Duplicate => panic!("duplicate"),
    }
}

#[test]
fn every_applied_outcome_and_crash_is_kept_in_order_across_replays() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let key = key_of(&store, "e").await;
        assert!(history(&store, "e").is_empty(), "no attempt yet");
        let retry = Finish::Retry {
            next_at_ms: 0,
            error: "busy".into(),
        };
        assert!(
            finish(
                &store,
                key,
                guard(0, 0, false),
                retry.clone(),
                trace_of(&retry)
            )
            .await
        );
        // A stale outcome (wrong attempt count) applies nothing and logs nothing.
        assert!(
            !finish(
                &store,
                key,
                guard(0, 0, false),
                Finish::Done,
                trace_of(&Finish::Done)
            )
            .await
        );
        // The second attempt dies with the process: found at the next start.
        assert_eq!(
            store
                .start_attempts(vec![(key, guard(0, 1, false))])
                .await
                .expect("start"),
            [true]
        );
        assert_eq!(
            store
                .recover_crashed(10, 3, Vec::new())
                .await
                .expect("recover")
                .found,
            1
        );
        // The third times out (a dead letter at max attempts), then succeeds late.
        let dead = Finish::Dead {
            error: "timed out after 10ms (gave up after 3 attempts)".into(),
        };
        let timeout = Trace {
            outcome: "timeout",
            started_at_ms: 9_000,
            duration_ms: 10,
            discarded_run: None,
        };
        assert!(finish(&store, key, guard(0, 2, false), dead, timeout).await);
        let late = Trace {
            outcome: "late ok",
            started_at_ms: 9_000,
            duration_ms: 250,
            discarded_run: None,
        };
        assert!(finish(&store, key, guard(0, 3, true), Finish::Done, late).await);
        // A replay keeps the history; the new generation's attempts follow it.
        store
            .replay(ReplaySelector::Events {
                ids: vec!["e".into()],
                plugin: None,
                force: true,
                dead_only: false,
            })
            .await
            .expect("replay");
        assert!(
            finish(
                &store,
                key,
                guard(1, 0, false),
                Finish::Done,
                trace_of(&Finish::Done)
            )
            .await
        );

        let h = history(&store, "e");
        assert_eq!(
            shape(&h),
            [
                (0, 1, "retry", Some("busy")),
                (0, 2, "crashed", Some(CRASHED)),
                (
                    0,
                    3,
                    "timeout",
                    Some("timed out after 10ms (gave up after 3 attempts)")
                ),
                (0, 3, "late ok", None),
                (1, 1, "ok", None),
            ]
        );
        assert_eq!(
            (h[0].started_at_ms, h[0].duration_ms),
            (Some(5_000), Some(7))
        );
        assert_eq!(
            (h[1].started_at_ms, h[1].duration_ms),
            (None, None),
            "a crash's start is unknown"
        );
        assert_eq!(
            (h[3].started_at_ms, h[3].duration_ms),
            (Some(9_000), Some(250))
        );
        assert!(h.iter().all(|a| a.recorded_at_ms > 1_000_000_000_000));
        store.close();
    });
}

/// The rows of `attempts`, all deliveries together.
fn history_rows(store: &SqliteStore) -> i64 {
    store
        .read_blocking(|c| Ok(c.query_row("SELECT COUNT(*) FROM attempts", [], |r| r.get(0))?))
        .expect("count")
}

#[test]
fn a_success_is_kept_in_its_row_until_a_replay_makes_it_a_history_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let key = key_of(&store, "e").await;
        let ok = Trace {
            outcome: "ok",
            started_at_ms: 4_000,
            duration_ms: 12,
            discarded_run: None,
        };
        assert!(finish(&store, key, guard(0, 0, false), Finish::Done, ok).await);
        assert_eq!(history_rows(&store), 0, "no row for a success");
        let h = history(&store, "e");
        assert_eq!(shape(&h), [(0, 1, "ok", None)]);
        let updated_at =
            store.event("e").expect("read").expect("event").deliveries[0].updated_at_ms;
        assert_eq!(
            (h[0].started_at_ms, h[0].duration_ms, h[0].recorded_at_ms),
            (Some(4_000), Some(12), updated_at)
        );
        // A replay of dead letters leaves a success alone; one of the event (forced) keeps it.
        let dead_letters = ReplaySelector::DeadLetters {
            plugin: None,
            force: false,
        };
        assert_eq!(store.replay(dead_letters).await.expect("replay"), 0);
        assert_eq!(history_rows(&store), 0);
        // So do one of the event unforced, and a forced pick of its dead letters only.
        for (force, dead_only) in [(false, false), (true, true), (false, true)] {
            let not_done = ReplaySelector::Events {
                ids: vec!["e".into()],
                plugin: None,
                force,
                dead_only,
            };
            assert_eq!(store.replay(not_done).await.expect("replay"), 0);
            assert_eq!(
                history_rows(&store),
                0,
                "force {force}, dead only {dead_only}"
            );
        }
        let forced = ReplaySelector::Events {
            ids: vec!["e".into()],
            plugin: None,
            force: true,
            dead_only: false,
        };
        assert_eq!(store.replay(forced.clone()).await.expect("replay"), 1);
        assert_eq!(history_rows(&store), 1, "the success became a row");
        assert_eq!(shape(&history(&store, "e")), [(0, 1, "ok", None)]);
        let retry = Finish::Retry {
            next_at_ms: 0,
            error: "busy".into(),
        };
        assert!(
            finish(
                &store,
                key,
                guard(1, 0, false),
                retry.clone(),
                trace_of(&retry)
            )
            .await
        );
        // Replayed while pending: nothing of the new generation's is kept in the row.
        assert_eq!(store.replay(forced).await.expect("replay"), 1);
        assert!(
            finish(
                &store,
                key,
                guard(2, 0, false),
                Finish::Done,
                trace_of(&Finish::Done)
            )
            .await
        );
        assert_eq!(
            shape(&history(&store, "e")),
            [
                (0, 1, "ok", None),
                (1, 1, "retry", Some("busy")),
                (2, 1, "ok", None)
            ]
        );
        assert_eq!(history_rows(&store), 2);
        store.close();
    });
}

#[test]
fn history_goes_with_its_delivery() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let done = key_of(&store, "done").await;
        let dead = key_of(&store, "dead").await;
        // A retry, then the success (whose entry lives in the delivery's row): one row.
        let retry = Finish::Retry {
            next_at_ms: 0,
            error: "later".into(),
        };
        assert!(
            finish(
                &store,
                done,
                guard(0, 0, false),
                retry.clone(),
                trace_of(&retry)
            )
            .await
        );
        assert!(
            finish(
                &store,
                done,
                guard(0, 1, false),
                Finish::Done,
                trace_of(&Finish::Done)
            )
            .await
        );
        let reject = Finish::Dead { error: "no".into() };
        assert!(
            finish(
                &store,
                dead,
                guard(0, 0, false),
                reject.clone(),
                trace_of(&reject)
            )
            .await
        );
        let rows = |store: &SqliteStore| {
            store
                .read_blocking(|c| {
                    Ok(c.query_row("SELECT COUNT(*) FROM attempts", [], |r| r.get::<_, i64>(0))?)
                })
                .expect("count")
        };
        assert_eq!(rows(&store), 2);
        // Retention: the finished event goes, the dead letter waits for an operator.
        assert_eq!(store.purge(i64::MAX, i64::MIN + 1).await.expect("purge"), 1);
        assert_eq!(rows(&store), 1);
        assert_eq!(
            store
                .purge_dead_letters(None, i64::MAX)
                .await
                .expect("purge dead"),
            1
        );
        assert_eq!(rows(&store), 0);
        store.close();
    });
}

#[test]
fn a_backup_is_a_checked_copy_and_never_overwrites() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        key_of(&store, "one").await;
        key_of(&store, "two").await;
        let dest = dir.path().join("copy.db");
        assert_eq!(store.backup(dest.clone()).await.expect("backup"), 2);
        let again = store.backup(dest.clone()).await.expect_err("exists");
        assert!(again.0.contains("exists"), "{again}");
        let missing = store
            .backup(dir.path().join("no/such/dir/c.db"))
            .await
            .expect_err("no folder");
        assert!(missing.0.contains("no/such/dir/c.db"), "{missing}");
        store.close();
        let copy = SqliteStore::open_existing(&dest).expect("the copy opens");
        assert!(copy.event("two").expect("read").is_some());
        assert_eq!(copy.integrity_check().expect("check"), ["ok"]);
        copy.close();
    });
}

#[test]
fn a_timed_out_call_keeps_its_mark_until_it_returns_and_a_crash_meanwhile_is_counted_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let key = key_of(&store, "e").await;
        let retry = || Finish::Retry {
            next_at_ms: 2_000,
            error: "timed out after 1000ms".into(),
        };
        let trace = |outcome| Trace {
            outcome,
            started_at_ms: 1_000,
            duration_ms: 1_000,
            discarded_run: None,
        };
        // Attempt 1 times out while its call still runs: retried, still marked started.
        let marked = store.start_attempts(vec![(key, guard(0, 0, false))]);
        assert_eq!(marked.await.expect("start"), [true]);
        assert!(finish(&store, key, guard(0, 0, false), retry(), trace("timeout")).await);
        // The process dies before the call returns: the crash is counted, not a new attempt.
        assert_eq!(
            store
                .recover_crashed(12, 3, Vec::new())
                .await
                .expect("recover")
                .found,
            1
        );
        let d = store.event("e").expect("read").expect("event").deliveries;
        assert_eq!((d[0].attempts, d[0].crashes), (1, 1), "{:?}", d[0]);
        assert_eq!(
            shape(&history(&store, "e")),
            [
                (0, 1, "timeout", Some("timed out after 1000ms")),
                (0, 1, "crashed", Some(CRASHED))
            ]
        );

        // Attempt 2 times out, and its call returns (a retry) before anything dies: the
        // late record clears the mark, and a later start finds nothing to count.
        let marked = store.start_attempts(vec![(key, guard(0, 1, false))]);
        assert_eq!(marked.await.expect("start"), [true]);
        assert!(finish(&store, key, guard(0, 1, false), retry(), trace("timeout")).await);
        let again = FinishRecord {
            write: crate::store::WriteId::fresh(),
            key,
            guard: guard(0, 2, false),
            attempts: 2,
            finish: retry(),
            trace: trace("late retry"),
        };
        assert_eq!(store.finish_many(vec![again]).await.expect("late"), [true]);
        assert_eq!(
            store
                .recover_crashed(12, 3, Vec::new())
                .await
                .expect("recover")
                .found,
            0
        );
        // Other outcomes never keep it: an ordinary retry clears the mark as before.
        let marked = store.start_attempts(vec![(key, guard(0, 2, false))]);
        assert_eq!(marked.await.expect("start"), [true]);
        assert!(finish(&store, key, guard(0, 2, false), retry(), trace_of(&retry())).await);
        assert_eq!(
            store
                .recover_crashed(12, 3, Vec::new())
                .await
                .expect("recover")
                .found,
            0
        );
    });
}

/// A purge step examines a bounded window of old events: events still held at the old end
/// (pending deliveries) are passed over by the cursor instead of being scanned again by every
/// step (each step used to rescan them all, on the writer thread).
#[test]
fn a_purge_step_examines_a_bounded_window_and_goes_on_past_held_events() {
    use super::tests::{accepted, event};
    use crate::store::{PurgeStep, PURGE_CHUNK};
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let held = PURGE_CHUNK as usize + 200;
        for i in 0..held {
            accepted(&store, event(&format!("held-{i}"), &["a"])).await;
        }
        for i in 0..300 {
            store
                .accept(event(&format!("free-{i}"), &[]))
                .await
                .expect("accept");
        }
        let step = |after| store.purge_step(i64::MAX, i64::MIN, after);
        let first: PurgeStep = step(None).await.expect("step 1");
        assert_eq!(first.removed, 0, "the window holds only held events");
        let next = first.next.expect("a full window: more to examine");
        let second = step(Some(next)).await.expect("step 2");
        assert_eq!(second.removed, 300);
        assert_eq!(second.next, None, "nothing left to examine");
        assert!(store.event("held-0").expect("read").is_some());
        assert!(store.event("free-0").expect("read").is_none());
        store.close();
    });
}

/// A run of the same call whose outcome was discarded (its batch panicked as a whole) is an
/// entry of its own before the attempt's, written only with an outcome that applies.
#[test]
fn a_discarded_run_comes_before_its_attempts_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let (ok, dead) = (key_of(&store, "ok").await, key_of(&store, "dead").await);
        let why: Arc<str> = Arc::from("its batch panicked as a whole (boom): again");
        let traced = |finish: &Finish| Trace {
            discarded_run: Some(why.clone()),
            ..trace_of(finish)
        };
        let died = Finish::Dead {
            error: "panicked: boom".into(),
        };
        assert!(
            finish(
                &store,
                ok,
                guard(0, 0, false),
                Finish::Done,
                traced(&Finish::Done)
            )
            .await
        );
        assert!(
            finish(
                &store,
                dead,
                guard(0, 0, false),
                died.clone(),
                traced(&died)
            )
            .await
        );
        // Stale (the attempt count moved on): neither entry.
        assert!(
            !finish(
                &store,
                dead,
                guard(0, 0, false),
                died.clone(),
                traced(&died)
            )
            .await
        );
        let note = Some(why.as_ref());
        assert_eq!(
            shape(&history(&store, "ok")),
            [(0, 1, "discarded", note), (0, 1, "ok", None)]
        );
        assert_eq!(
            shape(&history(&store, "dead")),
            [
                (0, 1, "discarded", note),
                (0, 1, "reject", Some("panicked: boom"))
            ]
        );
        let first = &history(&store, "ok")[0];
        assert_eq!(
            (first.started_at_ms, first.duration_ms),
            (Some(5_000), None)
        );
    });
}
