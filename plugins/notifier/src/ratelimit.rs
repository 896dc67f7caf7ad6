//! Client-side rate limit of one target: at most `per_second` sends in any 1 s window and
//! `per_minute` in any 60 s window (sliding windows, exact). A caller *reserves* the earliest
//! free send time under a mutex and then sleeps outside it, so concurrent `handle` calls are
//! queued in order instead of being refused; a caller whose slot is further away than `max_wait`
//! reserves nothing and is told how long to back off. The lock is never held while sleeping.
//!
//! The send times are kept per target URL for the whole process ([`RateLimiter::for_target`]):
//! instances pointed at one target count against the same windows, each with its own limits
//! (an instance with no limit sends at once, never queued behind a limited one's reservations,
//! and is counted by them),
//! and so does the instance a reload creates in place of one whose config changed (a window
//! that started empty at each reload let a template edit double the sends to the bot).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);

/// The reserved send times of one target, non-decreasing, none older than a minute before the
/// newest call; at most `keep` of them (the largest limit of any limiter that used it: only
/// that many of the newest can ever matter).
#[derive(Debug, Default)]
struct Sends {
    slots: VecDeque<Instant>,
    keep: usize,
}

/// Every target's sends in this process, by URL. An entry is never removed: one per target
/// URL configured since the process started, each at most `keep` instants.
fn targets() -> &'static Mutex<HashMap<String, Arc<Mutex<Sends>>>> {
    static TARGETS: OnceLock<Mutex<HashMap<String, Arc<Mutex<Sends>>>>> = OnceLock::new();
    TARGETS.get_or_init(Default::default)
}

/// A sliding-window limiter shared by every `handle` call of one instance.
#[derive(Debug)]
pub struct RateLimiter {
    /// 0 disables the window.
    per_second: usize,
    /// 0 disables the window.
    per_minute: usize,
    sends: Arc<Mutex<Sends>>,
}

impl RateLimiter {
    /// A limiter with send times of its own.
    #[cfg(test)]
    pub fn new(per_second: u32, per_minute: u32) -> RateLimiter {
        Self::over(Arc::default(), per_second, per_minute)
    }

    /// A limiter over the send times this process keeps for `target` (see the module docs).
    pub fn for_target(target: &str, per_second: u32, per_minute: u32) -> RateLimiter {
        // A poisoned lock only means another thread panicked while inserting: the map is
        // still a valid map.
        let sends = targets()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(target.to_owned())
            .or_default()
            .clone();
        Self::over(sends, per_second, per_minute)
    }

    fn over(sends: Arc<Mutex<Sends>>, per_second: u32, per_minute: u32) -> RateLimiter {
        // Kept from now on: the send times this limiter's windows need (the ones another
        // instance on the target makes before this one's first send included, and a reload's
        // higher limit too).
        {
            let mut kept = sends.lock().unwrap_or_else(|p| p.into_inner());
            kept.keep = kept.keep.max(per_second.max(per_minute) as usize);
        }
        RateLimiter {
            per_second: per_second as usize,
            per_minute: per_minute as usize,
            sends,
        }
    }

    /// Waits for a send slot. `Err(wait)`: none is free within `max_wait`; `wait` is when one
    /// would have been (nothing was reserved).
    pub fn acquire(&self, max_wait: Duration) -> Result<(), Duration> {
        let now = Instant::now();
        let at = self.reserve(now, max_wait)?;
        // Zero when the slot is now: no sleep.
        std::thread::sleep(at.saturating_duration_since(now));
        Ok(())
    }

    /// Reserves the earliest send time `>= now` allowed by both windows, if within `max_wait`.
    /// Because every reservation is at least the previous one (each bound only grows), the queue
    /// stays sorted and `slots[len - n]` is the n-th newest send.
    pub fn reserve(&self, now: Instant, max_wait: Duration) -> Result<Instant, Duration> {
        // A poisoned lock only means another caller panicked between two lines of plain
        // arithmetic below; the queue is still a valid schedule.
        let mut sends = self.sends.lock().unwrap_or_else(|p| p.into_inner());
        let keep = self.per_second.max(self.per_minute).max(sends.keep).max(1);
        sends.keep = keep;
        let slots = &mut sends.slots;
        while slots
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= MINUTE)
        {
            slots.pop_front();
        }
        if self.per_second == 0 && self.per_minute == 0 {
            // No limit of its own: it sends now, never queued behind another instance's
            // reservations, and its send is kept in order among them, so the limited
            // instances on this target count it.
            let at = slots.partition_point(|t| *t <= now);
            slots.insert(at, now);
            while slots.len() > keep {
                slots.pop_front();
            }
            return Ok(now);
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
        while slots.len() > keep {
            slots.pop_front();
        }
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends an unlimited instance makes before a limited one on the same target first sends
    /// are all counted by it (its limit is kept from its making, not from its first send).
    #[test]
    fn a_limited_instance_counts_sends_made_before_its_first() {
        let target = "https://bot.example/counted-before-its-first";
        let limited = RateLimiter::for_target(target, 0, 3);
        let unlimited = RateLimiter::for_target(target, 0, 0);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(unlimited.reserve(t0, Duration::ZERO), Ok(t0));
        }
        assert_eq!(limited.reserve(t0, Duration::ZERO), Err(MINUTE));
    }

    #[test]
    fn limiters_for_one_target_share_its_sends_each_with_its_own_limits() {
        let target = "http://127.0.0.1:1/shared-window-test";
        let (a, b) = (
            RateLimiter::for_target(target, 0, 3),
            RateLimiter::for_target(target, 0, 10),
        );
        let other = RateLimiter::for_target("http://127.0.0.1:1/another", 0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(a.reserve(t0, Duration::ZERO), Ok(t0));
        }
        // A replacement with the same limits (a reload) finds the minute spent.
        let again = RateLimiter::for_target(target, 0, 3);
        assert_eq!(again.reserve(t0, Duration::ZERO), Err(MINUTE));
        // A larger limit counts the three sends too, and its own keep holds them for `a`.
        for _ in 0..7 {
            assert_eq!(b.reserve(t0, Duration::ZERO), Ok(t0));
        }
        assert_eq!(b.reserve(t0, Duration::ZERO), Err(MINUTE));
        assert_eq!(a.reserve(t0, Duration::ZERO), Err(MINUTE));
        // Another target's window is its own.
        assert_eq!(other.reserve(t0, Duration::ZERO), Ok(t0));
    }

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

    /// An instance without limits sharing a target with a limited one (its queue reserved
    /// seconds ahead) sends at once; the limited one counts that send.
    #[test]
    fn an_unlimited_instance_does_not_wait_behind_a_limited_one() {
        let target = "http://127.0.0.1:1/unlimited-beside-limited";
        let limited = RateLimiter::for_target(target, 1, 0);
        let unlimited = RateLimiter::for_target(target, 0, 0);
        let t0 = Instant::now();
        let big = Duration::from_secs(100);
        for n in 0..3 {
            assert_eq!(limited.reserve(t0, big), Ok(t0 + n * SECOND));
        }
        assert_eq!(unlimited.reserve(t0, Duration::ZERO), Ok(t0));
        assert_eq!(limited.reserve(t0, big), Ok(t0 + 3 * SECOND));
        // Past the limited queue's reservations, counted in the limited one's window.
        let t5 = t0 + 5 * SECOND;
        assert_eq!(unlimited.reserve(t5, Duration::ZERO), Ok(t5));
        assert_eq!(limited.reserve(t5, big), Ok(t5 + SECOND));
    }

    #[test]
    fn unlimited_when_both_zero() {
        let l = RateLimiter::new(0, 0);
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert_eq!(l.reserve(t0, Duration::ZERO), Ok(t0));
        }
        // Its sends are kept for the limited instances, no more of them than any limit needs.
        let kept = l.sends.lock().map(|s| s.slots.len()).unwrap_or_default();
        assert_eq!(kept, 1);
    }
}
