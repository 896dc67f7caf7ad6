//! The chain of runs as the store names it in `id_runs`: opened and checked at start (stopping
//! at the first run missing, damaged or out of line), checked for `store check`, recorded after
//! a spill, and the files no chain uses removed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{params, Connection};

use super::builder::remove;
use super::runs_dir;
use crate::store::sqlite::runs::Run;
use crate::store::StoreError;

/// The runs the store names, in order, each opened and checked; the chain stops at the first
/// that is missing, damaged or out of line.
pub(super) fn open_chain(conn: &Connection, dir: &Path) -> Result<Vec<Arc<Run>>, StoreError> {
    let mut stmt = conn.prepare("SELECT file, lo, hi, digest FROM id_runs ORDER BY lo")?;
    let named = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut chain: Vec<Arc<Run>> = Vec::new();
    for (file, lo, hi, digest) in named {
        let opened = Run::open(&dir.join(&file)).and_then(|run| {
            let in_line = chain.last().is_none_or(|prev| prev.hi == lo);
            if run.lo != lo || run.hi != hi || run.digest != digest || !in_line {
                Err(StoreError(format!(
                    "id run {file}: not the one the store names"
                )))
            } else {
                Ok(run)
            }
        });
        match opened {
            Ok(run) => chain.push(Arc::new(run)),
            Err(e) => {
                tracing::warn!(error = %e, "event id run dropped; its ids are read into memory");
                break;
            }
        }
    }
    Ok(chain)
}

/// For `store check`: each run the store names is there, intact and in line, and holds every
/// event of its range (a finding here costs no correctness: the gateway drops such a run at its
/// next start and reads its ids back into memory).
pub(in crate::store::sqlite) fn check_runs(
    conn: &Connection,
    store: &Path,
) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare("SELECT file, lo, hi, digest FROM id_runs ORDER BY lo")?;
    let named = stmt
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    check_named(conn, store, named)
}

/// A run the store named when the list was read: `(file, lo, hi, digest)`.
type Named = (String, i64, i64, String);

/// [`check_runs`] for a list read earlier.
pub(super) fn check_named(
    conn: &Connection,
    store: &Path,
    named: Vec<Named>,
) -> Result<Vec<String>, StoreError> {
    let dir = runs_dir(store);
    let mut problems = Vec::new();
    let mut prev_hi = None;
    let mut missing =
        conn.prepare("SELECT hash, seq FROM event_ids WHERE seq > ?1 AND seq <= ?2")?;
    for (file, lo, hi, digest) in named {
        if prev_hi.is_some_and(|p| p != lo) {
            problems.push(format!("id run {file} does not follow the previous run"));
        }
        prev_hi = Some(hi);
        let run = match Run::open(&dir.join(&file)) {
            Ok(run) if run.digest == digest && (run.lo, run.hi) == (lo, hi) => run,
            Ok(_) => {
                problems.push(format!("id run {file} is not the one the store names"));
                continue;
            }
            Err(e) => {
                // The running gateway may have replaced the chain (and deleted this file) since
                // the list was read: only a run the store still names is a finding.
                let still_named: bool = conn.query_row(
                    "SELECT EXISTS (SELECT 1 FROM id_runs WHERE file = ?1)",
                    [&file],
                    |r| r.get(0),
                )?;
                if still_named {
                    problems.push(e.0);
                }
                continue;
            }
        };
        let mut absent = 0u64;
        let mut rows = missing.query(params![lo, hi])?;
        while let Some(row) = rows.next()? {
            let (hash, seq): (i64, i64) = (row.get(0)?, row.get(1)?);
            if !run.lookup(hash)?.contains(&seq) {
                absent += 1;
            }
        }
        if absent > 0 {
            problems.push(format!("id run {file} lacks {absent} events of its range"));
        }
    }
    Ok(problems)
}

/// Deletes the files in `dir` that are not runs of `chain` (left by a build or a merge that a
/// stop or crash interrupted, or replaced by a newer chain).
pub(super) fn remove_unused(dir: &Path, chain: &[Arc<Run>]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let unused: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|path| !chain.iter().any(|r| &r.path == path))
        .collect();
    remove(&unused);
}

/// Records `chain` in the store as the runs it uses (one transaction); with it, the files of
/// `old` it replaced, to delete. On failure `old` stays and the new files are the ones to go.
pub(super) fn install(
    conn: &mut Connection,
    old: &[Arc<Run>],
    chain: Vec<Arc<Run>>,
) -> (Result<Vec<Arc<Run>>, StoreError>, Vec<PathBuf>) {
    let recorded = (|| -> Result<(), StoreError> {
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM id_runs", [])?;
        let mut stmt =
            tx.prepare("INSERT INTO id_runs (file, lo, hi, level, count, digest) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
        for run in &chain {
            let file = run
                .path
                .file_name()
                .and_then(|f| f.to_str())
                .unwrap_or_default();
            stmt.execute(params![
                file,
                run.lo,
                run.hi,
                run.level,
                run.count as i64,
                run.digest
            ])?;
        }
        drop(stmt);
        if let Some(end) = chain.iter().map(|r| r.hi).max() {
            super::super::floors::raise_event_seq(&tx, end)?;
        }
        tx.commit()?;
        Ok(())
    })();
    let (keep, gone) = match &recorded {
        Ok(()) => (&chain[..], old),
        Err(_) => (old, &chain[..]),
    };
    let unused = gone
        .iter()
        .filter(|r| !keep.iter().any(|k| k.path == r.path))
        .map(|r| r.path.clone())
        .collect();
    (recorded.map(|()| chain), unused)
}
