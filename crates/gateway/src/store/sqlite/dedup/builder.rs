//! The builder thread's work for [`super::Dedup`]: a level-0 run from `event_ids`, merges of
//! equal levels (purged pairs left out), the oldest run dropped once retention emptied it, and
//! the deletion of files no chain uses.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{params, Connection};

use std::sync::atomic::{AtomicBool, Ordering};

use super::Built;
use crate::store::sqlite::runs::{Run, RunWriter};
use crate::store::StoreError;

pub(super) fn remove(paths: &[PathBuf]) {
    for path in paths {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove an unused id run");
        }
    }
}

/// The builder's job: a level-0 run of the rows in `(chain's hi, hi]`, then merges of equal
/// levels, then the oldest run dropped if retention emptied its range.
pub(super) fn build(
    conn: &Connection,
    dir: &Path,
    stop: &AtomicBool,
    mut chain: Vec<Arc<Run>>,
    hi: i64,
    pairs: &mut Vec<(i64, i64)>,
) -> Built {
    let lo = chain.last().map_or(0, |r| r.hi);
    let given: Vec<PathBuf> = chain.iter().map(|r| r.path.clone()).collect();
    pairs.clear();
    let mut stmt =
        conn.prepare_cached("SELECT hash, seq FROM event_ids WHERE seq > ?1 AND seq <= ?2")?;
    let mut rows = stmt.query(params![lo, hi])?;
    while let Some(row) = rows.next()? {
        pairs.push((row.get(0)?, row.get(1)?));
    }
    stopping(stop)?;
    pairs.sort_unstable();
    let mut out = RunWriter::create(dir, pairs.len())?;
    for (hash, seq) in pairs.iter() {
        out.push(*hash, *seq)?;
    }
    chain.push(Arc::new(out.finish(lo, hi, 0)?));
    while chain.len() >= 2 && chain[chain.len() - 2].level == chain[chain.len() - 1].level {
        let (Some(newer), Some(older)) = (chain.pop(), chain.pop()) else {
            break;
        };
        chain.push(Arc::new(merge(conn, dir, stop, &older, &newer)?));
        // A run made by this job and merged in it was never used: its file goes now (the
        // writer deletes the ones it used once the store names the new chain).
        let made: Vec<PathBuf> = [older, newer]
            .iter()
            .filter(|r| !given.contains(&r.path))
            .map(|r| r.path.clone())
            .collect();
        remove(&made);
    }
    if let Some(oldest) = chain.first() {
        let live: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM event_ids WHERE seq > ?1 AND seq <= ?2)",
            params![oldest.lo, oldest.hi],
            |r| r.get(0),
        )?;
        if !live && chain.len() > 1 {
            chain.remove(0);
        }
    }
    Ok(chain)
}

/// Two neighbouring runs as one of the next level, without the pairs whose event retention
/// removed since (read from `event_ids` as a bitmap over the range).
fn merge(
    conn: &Connection,
    dir: &Path,
    stop: &AtomicBool,
    older: &Run,
    newer: &Run,
) -> Result<Run, StoreError> {
    let (lo, hi) = (older.lo, newer.hi);
    let span = usize::try_from(hi - lo).map_err(|_| StoreError("id run: bad range".into()))?;
    let mut live = vec![0u64; span.div_ceil(64)];
    let mut stmt = conn.prepare_cached("SELECT seq FROM event_ids WHERE seq > ?1 AND seq <= ?2")?;
    let mut rows = stmt.query(params![lo, hi])?;
    while let Some(row) = rows.next()? {
        let at = (row.get::<_, i64>(0)? - lo - 1) as usize;
        live[at / 64] |= 1 << (at % 64);
    }
    let is_live = |seq: i64| {
        let at = (seq - lo - 1) as usize;
        seq > lo && seq <= hi && live[at / 64] & (1 << (at % 64)) != 0
    };
    let io = |e: std::io::Error| StoreError(format!("id run merge: {e}"));
    let mut out = RunWriter::create(dir, (older.count + newer.count) as usize)?;
    let mut a = older.pairs()?.peekable();
    let mut b = newer.pairs()?.peekable();
    let mut merged = 0u64;
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(Ok(x)), Some(Ok(y))) => {
                if x <= y {
                    a.next()
                } else {
                    b.next()
                }
            }
            (Some(_), _) => a.next(),
            (None, Some(_)) => b.next(),
            (None, None) => break,
        };
        let Some(pair) = next else { break };
        let (hash, seq) = pair.map_err(io)?;
        merged += 1;
        if merged.is_multiple_of(1 << 16) {
            stopping(stop)?;
        }
        if is_live(seq) {
            out.push(hash, seq)?;
        }
    }
    out.finish(lo, hi, older.level.max(newer.level) + 1)
}

/// An error once the store is closing: the build is abandoned (its file removed), so closing
/// does not wait for a long merge.
fn stopping(stop: &AtomicBool) -> Result<(), StoreError> {
    if stop.load(Ordering::Relaxed) {
        return Err(StoreError("the store is closing".into()));
    }
    Ok(())
}
