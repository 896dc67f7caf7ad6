//! The writes a batch applies one by one inside its transaction: an accepted event (looked up
//! by id first: [`stored_seq`]) with its deliveries, a call's outcome with its history rows,
//! and at start the crash marks left on dead letters.

use rusqlite::{params, OptionalExtension};

use crate::store::sqlite::dedup::Dedup;
use crate::store::sqlite::hot::{Hot, Sql};
use crate::store::sqlite::ids::id_hash;
use crate::store::{Accepted, Finish, FinishRecord, NewEvent, StoreError, CRASHED, DISCARDED};

pub(super) fn apply_accept(
    tx: &rusqlite::Transaction<'_>,
    hot: &mut Hot<'_>,
    ev: &NewEvent,
    now: i64,
    ids: &mut Dedup,
) -> Result<Accepted, StoreError> {
    let hash = id_hash(&ev.id);
    if stored_seq(tx, ids, hash, &ev.id)?.is_some() {
        return Ok(Accepted::Duplicate);
    }
    // The index assigns the seq: past every one stored or covered by a run, never reused.
    let seq = ids.take_seq();
    hot.get(Sql::InsertEvent)?.execute(params![
        ev.id,
        ev.app,
        ev.event_type,
        ev.schema,
        ev.received_at_ms,
        &*ev.body,
        !ev.plugins.is_empty(),
        seq
    ])?;
    hot.get(Sql::InsertId)?.execute(params![seq, hash])?;
    ids.add(hash, seq);
    let mut deliveries = Vec::with_capacity(ev.plugins.len());
    let stmt = hot.get(Sql::InsertDelivery)?;
    for plugin in &ev.plugins {
        let key = ids.take_key();
        stmt.execute(params![seq, plugin, now, key])?;
        deliveries.push((key, plugin.clone()));
    }
    Ok(Accepted::New { deliveries })
}

/// The dead letters still marked started at start: a call of theirs (hung past its timeout,
/// or running when the orphan rule took its delivery) was running when the last process died.
/// They stay dead letters; the crash goes into their history and the mark goes.
pub(super) fn recover_dead_marks(
    tx: &rusqlite::Transaction<'_>,
    now: i64,
) -> Result<u64, StoreError> {
    tx.prepare_cached(
        "INSERT INTO attempts (delivery_key, generation, attempt, outcome, reason, recorded_at)
         SELECT key, generation, started, 'crashed', ?2, ?1 FROM deliveries
         WHERE state = 'dead' AND started > 0",
    )?
    .execute(params![now, CRASHED])?;
    Ok(tx
        .prepare_cached("UPDATE deliveries SET started = 0 WHERE state = 'dead' AND started > 0")?
        .execute([])? as u64)
}

pub(super) fn apply_finish(
    hot: &mut Hot<'_>,
    record: &FinishRecord,
    now: i64,
) -> Result<bool, StoreError> {
    // `write` is not kept: a commit here is never in doubt (this thread answers every write).
    let FinishRecord {
        key,
        guard,
        attempts,
        finish,
        trace,
        write: _,
    } = record;
    let (state, next_at, error) = match finish {
        Finish::Done => ("done", now, None),
        Finish::Retry { next_at_ms, error } => ("pending", *next_at_ms, Some(error.as_str())),
        Finish::Dead { error } => ("dead", now, Some(error.as_str())),
    };
    let duration_ms = i64::try_from(trace.duration_ms).unwrap_or(i64::MAX);
    let changed = hot.get(Sql::Finish)?.execute(params![
        key,
        state,
        attempts,
        next_at,
        error,
        now,
        guard.attempts,
        guard.generation,
        guard.dead_too,
        record.call_still_runs(),
        trace.outcome,
        trace.started_at_ms,
        duration_ms,
        guard.own_mark
    ])?;
    // A run of the same call whose outcome was discarded comes first (see `Trace`).
    if let (1, Some(why)) = (changed, &trace.discarded_run) {
        hot.get(Sql::History)?.execute(params![
            key,
            guard.generation,
            attempts,
            DISCARDED,
            why.as_ref(),
            trace.started_at_ms,
            None::<i64>,
            now
        ])?;
    }
    // A success is the last entry of its generation's history: it stays in the row's `done_*`
    // columns (read back as an entry by `inspect`, made a row of `attempts` by a replay), which
    // saves a row and an index entry per delivery.
    if changed == 1 && !matches!(finish, Finish::Done) {
        hot.get(Sql::History)?.execute(params![
            key,
            guard.generation,
            attempts,
            trace.outcome,
            error,
            trace.started_at_ms,
            duration_ms,
            now
        ])?;
    }
    // Not recorded because the delivery became a dead letter while the call ran (its timeout,
    // or the orphan rule): the call has returned, so the mark it left there goes; a dead letter
    // of the call's own gives its reason (so the orphan rule's put-back leaves it).
    if changed == 0 && !record.call_still_runs() {
        let verdict = match finish {
            Finish::Dead { error } => Some(error.as_str()),
            _ => None,
        };
        hot.get(Sql::Unmark)?
            .execute(params![key, guard.generation, attempts, verdict])?;
    }
    Ok(changed == 1)
}

pub(in crate::store::sqlite) fn stored_seq(
    tx: &rusqlite::Transaction<'_>,
    index: &Dedup,
    hash: i64,
    id: &str,
) -> Result<Option<i64>, StoreError> {
    let candidates = index.candidates(hash)?;
    if candidates.is_empty() {
        return Ok(None);
    }
    let mut same = tx.prepare_cached("SELECT id = ?2 FROM events WHERE seq = ?1")?;
    for seq in candidates {
        let found: Option<bool> = same.query_row(params![seq, id], |r| r.get(0)).optional()?;
        if found == Some(true) {
            return Ok(Some(seq));
        }
    }
    Ok(None)
}
