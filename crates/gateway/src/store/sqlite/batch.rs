//! How the store's writer gathers the writes of one transaction: every write waiting at that
//! moment (group commit), and, under a steady moderate load, a short wait for more (pacing).
//!
//! Every commit costs one `fsync` of the WAL whatever it holds. On the 2-vCPU VM the benchmarks
//! run on, a 4 KiB write and its `fsync` take ~50 µs of CPU and ~125 µs. At full load the
//! writer's batches are large and that cost is shared; at half load about three writes arrived
//! per commit, and half of the writer's time went to `fsync`. So when fewer
//! than [`PACE_MIN`] writes wait and the previous commit started less than [`PACE_GAP`] ago,
//! the writer waits for more writes, until [`PACE_MIN`] of them wait or [`PACE_GAP`] after
//! that start, whichever comes first. A write is held at most [`PACE_GAP`]. The first write
//! after a quiet spell is never held, and a saturated writer, whose batches hold [`PACE_MIN`]
//! writes or more, does not wait either.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::MAX_BATCH;

/// The shortest time from one commit's start to the next one's while fewer than [`PACE_MIN`]
/// writes wait.
pub(super) const PACE_GAP: Duration = Duration::from_micros(400);

/// With this many writes waiting, the writer commits without waiting for more.
pub(super) const PACE_MIN: usize = 6;

/// The writer's batching state: when its last transaction started.
pub(super) struct Batcher {
    gap: Duration,
    min: usize,
    last_start: Option<Instant>,
}

impl Batcher {
    pub(super) fn new() -> Self {
        Self::with(PACE_GAP, PACE_MIN)
    }

    fn with(gap: Duration, min: usize) -> Self {
        Batcher {
            gap,
            min: min.min(MAX_BATCH),
            last_start: None,
        }
    }

    /// `first` and the writes waiting behind it, at most [`MAX_BATCH`] in all: one
    /// transaction, which the caller starts at once. Waits for more as the module's docs say;
    /// the second value tells whether it did.
    pub(super) fn take<T>(&mut self, first: T, rx: &mpsc::Receiver<T>) -> (Vec<T>, bool) {
        let mut batch = vec![first];
        drain(&mut batch, rx, MAX_BATCH);
        let mut waited = false;
        if let Some(due) = self.last_start.map(|t| t + self.gap) {
            while batch.len() < self.min {
                let left = due.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                waited = true;
                match rx.recv_timeout(left) {
                    Ok(w) => {
                        batch.push(w);
                        drain(&mut batch, rx, MAX_BATCH);
                    }
                    // Timed out, or every sender is gone: commit what there is.
                    Err(_) => break,
                }
            }
        }
        self.last_start = Some(Instant::now());
        (batch, waited)
    }
}

/// Moves the writes waiting now into `batch`, up to `limit` in all.
fn drain<T>(batch: &mut Vec<T>, rx: &mpsc::Receiver<T>, limit: usize) {
    while batch.len() < limit {
        match rx.try_recv() {
            Ok(w) => batch.push(w),
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_takes_what_waits_up_to_the_limit() {
        let (tx, rx) = mpsc::channel();
        for i in 1..=MAX_BATCH + 100 {
            tx.send(i).expect("send");
        }
        let mut batcher = Batcher::new();
        let (first, waited) = batcher.take(0, &rx);
        assert_eq!(first.len(), MAX_BATCH);
        assert_eq!(first.last(), Some(&(MAX_BATCH - 1)));
        assert!(!waited, "the first batch never waits");
        let next = rx.recv().expect("more");
        let (rest, waited) = batcher.take(next, &rx);
        assert_eq!(rest.len(), 101, "the rest, then nothing waits");
        assert!(!waited, "more than PACE_MIN were waiting");
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_small_batch_right_after_a_commit_is_held_until_the_gap_has_passed() {
        let gap = Duration::from_millis(50);
        let (_tx, rx) = mpsc::channel();
        let mut batcher = Batcher::with(gap, 8);
        let started = Instant::now();
        assert_eq!(batcher.take(1, &rx), (vec![1], false), "no commit before");
        let (batch, _) = batcher.take(2, &rx);
        assert_eq!(batch, vec![2]);
        assert!(
            started.elapsed() >= gap,
            "committed only once the gap had passed"
        );
    }

    #[test]
    fn writes_sent_while_it_waits_join_the_batch_and_the_minimum_ends_the_wait() {
        let (tx, rx) = mpsc::channel();
        let mut batcher = Batcher::with(Duration::from_secs(60), 3);
        batcher.take(1, &rx);
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.send(3).expect("send");
            tx.send(4).expect("send");
            tx
        });
        let started = Instant::now();
        let (batch, _) = batcher.take(2, &rx);
        assert_eq!(batch, vec![2, 3, 4]);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not held for the gap"
        );
        drop(sender.join().expect("sender"));
    }

    #[test]
    fn a_write_after_a_quiet_spell_is_not_held() {
        let (_tx, rx) = mpsc::channel::<u32>();
        let mut batcher = Batcher::with(Duration::from_millis(1), 8);
        batcher.take(1, &rx);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(batcher.take(2, &rx), (vec![2], false));
    }

    #[test]
    fn the_wait_ends_when_every_sender_is_gone() {
        let (tx, rx) = mpsc::channel();
        let mut batcher = Batcher::with(Duration::from_secs(60), 8);
        batcher.take(1, &rx);
        drop(tx);
        let started = Instant::now();
        assert_eq!(batcher.take(2, &rx), (vec![2], true));
        assert!(started.elapsed() < Duration::from_secs(30));
    }
}
