//! A delivery whose call runs stays shown as running until that call's outcome is recorded:
//! a call hung past its timeout whose delivery became a dead letter (by its timeout, or by the
//! orphan rule while it ran) keeps its "started" mark, no replay takes it unless forced, and
//! the call's late outcome, which cannot apply to the dead letter, clears the mark. A process
//! that dies first leaves the mark to the next start, which records the crash in the dead
//! letter's history.

use super::tests::{accepted, event, rt};
use super::*;
use crate::store::{
    AttemptRecord, DeadLetterCounts, Finish, Guard, Orphaned, Trace, WriteId, CRASHED, TIMED_OUT,
};

pub(super) fn at(attempts: u32, dead_too: bool, own_mark: bool) -> Guard {
    Guard {
        generation: 0,
        attempts,
        dead_too,
        own_mark,
    }
}

pub(super) fn record(
    key: i64,
    guard: Guard,
    attempts: u32,
    finish: Finish,
    outcome: &'static str,
) -> FinishRecord {
    FinishRecord {
        key,
        guard,
        attempts,
        finish,
        trace: Trace {
            outcome,
            started_at_ms: 1_000,
            duration_ms: 1_000,
            discarded_run: None,
        },
        write: WriteId::fresh(),
    }
}

pub(super) fn dead(error: &str) -> Finish {
    Finish::Dead {
        error: error.into(),
    }
}

/// The one delivery of event `id`, as the operator commands show it.
pub(super) fn shown(store: &SqliteStore, id: &str) -> DeliveryRecord {
    let e = store.event(id).expect("read").expect("event");
    e.deliveries.into_iter().next().expect("a delivery")
}

fn outcomes(h: &[AttemptRecord]) -> Vec<&str> {
    h.iter().map(|a| a.outcome.as_str()).collect()
}

/// Starts attempt 1 of `id`'s delivery and records its timeout as a dead letter (the last
/// attempt), as the engine does when the call outlives `[delivery] timeout`.
pub(super) async fn timed_out_dead_letter(store: &SqliteStore, id: &str) -> i64 {
    let key = accepted(store, event(id, &["p"])).await[0].0;
    let marked = store.start_attempts(vec![(key, at(0, false, false))]);
    assert_eq!(marked.await.expect("start"), [true]);
    let timeout = record(
        key,
        at(0, false, false),
        1,
        dead("timed out after 1000ms"),
        TIMED_OUT,
    );
    assert_eq!(
        store.finish_many(vec![timeout]).await.expect("finish"),
        [true]
    );
    key
}

/// Accepts event `id` for plugin `p`, marks its attempt 1 started (the call runs) and lets the
/// orphan rule dead-letter it with reason `removed`; its key.
async fn orphaned_while_running(store: &SqliteStore, id: &str) -> i64 {
    let key = accepted(store, event(id, &["p"])).await[0].0;
    let marked = store.start_attempts(vec![(key, at(0, false, false))]);
    assert_eq!(marked.await.expect("start"), [true]);
    let gone = store.dead_letter_plugin("p".into(), "removed".into(), i64::MAX, Vec::new());
    let gone = gone.await.expect("orphans").orphans;
    assert_eq!(
        (gone[0].key, gone[0].generation, gone[0].running),
        (key, 0, true)
    );
    key
}

#[test]
fn a_dead_letter_whose_call_still_runs_is_shown_running_and_replayed_only_when_forced() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let key = timed_out_dead_letter(&store, "hung").await;
        let d = shown(&store, "hung");
        assert_eq!((d.state.as_str(), d.running), ("dead", true), "{d:?}");

        // Neither replay takes it unforced: the call may still succeed.
        let by_event = |force| ReplaySelector::Events {
            ids: vec!["hung".into()],
            plugin: None,
            force,
            dead_only: false,
        };
        let all_dead = |force| ReplaySelector::DeadLetters {
            plugin: None,
            force,
        };
        assert_eq!(store.replay(by_event(false)).await.expect("replay"), 0);
        assert_eq!(store.replay(all_dead(false)).await.expect("replay"), 0);
        assert_eq!(shown(&store, "hung").state, "dead");
        // Counted as a dead letter whose call runs (what a replay of all of them leaves out).
        let counts = |plugin: Option<&str>| store.dead_letter_counts(plugin.map(str::to_owned));
        let running = DeadLetterCounts {
            dead: 1,
            running: 1,
        };
        assert_eq!(counts(None).await.expect("counts"), running);
        assert_eq!(counts(Some("p")).await.expect("counts"), running);
        let none = DeadLetterCounts::default();
        assert_eq!(counts(Some("q")).await.expect("counts"), none);

        // The call returns (a retry): not recorded over the dead letter, but no longer running.
        let late = record(
            key,
            at(1, false, true),
            1,
            dead("timed out after 1000ms"),
            "late retry",
        );
        assert_eq!(store.finish_many(vec![late]).await.expect("late"), [false]);
        let d = shown(&store, "hung");
        assert_eq!((d.state.as_str(), d.running), ("dead", false), "{d:?}");
        assert_eq!(d.last_error.as_deref(), Some("timed out after 1000ms"));
        let idle = DeadLetterCounts {
            dead: 1,
            running: 0,
        };
        assert_eq!(counts(None).await.expect("counts"), idle);
        assert_eq!(store.replay(all_dead(false)).await.expect("replay"), 1);
        assert_eq!(counts(None).await.expect("counts"), none);
        assert_eq!(shown(&store, "hung").state, "pending");

        // Forced, a replay takes one whose call runs (the README says what that costs).
        let key2 = timed_out_dead_letter(&store, "hung-2").await;
        assert!(shown(&store, "hung-2").running);
        assert_eq!(store.replay(all_dead(true)).await.expect("replay"), 1);
        let d = shown(&store, "hung-2");
        assert_eq!((d.state.as_str(), d.running), ("pending", false), "{d:?}");
        // Its call's late success names the old generation: not recorded.
        let late = record(key2, at(1, true, false), 1, Finish::Done, "late ok");
        assert_eq!(store.finish_many(vec![late]).await.expect("late"), [false]);
        assert_eq!(shown(&store, "hung-2").state, "pending");
    });
}

#[test]
fn a_late_success_replaces_the_dead_letter_and_ends_the_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let key = timed_out_dead_letter(&store, "hung").await;
        let late = record(key, at(1, true, false), 1, Finish::Done, "late ok");
        assert_eq!(store.finish_many(vec![late]).await.expect("late"), [true]);
        let d = shown(&store, "hung");
        assert_eq!((d.state.as_str(), d.running), ("done", false), "{d:?}");
    });
}

#[test]
fn the_orphan_rule_keeps_a_running_calls_mark_until_its_outcome_comes() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let key = accepted(&store, event("orphan", &["p"])).await[0].0;
        let marked = store.start_attempts(vec![(key, at(0, false, false))]);
        assert_eq!(marked.await.expect("start"), [true]);
        let idle = accepted(&store, event("idle", &["p"])).await[0].0;
        let gone = store.dead_letter_plugin("p".into(), "removed".into(), i64::MAX, Vec::new());
        let mut gone = gone.await.expect("orphans").orphans;
        gone.sort_by_key(|o| o.key);
        let orphan = |key, id: &str, running| Orphaned {
            key,
            generation: 0,
            event_id: id.into(),
            running,
        };
        assert_eq!(
            gone,
            [orphan(key, "orphan", true), orphan(idle, "idle", false)]
        );
        let d = shown(&store, "orphan");
        assert_eq!((d.state.as_str(), d.running), ("dead", true), "{d:?}");

        // The call returns in time with a retry: the dead letter stands, the mark goes.
        let retry = Finish::Retry {
            next_at_ms: 5_000,
            error: "busy".into(),
        };
        let outcome = record(key, at(0, false, false), 1, retry, "retry");
        assert_eq!(
            store.finish_many(vec![outcome]).await.expect("finish"),
            [false]
        );
        let d = shown(&store, "orphan");
        assert_eq!((d.state.as_str(), d.running), ("dead", false), "{d:?}");
        assert_eq!(d.last_error.as_deref(), Some("removed"));
    });
}

#[test]
fn a_late_outcome_applies_only_over_its_own_mark() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let key = accepted(&store, event("e", &["p"])).await[0].0;
        let retry = || Finish::Retry {
            next_at_ms: 5_000,
            error: "timed out after 1000ms".into(),
        };
        // Attempt 1 timed out (a retry); its mark was counted as a crash at a restart, and
        // attempt 2 started: the mark is attempt 2's now.
        let marked = store.start_attempts(vec![(key, at(0, false, false))]);
        assert_eq!(marked.await.expect("start"), [true]);
        let timeout = record(key, at(0, false, false), 1, retry(), TIMED_OUT);
        assert_eq!(
            store.finish_many(vec![timeout]).await.expect("finish"),
            [true]
        );
        assert_eq!(
            store
                .recover_crashed(12, 3, Vec::new())
                .await
                .expect("recover")
                .found,
            1
        );
        let marked = store.start_attempts(vec![(key, at(1, false, false))]);
        assert_eq!(marked.await.expect("start"), [true]);
        // Attempt 1's late outcome must not clear attempt 2's mark.
        let late = record(key, at(1, false, true), 1, retry(), "late retry");
        assert_eq!(store.finish_many(vec![late]).await.expect("late"), [false]);
        assert!(shown(&store, "e").running);
    });
}

#[test]
fn a_dead_letters_mark_left_by_a_dead_process_becomes_a_crash_in_its_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    rt().block_on(async {
        let store = SqliteStore::open(&path).expect("open");
        timed_out_dead_letter(&store, "hung").await;
        store.close();
    });
    rt().block_on(async {
        let store = SqliteStore::open(&path).expect("reopen");
        // Only pending deliveries are counted as crashed attempts.
        assert_eq!(
            store
                .recover_crashed(12, 3, Vec::new())
                .await
                .expect("recover")
                .found,
            0
        );
        let d = shown(&store, "hung");
        assert_eq!(
            (d.state.as_str(), d.running, d.crashes),
            ("dead", false, 0),
            "{d:?}"
        );
        assert_eq!(outcomes(&d.history), ["timeout", "crashed"]);
        assert_eq!(d.history[1].reason.as_deref(), Some(CRASHED));
        let again = store.recover_crashed(12, 3, Vec::new());
        assert_eq!(again.await.expect("recover").found, 0);
        assert_eq!(shown(&store, "hung").history.len(), 2, "recorded once");
    });
}

/// The orphan rule's put-back (`ReplaySelector::Orphans`) takes a dead letter only while it is
/// the one the rule made (that generation, that reason) and no call of it runs.
#[test]
fn the_orphan_put_back_takes_only_the_rules_own_idle_dead_letter() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let key = orphaned_while_running(&store, "o").await;
        let back = |generation, reason: &str| ReplaySelector::Orphans {
            keys: vec![(key, generation)],
            reason: reason.into(),
        };
        // Its call still runs: not yet.
        assert_eq!(store.replay(back(0, "removed")).await.expect("replay"), 0);
        let retry = Finish::Retry {
            next_at_ms: 5_000,
            error: "busy".into(),
        };
        let returned = record(key, at(0, false, false), 1, retry, "retry");
        assert_eq!(
            store.finish_many(vec![returned]).await.expect("finish"),
            [false]
        );
        // Another reason, or another generation: not the rule's dead letter.
        assert_eq!(store.replay(back(0, "other")).await.expect("replay"), 0);
        assert_eq!(store.replay(back(1, "removed")).await.expect("replay"), 0);
        assert_eq!(store.replay(back(0, "removed")).await.expect("replay"), 1);
        let d = shown(&store, "o");
        assert_eq!((d.state.as_str(), d.attempts), ("pending", 0), "{d:?}");
        // Once put back, it is not the rule's dead letter any more.
        assert_eq!(store.replay(back(0, "removed")).await.expect("replay"), 0);
    });
}

/// A call that ends in a dead letter of its own (a rejection) while the orphan rule's dead
/// letter stands gives that dead letter its reason: the put-back leaves it (the verdict stands).
#[test]
fn a_rejection_after_the_orphan_rule_stands() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let key = orphaned_while_running(&store, "o").await;
        let rejected = record(
            key,
            at(0, false, false),
            1,
            dead("no such account"),
            "reject",
        );
        assert_eq!(
            store.finish_many(vec![rejected]).await.expect("finish"),
            [false]
        );
        let d = shown(&store, "o");
        assert_eq!(
            (d.state.as_str(), d.running, d.last_error.as_deref()),
            ("dead", false, Some("no such account")),
            "{d:?}"
        );
        let back = ReplaySelector::Orphans {
            keys: vec![(key, 0)],
            reason: "removed".into(),
        };
        assert_eq!(store.replay(back).await.expect("replay"), 0);
    });
}

/// A late rejection of an older generation (a forced replay made a new one, which the orphan
/// rule then dead-lettered) is not the new dead letter's verdict: its reason stays the rule's,
/// and the put-back takes it.
#[test]
fn a_late_rejection_of_an_older_generation_leaves_the_orphan_rules_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let key = timed_out_dead_letter(&store, "old").await;
        let forced = ReplaySelector::DeadLetters {
            plugin: None,
            force: true,
        };
        assert_eq!(store.replay(forced).await.expect("replay"), 1);
        let gone = store.dead_letter_plugin("p".into(), "removed".into(), i64::MAX, Vec::new());
        let gone = gone.await.expect("orphans").orphans;
        assert_eq!((gone[0].key, gone[0].generation), (key, 1));
        let late = record(
            key,
            at(1, true, false),
            1,
            dead("no such account"),
            "reject",
        );
        assert_eq!(store.finish_many(vec![late]).await.expect("late"), [false]);
        let d = shown(&store, "old");
        assert_eq!(
            (d.state.as_str(), d.last_error.as_deref()),
            ("dead", Some("removed")),
            "{d:?}"
        );
        let back = ReplaySelector::Orphans {
            keys: vec![(key, 1)],
            reason: "removed".into(),
        };
        assert_eq!(store.replay(back).await.expect("replay"), 1);
    });
}
