//! Calls and their outcomes: an outcome the store could not record is not called again, a
//! timed-out call that succeeds late turns its dead letter into done, a replay waits for a
//! timed-out call still running and does not wait for a retry timer, deliveries beyond a full
//! queue are delivered once, a huge outcome detail is capped, and a timed-out call that has
//! returned no longer counts at a later reload (the limit holds). Part of `invariants.rs`.

use std::time::Duration;

use gateway_e2e::harness::{wait_until, TestGateway};

use super::helpers::{call_arrivals, calls, config, delivery, send, state, WAIT};

#[test]
fn an_outcome_the_store_could_not_record_is_not_called_again_while_the_store_is_locked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        "initial_backoff = \"50ms\"\nmax_backoff = \"100ms\"\ntimeout = \"10s\"",
        &[("slow", "mode = \"gate\", gate = \"data/open\"", "")],
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    send(&gw, "locked-1", "test.slow");
    // The call has started (its start mark is written) and waits for the gate: a fixed sleep
    // before the lock could let the lock block the start mark itself on a loaded machine.
    gw.wait_running("locked-1", "slow");
    // While the call runs, another process takes the write lock for 6 s and the call returns:
    // the outcome cannot be recorded, reads still work (WAL), so the sweeper sees the delivery
    // as pending.
    let other = rusqlite::Connection::open(dir.path().join("data/gateway.db")).expect("open");
    other.execute_batch("BEGIN IMMEDIATE").expect("lock");
    std::fs::write(dir.path().join("data/open"), "").expect("open the gate");
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        calls(&gw, "slow").len(),
        1,
        "called again while its outcome was unrecorded"
    );
    other.execute_batch("ROLLBACK").expect("unlock");
    assert!(wait_until(WAIT, || state(&gw, "locked-1", "slow") == "done"));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(calls(&gw, "slow").len(), 1);
}

#[test]
fn a_timed_out_call_that_succeeds_late_turns_its_dead_letter_into_done() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        "max_attempts = 1\ntimeout = \"300ms\"",
        &[("late", "mode = \"slow\", sleep_ms = 3000", "")],
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    send(&gw, "late-1", "test.late");
    // A dead letter for 2.7 s, from the timeout to the late success.
    assert!(wait_until(WAIT, || state(&gw, "late-1", "late") == "dead"));
    assert!(
        wait_until(WAIT, || state(&gw, "late-1", "late") == "done"),
        "a late Ok is the delivery: {}",
        delivery(&gw, "late-1", "late")
    );
    assert_eq!(calls(&gw, "late").len(), 1);
    // The history shows both: the timeout that made the dead letter, then the late success
    // of the same attempt, which ran its whole 3 s.
    let d = delivery(&gw, "late-1", "late");
    let history = d["history"].as_array().cloned().unwrap_or_default();
    let outcomes: Vec<(&str, u64)> = history
        .iter()
        .map(|a| {
            (
                a["outcome"].as_str().unwrap_or_default(),
                a["attempt"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(outcomes, [("timeout", 1), ("late ok", 1)], "{d}");
    assert!(history[0]["duration_ms"].as_u64() >= Some(300), "{d}");
    assert!(history[1]["duration_ms"].as_u64() >= Some(3000), "{d}");
}

#[test]
fn a_replay_while_a_timed_out_call_still_runs_waits_for_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        "max_attempts = 1\ntimeout = \"300ms\"",
        &[("late", "mode = \"slow\", sleep_ms = 2500", "")],
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    send(&gw, "late-2", "test.late");
    assert!(wait_until(WAIT, || state(&gw, "late-2", "late") == "dead"));
    // Its call still runs: replayed only when forced (see `e2e/hung_dead_letters.rs`).
    let (code, out, err) = gw.cli(&["replay", "--dead-letters", "--force"]);
    assert_eq!(code, 0, "{out}{err}");
    let arrivals = call_arrivals(&gw, "late", 2, Duration::from_secs(20));
    assert_eq!(
        arrivals.len(),
        2,
        "the replay runs once the first call returned"
    );
    let gap = arrivals[1] - arrivals[0];
    assert!(
        gap >= Duration::from_millis(2000),
        "two calls overlapped (second ended {gap:?} after the first)"
    );
    assert!(
        calls(&gw, "late").iter().all(|c| c["in_flight"] == 1),
        "{:?}",
        calls(&gw, "late")
    );
    assert!(wait_until(WAIT, || state(&gw, "late-2", "late") == "done"));
}

#[test]
fn a_replay_of_a_delivery_waiting_on_a_retry_timer_runs_within_seconds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        "initial_backoff = \"20s\"\nmax_backoff = \"30s\"",
        &[(
            "wait",
            "mode = \"retry_always\", retry_after_ms = 20000",
            "",
        )],
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    send(&gw, "timer-1", "test.wait");
    assert!(wait_until(WAIT, || calls(&gw, "wait").len() == 1));
    // Its retry recorded (a call still running would need --force).
    assert!(wait_until(WAIT, || {
        let d = delivery(&gw, "timer-1", "wait");
        d["attempts"] == 1 && d["running"].is_null()
    }));
    let (code, out, err) = gw.cli(&["replay", "timer-1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        wait_until(Duration::from_secs(5), || calls(&gw, "wait").len() == 2),
        "the replay waited for the old retry timer"
    );
    assert_eq!(
        calls(&gw, "wait")[1]["attempt"],
        1,
        "a replay starts from attempt 1"
    );
}

/// A hand-off that finds its plugin's in-memory queue full (10,000 deliveries) is not lost: the
/// store holds it, and the sweeper queues it once the hand-off grace is over and there is room.
/// Every event is delivered, once.
#[test]
fn deliveries_beyond_a_full_queue_are_delivered_once_by_the_sweeper() {
    const EVENTS: usize = 10_300;
    const QUEUE: u64 = 10_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let kit = "mode = \"ok\", modes = { \"test.gate\" = \"gate\" }, gate = \"open\"";
    let mut cfg = config("", &[("kit", kit, "max_concurrency = 1")]);
    cfg.push_str("\n[[routes]]\nevents = [\"test.gate\"]\nplugins = [\"kit\"]\n");
    let gw = TestGateway::spawn(dir.path(), &cfg);
    let status = |gw: &TestGateway| -> serde_json::Value {
        let s = gateway_e2e::harness::get(&gw.admin_url("/status")).expect("status");
        serde_json::from_str(&s.body).expect("status json")
    };
    // One call holds the only permit until the gate file exists.
    send(&gw, "gate-0", "test.gate");
    assert!(wait_until(WAIT, || status(&gw)["plugins"]["kit"]
        ["calls_running"]
        == 1));
    std::thread::scope(|s| {
        for t in 0..16 {
            let gw = &gw;
            s.spawn(move || {
                for i in (t..EVENTS).step_by(16) {
                    send(gw, &format!("full-{i}"), "test.kit");
                }
            });
        }
    });
    let kit_status = &status(&gw)["plugins"]["kit"];
    assert_eq!(kit_status["calls_running"], 1, "{kit_status}");
    assert_eq!(
        kit_status["queued"], QUEUE,
        "the queue is full: {kit_status}"
    );
    // Past the hand-off grace (2 s) before the queue has room again: only the sweeper can bring
    // the overflow now.
    std::thread::sleep(Duration::from_millis(2_500));
    std::fs::write(dir.path().join("open"), "").expect("open the gate");
    let mut want: Vec<String> = (0..EVENTS).map(|i| format!("full-{i}")).collect();
    want.push("gate-0".into());
    want.sort();
    let delivered = || {
        let mut ids: Vec<String> = calls(&gw, "kit")
            .iter()
            .filter_map(|c| c["event_id"].as_str().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    };
    assert!(
        wait_until(Duration::from_secs(60), || delivered().len() >= want.len()),
        "{} of {} delivered",
        delivered().len(),
        want.len()
    );
    // A duplicate would show up as a line more than the events.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(delivered(), want);
}

#[test]
fn a_huge_outcome_detail_is_capped_in_the_store_and_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        "",
        &[("wordy", "mode = \"reject\", pad_reason = 20000", "")],
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    send(&gw, "wordy-1", "test.wordy");
    assert!(wait_until(WAIT, || state(&gw, "wordy-1", "wordy") == "dead"));
    let error = delivery(&gw, "wordy-1", "wordy")["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.len() <= 4096, "{} bytes stored", error.len());
    assert!(
        error.starts_with("testkit: reject wordy-1:wordy"),
        "{error:.80}"
    );
    assert!(
        error.contains("[truncated"),
        "{}",
        &error[error.len().saturating_sub(80)..]
    );
    assert!(
        !gw.log().contains(&"x".repeat(5000)),
        "the whole detail was logged"
    );
}

/// A call hung past its timeout is listed so that a reload replacing its instance hands its
/// permit to the new one (see `reloads.rs`); once it has returned it is off that list: a
/// reload after that must not hand over its permit again, which would let the new instance
/// run more calls at once than `max_concurrency`.
#[test]
fn a_timed_out_call_that_returned_is_not_counted_again_at_a_later_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = "timeout = \"300ms\"\ninitial_backoff = \"30s\"\nmax_backoff = \"30s\"";
    let held = |tag: &str| {
        config(
            settings,
            &[(
                "held",
                &format!("mode = \"gate\", gate = \"open\", log = true, tag = \"{tag}\""),
                "max_concurrency = 1",
            )],
        )
    };
    let gw = TestGateway::spawn(dir.path(), &held("v1"));
    let handled = |id: &str| gw.log().contains(&format!("testkit handling {id} "));
    send(&gw, "back-1", "test.held");
    assert!(
        wait_until(WAIT, || delivery(&gw, "back-1", "held")["attempts"] == 1),
        "the call did not time out: {}",
        delivery(&gw, "back-1", "held")
    );
    let gate = dir.path().join("open");
    std::fs::write(&gate, "").expect("open the gate");
    assert!(
        wait_until(WAIT, || state(&gw, "back-1", "held") == "done"),
        "{}",
        delivery(&gw, "back-1", "held")
    );
    std::fs::remove_file(&gate).expect("close the gate");
    std::fs::write(dir.path().join("gateway.toml"), held("v2")).expect("write");
    gw.signal("HUP");
    assert!(
        wait_until(WAIT, || gw.log().contains("config reloaded")),
        "{}",
        gw.log()
    );
    send(&gw, "back-2", "test.held");
    assert!(wait_until(WAIT, || handled("back-2")), "{}", gw.log());
    // Sent once back-2's call runs, so that it cannot share that call.
    send(&gw, "back-3", "test.held");
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(
        !handled("back-3"),
        "called beside back-2 (max_concurrency 1)\n{}",
        gw.log()
    );
    std::fs::write(&gate, "").expect("open the gate");
    assert!(
        wait_until(WAIT, || state(&gw, "back-2", "held") == "done"
            && state(&gw, "back-3", "held") == "done"),
        "{}",
        gw.log()
    );
}
