//! An in-time outcome decided by a real engine (embedded store, no plugins): the attempt that
//! uses up `max_attempts`, a retry's due time (the stored one and the engine's timer alike),
//! and `max_age` at its boundary.

use std::sync::Arc;
use std::time::Duration;

use gateway_plugin::host::CallOutcome;

use super::*;
use crate::config::DeliveryConfig;
use crate::delivery::test_store::store;

/// The one delay these tests' retries get: a plugin's `retry_after` of `max_backoff` wins over
/// any jitter, which `max_backoff` bounds.
const DELAY: Duration = Duration::from_secs(5);

async fn engine(dir: &std::path::Path, delivery: DeliveryConfig) -> Arc<Engine> {
    Engine::start(store(dir).await, Default::default(), delivery)
}

fn policy(max_attempts: u32, max_age: Option<Duration>) -> DeliveryConfig {
    DeliveryConfig {
        max_attempts,
        max_age,
        initial_backoff: DELAY,
        max_backoff: DELAY,
        ..DeliveryConfig::default()
    }
}

/// Once the gateway stops, a delivery already handed to its dispatcher's call task is not
/// marked started, so not called: it stays pending for the next start. (An isolated plugin's
/// child is let go as the stop begins: a call made then found none, and its delivery lost an
/// attempt to the stop.)
#[tokio::test]
async fn a_stopping_engine_marks_nothing_started() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path(), policy(12, None)).await;
    let store = engine.store.clone();
    let key = crate::delivery::test_store::accept(&store, "stop-1", "p").await;
    let mut j = job(now_ms());
    j.key = key;
    j.event_id = "stop-1".into();
    engine.cancel.cancel();
    let removed = tokio_util::sync::CancellationToken::new();
    assert!(engine.mark_started(&[j], &removed).await.is_none());
    let e = store
        .event("stop-1".into())
        .await
        .expect("read")
        .expect("event");
    let d = &e.deliveries[0];
    assert_eq!(
        (d.state.as_str(), d.running, d.attempts),
        ("pending", false, 0)
    );
}

fn job(received_at_ms: i64) -> Job {
    Job {
        key: 1,
        event_id: "e1".into(),
        plugin: "p".into(),
        attempts: 0,
        generation: 0,
        crashes: 0,
        app: "a".into(),
        event_type: "t".into(),
        received_at_ms,
        body: crate::store::Body::stored(Arc::from("{}")),
    }
}

fn retry() -> Option<CallOutcome> {
    Some(CallOutcome::Retry {
        reason: "busy".into(),
        retry_after: Some(DELAY),
    })
}

#[tokio::test]
async fn the_attempt_that_uses_up_max_attempts_is_a_dead_letter_and_the_one_before_retries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path(), policy(3, None)).await;
    let job = job(now_ms());
    let before = engine.decide(&job, 2, retry(), 0);
    assert!(
        matches!(before.finish, Finish::Retry { .. }),
        "{:?}",
        before.finish
    );
    assert_eq!(before.label, "retry");
    let last = engine.decide(&job, 3, retry(), 0);
    assert_eq!(
        last.finish,
        Finish::Dead {
            error: "busy (gave up after 3 attempts)".into()
        }
    );
    assert_eq!(last.label, "retry");
    assert!(last.retry_at.is_none());
    // A timeout decides the same way, under its own label and reason.
    let timed_out = engine.decide(&job, 3, None, 0);
    assert_eq!(timed_out.label, TIMED_OUT);
    assert_eq!(
        timed_out.finish,
        Finish::Dead {
            error: "timed out after 30000ms (gave up after 3 attempts)".into()
        }
    );
}

#[tokio::test]
async fn a_retry_is_due_after_its_delay_in_the_store_and_on_the_engines_timer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path(), policy(12, None)).await;
    let (wall, clock) = (now_ms(), tokio::time::Instant::now());
    let decision = engine.decide(&job(wall), 1, retry(), 0);
    let (wall_after, clock_after) = (now_ms(), tokio::time::Instant::now());
    let Finish::Retry { next_at_ms, error } = decision.finish else {
        panic!("expected a retry, got {:?}", decision.finish);
    };
    assert_eq!(error, "busy");
    let delay_ms = DELAY.as_millis() as i64;
    assert!(
        (wall + delay_ms..=wall_after + delay_ms).contains(&next_at_ms),
        "{next_at_ms} not {delay_ms} ms after {wall}..={wall_after}"
    );
    let retry_at = decision.retry_at.expect("a retry has a timer");
    assert!(
        retry_at >= clock + DELAY && retry_at <= clock_after + DELAY,
        "the timer is not {DELAY:?} from now"
    );
}

#[tokio::test]
async fn max_age_dead_letters_a_retry_due_past_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let max_age = Duration::from_secs(60);
    let engine = engine(dir.path(), policy(12, Some(max_age))).await;
    // Received just now: the retry, due in 5 s, is well within 60 s.
    let fresh = engine.decide(&job(now_ms()), 1, retry(), 0);
    assert!(
        matches!(fresh.finish, Finish::Retry { .. }),
        "{:?}",
        fresh.finish
    );
    // Received 58 s ago: due at 63 s, past it.
    let old = engine.decide(&job(now_ms() - 58_000), 1, retry(), 0);
    assert_eq!(
        old.finish,
        Finish::Dead {
            error: "busy (gave up: the next attempt would exceed max_age 60000ms)".into()
        }
    );
    assert!(old.retry_at.is_none());
}

#[test]
fn an_attempt_due_exactly_at_max_age_still_runs() {
    let max_age = Duration::from_millis(1_000);
    assert!(!past_max_age(11_000, 10_000, max_age));
    assert!(past_max_age(11_001, 10_000, max_age));
    assert!(!past_max_age(10_999, 10_000, max_age));
    // Far apart values do not wrap.
    assert!(past_max_age(i64::MAX, i64::MIN, max_age));
    assert!(!past_max_age(i64::MIN, i64::MAX, max_age));
}

/// The late outcome of a call past its timeout, on the store the engine writes to.
mod late {
    use super::*;
    use crate::delivery::test_store::{accept, at};
    use crate::store::{FinishRecord, Store, Trace, WriteId};

    fn trace(outcome: &'static str) -> Trace {
        Trace {
            outcome,
            started_at_ms: 1_000,
            duration_ms: 1_000,
            discarded_run: None,
        }
    }

    /// The delivery of event `id` to `p`, whose attempt 1 was marked started and whose timeout
    /// was recorded as `recorded` (the call still runs): its job as the call started.
    async fn timed_out(store: &Arc<dyn Store>, id: &str, recorded: &Finish) -> Job {
        let key = accept(store, id, "p").await;
        let marked = store.start_attempts(vec![(key, at(0))]).await;
        assert_eq!(marked.expect("start"), [true]);
        let timeout = FinishRecord {
            key,
            guard: at(0),
            attempts: 1,
            finish: recorded.clone(),
            trace: trace(TIMED_OUT),
            write: WriteId::fresh(),
        };
        assert_eq!(
            store.finish_many(vec![timeout]).await.expect("finish"),
            [true]
        );
        let mut job = job(now_ms());
        job.key = key;
        job.event_id = id.into();
        job
    }

    async fn shown(store: &Arc<dyn Store>, id: &str) -> (String, bool) {
        let e = store.event(id.into()).await.expect("read").expect("event");
        let d = &e.deliveries[0];
        (d.state.clone(), d.running)
    }

    fn retried() -> Finish {
        Finish::Retry {
            next_at_ms: now_ms() + 60_000,
            error: "timed out after 30000ms".into(),
        }
    }

    fn dead() -> Finish {
        Finish::Dead {
            error: "timed out after 30000ms (gave up after 1 attempts)".into(),
        }
    }

    fn reject() -> Option<CallOutcome> {
        Some(CallOutcome::Reject {
            reason: "no such account".into(),
        })
    }

    fn panicked() -> Option<CallOutcome> {
        Some(CallOutcome::Panicked {
            message: "boom".into(),
        })
    }

    async fn setup() -> (tempfile::TempDir, Arc<Engine>, Arc<dyn Store>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine(dir.path(), policy(12, None)).await;
        let store = engine.store.clone();
        (dir, engine, store)
    }

    #[tokio::test]
    async fn a_late_success_ends_the_delivery_over_its_timeouts_retry_or_dead_letter() {
        let (_dir, engine, store) = setup().await;
        for (id, recorded, pending) in [
            ("over-retry", retried(), true),
            ("over-dead", dead(), false),
        ] {
            let job = timed_out(&store, id, &recorded).await;
            assert!(shown(&store, id).await.1, "{id}: runs until its outcome");
            let ended = engine
                .late(
                    &job,
                    1,
                    Some(CallOutcome::Ok),
                    (pending, true, &recorded),
                    trace,
                )
                .await;
            assert!(ended, "{id}");
            assert_eq!(shown(&store, id).await, ("done".into(), false), "{id}");
        }
    }

    #[tokio::test]
    async fn a_late_retry_or_no_outcome_leaves_the_timeouts_record_and_clears_the_mark() {
        let (_dir, engine, store) = setup().await;
        for (id, outcome) in [("late-retry", retry()), ("late-none", None)] {
            let recorded = retried();
            let job = timed_out(&store, id, &recorded).await;
            let ended = engine
                .late(&job, 1, outcome, (true, true, &recorded), trace)
                .await;
            assert!(!ended, "{id}: its retry stands");
            assert_eq!(shown(&store, id).await, ("pending".into(), false), "{id}");
        }
    }

    #[tokio::test]
    async fn a_late_reject_or_panic_ends_only_a_delivery_its_timeout_left_pending() {
        let (_dir, engine, store) = setup().await;
        for (kind, outcome) in [("reject", reject()), ("panic", panicked())] {
            let id = format!("{kind}-over-retry");
            let recorded = retried();
            let job = timed_out(&store, &id, &recorded).await;
            let ended = engine
                .late(&job, 1, outcome.clone(), (true, true, &recorded), trace)
                .await;
            assert!(ended, "{id}");
            assert_eq!(shown(&store, &id).await, ("dead".into(), false), "{id}");

            // Over a dead letter the timeout recorded: the mark is cleared, nothing ends.
            let id = format!("{kind}-over-dead");
            let recorded = dead();
            let job = timed_out(&store, &id, &recorded).await;
            let ended = engine
                .late(&job, 1, outcome, (false, true, &recorded), trace)
                .await;
            assert!(!ended, "{id}");
            assert_eq!(shown(&store, &id).await, ("dead".into(), false), "{id}");
        }
    }

    #[tokio::test]
    async fn a_late_panics_reason_is_capped_like_any_other() {
        let (_dir, engine, store) = setup().await;
        let recorded = retried();
        let job = timed_out(&store, "late-long-panic", &recorded).await;
        let long = Some(CallOutcome::Panicked {
            message: "x".repeat(10_000),
        });
        let ended = engine
            .late(&job, 1, long, (true, true, &recorded), trace)
            .await;
        assert!(ended);
        let e = store.event("late-long-panic".into()).await.expect("read");
        let error = e.expect("event").deliveries[0].last_error.clone();
        let error = error.expect("a reason");
        assert!(error.starts_with("panicked: xxx"), "{error}");
        assert!(error.len() <= detail::MAX_DETAIL, "{} bytes", error.len());
    }

    #[tokio::test]
    async fn a_late_failure_does_not_apply_over_another_attempts_mark() {
        for (kind, outcome) in [("reject", reject()), ("panic", panicked())] {
            let (_dir, engine, store) = setup().await;
            let id = format!("{kind}-after-restart");
            let recorded = retried();
            let job = timed_out(&store, &id, &recorded).await;
            // The timed-out attempt counted as a crash, attempt 2 started: its mark now.
            let recovered = store.recover_crashed(12, 3, Vec::new()).await;
            assert_eq!(recovered.expect("recover").found, 1);
            let marked = store.start_attempts(vec![(job.key, at(1))]).await;
            assert_eq!(marked.expect("start"), [true]);
            let ended = engine
                .late(&job, 1, outcome, (true, true, &recorded), trace)
                .await;
            assert!(!ended, "{id}: attempt 2 is running");
            assert_eq!(shown(&store, &id).await, ("pending".into(), true), "{id}");
        }
    }
}
