//! The builder thread's work for [`super::Dedup`]: a level-0 run from `event_ids`, merges of
//! equal levels (purged pairs left out), the oldest run dropped once retention emptied it, and
//! the deletion of files no chain uses, and freed pages handed back to the OS after a spill.
//!
//! The builder reads `event_ids` in statements of [`READ_CHUNK`] seqs, each a read transaction
//! of its own: while a reader holds one snapshot, no checkpoint can restart the WAL, which then
//! grows with every commit (measured: 14 → 41 MB while a large merge read its range in one
//! statement). A merge reads every seq of its range only when a count shows that retention
//! removed some.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{params, Connection};

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use super::{Built, Job};
use crate::store::sqlite::runs::{Run, RunWriter};
use crate::store::StoreError;

/// What the builder thread owns.
pub(super) struct Thread {
    /// Its own connection to the store, for reading `event_ids`.
    pub(super) reader: Connection,
    /// Where the runs live.
    pub(super) dir: PathBuf,
    /// Set when the store closes: a build under way gives up.
    pub(super) stop: Arc<AtomicBool>,
    /// Counts the [`Job::Trim`]s done.
    pub(super) trims: Arc<AtomicUsize>,
    /// The writer's spill size (the sort buffer is kept up to twice that).
    pub(super) spill_at: usize,
    pub(super) jobs: mpsc::Receiver<Job>,
    pub(super) done: mpsc::Sender<Built>,
}

/// Starts the builder thread (`store-ids`): it runs jobs in order until the writer's side of
/// `jobs` closes.
pub(super) fn spawn(t: Thread) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("store-ids".into())
        .spawn(move || {
            // Kept across spills: the same few MB each time, not allocated and freed again.
            let mut pairs = Vec::new();
            while let Ok(job) = t.jobs.recv() {
                match job {
                    Job::Build(chain, hi) => {
                        let built = build(&t.reader, &t.dir, &t.stop, chain, hi, &mut pairs);
                        keep_for_next(&mut pairs, t.spill_at);
                        if t.done.send(built).is_err() {
                            break;
                        }
                    }
                    Job::Remove(paths) => remove(&paths),
                    Job::Trim => {
                        let released = gateway_memtune::release_free_memory();
                        t.trims.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(released, "id runs: freed pages handed back");
                    }
                    #[cfg(test)]
                    Job::Sync(answer) => drop(answer.send(())),
                    #[cfg(test)]
                    Job::Panic => panic!("test: the id run builder dies"),
                }
            }
        })
}

/// The sort buffer after a build: kept for the next spill (the same few MB each time, not
/// allocated and freed again), but let go when much larger than a spill (one holding the ids of
/// runs dropped at start).
fn keep_for_next(pairs: &mut Vec<(i64, i64)>, spill_at: usize) {
    if pairs.capacity() > 2 * spill_at {
        *pairs = Vec::new();
    }
}

pub(super) fn remove(paths: &[PathBuf]) {
    for path in paths {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove an unused id run");
        }
    }
}

/// The builder's job: a level-0 run of the rows in `(chain's hi, hi]`, then merges of equal
/// levels, then the oldest run dropped if retention emptied its range. A build that fails
/// part-way leaves no file of its own behind (its runs already renamed into the folder are
/// removed): the writer keeps the ids in memory and tries again later, and each try that left
/// its runs would fill the disk a little more (on a full disk, for good).
pub(super) fn build(
    conn: &Connection,
    dir: &Path,
    stop: &AtomicBool,
    chain: Vec<Arc<Run>>,
    hi: i64,
    pairs: &mut Vec<(i64, i64)>,
) -> Built {
    let mut made = Vec::new();
    let built = build_runs(conn, dir, stop, chain, hi, pairs, &mut made);
    if built.is_err() {
        let left: Vec<PathBuf> = made.into_iter().filter(|p| p.exists()).collect();
        remove(&left);
    }
    built
}

/// [`build`]'s work; `made` gets the path of every run it renames into the folder.
fn build_runs(
    conn: &Connection,
    dir: &Path,
    stop: &AtomicBool,
    mut chain: Vec<Arc<Run>>,
    hi: i64,
    pairs: &mut Vec<(i64, i64)>,
    made: &mut Vec<PathBuf>,
) -> Built {
    let lo = chain.last().map_or(0, |r| r.hi);
    let given: Vec<PathBuf> = chain.iter().map(|r| r.path.clone()).collect();
    pairs.clear();
    let mut stmt =
        conn.prepare_cached("SELECT hash, seq FROM event_ids WHERE seq > ?1 AND seq <= ?2")?;
    for (a, b) in chunks(lo, hi) {
        let mut rows = stmt.query(params![a, b])?;
        while let Some(row) = rows.next()? {
            pairs.push((row.get(0)?, row.get(1)?));
        }
        drop(rows);
        stopping(stop)?;
    }
    pairs.sort_unstable();
    let mut out = RunWriter::create(dir, pairs.len())?;
    for (hash, seq) in pairs.iter() {
        out.push(*hash, *seq)?;
    }
    let run = out.finish(lo, hi, 0)?;
    made.push(run.path.clone());
    chain.push(Arc::new(run));
    while chain.len() >= 2 && chain[chain.len() - 2].level == chain[chain.len() - 1].level {
        let (Some(newer), Some(older)) = (chain.pop(), chain.pop()) else {
            break;
        };
        let run = merge(conn, dir, stop, &older, &newer)?;
        made.push(run.path.clone());
        chain.push(Arc::new(run));
        // A run made by this job and merged in it was never used: its file goes now (the
        // writer deletes the ones it used once the store names the new chain).
        let unused: Vec<PathBuf> = [older, newer]
            .iter()
            .filter(|r| !given.contains(&r.path))
            .map(|r| r.path.clone())
            .collect();
        remove(&unused);
    }
    if let Some(oldest) = chain.first() {
        let live: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM event_ids WHERE seq > ?1 AND seq <= ?2)",
            params![oldest.lo, oldest.hi],
            |r| r.get(0),
        )?;
        // The last run stays even when emptied: the chain's end is where the next build
        // starts (with no run, back at the first seq).
        if !live && chain.len() > 1 {
            chain.remove(0);
        }
    }
    Ok(chain)
}

/// Tests: merges into this folder fail (a full disk, a read error).
#[cfg(test)]
pub(in crate::store::sqlite) static FAIL_MERGES_IN: std::sync::Mutex<Option<PathBuf>> =
    std::sync::Mutex::new(None);

/// Two neighbouring runs as one of the next level, without the pairs whose event retention
/// removed since (read from `event_ids` as a bitmap over the range).
fn merge(
    conn: &Connection,
    dir: &Path,
    stop: &AtomicBool,
    older: &Run,
    newer: &Run,
) -> Result<Run, StoreError> {
    #[cfg(test)]
    if FAIL_MERGES_IN
        .lock()
        .is_ok_and(|d| d.as_deref() == Some(dir))
    {
        return Err(StoreError("test: the merge fails".into()));
    }
    let (lo, hi) = (older.lo, newer.hi);
    let live = live_seqs(conn, lo, hi, older.count + newer.count, stop)?;
    let is_live = |seq: i64| {
        let at = (seq - lo - 1) as usize;
        seq > lo
            && seq <= hi
            && live
                .as_ref()
                .is_none_or(|live| live[at / 64] & (1 << (at % 64)) != 0)
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

/// The seqs of `(lo, hi]` still in `event_ids`, as a bitmap over the range; `None` when all
/// `pairs` the two runs hold still are (no event of the range was purged since they were
/// built: `event_ids` never gains a seq inside a run's range, so an equal count means the same
/// rows), which spares reading every seq.
fn live_seqs(
    conn: &Connection,
    lo: i64,
    hi: i64,
    pairs: u64,
    stop: &AtomicBool,
) -> Result<Option<Vec<u64>>, StoreError> {
    let mut rows = 0i64;
    for (a, b) in chunks(lo, hi) {
        rows += conn
            .prepare_cached("SELECT count(*) FROM event_ids WHERE seq > ?1 AND seq <= ?2")?
            .query_row(params![a, b], |r| r.get::<_, i64>(0))?;
        stopping(stop)?;
    }
    if u64::try_from(rows).is_ok_and(|rows| rows == pairs) {
        return Ok(None);
    }
    let span = usize::try_from(hi - lo).map_err(|_| StoreError("id run: bad range".into()))?;
    let mut live = vec![0u64; span.div_ceil(64)];
    let mut stmt = conn.prepare_cached("SELECT seq FROM event_ids WHERE seq > ?1 AND seq <= ?2")?;
    for (a, b) in chunks(lo, hi) {
        let mut rows = stmt.query(params![a, b])?;
        while let Some(row) = rows.next()? {
            let at = (row.get::<_, i64>(0)? - lo - 1) as usize;
            live[at / 64] |= 1 << (at % 64);
        }
        drop(rows);
        stopping(stop)?;
    }
    Ok(Some(live))
}

/// Seqs read from `event_ids` per statement (a read transaction each: see the module docs).
const READ_CHUNK: i64 = 1 << 16;

/// `(lo, hi]` cut into ranges of [`READ_CHUNK`] seqs.
fn chunks(lo: i64, hi: i64) -> impl Iterator<Item = (i64, i64)> {
    let mut at = lo;
    std::iter::from_fn(move || {
        (at < hi).then(|| {
            let next = at.saturating_add(READ_CHUNK).min(hi);
            let range = (at, next);
            at = next;
            range
        })
    })
}

/// An error once the store is closing: the build is abandoned (its file removed), so closing
/// does not wait for a long merge.
fn stopping(stop: &AtomicBool) -> Result<(), StoreError> {
    if stop.load(Ordering::Relaxed) {
        return Err(StoreError("the store is closing".into()));
    }
    Ok(())
}

#[cfg(test)]
#[path = "builder_tests.rs"]
mod tests;
