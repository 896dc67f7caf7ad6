//! What a call's batch may hold: never more than `max_batch` deliveries, and never a delivery
//! that must run alone (a retry) found queued behind the first attempts it would join. Part
//! of `batch.rs`.

use super::*;

/// Five deliveries queued behind the only permit go out in calls of at most `max_batch` (2).
#[test]
fn a_call_takes_at_most_max_batch_of_the_queued_deliveries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start_kit(dir.path(), "max_batch = 2", r#""test.ok" = "ok""#, 1, 800);
    let ids = ["m-1", "m-2", "m-3", "m-4", "m-5"];
    let events: Vec<(&str, &str)> = ids.iter().map(|id| (*id, "test.ok")).collect();
    queue_behind_a_gate(&gw, &events);
    assert!(
        wait_until(WAIT, || ids.iter().all(|id| state(&gw, id).0 == "done")),
        "{:?}",
        calls(&gw)
    );
    let sizes: Vec<u64> = ids
        .iter()
        .map(|id| batch_of(&gw, id).as_u64().unwrap_or(0))
        .collect();
    assert!(sizes.iter().all(|n| (1..=2).contains(n)), "{sizes:?}");
    assert!(sizes.contains(&2), "no full batch: {sizes:?}");
}

/// A retry that comes due while a first attempt waits for the permit does not join that first
/// attempt's call when the dispatcher fills it from the queue: it is called alone after it.
#[test]
fn a_retry_queued_behind_a_first_attempt_is_not_added_to_its_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The retry comes 3 s after the first call (testkit's `retry_after`, within max_backoff).
    let cfg = kit_config("max_batch = 16", r#""test.r" = "retry_then_ok""#, 1, 800)
        .replace("max_backoff = \"100ms\"", "max_backoff = \"10s\"")
        .replace("sleep_ms = 800,", "sleep_ms = 800, retry_after_ms = 3000,");
    let gw = TestGateway::spawn(dir.path(), &cfg);
    send(&gw, "r", "test.r");
    assert!(wait_until(WAIT, || calls_of(&gw, "r").len() == 1));
    start_the_gate(&gw);
    assert_eq!(calls_of(&gw, "r").len(), 1, "the retry ran before the gate");
    send(&gw, "f-1", "test.ok");
    // Once the retry is due, its timer has queued it behind f-1 (which waits for the permit).
    let due = gw.delivery("r", "kit")["next_at_ms"].as_i64().expect("due");
    while now_ms() < due + 300 {
        std::thread::sleep(Duration::from_millis(50));
    }
    send(&gw, "f-2", "test.ok");
    open_gate(&gw);
    assert!(
        wait_until(WAIT, || ["r", "f-1", "f-2"]
            .iter()
            .all(|id| state(&gw, id).0 == "done")),
        "{:?}",
        calls(&gw)
    );
    let retry = &calls_of(&gw, "r")[1];
    assert_eq!(
        (retry["attempt"].as_u64(), retry["batch"].as_u64()),
        (Some(2), Some(1)),
        "{:?}",
        calls(&gw)
    );
    assert_eq!(batch_of(&gw, "f-1"), 1, "{:?}", calls(&gw));
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
