//! Retry timing: exponential backoff with full jitter (AWS architecture blog's "Full Jitter"):
//! `delay = random(0 ..= min(max, initial * 2^(attempt-1)))`, never less than a plugin's
//! `retry_after` — which is itself capped at `max` (a remote `Retry-After` of a century must not
//! park a delivery forever).

use std::time::Duration;

use rand::Rng;

/// The delay before the attempt after `attempts_made` attempts.
pub fn delay(
    attempts_made: u32,
    initial: Duration,
    max: Duration,
    retry_after: Option<Duration>,
    rng: &mut impl Rng,
) -> Duration {
    let exp = attempts_made.saturating_sub(1).min(32);
    let cap = initial
        .checked_mul(1u32 << exp.min(31))
        .unwrap_or(max)
        .min(max);
    let cap_ms = cap.as_millis().min(u64::MAX as u128) as u64;
    let jittered = Duration::from_millis(rng.gen_range(0..=cap_ms));
    match retry_after {
        Some(at_least) => jittered.max(at_least.min(max)),
        None => jittered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn bounded_by_exponential_cap_and_max() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 1..40 {
            for _ in 0..50 {
                let d = delay(attempt, i, m, None, &mut rng);
                let cap = (i * 2u32.pow((attempt - 1).min(20))).min(m);
                assert!(d <= cap, "attempt {attempt}: {d:?} > {cap:?}");
            }
        }
    }

    #[test]
    fn honours_retry_after() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let d = delay(
            1,
            Duration::from_millis(10),
            Duration::from_secs(60),
            Some(Duration::from_secs(5)),
            &mut rng,
        );
        assert!(d >= Duration::from_secs(5));
    }

    #[test]
    fn retry_after_is_capped_at_max_backoff() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let max = Duration::from_secs(600);
        let century = Duration::from_secs(100 * 365 * 86_400);
        assert_eq!(
            delay(1, Duration::from_secs(1), max, Some(century), &mut rng),
            max
        );
        let d = delay(
            1,
            Duration::from_secs(1),
            max,
            Some(Duration::MAX),
            &mut rng,
        );
        assert_eq!(d, max);
    }

    #[test]
    fn jitter_spreads() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let ds: std::collections::HashSet<_> = (0..20)
            .map(|_| {
                delay(
                    5,
                    Duration::from_secs(1),
                    Duration::from_secs(60),
                    None,
                    &mut rng,
                )
            })
            .collect();
        assert!(ds.len() > 10);
    }
}
