//! The embedded store's replay write: which deliveries go back to the queue (a new generation,
//! attempts from zero), with the operator's rules kept in the write itself: a delivery that
//! succeeded, or whose call runs (marked started), only when forced; a dead-letter pick only
//! if it is still a dead letter. And the steps a write over every dead letter (a replay, a
//! purge) goes in, so that none holds the write lock for long.

use rusqlite::{params, OptionalExtension};

/// Which deliveries `replay` puts back in the queue.
#[derive(Debug, Clone)]
pub enum ReplaySelector {
    /// These events' deliveries (all, or one plugin's): pending and dead ones, and, only with
    /// `force` (`--force`), done ones and those whose call is running (marked started, no
    /// outcome yet: replayed, the call's own success would be refused and the plugin run
    /// again); with `dead_only`, dead letters only (a pick made on the dead letters page). The
    /// rule holds in the write itself, so a delivery that succeeded, started or was replayed
    /// after the caller listed it is not run again.
    Events {
        ids: Vec<String>,
        plugin: Option<String>,
        force: bool,
        dead_only: bool,
    },
    /// Every dead letter (optionally one plugin's); with `force`, those whose call is running
    /// too (a call hung past its timeout: the dead letter its timeout made).
    DeadLetters { plugin: Option<String>, force: bool },
    /// These deliveries (key, generation), each only if it is still the dead letter the orphan
    /// rule made (that generation, `reason` its error) and no call of it runs: the orphan
    /// rule's put-back after a reload configured the name again.
    Orphans {
        keys: Vec<(i64, u32)>,
        reason: String,
    },
}

use super::dedup::Dedup;
use super::ids::id_hash;
use super::writer::stored_seq;
use super::{Reply, Write};
use crate::store::StoreError;
use crate::store::StoreFuture;

/// [`crate::store::Store::replay`], inside the writer's transaction: how many deliveries went
/// back to the queue.
pub(super) fn apply(
    tx: &rusqlite::Transaction<'_>,
    sel: &ReplaySelector,
    now: i64,
    index: Option<&Dedup>,
) -> Result<u64, StoreError> {
    let mut n = 0;
    match sel {
        ReplaySelector::Events {
            ids,
            plugin,
            force,
            dead_only,
        } => {
            // A replayed success's history entry becomes a row before the row starts over.
            let mut keep = if *force && !*dead_only {
                Some(tx.prepare_cached(
                    "INSERT INTO attempts (delivery_key, generation, attempt, outcome, reason,
                         started_at, duration_ms, recorded_at)
                     SELECT key, generation, attempts, done_outcome, NULL, done_started_at,
                         done_duration_ms, updated_at
                     FROM deliveries
                     WHERE event_seq = ?1 AND (?2 IS NULL OR plugin = ?2)
                       AND state = 'done' AND done_outcome IS NOT NULL",
                )?)
            } else {
                None
            };
            let mut stmt = tx.prepare_cached(
                "UPDATE deliveries SET state = 'pending', attempts = 0, generation = generation + 1,
                     started = 0, crashes = 0,
                     next_at = ?3, updated_at = ?3,
                     done_outcome = NULL, done_started_at = NULL, done_duration_ms = NULL
                 WHERE event_seq = ?1 AND (?2 IS NULL OR plugin = ?2)
                   AND (?4 OR (state <> 'done' AND started = 0)) AND (NOT ?5 OR state = 'dead')",
            )?;
            for seq in seqs_of(tx, ids, index)? {
                if let Some(keep) = keep.as_mut() {
                    keep.execute(params![seq, plugin])?;
                }
                n += stmt.execute(params![seq, plugin, now, force, dead_only])? as u64;
            }
        }
        ReplaySelector::Orphans { keys, reason } => {
            let mut stmt = tx.prepare_cached(
                "UPDATE deliveries SET state = 'pending', attempts = 0, generation = generation + 1,
                     started = 0, crashes = 0, next_at = ?4, updated_at = ?4
                 WHERE key = ?1 AND generation = ?2 AND state = 'dead' AND started = 0
                   AND last_error = ?3",
            )?;
            for (key, generation) in keys {
                n += stmt.execute(params![key, generation, reason, now])? as u64;
            }
        }
        ReplaySelector::DeadLetters { plugin, force } => {
            // `Store::replay` writes these in steps (`dead_range`); sent whole, it is one step
            // over every key.
            n = dead_range(
                tx,
                plugin.as_deref(),
                *force,
                (i64::MIN, i64::MAX),
                now,
                now,
            )?;
        }
    }
    Ok(n)
}

/// The most delivery keys one step of a replay of every dead letter covers (one write: a
/// range scan of the table's keys, so bounded whatever the share of dead letters in it).
pub(super) const DEAD_LETTER_STEP: i64 = if cfg!(test) { 3 } else { 20_000 };

/// Between two steps of an operator command (another process than the gateway's): a gateway
/// waiting for the write lock polls for it in SQLite's busy handler, at most 100 ms apart; steps
/// back to back freed the lock only for moments it rarely hit (measured: a gateway's accept
/// waited 831 ms, against 276 ms for the same steps in its own process, with 1 s before a 503).
pub(super) const OPERATOR_STEP_PAUSE: std::time::Duration = std::time::Duration::from_millis(120);

/// The key ranges of [`DEAD_LETTER_STEP`] keys that hold a dead letter (of `plugin`), in order,
/// read through the dead letters' own index (partial: `state = 'dead'`): a write over every dead letter steps through these
/// only, not through every key between the first dead letter and the last (dead letters kept
/// for weeks among millions of deliveries: thousands of empty steps, 120 ms apart from the
/// command line).
pub(super) fn dead_windows(
    c: &rusqlite::Connection,
    plugin: Option<&str>,
) -> Result<Vec<(i64, i64)>, StoreError> {
    let sql = format!(
        "SELECT DISTINCT {} AS w FROM deliveries
         WHERE state = 'dead' AND (?1 IS NULL OR plugin = ?1) ORDER BY w",
        crate::store::key_steps::window_sql("?2")
    );
    let mut stmt = c.prepare(&sql)?;
    let numbers = stmt
        .query_map(params![plugin, DEAD_LETTER_STEP], |r| r.get::<_, i64>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(crate::store::key_steps::windows(&numbers, DEAD_LETTER_STEP))
}

/// The lowest and highest key of the pending deliveries of `plugin`, if any: the range the
/// orphan rule (`Store::dead_letter_plugin`) goes through in steps.
pub(super) fn pending_key_range(
    c: &rusqlite::Connection,
    plugin: &str,
) -> Result<Option<(i64, i64)>, StoreError> {
    let (lo, hi): (Option<i64>, Option<i64>) = c.query_row(
        "SELECT MIN(key), MAX(key) FROM deliveries WHERE state = 'pending' AND plugin = ?1",
        [plugin],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(lo.zip(hi))
}

/// One step of a replay of every dead letter: those with keys in `keys` (inclusive) that were
/// dead letters when the replay was `asked` for (a delivery that died since, to the
/// millisecond, is left for the next replay, as on PostgreSQL), with
/// [`ReplaySelector::DeadLetters`]' rule.
pub(super) fn dead_range(
    tx: &rusqlite::Transaction<'_>,
    plugin: Option<&str>,
    force: bool,
    (lo, hi): (i64, i64),
    asked: i64,
    now: i64,
) -> Result<u64, StoreError> {
    Ok(tx.execute(
        "UPDATE deliveries SET state = 'pending', attempts = 0, generation = generation + 1,
             started = 0, crashes = 0,
             next_at = ?2, updated_at = ?2
         WHERE key BETWEEN ?4 AND ?5 AND updated_at <= ?6
           AND state = 'dead' AND (?1 IS NULL OR plugin = ?1) AND (?3 OR started = 0)",
        params![plugin, now, force, lo, hi, asked],
    )? as u64)
}

/// The stored event with this id (of this hash) that the index knows: each candidate with the
/// same key is confirmed against its stored id (two ids may share the index's 40 bits of hash,
/// and an event removed behind the writer's back is no longer there).
/// The stored events with these ids, each once: looked up in the index, then, for any id it
/// does not know (an event accepted by another process after this one read its index), in one
/// scan of `event_ids` (under the write lock, so only when needed).
fn seqs_of(
    tx: &rusqlite::Transaction<'_>,
    ids: &[String],
    index: Option<&Dedup>,
) -> Result<Vec<i64>, StoreError> {
    let mut seqs = Vec::new();
    let mut missing: std::collections::HashMap<i64, Vec<&str>> = Default::default();
    let mut asked = std::collections::HashSet::new();
    for id in ids.iter().filter(|id| asked.insert(id.as_str())) {
        let hash = id_hash(id);
        let known = match index {
            Some(index) => stored_seq(tx, index, hash, id)?,
            None => None,
        };
        match known {
            Some(seq) => seqs.push(seq),
            None => missing.entry(hash).or_default().push(id),
        }
    }
    if !missing.is_empty() {
        let mut same = tx.prepare_cached("SELECT id = ?2 FROM events WHERE seq = ?1")?;
        let mut scan = tx.prepare_cached("SELECT seq, hash FROM event_ids")?;
        let mut rows = scan.query([])?;
        while let Some(row) = rows.next()? {
            let (seq, hash): (i64, i64) = (row.get(0)?, row.get(1)?);
            for id in missing.get(&hash).into_iter().flatten() {
                let found: Option<bool> =
                    same.query_row(params![seq, id], |r| r.get(0)).optional()?;
                if found == Some(true) {
                    seqs.push(seq);
                }
            }
        }
    }
    Ok(seqs)
}

impl super::SqliteStore {
    /// A write over every dead letter (of `plugin`: a replay, a purge) in steps of at most
    /// [`DEAD_LETTER_STEP`] delivery keys, only those that hold a dead letter, each its own
    /// write (`step` makes it for a range of keys): after an outage there may be millions, and one transaction over all of them would
    /// hold the write lock for seconds (events waiting past their 1 s get 503). Each key is
    /// passed once, so a replayed delivery that dies again meanwhile is not replayed again. The
    /// steps run on a task of their own: a caller that goes away (an admin request whose client
    /// closed) does not leave the write half done. A step that fails ends it with its error,
    /// which says how many the steps before it did. From an operator command, the steps pause
    /// [`OPERATOR_STEP_PAUSE`] apart, so a gateway writing beside it gets the lock between them.
    /// The sum of the steps' counts; `what` names the write in the log.
    pub(super) fn dead_letter_steps(
        &self,
        what: &'static str,
        plugin: Option<String>,
        step: impl Fn((i64, i64), Reply<u64>) -> Write + Send + 'static,
    ) -> StoreFuture<u64> {
        let store = self.clone();
        let steps = async move {
            let windows = store
                .inspect(move |c| dead_windows(c, plugin.as_deref()))
                .await?;
            let pause = store.inner.operator.then_some(OPERATOR_STEP_PAUSE);
            let step = move |keys| store.submit(|r| step(keys, r));
            crate::store::key_steps::run(what, windows, pause, step).await
        };
        let task = tokio::spawn(steps);
        Box::pin(async move {
            task.await
                .map_err(|e| StoreError(format!("the {what} of every dead letter failed: {e}")))?
        })
    }
}
