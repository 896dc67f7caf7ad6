//! The store's writer thread: takes every write waiting at that moment (and, at a moderate
//! steady load, waits a little for more: [`super::batch`]), applies them in one transaction,
//! commits (one fsync for the whole batch: group commit), then answers each caller.
//! If the transaction fails, every write of the batch gets the error and nothing is claimed.
//!
//! The writer also owns the [`Dedup`] index that deduplicates accepted events: loaded before
//! the first accept or replay by id (at start, for `gateway run`), changed with each
//! transaction and rolled back with a failed one; between batches it takes in the older ids'
//! runs on disk and frees their memory.

mod apply;

use std::sync::mpsc;

use rusqlite::{params, Connection, TransactionBehavior};

use super::batch::Batcher;
use super::dedup::Dedup;
use super::floors;
use super::hot::Hot;
use super::replay;
use super::{now_ms, ReplaySelector, Write};
use crate::store::{Accepted, Orphaned, PurgeStep, StoreError, CRASHED};
pub(super) use apply::stored_seq;
use apply::{apply_accept, apply_finish, recover_dead_marks};

/// The writer thread of the store at `store`: batch, apply in one transaction, commit (fsync),
/// answer. With `spill_at` (the gateway that holds the store's lock and accepts events), the id
/// index, both tiers, is read before the first write is taken. Otherwise it is read on the
/// first write that needs it (an operator command's replay by id; the operator commands never
/// accept), without spills ([`Dedup::for_operator`]).
pub(super) fn writer_loop(
    mut conn: Connection,
    rx: mpsc::Receiver<Write>,
    store: std::path::PathBuf,
    spill_at: Option<usize>,
) {
    let mut ids = None;
    if let Some(spill_at) = spill_at {
        load_ids(&mut ids, || {
            Dedup::open(&conn, &store, spill_at).or_else(|e| {
                tracing::error!(error = %e, "cannot open the event id runs; ids kept in memory only");
                Dedup::in_memory(&conn)
            })
        });
    }
    let mut batcher = Batcher::new();
    loop {
        // With a spill under way (or due), an idle writer still looks at it every tick, so a
        // finished run is taken in and memory freed without waiting for the next write.
        let first = if ids.as_ref().is_some_and(Dedup::has_work) {
            match rx.recv_timeout(IDLE_TICK) {
                Ok(w) => Some(w),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(w) => Some(w),
                Err(_) => break,
            }
        };
        if let Some(first) = first {
            // An operator command's writer (no store lock, no accepts) waits longer for the
            // write lock a busy gateway keeps taking (`deadline::OPERATOR_BUSY_WAIT`).
            let base = spill_at
                .is_none()
                .then_some(super::deadline::OPERATOR_BUSY_WAIT);
            write_batch(&mut conn, batcher.take(first, &rx), &mut ids, &store, base);
        }
        if let Some(index) = ids.as_mut() {
            index.after_batch(&mut conn);
            crate::metrics::set_dedup_ids(index.len());
        }
    }
}

/// How often an idle writer looks at a spill under way.
const IDLE_TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// A batch ([`Batcher::take`]) applied in one transaction, each write answered.
fn write_batch(
    conn: &mut Connection,
    (batch, paced): (Vec<Write>, bool),
    ids: &mut Option<Dedup>,
    store: &std::path::Path,
    base: Option<std::time::Duration>,
) {
    // Events past their deadline are answered 503 here, never applied (`deadline`).
    let batch = super::deadline::keep_due(conn, batch, base);
    if batch.is_empty() {
        super::deadline::restore(conn, base);
        return;
    }
    crate::metrics::observe_commit_batch(batch.len(), paced);
    let started = std::time::Instant::now();
    let applied = apply_and_settle(conn, &batch, ids, store);
    super::deadline::restore(conn, base);
    crate::metrics::observe_commit_duration(started.elapsed());
    match applied {
        Ok(results) => {
            for (write, result) in batch.into_iter().zip(results) {
                answer(write, Ok(result));
            }
        }
        Err(e) => {
            // A full disk (or a store another process locks) fails every batch while Lark
            // keeps sending: at most 10 lines a second, the next one counting those not logged.
            static FAILURES: std::sync::LazyLock<crate::ingress::log_limit::RefusalLog> =
                std::sync::LazyLock::new(Default::default);
            if let Some(skipped) = FAILURES.admit(std::time::Instant::now()) {
                tracing::error!(error = %e, writes = batch.len(), skipped, "store transaction failed");
            }
            for write in batch {
                answer(write, Err(e.clone()));
            }
        }
    }
}

/// Applies a batch in one transaction, the id index changing with it: kept when it commits,
/// undone when it fails. Reads the index first (that of the store at `store`) if the batch
/// needs it and none is loaded.
fn apply_and_settle(
    conn: &mut Connection,
    batch: &[Write],
    ids: &mut Option<Dedup>,
    store: &std::path::Path,
) -> Result<Vec<Outcome>, StoreError> {
    let needs_ids = |w: &Write| {
        matches!(
            w,
            Write::Accept(..) | Write::Replay(ReplaySelector::Events { .. }, _)
        )
    };
    if ids.is_none() && batch.iter().any(needs_ids) {
        // Outside any transaction: the index is what is committed.
        load_ids(ids, || Dedup::for_operator(conn, store));
    }
    let applied = apply_batch(conn, batch, ids);
    if let Some(index) = ids.as_mut() {
        match applied {
            Ok(_) => index.commit(),
            Err(_) => index.roll_back(),
        }
        crate::metrics::set_dedup_ids(index.len());
    }
    applied
}

/// Reads the id index with `load`; on failure logs it and leaves none (each accept then fails
/// and the next batch with one tries again, memory only).
fn load_ids(ids: &mut Option<Dedup>, load: impl FnOnce() -> Result<Dedup, StoreError>) {
    let started = std::time::Instant::now();
    match load() {
        Ok(index) => {
            tracing::debug!(elapsed = ?started.elapsed(), "event id index loaded");
            crate::metrics::set_dedup_ids(index.len());
            *ids = Some(index);
        }
        Err(e) => tracing::error!(error = %e, "cannot read the event id index"),
    }
}

/// The result of one write inside a batch, before it is sent back.
enum Outcome {
    Accepted(Accepted),
    Applied(Vec<bool>),
    Count(u64),
    Orphans(Vec<Orphaned>),
    Purged(PurgeStep),
    Recovered(crate::store::Recovered),
    Probed,
}

fn answer(write: Write, result: Result<Outcome, StoreError>) {
    // A dropped receiver means the caller went away (e.g. the client disconnected): fine.
    match (write, result) {
        (Write::Accept(_, _, r), Ok(Outcome::Accepted(a))) => drop(r.send(Ok(a))),
        (Write::Finish(.., r), Ok(Outcome::Applied(a))) => drop(r.send(Ok(a))),
        (Write::Purge(.., r), Ok(Outcome::Purged(step))) => drop(r.send(Ok(step))),
        (Write::PurgeDeadLetters(.., r), Ok(Outcome::Count(n))) => drop(r.send(Ok(n))),
        (Write::PurgeDeadLetters(.., r), Err(e)) => drop(r.send(Err(e))),
        (Write::Replay(_, r), Ok(Outcome::Count(n))) => drop(r.send(Ok(n))),
        (Write::DeadLetterPlugin(.., r), Ok(Outcome::Orphans(o))) => drop(r.send(Ok(o))),
        (Write::DeadLetterPlugin(.., r), Err(e)) => drop(r.send(Err(e))),
        (Write::Start(_, r), Ok(Outcome::Applied(a))) => drop(r.send(Ok(a))),
        (Write::Start(_, r), Err(e)) => drop(r.send(Err(e))),
        (Write::RecoverCrashed(.., r), Ok(Outcome::Recovered(n))) => drop(r.send(Ok(n))),
        (Write::RecoverCrashed(.., r), Err(e)) => drop(r.send(Err(e))),
        (Write::Accept(_, _, r), Err(e)) => drop(r.send(Err(e))),
        (Write::Finish(.., r), Err(e)) => drop(r.send(Err(e))),
        (Write::Purge(.., r), Err(e)) => drop(r.send(Err(e))),
        (Write::Replay(_, r), Err(e)) => drop(r.send(Err(e))),
        (Write::ReplayDeadRange(.., r), Ok(Outcome::Count(n))) => drop(r.send(Ok(n))),
        (Write::ReplayDeadRange(.., r), Err(e)) => drop(r.send(Err(e))),
        (Write::Probe(r), Ok(Outcome::Probed)) => drop(r.send(Ok(()))),
        (Write::Probe(r), Err(e)) => drop(r.send(Err(e))),
        (w, Ok(_)) => answer(
            w,
            Err(StoreError("internal: mismatched write result".into())),
        ),
    }
}

fn apply_batch(
    conn: &mut Connection,
    batch: &[Write],
    ids: &mut Option<Dedup>,
) -> Result<Vec<Outcome>, StoreError> {
    // Take the write lock first (a busy wait happens here), then read the clock: a fresh
    // delivery's `next_at` is when it became visible to this writer, so the sweeper's hand-off
    // grace never starts before the delivery could be handed off.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut hot = Hot::new(&tx);
    let mut results = Vec::with_capacity(batch.len());
    let now = now_ms();
    for write in batch {
        results.push(match write {
            Write::Accept(ev, ..) => {
                let index = ids
                    .as_mut()
                    .ok_or_else(|| StoreError("the event id index could not be read".into()))?;
                Outcome::Accepted(apply_accept(&tx, &mut hot, ev, now, index)?)
            }
            Write::Finish(records, _) => Outcome::Applied(
                records
                    .iter()
                    .map(|r| apply_finish(&mut hot, r, now))
                    .collect::<Result<_, _>>()?,
            ),
            Write::Start(deliveries, _) => {
                let mut stmt = tx.prepare_cached(
                    "UPDATE deliveries SET started = attempts + 1
                     WHERE key = ?1 AND generation = ?2 AND attempts = ?3 AND state = 'pending'",
                )?;
                let mut marked = Vec::with_capacity(deliveries.len());
                for (key, guard) in deliveries {
                    marked.push(stmt.execute(params![key, guard.generation, guard.attempts])? == 1);
                }
                Outcome::Applied(marked)
            }
            Write::RecoverCrashed(max_attempts, max_crashes, _) => Outcome::Recovered({
                // Which of them the update below makes dead letters (it reads the rows as they
                // are now), per plugin.
                let dead_by_plugin: Vec<(String, u64)> = tx
                    .prepare_cached(
                        "SELECT plugin, COUNT(*) FROM deliveries
                         WHERE state = 'pending' AND started > 0 AND started >= attempts
                           AND (crashes + 1 >= ?2 OR started >= ?1)
                         GROUP BY plugin",
                    )?
                    .query_map(params![max_attempts, max_crashes], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
                    })?
                    .collect::<Result<_, _>>()?;
                tx.prepare_cached(
                    "INSERT INTO attempts (delivery_key, generation, attempt, outcome, reason,
                         recorded_at)
                     SELECT key, generation, started, 'crashed', ?2, ?1 FROM deliveries
                     WHERE state = 'pending' AND started > 0 AND started >= attempts",
                )?
                .execute(params![now, CRASHED])?;
                // Right-hand sides read the row as it was: `crashes + 1` is the new count.
                let found = tx.prepare_cached(
                    "UPDATE deliveries SET
                         attempts = started, crashes = crashes + 1, started = 0,
                         next_at = ?3, updated_at = ?3,
                         state = CASE WHEN crashes + 1 >= ?2 OR started >= ?1
                                      THEN 'dead' ELSE 'pending' END,
                         last_error = CASE WHEN crashes + 1 >= ?2 OR started >= ?1
                             THEN 'the gateway died during this call ' || (crashes + 1) || ' times'
                             ELSE 'the gateway died during this call (' || (crashes + 1)
                                  || ' so far); retrying' END
                     WHERE state = 'pending' AND started > 0 AND started >= attempts",
                )?
                .execute(params![max_attempts, max_crashes, now])? as u64;
                let dead = recover_dead_marks(&tx, now)?;
                if dead > 0 {
                    tracing::warn!(
                        dead_letters = dead,
                        "the gateway died during plugin calls of dead letters (calls hung past their timeout): recorded in their history"
                    );
                }
                crate::store::Recovered {
                    found,
                    dead: dead_by_plugin,
                }
            }),
            Write::DeadLetterPlugin(plugin, error, before, (lo, hi), _) => Outcome::Orphans({
                // Marked started: a call of it runs (this process is the store's only writer,
                // and crashed marks were counted at start); it keeps its mark (see
                // `Store::dead_letter_plugin`). An unmarked one whose older generation's call
                // still runs (replayed with --force while it hung) needs no mark: no other
                // process can run it, and this one's engine waits for that call.
                let orphans = tx
                    .prepare_cached(
                        "SELECT d.key, e.id, d.started > 0, d.generation
                         FROM deliveries d JOIN events e ON e.seq = d.event_seq
                         WHERE d.key BETWEEN ?3 AND ?4 AND d.plugin = ?1 AND d.state = 'pending'
                           AND d.updated_at < ?2",
                    )?
                    .query_map(params![plugin, before, lo, hi], |r| {
                        Ok(Orphaned {
                            key: r.get(0)?,
                            event_id: r.get(1)?,
                            running: r.get(2)?,
                            generation: r.get(3)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                tx.prepare_cached(
                    "UPDATE deliveries SET state = 'dead', last_error = ?2, updated_at = ?3
                     WHERE key BETWEEN ?5 AND ?6 AND plugin = ?1 AND state = 'pending'
                       AND updated_at < ?4",
                )?
                .execute(params![plugin, error, now, before, lo, hi])?;
                orphans
            }),
            Write::Purge(before, dead_before, after, _) => Outcome::Purged(super::purge::step(
                &tx,
                (*before, *dead_before),
                *after,
                ids.as_mut(),
            )?),
            Write::PurgeDeadLetters(plugin, before, (lo, hi), _) => Outcome::Count({
                floors::raise(&tx)?;
                tx.prepare_cached(
                    "DELETE FROM deliveries WHERE key BETWEEN ?3 AND ?4 AND state = 'dead'
                       AND (?1 IS NULL OR plugin = ?1) AND updated_at < ?2",
                )?
                .execute(params![plugin, before, lo, hi])? as u64
            }),
            Write::Replay(sel, _) => Outcome::Count(replay::apply(&tx, sel, now, ids.as_ref())?),
            Write::ReplayDeadRange(plugin, force, keys, asked, _) => Outcome::Count(
                replay::dead_range(&tx, plugin.as_deref(), *force, *keys, *asked, now)?,
            ),
            Write::Probe(_) => {
                super::probe::write(&tx, now)?;
                Outcome::Probed
            }
        });
    }
    drop(hot);
    tx.commit()?;
    Ok(results)
}

/// [`apply_and_settle`] for the store's tests, each outcome as `new`, `duplicate`, `applied` or
/// `count`.
#[cfg(test)]
pub(super) fn apply_and_settle_for_tests(
    conn: &mut Connection,
    batch: &[Write],
    ids: &mut Option<Dedup>,
) -> Result<Vec<&'static str>, StoreError> {
    Ok(
        apply_and_settle(conn, batch, ids, std::path::Path::new(""))?
            .into_iter()
            .map(|o| match o {
                Outcome::Accepted(Accepted::New { .. }) => "new",
                Outcome::Accepted(Accepted::Duplicate) => "duplicate",
                Outcome::Applied(_) => "applied",
                Outcome::Count(_)
                | Outcome::Orphans(_)
                | Outcome::Purged(_)
                | Outcome::Recovered(_) => "count",
                Outcome::Probed => "probed",
            })
            .collect(),
    )
}
