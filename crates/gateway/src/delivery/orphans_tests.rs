//! The orphan rule run by a real engine on an embedded store (no plugin configured): the
//! pending deliveries of a name with no instance become dead letters once the name has been
//! missing for `removed_plugin_grace`, not before, with the rule's reason; a name that no
//! longer has pending deliveries is forgotten, and the rule stops looking; those deliveries
//! replayed while the name is still missing get the whole grace again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::config::DeliveryConfig;
use crate::delivery::test_store::{accept, at, store};
use crate::store::{
    DeadLetterQuery, DeliveryRecord, Finish, FinishRecord, ReplaySelector, Store, Trace, WriteId,
};

const GRACE: Duration = Duration::from_secs(1);

fn grace(removed_plugin_grace: Duration) -> DeliveryConfig {
    DeliveryConfig {
        removed_plugin_grace,
        ..DeliveryConfig::default()
    }
}

async fn dead(store: &Arc<dyn Store>, plugin: &str) -> Vec<DeliveryRecord> {
    store
        .dead_letters(DeadLetterQuery {
            plugin: Some(plugin.into()),
            since_ms: None,
            after: None,
            limit: None,
        })
        .await
        .expect("dead letters")
}

/// Polls (every 20 ms, up to 10 s) until `plugin` has `n` dead letters; returns them.
async fn dead_count(store: &Arc<dyn Store>, plugin: &str, n: usize) -> Vec<DeliveryRecord> {
    let since = Instant::now();
    loop {
        let letters = dead(store, plugin).await;
        if letters.len() >= n || since.elapsed() > Duration::from_secs(10) {
            return letters;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls (up to `within`) until the rule forgot every name and stopped looking; whether it
/// did.
async fn stops_looking(engine: &Engine, within: Duration) -> bool {
    let since = Instant::now();
    while since.elapsed() < within {
        {
            let o = engine.orphans.lock().expect("orphans");
            if o.missing_since.is_empty() && !o.check {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// The outcome of `key`'s first attempt (generation 0), as a call's would be recorded.
fn first_attempt(key: i64, finish: Finish) -> FinishRecord {
    FinishRecord {
        key,
        guard: at(0),
        attempts: 1,
        trace: Trace {
            outcome: match finish {
                Finish::Dead { .. } => "reject",
                _ => "retry",
            },
            started_at_ms: now_ms(),
            duration_ms: 1,
            discarded_run: None,
        },
        finish,
        write: WriteId::fresh(),
    }
}

/// Replays `gone`'s one dead letter through the store, then checks that it waits a whole
/// `grace` (2 s or more) again from the next round (within a second): still pending 1.5 s
/// after the replay, a dead letter again once `grace` has passed, with the rule's reason
/// naming the grace as `shown`.
async fn replayed_waits_a_whole_grace(store: &Arc<dyn Store>, grace: Duration, shown: &str) {
    let replayed = store
        .replay(ReplaySelector::DeadLetters {
            plugin: Some("gone".into()),
            force: false,
        })
        .await
        .expect("replay");
    assert_eq!(replayed, 1);
    let back = Instant::now();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        dead(store, "gone").await.is_empty(),
        "dead-lettered again {:?} after the replay, within its grace",
        back.elapsed()
    );
    let letters = dead_count(store, "gone", 1).await;
    assert_eq!(letters.len(), 1, "not dead-lettered again after the grace");
    assert!(back.elapsed() >= grace, "{:?}", back.elapsed());
    assert_eq!(
        letters[0].last_error.as_deref(),
        Some(&*the_rules_reason(shown))
    );
}

fn the_rules_reason(grace: &str) -> String {
    format!(
        "plugin instance `gone` is no longer configured (removed from the config for more than \
         removed_plugin_grace {grace}); replay once an instance of that name exists again"
    )
}

#[tokio::test]
async fn a_missing_names_pending_deliveries_become_dead_letters_after_the_grace_not_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(dir.path()).await;
    accept(&store, "e1", "gone").await;
    accept(&store, "e2", "gone").await;
    let started = Instant::now();
    let engine = Engine::start(store.clone(), Default::default(), grace(GRACE));

    tokio::time::sleep(GRACE / 2).await;
    assert!(
        dead(&store, "gone").await.is_empty(),
        "dead before the grace"
    );
    assert_eq!(store.pending_plugins().await.expect("pending"), ["gone"]);

    let letters = dead_count(&store, "gone", 2).await;
    assert!(started.elapsed() >= GRACE, "{:?}", started.elapsed());
    assert_eq!(letters.len(), 2, "not dead-lettered after the grace");
    for d in &letters {
        assert_eq!(d.state, "dead");
        assert_eq!(d.attempts, 0, "the rule calls nothing");
        assert_eq!(d.last_error.as_deref(), Some(&*the_rules_reason("1s")));
    }
    assert!(store.pending_plugins().await.expect("pending").is_empty());
    // The name is forgotten with its last pending delivery; the next round finds nothing
    // missing and the rule stops looking.
    assert!(
        stops_looking(&engine, Duration::from_secs(5)).await,
        "the rule still looks with nothing missing"
    );
    engine.shutdown_then(Duration::from_secs(1), || ()).await;
}

/// The rule forgets the name once its write is in: deliveries of it put back in the queue
/// then (here a replay through the store; the CLI refuses a name not configured, saying they
/// would be dead letters again after the grace) wait the whole grace again, from the round
/// that sees them, rather than being dead-lettered at once as if the name's first grace
/// still ran.
#[tokio::test]
async fn deliveries_replayed_while_the_name_is_still_missing_get_the_whole_grace_again() {
    const LONG: Duration = Duration::from_secs(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(dir.path()).await;
    accept(&store, "e1", "gone").await;
    let engine = Engine::start(store.clone(), Default::default(), grace(LONG));
    assert_eq!(dead_count(&store, "gone", 1).await.len(), 1);
    replayed_waits_a_whole_grace(&store, LONG, "2s").await;
    engine.shutdown_then(Duration::from_secs(1), || ()).await;
}

/// A missing name's delivery that waits for a retry an hour off is on no sweep round's page
/// of due deliveries: the rule keeps looking while the name is missing (not only when a round
/// meets one of its due deliveries), and dead-letters it after the grace all the same.
#[tokio::test]
async fn a_missing_names_delivery_waiting_for_a_distant_retry_is_dead_lettered_after_the_grace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(dir.path()).await;
    let key = accept(&store, "later", "gone").await;
    let retry = first_attempt(
        key,
        Finish::Retry {
            next_at_ms: now_ms() + 3_600_000,
            error: "busy".into(),
        },
    );
    assert_eq!(store.finish_many(vec![retry]).await.expect("retry"), [true]);
    let engine = Engine::start(store.clone(), Default::default(), grace(GRACE));
    let letters = dead_count(&store, "gone", 1).await;
    assert_eq!(
        letters.len(),
        1,
        "a distant retry of a missing name stayed pending"
    );
    assert_eq!(letters[0].attempts, 1);
    assert_eq!(
        letters[0].last_error.as_deref(),
        Some(&*the_rules_reason("1s"))
    );
    engine.shutdown_then(Duration::from_secs(1), || ()).await;
}

/// A name whose pending deliveries all went (here its one delivery ended in a dead letter of
/// its own, as a late outcome of a removed instance's call does) is forgotten: when one of them
/// is pending again (replayed), its grace starts afresh from the round that sees it, not from
/// when the name was first seen missing.
#[tokio::test]
async fn a_name_seen_without_pending_deliveries_is_forgotten_and_its_next_grace_starts_afresh() {
    const LONG: Duration = Duration::from_secs(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(dir.path()).await;
    let key = accept(&store, "e1", "gone").await;
    let engine = Engine::start(store.clone(), Default::default(), grace(LONG));
    // The first round (at start) saw the name missing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(engine
        .orphans
        .lock()
        .expect("orphans")
        .missing_since
        .contains_key("gone"));
    let own = first_attempt(
        key,
        Finish::Dead {
            error: "rejected".into(),
        },
    );
    assert_eq!(store.finish_many(vec![own]).await.expect("dead"), [true]);
    // The next round (within a second) finds nothing pending of it: forgotten then, not
    // when its grace would have ended (a write that finds nothing would forget it too).
    assert!(
        stops_looking(&engine, Duration::from_millis(1_500)).await,
        "the name is still remembered"
    );
    replayed_waits_a_whole_grace(&store, LONG, "3s").await;
    engine.shutdown_then(Duration::from_secs(1), || ()).await;
}
