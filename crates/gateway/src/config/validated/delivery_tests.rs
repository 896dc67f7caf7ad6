//! `[delivery]` limits: each bounded at both ends, the bounds themselves valid.

use super::tests::{load, problems, MINIMAL};

/// The stores count attempts and crashes in 32-bit signed columns: a larger limit wrapped
/// negative there and dead-lettered every crash at once.
#[test]
fn attempt_and_crash_limits_are_bounded() {
    for key in ["max_attempts", "max_crashes"] {
        let p = problems(&format!("{MINIMAL}[delivery]\n{key} = 4294967295\n"));
        assert_eq!(
            p,
            [format!("delivery.{key}: must be at most 100000")],
            "{key}"
        );
        load(&format!("{MINIMAL}[delivery]\n{key} = 100000\n"), &[]).expect("the most is valid");
    }
}

/// `max_batch` runs from 1 to 10,000, both ends included; outside them, the key is refused.
#[test]
fn the_batch_size_is_bounded_at_both_ends() {
    for (n, says) in [(0, "must be at least 1"), (10_001, "must be at most 10000")] {
        let p = problems(&format!("{MINIMAL}[delivery]\nmax_batch = {n}\n"));
        assert_eq!(p, [format!("delivery.max_batch: {says}")], "{n}");
    }
    for n in [1, 10_000] {
        let c = load(&format!("{MINIMAL}[delivery]\nmax_batch = {n}\n"), &[]).expect("valid");
        assert_eq!(c.delivery.max_batch, n);
    }
}
