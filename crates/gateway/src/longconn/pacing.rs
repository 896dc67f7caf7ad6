//! The floor under Lark's reconnect timing (`ReconnectNonce`, `ReconnectInterval`): however
//! small those are, one app's connection attempts keep a gap, which grows while every
//! connection made is lost at once (a server closing each one, a proxy in the way) and falls
//! back once a connection lasts.

use std::time::{Duration, Instant};

/// Two connection attempts (bootstrap and dial) of one app start at least this far apart.
pub const MIN_ATTEMPT_GAP: Duration = Duration::from_secs(1);
/// The most [`Pacing`] makes an app wait between two attempts on its own account.
pub const MAX_ATTEMPT_GAP: Duration = Duration::from_secs(64);
/// A connection lost within this long of being made is short-lived: from the second such in a
/// row, each doubles the gap before the next attempt.
pub const SHORT_LIVED: Duration = Duration::from_secs(10);
/// 1 s doubled six times: [`MAX_ATTEMPT_GAP`].
const MAX_DOUBLINGS: u32 = 6;

/// The floor under Lark's reconnect timing, per client: the time since the last attempt
/// began, and the gap the next one must keep from it ([`MIN_ATTEMPT_GAP`], doubled for each
/// connection in a row after the first that was lost within [`SHORT_LIVED`], at most [`MAX_ATTEMPT_GAP`]; back
/// to the minimum once a connection lasts).
#[derive(Debug)]
pub(super) struct Pacing {
    last_attempt: Option<Instant>,
    gap: Duration,
    /// Connections lost within [`SHORT_LIVED`], in a row.
    short_in_row: u32,
}

impl Pacing {
    pub(super) fn new() -> Pacing {
        Pacing {
            last_attempt: None,
            gap: MIN_ATTEMPT_GAP,
            short_in_row: 0,
        }
    }

    /// An attempt begins now.
    pub(super) fn attempt(&mut self) {
        self.last_attempt = Some(Instant::now());
    }

    /// A connection was lost after `lived`.
    pub(super) fn lost(&mut self, lived: Duration) {
        if lived >= SHORT_LIVED {
            self.short_in_row = 0;
            self.gap = MIN_ATTEMPT_GAP;
            return;
        }
        self.short_in_row = self.short_in_row.saturating_add(1);
        let doublings = (self.short_in_row - 1).min(MAX_DOUBLINGS);
        self.gap = (MIN_ATTEMPT_GAP * 2u32.pow(doublings)).min(MAX_ATTEMPT_GAP);
    }

    /// How long to wait before the next attempt when Lark's policy says `planned`.
    pub(super) fn wait(&self, planned: Duration) -> Duration {
        let floor = self
            .last_attempt
            .map_or(Duration::ZERO, |at| self.gap.saturating_sub(at.elapsed()));
        planned.max(floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_to_wait_before_the_first_attempt() {
        let p = Pacing::new();
        assert_eq!(p.wait(Duration::ZERO), Duration::ZERO);
        assert_eq!(p.wait(Duration::from_secs(3)), Duration::from_secs(3));
    }

    #[test]
    fn an_attempt_just_made_holds_the_next_one_back_by_the_gap() {
        let mut p = Pacing::new();
        p.attempt();
        let w = p.wait(Duration::ZERO);
        assert!(
            w > MIN_ATTEMPT_GAP - Duration::from_millis(100) && w <= MIN_ATTEMPT_GAP,
            "{w:?}"
        );
        // Lark's own wait, when longer, is kept.
        assert_eq!(p.wait(Duration::from_secs(5)), Duration::from_secs(5));
    }

    #[test]
    fn short_lived_connections_double_the_gap_up_to_its_cap_and_a_lasting_one_resets_it() {
        let mut p = Pacing::new();
        let mut gaps = Vec::new();
        for _ in 0..9 {
            p.lost(Duration::from_millis(5));
            gaps.push(p.gap.as_secs());
        }
        assert_eq!(gaps, [1, 2, 4, 8, 16, 32, 64, 64, 64]);
        assert_eq!(p.gap, MAX_ATTEMPT_GAP);
        p.lost(SHORT_LIVED - Duration::from_millis(1));
        assert_eq!(p.gap, MAX_ATTEMPT_GAP);
        p.lost(SHORT_LIVED);
        assert_eq!(p.gap, MIN_ATTEMPT_GAP);
    }

    #[test]
    fn the_gap_runs_from_the_last_attempt() {
        let mut p = Pacing::new();
        p.lost(Duration::ZERO);
        p.lost(Duration::ZERO);
        p.last_attempt = Instant::now().checked_sub(Duration::from_millis(1500));
        let w = p.wait(Duration::ZERO);
        assert!(
            w > Duration::from_millis(100) && w <= Duration::from_millis(500),
            "{w:?}"
        );
        p.last_attempt = Instant::now().checked_sub(Duration::from_secs(3));
        assert_eq!(p.wait(Duration::ZERO), Duration::ZERO);
    }
}
