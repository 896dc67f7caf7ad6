//! The linger's rules, on the paused clock: it stops at a full batch (or returns at once with
//! one), at its deadline, at cancellation, and never puts a delivery that must run alone (a
//! retry, a crash behind it) into the batch.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{linger, Job};

fn job(key: i64, attempts: u32, crashes: u32) -> Job {
    Job {
        key,
        event_id: format!("e{key}"),
        plugin: "p".into(),
        attempts,
        generation: 0,
        crashes,
        app: "a".into(),
        event_type: "t".into(),
        received_at_ms: 0,
        body: crate::store::Body::stored(Arc::from("{}")),
    }
}

fn keys(batch: &[Job]) -> Vec<i64> {
    batch.iter().map(|j| j.key).collect()
}

/// Sends `jobs` 1 ms apart (on the paused clock) from a task of their own.
fn trickle(tx: mpsc::Sender<Job>, jobs: Vec<Job>) {
    tokio::spawn(async move {
        for j in jobs {
            tokio::time::sleep(Duration::from_millis(1)).await;
            if tx.send(j).await.is_err() {
                return;
            }
        }
        // Keep the queue open past every deadline.
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
}

/// What one linger did: the batch (job 1 first), the job it held back, and the queue after it.
struct Lingered {
    batch: Vec<Job>,
    held: Option<Job>,
    rx: mpsc::Receiver<Job>,
}

/// Lingers (not cancelled) after job 1, `coming` trickling in 1 ms apart.
async fn linger_after_first(coming: Vec<Job>, max_batch: usize, wait: Duration) -> Lingered {
    let (tx, mut rx) = mpsc::channel(16);
    trickle(tx, coming);
    let mut batch = vec![job(1, 0, 0)];
    let held = linger(
        &CancellationToken::new(),
        &mut rx,
        &mut batch,
        max_batch,
        wait,
    )
    .await;
    Lingered { batch, held, rx }
}

#[tokio::test(start_paused = true)]
async fn it_stops_as_soon_as_the_batch_is_full() {
    let started = tokio::time::Instant::now();
    let Lingered {
        batch,
        held,
        mut rx,
    } = linger_after_first(
        (2..=6).map(|k| job(k, 0, 0)).collect(),
        4,
        Duration::from_secs(1),
    )
    .await;
    assert!(held.is_none());
    assert_eq!(keys(&batch), [1, 2, 3, 4]);
    assert!(
        started.elapsed() < Duration::from_millis(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        rx.recv().await.map(|j| j.key),
        Some(5),
        "the rest stays queued"
    );
}

/// The dispatcher calls it for a batch already full (a `max_batch` of 1 too): it returns at
/// once and takes nothing from the queue.
#[tokio::test(start_paused = true)]
async fn a_batch_already_full_returns_at_once() {
    let started = tokio::time::Instant::now();
    let Lingered {
        batch,
        held,
        mut rx,
    } = linger_after_first(vec![job(2, 0, 0)], 1, Duration::from_secs(1)).await;
    assert!(held.is_none());
    assert_eq!(keys(&batch), [1]);
    assert!(started.elapsed().is_zero(), "{:?}", started.elapsed());
    assert_eq!(rx.recv().await.map(|j| j.key), Some(2));
}

#[tokio::test(start_paused = true)]
async fn it_stops_at_its_deadline_with_what_came() {
    let started = tokio::time::Instant::now();
    let Lingered { batch, held, .. } =
        linger_after_first(vec![job(2, 0, 0)], 64, Duration::from_millis(50)).await;
    assert!(held.is_none());
    assert_eq!(keys(&batch), [1, 2]);
    assert_eq!(started.elapsed(), Duration::from_millis(50));
}

#[tokio::test(start_paused = true)]
async fn a_retry_or_a_crashed_delivery_ends_it_and_is_handed_back_alone() {
    for alone in [job(3, 1, 0), job(3, 0, 1)] {
        let Lingered {
            batch,
            held,
            mut rx,
        } = linger_after_first(
            vec![job(2, 0, 0), alone, job(4, 0, 0)],
            64,
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(keys(&batch), [1, 2], "it never joins a batch");
        assert_eq!(held.map(|j| j.key), Some(3));
        assert_eq!(rx.recv().await.map(|j| j.key), Some(4));
    }
}

#[tokio::test(start_paused = true)]
async fn cancellation_ends_it_at_once() {
    let (_tx, mut rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    cancel.cancel();
    let mut batch = vec![job(1, 0, 0)];
    let started = tokio::time::Instant::now();
    let held = linger(&cancel, &mut rx, &mut batch, 64, Duration::from_secs(1)).await;
    assert!(held.is_none());
    assert_eq!(keys(&batch), [1]);
    assert_eq!(started.elapsed(), Duration::ZERO);
}
