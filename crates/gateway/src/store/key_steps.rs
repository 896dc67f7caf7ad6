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

/// The SQL of a key's window number for windows of `size` keys, `size` the statement's
/// parameter written `param` (`?2`, `$2`): floor division, the same in SQLite and PostgreSQL
/// (both divide integers toward zero), so a negative key (a hand edit) is in its window too.
pub(crate) fn window_sql(param: &str) -> String {
    format!("CASE WHEN key >= 0 THEN key / {param} ELSE (key + 1) / {param} - 1 END")
}

/// The key ranges of the windows numbered `windows` (see [`window_sql`]), `size` keys each
/// (inclusive bounds, none past the ends of `i64`), in the order given.
pub(crate) fn windows(windows: &[i64], size: i64) -> Vec<(i64, i64)> {
    let size = size.max(1);
    windows
        .iter()
        .map(|w| {
            let lo = w.saturating_mul(size);
            (lo, lo.saturating_add(size - 1))
        })
        .collect()
}

/// Runs `step` over the key ranges `ranges` (the windows that hold something to write: see
/// [`windows`]), in order, `pause` apart; returns the sum of their counts. A step that fails
/// ends the run with its error, saying how many the steps before it did (`what` names the write
/// there and in the log).
pub(crate) async fn run<F, Fut>(
    what: &'static str,
    ranges: Vec<(i64, i64)>,
    pause: Option<Duration>,
    mut step: F,
) -> Result<u64, StoreError>
where
    F: FnMut((i64, i64)) -> Fut,
    Fut: Future<Output = Result<u64, StoreError>>,
{
    let mut n = 0;
    for (i, keys) in ranges.into_iter().enumerate() {
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
        let n = run("replay", ranges((5, 16), 4).collect(), None, |r| {
            seen.push(r);
            async move { Ok((r.1 - r.0 + 1) as u64) }
        })
        .await;
        assert_eq!(n.expect("run"), 12);
        assert_eq!(seen, [(5, 8), (9, 12), (13, 16)]);
        let mut calls = 0;
        let failed = run("purge", ranges((1, 10), 3).collect(), None, |_| {
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
        let last = run(
            "purge",
            ranges((i64::MAX - 1, i64::MAX), 5).collect(),
            None,
            |_| async { Ok(2) },
        )
        .await;
        assert_eq!(last.expect("last"), 2);
    }

    /// A key's window (the SQL's floor division, done here as SQLite does it) holds the key,
    /// negative keys and the ends of `i64` included.
    #[test]
    fn a_keys_window_holds_it() {
        let c = rusqlite::Connection::open_in_memory().expect("sqlite");
        let size = 20_000;
        for key in [
            0,
            1,
            19_999,
            20_000,
            123_456_789,
            -1,
            -20_000,
            -20_001,
            i64::MAX,
            i64::MIN,
        ] {
            let w: i64 = c
                .query_row(
                    &format!("SELECT {}", window_sql("?2")).replace("key", "?1"),
                    [key, size],
                    |r| r.get(0),
                )
                .expect("window");
            let [(lo, hi)] = windows(&[w], size)[..] else {
                panic!("one window");
            };
            assert!(lo <= key && key <= hi, "{key} in window {w}: {lo}..={hi}");
        }
        assert_eq!(windows(&[0, 5], 10), [(0, 9), (50, 59)]);
    }
}
