use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;

fn backlog(pending: u64) -> Backlog {
    Backlog {
        pending,
        ..Backlog::default()
    }
}

/// A caller on its own task whose read (if it gets to make one) takes `took` and answers
/// `answer(n)`, `n` the number of reads made before it.
fn spawn_caller(
    reads: &Arc<BacklogReads>,
    count: &Arc<AtomicUsize>,
    took: Duration,
    answer: fn(u64) -> Result<Backlog, StoreError>,
) -> tokio::task::JoinHandle<Result<Backlog, StoreError>> {
    let (reads, count) = (reads.clone(), count.clone());
    tokio::spawn(async move {
        reads
            .get(|| async move {
                let n = count.fetch_add(1, Ordering::SeqCst) as u64;
                tokio::time::sleep(took).await;
                answer(n)
            })
            .await
    })
}

/// Callers that come while a read runs wait for it, then share one read of their own: however
/// many come, two reads.
#[tokio::test(start_paused = true)]
async fn callers_that_come_during_a_read_share_the_next_one() {
    let reads = Arc::new(BacklogReads::default());
    let count = Arc::new(AtomicUsize::new(0));
    let caller = || {
        spawn_caller(&reads, &count, Duration::from_millis(300), |n| {
            Ok(backlog(n))
        })
    };
    let first = caller();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let during: Vec<_> = (0..20).map(|_| caller()).collect();
    assert_eq!(
        first.await.expect("caller").map_err(|e| e.0),
        Ok(backlog(0))
    );
    for c in during {
        assert_eq!(c.await.expect("caller").map_err(|e| e.0), Ok(backlog(1)));
    }
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

/// A caller that asks after a read began reads again (no answer is older than its request), a
/// failed read included.
#[tokio::test(start_paused = true)]
async fn no_answer_is_older_than_its_request_a_failure_included() {
    let reads = BacklogReads::default();
    let ok = |n| move || async move { Ok(backlog(n)) };
    assert_eq!(reads.get(ok(1)).await.map_err(|e| e.0), Ok(backlog(1)));
    assert_eq!(reads.get(ok(2)).await.map_err(|e| e.0), Ok(backlog(2)));
    let failed = reads.get(|| async { Err(StoreError("down".into())) }).await;
    assert_eq!(failed.map_err(|e| e.0), Err("down".to_owned()));
    assert_eq!(reads.get(ok(4)).await.map_err(|e| e.0), Ok(backlog(4)));
}

/// A caller that goes away mid-read does not hand the turn on: the next caller waits for that
/// read to end before its own begins, so hanging up and asking again never runs two at once.
#[tokio::test(start_paused = true)]
async fn a_caller_that_hangs_up_leaves_its_read_holding_the_turn() {
    let reads = Arc::new(BacklogReads::default());
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let slow = |n: u64| {
        let (running, most) = (running.clone(), most.clone());
        move || async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(500)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            Ok(backlog(n))
        }
    };
    let gone = tokio::time::timeout(Duration::from_millis(100), reads.get(slow(1))).await;
    assert!(gone.is_err(), "the first caller hung up");
    assert_eq!(reads.get(slow(2)).await.map_err(|e| e.0), Ok(backlog(2)));
    assert_eq!(most.load(Ordering::SeqCst), 1);
}

/// Callers that waited for a read that failed take its failure: a slow failure (a database that
/// stopped answering: 10 s each) costs them one wait, not one failing read each in turn.
#[tokio::test(start_paused = true)]
async fn callers_that_waited_for_a_failed_read_share_its_failure() {
    let reads = Arc::new(BacklogReads::default());
    let count = Arc::new(AtomicUsize::new(0));
    let caller = || {
        spawn_caller(&reads, &count, Duration::from_secs(10), |_| {
            Err(StoreError("no answer within 10 s".into()))
        })
    };
    let first = caller();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let during: Vec<_> = (0..5).map(|_| caller()).collect();
    let began = tokio::time::Instant::now();
    assert!(first.await.expect("caller").is_err());
    for c in during {
        assert!(c.await.expect("caller").is_err());
    }
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert!(began.elapsed() <= Duration::from_secs(20));
}
