//! A write over a range of delivery keys done in steps (every dead letter replayed or purged,
//! the orphan rule over a removed plugin's backlog), shared by both stores: each step is its
//! own short write, so none holds a lock (SQLite's write lock, PostgreSQL's row locks) or a
//! deadline for long, however many rows there are.

use std::future::Future;
use std::time::Duration;

use super::StoreError;

/// The keys `lo..=hi` in ranges of `size` (inclusive bounds), in order; none past `i64::MAX`.
pub(crate) fn ranges((lo, hi): (i64, i64), size: i64) -> impl Iterator<Item = (i64, i64)> {
    let mut next = (lo <= hi).then_some(lo);
    std::iter::from_fn(move || {
        let from = next?;
        let to = from.saturating_add(size.max(1) - 1).min(hi);
        next = to.checked_add(1).filter(|n| *n <= hi);
        Some((from, to))
    })
}

/// The orphan rule (`Store::dead_letter_plugin`) over the keys `range` in steps of `size`,
/// `step` making one range's dead letters. A step that fails stops the rest: an error when no
/// step went in, else the dead letters of those that did (they stand, committed: the caller's
/// put-back needs them) with the error.
pub(crate) async fn orphan_steps<F, Fut>(
    range: (i64, i64),
    size: i64,
    mut step: F,
) -> Result<super::OrphanRun, StoreError>
where
    F: FnMut((i64, i64)) -> Fut,
    Fut: Future<Output = Result<Vec<super::Orphaned>, StoreError>>,
{
    let mut orphans = Vec::new();
    for keys in ranges(range, size) {
        match step(keys).await {
            Ok(rows) => orphans.extend(rows),
            Err(e) => {
                let e = StoreError(format!("{} (after {} of them)", e.0, orphans.len()));
                if orphans.is_empty() {
                    return Err(e);
                }
                return Ok(super::OrphanRun {
                    orphans,
                    stopped: Some(e),
                });
            }
        }
    }
    Ok(super::OrphanRun {
        orphans,
        stopped: None,
    })
}

/// Runs `step` over the keys `lo..=hi` in ranges of `size`, in order, `pause` apart; returns
/// the sum of their counts. A step that fails ends the run with its error, saying how many the
/// steps before it did (`what` names the write there and in the log).
pub(crate) async fn run<F, Fut>(
    what: &'static str,
    (lo, hi): (i64, i64),
    size: i64,
    pause: Option<Duration>,
    mut step: F,
) -> Result<u64, StoreError>
where
    F: FnMut((i64, i64)) -> Fut,
    Fut: Future<Output = Result<u64, StoreError>>,
{
    let mut n = 0;
    for (i, keys) in ranges((lo, hi), size).enumerate() {
        if i > 0 {
            if let Some(pause) = pause {
                tokio::time::sleep(pause).await;
            }
        }
        match step(keys).await {
            Ok(done) => n += done,
            Err(e) => {
                tracing::warn!(deliveries = n, error = %e, "{what} of every dead letter stopped part-way");
                // `e.0`: its own `Display` would say "store: " again.
                return Err(StoreError(format!(
                    "{} (the {what} of every dead letter stopped after {n} of them: \
                     run it again for the rest)",
                    e.0
                )));
            }
        }
    }
    tracing::info!(deliveries = n, "{what} of dead letters written");
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_key_once_in_order_and_a_failure_says_how_far_it_got() {
        let mut seen = Vec::new();
        let n = run("replay", (5, 16), 4, None, |r| {
            seen.push(r);
            async move { Ok((r.1 - r.0 + 1) as u64) }
        })
        .await;
        assert_eq!(n.expect("run"), 12);
        assert_eq!(seen, [(5, 8), (9, 12), (13, 16)]);
        let mut calls = 0;
        let failed = run("purge", (1, 10), 3, None, |_| {
            calls += 1;
            let answer = if calls == 3 {
                Err(StoreError("disk full".into()))
            } else {
                Ok(3)
            };
            async move { answer }
        })
        .await;
        let e = failed.expect_err("the third step failed");
        assert!(
            e.0.starts_with("disk full") && e.0.contains("after 6 of them"),
            "{e}"
        );
        assert_eq!(ranges((3, 2), 4).count(), 0, "an empty range");
        assert_eq!(ranges((7, 7), 4).collect::<Vec<_>>(), [(7, 7)]);
        // A range at the very end of the keys ends without overflowing.
        let last = run("purge", (i64::MAX - 1, i64::MAX), 5, None, |_| async {
            Ok(2)
        })
        .await;
        assert_eq!(last.expect("last"), 2);
    }
}
