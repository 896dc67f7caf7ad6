//! Client-side rate limit of one target instance: at most `per_second` sends in any 1 s window
//! and `per_minute` in any 60 s window (sliding windows, exact). A caller *reserves* the earliest
//! free send time under a mutex and then sleeps outside it, so concurrent `handle` calls are
//! queued in order instead of being refused; a caller whose slot is further away than `max_wait`
//! reserves nothing and is told how long to back off. The lock is never held while sleeping.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);

/// A sliding-window limiter shared by every `handle` call of one instance.
#[derive(Debug)]
pub struct RateLimiter {
    /// 0 disables the window.
    per_second: usize,
    /// 0 disables the window.
    per_minute: usize,
    /// Reserved send times, non-decreasing, none older than a minute before the newest call.
    slots: Mutex<VecDeque<Instant>>,
}

impl RateLimiter {
    pub fn new(per_second: u32, per_minute: u32) -> RateLimiter {
        RateLimiter {
            per_second: per_second as usize,
            per_minute: per_minute as usize,
            slots: Mutex::new(VecDeque::new()),
        }
    }

    /// Waits for a send slot. `Err(wait)`: none is free within `max_wait`; `wait` is when one
    /// would have been (nothing was reserved).
    pub fn acquire(&self, max_wait: Duration) -> Result<(), Duration> {
        let now = Instant::now();
        let at = self.reserve(now, max_wait)?;
        if at > now {
            std::thread::sleep(at - now);
        }
        Ok(())
    }

    /// Reserves the earliest send time `>= now` allowed by both windows, if within `max_wait`.
    /// Because every reservation is at least the previous one (each bound only grows), the queue
    /// stays sorted and `slots[len - n]` is the n-th newest send.
    pub fn reserve(&self, now: Instant, max_wait: Duration) -> Result<Instant, Duration> {
        // A poisoned lock only means another caller panicked between two lines of plain
        // arithmetic below; the queue is still a valid schedule.
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        while slots
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= MINUTE)
        {
            slots.pop_front();
        }
        // Never before the newest reservation: a caller whose `now` was read before another
        // caller reserved (it was descheduled between the clock and the lock) keeps the queue
        // sorted, which the windows' arithmetic relies on.
        let mut at = slots.back().map_or(now, |last| now.max(*last));
        for (limit, window) in [(self.per_second, SECOND), (self.per_minute, MINUTE)] {
            if limit > 0 && slots.len() >= limit {
                at = at.max(slots[slots.len() - limit] + window);
            }
        }
        let wait = at - now;
        if wait > max_wait {
            return Err(wait);
        }
        slots.push_back(at);
        // Keep the queue bounded: only the newest `max(limits)` entries can ever matter.
        let keep = self.per_second.max(self.per_minute).max(1);
        while slots.len() > keep {
            slots.pop_front();
        }
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_second_window() {
        let l = RateLimiter::new(2, 0);
        let t0 = Instant::now();
        let big = Duration::from_secs(100);
        assert_eq!(l.reserve(t0, big), Ok(t0));
        assert_eq!(l.reserve(t0, big), Ok(t0));
        assert_eq!(l.reserve(t0, big), Ok(t0 + SECOND));
        assert_eq!(l.reserve(t0, big), Ok(t0 + SECOND));
        assert_eq!(l.reserve(t0, big), Ok(t0 + 2 * SECOND));
        // Later callers that arrive after the queue drained go at once.
        let t9 = t0 + 9 * SECOND;
        assert_eq!(l.reserve(t9, big), Ok(t9));
    }

    #[test]
    fn per_minute_window_and_max_wait() {
        let l = RateLimiter::new(0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.reserve(t0, Duration::ZERO), Ok(t0));
        }
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(
            l.reserve(t1, Duration::from_secs(5)),
            Err(Duration::from_secs(50))
        );
        // The refused call reserved nothing.
        assert_eq!(l.reserve(t1, Duration::from_secs(50)), Ok(t0 + MINUTE));
    }

    #[test]
    fn both_windows_together() {
        let l = RateLimiter::new(5, 7);
        let t0 = Instant::now();
        let big = Duration::from_secs(1000);
        let got: Vec<Duration> = (0..12)
            .map(|_| l.reserve(t0, big).map(|t| t - t0).expect("within max wait"))
            .collect();
        let secs: Vec<u64> = got.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [0, 0, 0, 0, 0, 1, 1, 60, 60, 60, 60, 60]);
    }

    #[test]
    fn unlimited_when_both_zero() {
        let l = RateLimiter::new(0, 0);
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert_eq!(l.reserve(t0, Duration::ZERO), Ok(t0));
        }
    }
}
