//! The open-loop schedule: request `k` is *intended* to be sent at `start + k / rate`, whatever
//! happened to the requests before it. Latency is measured from that intended instant, so a stall
//! of the receiver shows up in the latency of every request that should have been sent during it
//! (no coordinated omission).
//!
//! A pacer thread ([`spawn_pacer`]) hands out one semaphore permit per slot as its intended time
//! arrives (`std::thread::sleep` is far finer than tokio's 1 ms timer wheel). A connection that is
//! free takes a permit and then the lowest unclaimed slot; when every connection is busy, permits
//! pile up and the queued slots are sent late, their latency growing with the wait.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// Fixed-rate send times for one run.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start: Instant,
    rate: f64,
    total: u64,
}

impl Schedule {
    /// `rate` requests per second for `duration`, starting at `start`. `rate` must be > 0.
    pub fn new(start: Instant, rate: f64, duration: Duration) -> Self {
        let total = (duration.as_secs_f64() * rate).floor().max(0.0) as u64;
        Self { start, rate, total }
    }

    /// How many requests the run sends.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// When request `k` is meant to go out. Computed from `k` (not by adding intervals), so
    /// rounding never accumulates: consecutive slots are 1/rate apart to the nanosecond.
    pub fn intended(&self, k: u64) -> Instant {
        let nanos = (k as f64 * 1e9 / self.rate).round();
        self.start + Duration::from_nanos(nanos as u64)
    }

    /// How many slots are due at `now` (intended time ≤ now), at most [`Schedule::total`].
    pub fn due_by(&self, now: Instant) -> u64 {
        let Some(elapsed) = now.checked_duration_since(self.start) else {
            return 0;
        };
        let mut due = (elapsed.as_secs_f64() * self.rate).floor() as u64 + 1;
        // Float rounding may be off by one around a slot boundary: settle it with `intended`.
        while due > 0 && self.intended(due - 1) > now {
            due -= 1;
        }
        while due < self.total && self.intended(due) <= now {
            due += 1;
        }
        due.min(self.total)
    }
}

/// Releases one permit per slot on `permits` as slots come due, then `extra` more so idle
/// workers wake up and see the run is over.
pub fn spawn_pacer(
    schedule: Schedule,
    permits: Arc<Semaphore>,
    extra: usize,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut released = 0u64;
        while released < schedule.total() {
            let now = Instant::now();
            let due = schedule.due_by(now);
            if due > released {
                permits.add_permits((due - released) as usize);
                released = due;
                continue;
            }
            let next = schedule.intended(released);
            std::thread::sleep(next.saturating_duration_since(now));
        }
        permits.add_permits(extra);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intended_times_are_strictly_spaced_by_one_over_rate() {
        let start = Instant::now();
        for rate in [1.0, 3.0, 1000.0, 2000.0, 7919.0, 100_000.0] {
            let s = Schedule::new(start, rate, Duration::from_secs(3));
            assert_eq!(s.total(), (3.0 * rate) as u64);
            assert_eq!(s.intended(0), start);
            let step = 1e9 / rate;
            for k in 0..s.total().min(50_000) {
                let gap = s.intended(k + 1) - s.intended(k);
                assert!(
                    gap > Duration::ZERO,
                    "rate {rate}: slots {k} and {} coincide",
                    k + 1
                );
                let err = (gap.as_nanos() as f64 - step).abs();
                assert!(
                    err <= 1.0,
                    "rate {rate}, slot {k}: gap {gap:?} vs {step} ns"
                );
            }
            // No drift: the last slot is exactly where k/rate puts it.
            let last = s.total() - 1;
            let expected = last as f64 * step;
            let got = (s.intended(last) - start).as_nanos() as f64;
            assert!((got - expected).abs() <= 1.0);
        }
    }

    #[test]
    fn due_by_counts_slots_up_to_now() {
        let start = Instant::now();
        let s = Schedule::new(start, 1000.0, Duration::from_secs(1));
        assert_eq!(s.due_by(start), 1);
        assert_eq!(s.due_by(start + Duration::from_micros(999)), 1);
        assert_eq!(s.due_by(start + Duration::from_millis(1)), 2);
        assert_eq!(s.due_by(start + Duration::from_micros(10_500)), 11);
        assert_eq!(s.due_by(start + Duration::from_secs(5)), 1000);
        for k in 0..1000 {
            assert_eq!(s.due_by(s.intended(k)), k + 1);
        }
    }

    #[test]
    fn pacer_releases_every_slot_then_the_extras() {
        let start = Instant::now();
        let s = Schedule::new(start, 20_000.0, Duration::from_millis(50));
        let permits = Arc::new(Semaphore::new(0));
        let pacer = spawn_pacer(s, permits.clone(), 4);
        pacer.join().expect("pacer thread");
        assert!(Instant::now() >= s.intended(s.total() - 1));
        assert_eq!(permits.available_permits() as u64, s.total() + 4);
    }
}
