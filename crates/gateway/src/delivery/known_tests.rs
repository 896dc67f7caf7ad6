//! Unit tests of [`super::Known`]: hand-off, sweeps, timers, replays, finished keys' periods,
//! and the running keys whose claims are renewed.

use super::*;

#[test]
fn a_handoff_after_the_sweeper_ran_the_key_is_refused() {
    let k = Known::default();
    let round = Instant::now();
    assert!(k.sweep(1, 0, round));
    assert!(!k.handoff(1), "queued by the sweeper");
    assert!(k.start(1, 0));
    k.finish(1, 0);
    assert!(
        !k.handoff(1),
        "already delivered: a late hand-off must not call it again"
    );
    assert!(k.handoff(2));
    assert!(!k.sweep(2, 0, Instant::now()), "handed off");
}

#[test]
fn a_sweep_that_read_before_the_finish_does_not_requeue() {
    let k = Known::default();
    assert!(k.handoff(1));
    assert!(k.start(1, 0));
    let round = Instant::now();
    k.finish(1, 0);
    assert!(!k.sweep(1, 0, round), "stale read");
    // Finish times are kept to the millisecond, rounded up.
    assert!(
        k.sweep(1, 0, Instant::now() + Duration::from_millis(1)),
        "a later round trusts the store"
    );
    assert!(k.sweep(2, 0, round));
}

#[test]
fn a_replay_waits_for_a_running_call_but_supersedes_a_timer_at_once() {
    let k = Known::default();
    let round = Instant::now();
    assert!(k.handoff(1));
    assert!(k.start(1, 0));
    assert!(!k.sweep(1, 1, round), "one call per delivery at a time");
    let (timer, cancel) = k.wait(1, 0).expect("waiting");
    assert!(k.sweep(1, 1, round), "the replay supersedes the timer");
    assert!(cancel.is_cancelled());
    assert!(!k.timer_fired(1, 0, timer), "the old timer is stale");
    assert!(!k.start(1, 0), "an old queued job is stale");
    assert!(k.start(1, 1));
}

#[test]
fn a_timer_requeues_only_its_own_wait() {
    let k = Known::default();
    assert!(k.handoff(1));
    assert!(k.start(1, 0));
    let (first, _) = k.wait(1, 0).expect("waiting");
    assert!(k.timer_fired(1, 0, first));
    assert!(!k.timer_fired(1, 0, first), "fires once");
    assert!(k.start(1, 0));
    let (second, _) = k.wait(1, 0).expect("waiting again");
    assert_ne!(first, second, "each wait has a timer of its own");
    assert!(
        !k.timer_fired(1, 0, first),
        "an earlier wait's timer is stale"
    );
    assert!(k.timer_fired(1, 0, second));
    assert!(k.start(1, 0));
    k.finish(1, 0);
    assert!(k.wait(1, 0).is_none(), "finished keys do not wait");
}

#[test]
fn an_outcome_of_a_superseded_generation_does_not_make_the_new_one_wait() {
    let k = Known::default();
    assert!(k.handoff(1));
    assert!(
        k.sweep(1, 1, Instant::now()),
        "a replay supersedes the queued job"
    );
    assert!(k.wait(1, 0).is_none(), "generation 0 is no longer current");
    assert!(k.start(1, 1), "generation 1 is still queued, not waiting");
}

#[test]
fn prune_rotates_once_a_period_has_passed() {
    let k = Known::default();
    assert!(k.handoff(1));
    assert!(k.start(1, 0));
    k.finish(1, 0);
    k.prune();
    assert_eq!(k.keys().current.keys.len(), 1, "the period has not ended");
    let begun = Instant::now()
        .checked_sub(FORGET_AFTER + Duration::from_millis(1))
        .expect("the clock has run longer than one period");
    k.keys().current.since = begun;
    k.prune();
    let keys = k.keys();
    assert!(keys.current.keys.is_empty(), "a new period began");
    assert_eq!(
        keys.previous.keys.len(),
        1,
        "the key is kept one more period"
    );
}

#[test]
fn a_superseded_queued_job_is_dropped_and_drop_key_is_generation_bound() {
    let k = Known::default();
    assert!(k.handoff(1));
    assert!(k.sweep(1, 2, Instant::now()));
    k.drop_key(1, 0);
    assert!(
        k.start(1, 2),
        "dropping an old generation keeps the new one"
    );
    k.drop_key(1, 2);
    assert!(k.handoff(1), "forgotten");
}

#[test]
fn finished_keys_are_remembered_one_to_two_periods_and_active_ones_always() {
    let k = Known::default();
    let t0 = Instant::now();
    let at =
        |periods: u32, extra_ms: u64| t0 + FORGET_AFTER * periods + Duration::from_millis(extra_ms);
    for key in [1, 2, 3, 4] {
        assert!(k.handoff(key));
    }
    for key in [1, 2, 4] {
        assert!(k.start(key, 0));
        k.finish(key, 0);
    }
    k.prune();
    k.prune_at(at(0, 0) - Duration::from_millis(1));
    assert_eq!(k.len(), 4, "no period has ended yet");
    k.prune_at(at(1, 1));
    assert_eq!(k.len(), 4, "finished less than two periods ago: kept");
    // Key 4 is replayed (a newer generation) before its finished entry is forgotten.
    assert!(k.sweep(4, 1, Instant::now()));
    k.prune_at(at(1, 500));
    assert_eq!(k.len(), 4, "one rotation per period");
    k.prune_at(at(2, 2));
    assert_eq!(
        k.len(),
        2,
        "1 and 2 forgotten; 3 (active) and 4 (active again) kept"
    );
    assert!(k.handoff(1), "a forgotten key is unknown again");
    assert!(!k.handoff(3));
    assert!(k.start(4, 1));
    k.finish(4, 1);
    k.prune_at(at(3, 3));
    assert!(
        !k.handoff(4),
        "finished in the period that just ended: remembered"
    );
    k.prune_at(at(4, 4));
    assert_eq!(k.len(), 2, "4's second finish forgotten too: 1 and 3 left");
}

#[test]
fn a_finish_time_is_never_rounded_before_the_round_it_followed() {
    let k = Known::default();
    assert!(k.handoff(1));
    assert!(k.start(1, 0));
    let round = Instant::now();
    k.finish(1, 0);
    // However close the round is to the finish, a sweep that read before it is stale.
    assert!(!k.sweep(1, 0, round));
    let keys = k.keys();
    let done = keys.current.keys[&1];
    let at = keys.current.finished_at(done);
    assert!(at >= round);
    drop(keys);
    assert!(
        !k.sweep(1, 0, at),
        "a round read at the very (rounded-up) finish time is still taken as stale"
    );
}

/// Finish times are kept relative to their table's start: one taken well after the table
/// began still reads back as after a round that preceded it (a stamp lost or cut to the
/// table's first millisecond would let that stale round queue the key a second time).
#[test]
fn a_finish_well_after_the_table_began_still_outlasts_an_earlier_round() {
    let k = Known::default();
    std::thread::sleep(Duration::from_millis(5));
    assert!(k.handoff(1));
    assert!(k.start(1, 0));
    let round = Instant::now();
    k.finish(1, 0);
    assert!(!k.sweep(1, 0, round), "a round that read before the finish");
    let keys = k.keys();
    let done = keys.current.keys[&1];
    assert!(
        done.at_ms >= 5,
        "stamped {} ms after the table began",
        done.at_ms
    );
}

#[test]
fn a_rotation_reuses_the_oldest_table_and_keeps_its_memory() {
    let k = Known::default();
    let t0 = Instant::now();
    let finish = |keys: std::ops::Range<i64>| {
        for key in keys {
            assert!(k.handoff(key));
            assert!(k.start(key, 0));
            k.finish(key, 0);
        }
    };
    finish(0..5000);
    k.prune_at(t0 + FORGET_AFTER);
    finish(5000..5010);
    k.prune_at(t0 + FORGET_AFTER * 2);
    let big = k.keys().current.keys.capacity();
    assert!(big >= 5000, "the 5000-key table, emptied: {big}");
    assert!(k.keys().current.keys.is_empty());
    assert!(!k.handoff(5003), "the quiet period's keys are kept");
    k.prune_at(t0 + FORGET_AFTER * 3);
    assert!(
        k.keys().current.keys.capacity() >= 10,
        "sized for the period that ended"
    );
    k.prune_at(t0 + FORGET_AFTER * 4);
    assert_eq!(
        k.keys().current.keys.capacity(),
        big,
        "the big table again: memory is kept, not freed and allocated again"
    );
}

#[test]
fn a_rotation_sizes_the_new_table_like_the_period_that_ended() {
    let k = Known::default();
    for key in 0..1000 {
        assert!(k.handoff(key));
        assert!(k.start(key, 0));
        k.finish(key, 0);
    }
    k.prune_at(Instant::now() + FORGET_AFTER);
    let keys = k.keys();
    assert_eq!(keys.previous.keys.len(), 1000);
    assert!(keys.current.keys.is_empty());
    assert!(keys.current.keys.capacity() >= 1000);
}

#[test]
fn running_lists_the_keys_being_called_or_recorded_only() {
    let k = Known::default();
    for key in [1, 2, 3, 4] {
        assert!(k.handoff(key));
    }
    assert!(k.running().is_empty(), "queued keys are not running");
    for key in [1, 2, 3] {
        assert!(k.start(key, 0));
    }
    let _ = k.wait(2, 0).expect("a retry waits on its timer");
    k.finish(3, 0);
    assert_eq!(
        k.running(),
        [1],
        "waiting, finished and queued keys are not running"
    );
    assert!(
        !k.sweep(1, 1, Instant::now()),
        "a replay waits for the running call"
    );
    assert_eq!(
        k.running(),
        [1],
        "a replay does not end the running call: its claim must still hold"
    );
    k.drop_key(1, 0);
    assert!(k.running().is_empty());
}
