//! A rate limit for per-request log lines: the ingress's "request refused" (a scanner sending
//! thousands of bad requests) and "request failed" lines, the intake's "store failed" (a
//! full disk fails every event while Lark keeps sending), the webhook listener's "connection
//! limit reached" (a peer holding the slots and connecting in a loop) and its per-client
//! limit's line, both stores' "store
//! transaction failed", the long connection's "message refused" and the answered
//! url_verification challenges (unsigned: anyone who saw one can send it again), and the
//! engine's line for each delivery of a plugin no longer configured (its whole backlog at each
//! sweep) must not flood the log. At most
//! [`PER_SECOND`] lines of each are logged per second; the rest are counted, and the next
//! logged line says how many were skipped. The request metrics count every request regardless.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Refusal lines logged per second at most.
pub const PER_SECOND: u32 = 10;

/// The limiter's state: the current one-second window and what it let through.
#[derive(Debug)]
pub struct RefusalLog {
    window: Mutex<(Instant, u32)>,
    skipped: AtomicU64,
}

impl Default for RefusalLog {
    fn default() -> Self {
        RefusalLog {
            window: Mutex::new((Instant::now(), 0)),
            skipped: AtomicU64::new(0),
        }
    }
}

impl RefusalLog {
    /// `Some(skipped since the last logged line)` when this refusal may be logged, `None` when
    /// it must be skipped (it is counted).
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let Ok(mut w) = self.window.lock() else {
            return Some(0);
        };
        if now.duration_since(w.0).as_secs() >= 1 {
            *w = (now, 0);
        }
        if w.1 >= PER_SECOND {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        w.1 += 1;
        Some(self.skipped.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn at_most_per_second_then_the_skipped_count_is_reported() {
        let log = RefusalLog::default();
        let t0 = Instant::now();
        let admitted = (0..100).filter(|_| log.admit(t0).is_some()).count();
        assert_eq!(admitted, PER_SECOND as usize);
        assert_eq!(log.admit(t0 + Duration::from_millis(1100)), Some(90));
        assert_eq!(log.admit(t0 + Duration::from_millis(1100)), Some(0));
    }
}
