//! Recording outcomes on PostgreSQL: a batch's outcomes in one statement (each applied only if
//! its guard still holds), and the crashed attempts of dead replicas. Each applied outcome and
//! each crash found adds its row to the attempt history in the same statement; an outcome's row
//! carries its write's [`crate::store::WriteId`], by which a retry of a write whose answer was
//! lost learns that its first try applied.

use deadpool_postgres::Client;

use super::{keys, Claim, DB_NOW_MS};
use crate::store::sqlite::now_ms;
use crate::store::{Finish, FinishRecord, StoreError, CRASHED, DISCARDED};

/// The longest an outcome write may hold its deliveries' rows before it is given up on and
/// rolled back: the operation's limit, then the cancel request's own (see `PgStore::op`).
const WRITE_HOLD_MS: i64 =
    (super::OP_TIMEOUT.as_millis() + super::connect::CONNECT_TIMEOUT.as_millis()) as i64;

/// Before an outcome write, the claims this replica holds on its deliveries are made to outlast
/// the write (when they would not already): the write changes (so locks) each row early and
/// may then wait (a slow insert, a lock held elsewhere) until it is given up on and rolled
/// back; the renewals skip a locked row meanwhile, and a lease that ran out on the row as it
/// was before the write would let another replica, whose crash count waits for that lock,
/// count the attempt as crashed the moment the write rolls back and run the delivery again
/// beside this live replica. Never shortens a lease; a row locked now (an earlier try still on
/// the server) is left alone. A separate statement, so it stands when the write rolls back.
const EXTEND_FOR_WRITE: &str = concat!(
    "WITH mine AS (
         SELECT key FROM deliveries
         WHERE key = ANY($1) AND claimed_by = $2 AND lease_until < ",
    db_now_ms!(),
    " + $3
         FOR UPDATE SKIP LOCKED)
     UPDATE deliveries d SET lease_until = ",
    db_now_ms!(),
    " + $3 + $4
     FROM mine WHERE d.key = mine.key"
);

/// [`crate::store::Store::finish_many`]: one flag per record, in order. A dead letter is replaced
/// only by a success (`dead_too`): an outcome never makes a finished delivery pending again,
/// only a replay does (the retention purge relies on it: see [`super::retention`]).
///
/// A record of a call that has not returned ([`FinishRecord::call_still_runs`]: its timeout,
/// as a retry or a dead letter) keeps this replica's claim, renewed while the call runs, so
/// that no other replica runs the delivery beside it (a forced replay of the dead letter), and
/// shows it as running: a retry keeps the attempt's "started" mark (should this replica die
/// before the call returns, the others count the crash once the lease lapses; it never counts
/// its own running calls), a dead letter keeps the claim alone (see `dead_running!`). Every
/// other record clears the mark. A late outcome's record ([`crate::store::Guard::own_mark`])
/// applies only while that mark and this replica's claim are still there: once its lease
/// lapsed, another replica may have counted the crash and started the attempt again.
///
/// A record that does not apply because its delivery became a dead letter while the call ran
/// (its timeout's record, or the orphan rule) drops the claim this replica kept on it: the call
/// has returned, so the dead letter is no longer running.
///
/// A record whose guard no longer holds counts as applied when the history already has its
/// write's row: an earlier try committed and its answer was lost (the engine writes the same
/// records again after any error). That is asked in a second statement, whose snapshot
/// follows this one: had the earlier try still been running, this statement waited on the row
/// it changed and saw the guard fail only once it committed.
pub(super) async fn finish_many(
    c: &Client,
    claim: &Claim,
    records: &[FinishRecord],
) -> Result<Vec<bool>, StoreError> {
    let sql = format!(
        "WITH u AS (
             SELECT * FROM unnest($4::bigint[], $5::text[], $6::int[], $7::bigint[], $8::text[],
                                  $9::int[], $10::int[], $11::bool[], $12::text[], $13::bigint[],
                                  $14::bigint[], $15::bool[], $16::bigint[], $17::bool[],
                                  $18::text[])
                 AS u(key, state, attempts, next_at, error, g_attempts, g_generation, dead_too,
                      outcome, started_at, duration_ms, running, write_id, own_mark,
                      discarded)
         ), applied AS (
             UPDATE deliveries d SET state = u.state, attempts = u.attempts,
                 next_at = u.next_at, updated_at = $1,
                 started = CASE WHEN u.running AND u.state = 'pending' THEN d.started ELSE 0 END,
                 last_error = CASE WHEN u.state = 'done' THEN NULL
                                   ELSE COALESCE(u.error, d.last_error) END,
                 claimed_by = CASE WHEN u.state = 'pending' OR u.running THEN $2 ELSE NULL END,
                 lease_until = CASE WHEN u.state = 'pending'
                     THEN {DB_NOW_MS} + GREATEST(u.next_at - $1, 0) + $3
                     WHEN u.running THEN {DB_NOW_MS} + $3 ELSE 0 END
             FROM u
             WHERE d.key = u.key AND d.attempts = u.g_attempts
               AND d.generation = u.g_generation
               AND (d.state = 'pending'
                    OR (u.dead_too AND d.state = 'dead' AND u.state = 'done'))
               AND (NOT u.own_mark OR (d.claimed_by = $2 AND d.started = u.attempts))
             RETURNING d.key
         ), logged AS (
             -- A run of the same call whose outcome was discarded first (see `Trace`): the
             -- history reads in `id` order, given in the order of this SELECT.
             INSERT INTO attempts (delivery_key, generation, attempt, outcome, reason,
                                   started_at, duration_ms, recorded_at, write_id)
             SELECT e.key, e.generation, e.attempt, e.outcome, e.reason, e.started_at,
                    e.duration_ms, $1, e.write_id
             FROM (
                 SELECT u.key, u.g_generation AS generation, u.attempts AS attempt,
                        '{DISCARDED}' AS outcome, u.discarded AS reason, u.started_at,
                        NULL::bigint AS duration_ms, NULL::bigint AS write_id, 0 AS n
                 FROM u JOIN applied ON applied.key = u.key WHERE u.discarded IS NOT NULL
                 UNION ALL
                 SELECT u.key, u.g_generation, u.attempts, u.outcome, u.error, u.started_at,
                        u.duration_ms, u.write_id, 1
                 FROM u JOIN applied ON applied.key = u.key
             ) e ORDER BY e.key, e.n
         )
         SELECT key FROM applied"
    );
    let now = now_ms();
    let n = records.len();
    let mut k = Vec::with_capacity(n);
    let mut state = Vec::with_capacity(n);
    let mut attempts = Vec::with_capacity(n);
    let mut next_at = Vec::with_capacity(n);
    let mut error: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut g_attempts = Vec::with_capacity(n);
    let mut g_generation = Vec::with_capacity(n);
    let mut dead_too = Vec::with_capacity(n);
    let mut outcome = Vec::with_capacity(n);
    let mut started_at = Vec::with_capacity(n);
    let mut duration_ms = Vec::with_capacity(n);
    let mut running = Vec::with_capacity(n);
    let mut write_id = Vec::with_capacity(n);
    let mut own_mark = Vec::with_capacity(n);
    let mut discarded: Vec<Option<&str>> = Vec::with_capacity(n);
    for r in records {
        let (s, next) = match &r.finish {
            Finish::Done => ("done", now),
            Finish::Retry { next_at_ms, .. } => ("pending", *next_at_ms),
            Finish::Dead { .. } => ("dead", now),
        };
        k.push(r.key);
        state.push(s);
        attempts.push(r.attempts as i32);
        next_at.push(next);
        error.push(r.finish.error());
        g_attempts.push(r.guard.attempts as i32);
        g_generation.push(r.guard.generation as i32);
        dead_too.push(r.guard.dead_too);
        outcome.push(r.trace.outcome);
        started_at.push(r.trace.started_at_ms);
        duration_ms.push(i64::try_from(r.trace.duration_ms).unwrap_or(i64::MAX));
        running.push(r.call_still_runs());
        write_id.push(r.write.0);
        own_mark.push(r.guard.own_mark);
        discarded.push(r.trace.discarded_run.as_deref());
    }
    let extend = c.prepare_cached(EXTEND_FOR_WRITE).await?;
    let stmt = c.prepare_cached(&sql).await?;
    let extend_params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&k, &claim.replica, &WRITE_HOLD_MS, &claim.lease_ms];
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 18] = [
        &now,
        &claim.replica,
        &claim.lease_ms,
        &k,
        &state,
        &attempts,
        &next_at,
        &error,
        &g_attempts,
        &g_generation,
        &dead_too,
        &outcome,
        &started_at,
        &duration_ms,
        &running,
        &write_id,
        &own_mark,
        &discarded,
    ];
    // Sent together (one round trip), the extension first, each its own transaction.
    let (_, rows) = tokio::try_join!(c.execute(&extend, &extend_params), c.query(&stmt, &params))?;
    let mut applied = keys(&rows);
    let (doubt_keys, doubt_writes): (Vec<i64>, Vec<i64>) = records
        .iter()
        .filter(|r| !applied.contains(&r.key))
        .map(|r| (r.key, r.write.0))
        .unzip();
    if !doubt_keys.is_empty() {
        let stmt = c
            .prepare_cached(
                "SELECT a.delivery_key FROM attempts a
                 JOIN unnest($1::bigint[], $2::bigint[]) AS u(key, write_id)
                   ON a.delivery_key = u.key AND a.write_id = u.write_id",
            )
            .await?;
        let earlier = c.query(&stmt, &[&doubt_keys, &doubt_writes]).await?;
        applied.extend(keys(&earlier));
    }
    // Any generation: a dead letter of a newer one (replayed with --force while this call
    // hung, then dead-lettered by the orphan rule) kept this claim for this call too, and no
    // other call of the delivery runs here while this one did (one call per delivery).
    // A dead letter of the call's own generation (its rejection, a panic, its last attempt)
    // gives the dead letter its reason: the plugin's verdict (so the orphan rule's put-back
    // leaves it). A newer generation's dead letter keeps its own reason (the orphan rule's, for
    // one never attempted), as on the embedded store.
    let mut returned = Vec::new();
    let mut verdicts: Vec<Option<&str>> = Vec::new();
    let mut generations = Vec::new();
    for r in records
        .iter()
        .filter(|r| !applied.contains(&r.key) && !r.call_still_runs())
    {
        returned.push(r.key);
        verdicts.push(match &r.finish {
            Finish::Dead { error } => Some(error.as_str()),
            _ => None,
        });
        generations.push(r.guard.generation as i32);
    }
    if !returned.is_empty() {
        let stmt = c
            .prepare_cached(
                "UPDATE deliveries d SET claimed_by = NULL, lease_until = 0,
                     last_error = CASE WHEN d.generation = u.generation
                         THEN COALESCE(u.verdict, d.last_error) ELSE d.last_error END
                 FROM unnest($2::bigint[], $3::text[], $4::int[]) AS u(key, verdict, generation)
                 WHERE d.key = u.key AND d.state = 'dead' AND d.claimed_by = $1",
            )
            .await?;
        c.execute(&stmt, &[&claim.replica, &returned, &verdicts, &generations])
            .await?;
    }
    Ok(records.iter().map(|r| applied.contains(&r.key)).collect())
}

/// [`crate::store::Store::recover_crashed`]: attempts started by a process whose lease expired,
/// but never one this process is running (`running`), and only if the database runs the
/// statement before `deadline_ms` on its clock (one held up past it counts nothing).
pub(super) async fn recover_crashed(
    c: &Client,
    max_attempts: u32,
    max_crashes: u32,
    running: &[i64],
    deadline_ms: i64,
) -> Result<crate::store::Recovered, StoreError> {
    // Right-hand sides read the row as it was: `crashes + 1` is the new count; RETURNING
    // gives the new row, whose `attempts` is the crashed attempt's number.
    let sql = format!(
        "WITH found AS (
             UPDATE deliveries SET
                 attempts = started, crashes = crashes + 1, started = 0,
                 next_at = $3, updated_at = $3, claimed_by = NULL, lease_until = 0,
                 state = CASE WHEN crashes + 1 >= $2 OR started >= $1
                              THEN 'dead' ELSE 'pending' END,
                 last_error = CASE WHEN crashes + 1 >= $2 OR started >= $1
                     THEN 'the gateway died during this call ' || (crashes + 1) || ' times'
                     ELSE 'the gateway died during this call (' || (crashes + 1)
                          || ' so far); retrying' END
             WHERE state = 'pending' AND started > 0 AND started >= attempts
                   AND lease_until < {DB_NOW_MS} AND key <> ALL($5::bigint[])
                   AND {DB_NOW_MS} < $6
             RETURNING key, generation, attempts, plugin, state
         ), logged AS (
             INSERT INTO attempts (delivery_key, generation, attempt, outcome, reason,
                                   recorded_at)
             SELECT key, generation, attempts, 'crashed', $4, $3 FROM found
         )
         SELECT plugin, COUNT(*), COUNT(*) FILTER (WHERE state = 'dead') FROM found
         GROUP BY plugin"
    );
    let rows = c
        .query(
            &sql,
            &[
                &(max_attempts as i32),
                &(max_crashes as i32),
                &now_ms(),
                &CRASHED,
                &running,
                &deadline_ms,
            ],
        )
        .await?;
    let mut recovered = crate::store::Recovered::default();
    for row in rows {
        let (plugin, found, dead): (String, i64, i64) = (row.get(0), row.get(1), row.get(2));
        recovered.found += found.max(0) as u64;
        if dead > 0 {
            recovered.dead.push((plugin, dead as u64));
        }
    }
    Ok(recovered)
}
