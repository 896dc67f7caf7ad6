//! Claims on PostgreSQL: who may run a delivery's attempt, for how long (a lease on the
//! database's clock), and how a live replica keeps what it runs.
//!
//! - [`start_attempts`] marks an attempt started only for the claim's holder, or for anyone once
//!   the claim is free or expired and no crashed call awaits counting; it sets the lease.
//! - [`renew_claims`] extends the leases of deliveries this replica is still working on (the
//!   engine calls it every third of the lease while a call or its outcome write is in flight),
//!   so however long that takes, no other replica counts the attempt as crashed and runs it
//!   again. It only extends: a claim another replica took, or one that was given up, is left
//!   alone.
//! - [`release_claims`] gives up, at shutdown, the claims on deliveries not running (neither
//!   started nor still being called).
//! - [`dead_letter_plugin`] (the orphan rule) keeps the claims of the deliveries whose call
//!   runs here, so that their dead letters show as running.

use deadpool_postgres::Client;

use super::{keys, Claim, DB_NOW_MS};
use crate::store::sqlite::now_ms;
use crate::store::{Guard, Orphaned, StoreError};

/// [`crate::store::Store::start_attempts`]: one flag per delivery, in order.
pub(super) async fn start_attempts(
    c: &Client,
    claim: &Claim,
    deliveries: &[(i64, Guard)],
    lapsed_until: Option<i64>,
) -> Result<Vec<bool>, StoreError> {
    // Claimed with FOR UPDATE SKIP LOCKED: a row another replica is claiming right now is
    // skipped (it is theirs), never waited for. Another replica's lapsed claim only when
    // `lapsed_until` is given (this replica has reached the database for a whole lease:
    // `reach`), and only if the database runs the statement before it on its clock.
    let sql = format!(
        "WITH claimable AS (
             SELECT d.key FROM deliveries d
             JOIN unnest($3::bigint[], $4::int[], $5::int[]) AS u(key, generation, attempts)
               ON d.key = u.key
             WHERE d.generation = u.generation AND d.attempts = u.attempts
               AND d.state = 'pending'
               AND (d.claimed_by = $1
                    OR ((d.claimed_by IS NULL
                         OR (d.lease_until < {DB_NOW_MS} AND {DB_NOW_MS} < $6))
                        AND d.started = 0))
             FOR UPDATE OF d SKIP LOCKED)
         UPDATE deliveries d SET started = d.attempts + 1, claimed_by = $1,
             lease_until = {DB_NOW_MS} + $2
         FROM claimable c WHERE d.key = c.key
         RETURNING d.key"
    );
    let k: Vec<i64> = deliveries.iter().map(|(k, _)| *k).collect();
    let generation: Vec<i32> = deliveries
        .iter()
        .map(|(_, g)| g.generation as i32)
        .collect();
    let attempts: Vec<i32> = deliveries.iter().map(|(_, g)| g.attempts as i32).collect();
    let stmt = c.prepare_cached(&sql).await?;
    let rows = c
        .query(
            &stmt,
            &[
                &claim.replica,
                &claim.lease_ms,
                &k,
                &generation,
                &attempts,
                &lapsed_until.unwrap_or(i64::MIN),
            ],
        )
        .await?;
    let marked = keys(&rows);
    Ok(k.iter().map(|k| marked.contains(k)).collect())
}

/// [`crate::store::Store::renew_claims`]: sets the lease of each of `keys` that this replica
/// still claims to a whole lease from now (never shortens one: a retry's claim runs to its due
/// time plus a lease). Rows are locked `FOR UPDATE SKIP LOCKED`: a row being written at this
/// moment is left for the next renewal rather than waited for (its writer is this replica
/// recording the outcome, which sets the claim itself, or an operator's replay; a live claim is
/// never locked by another replica's claim or crash count), so a renewal never waits on, or
/// deadlocks with, a batch's outcome write. A row locked is checked again on its newest version:
/// a claim another replica has just taken is not ours, and stays theirs.
pub(super) async fn renew_claims(
    c: &Client,
    claim: &Claim,
    keys: &[i64],
) -> Result<u64, StoreError> {
    if keys.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        "WITH mine AS (
             SELECT key FROM deliveries
             WHERE claimed_by = $1 AND key = ANY($3)
             FOR UPDATE SKIP LOCKED)
         UPDATE deliveries d SET lease_until = GREATEST(d.lease_until, {DB_NOW_MS} + $2)
         FROM mine WHERE d.key = mine.key"
    );
    let stmt = c.prepare_cached(&sql).await?;
    Ok(c.execute(&stmt, &[&claim.replica, &claim.lease_ms, &keys])
        .await?)
}

/// [`crate::store::Store::release_claims`].
pub(super) async fn release_claims(
    c: &Client,
    claim: &Claim,
    running: &[i64],
) -> Result<u64, StoreError> {
    // A started attempt keeps its claim: it ran when this process stopped, and counts as
    // crashed once the lease expires (a call hung past its timeout included: its retry kept
    // the mark). So does any other call still running (a replay forced while it hung cleared
    // its mark; a dead letter's claim is not touched here): the process may run it until it
    // exits.
    Ok(c.execute(
        "UPDATE deliveries SET claimed_by = NULL, lease_until = 0
         WHERE claimed_by = $1 AND state = 'pending' AND started = 0
           AND NOT (key = ANY($2))",
        &[&claim.replica, &running],
    )
    .await?)
}

/// The lowest and highest key of the pending deliveries of `plugin`, if any: the range the
/// orphan rule goes through in steps ([`super::steps`]).
pub(super) async fn pending_key_range(
    c: &Client,
    plugin: &str,
) -> Result<Option<(i64, i64)>, StoreError> {
    let row = c
        .query_one(
            "SELECT MIN(key), MAX(key) FROM deliveries WHERE plugin = $1 AND state = 'pending'",
            &[&plugin],
        )
        .await?;
    Ok(row
        .get::<_, Option<i64>>(0)
        .zip(row.get::<_, Option<i64>>(1)))
}

/// [`crate::store::Store::dead_letter_plugin`] over the keys `lo..=hi` (one step: see
/// [`super::steps`]), with its plugin, the dead letters' error and the time before which a
/// delivery must have last changed in one tuple.
pub(super) async fn dead_letter_plugin(
    c: &Client,
    claim: &Claim,
    (plugin, error, before_ms): (&str, &str, i64),
    running: &[i64],
    (lo, hi): (i64, i64),
) -> Result<Vec<Orphaned>, StoreError> {
    // Not an attempt whose holder died during the call and whose crash is not counted
    // yet (`recover_crashed` counts it at the next sweep, then this rule takes it). Not
    // those another replica holds a live claim on: it still runs that plugin. This
    // replica's claims on the deliveries it is calling are kept (for at most a lease
    // from now, renewed while the call runs, dropped with its outcome): those marked
    // started (it never counts its own calls as crashed, so its mark is a call in
    // flight here, decided on the row as this statement finds it: a call started after
    // `running` was taken too) and those among `running` (a hung call whose forced
    // replay cleared the mark). A call of the removed instance may still run here, so
    // the dead letter shows as running and a replay of it is not run by another replica
    // beside it.
    let sql = format!(
        "UPDATE deliveries SET state = 'dead', last_error = $2, updated_at = $3,
             started = 0,
             lease_until = CASE WHEN claimed_by = $4 AND (started > 0 OR key = ANY($7))
                 THEN LEAST(lease_until, {DB_NOW_MS} + $5) ELSE 0 END,
             claimed_by = CASE WHEN claimed_by = $4 AND (started > 0 OR key = ANY($7))
                 THEN claimed_by ELSE NULL END
         WHERE key BETWEEN $8 AND $9 AND plugin = $1 AND state = 'pending' AND updated_at < $6
           AND (claimed_by IS NULL OR claimed_by = $4 OR lease_until < {DB_NOW_MS})
           AND NOT (started > 0 AND started >= attempts AND lease_until < {DB_NOW_MS})
         RETURNING key, event_id, claimed_by IS NOT NULL, generation"
    );
    let rows = c
        .query(
            &sql,
            &[
                &plugin,
                &error,
                &now_ms(),
                &claim.replica,
                &claim.lease_ms,
                &before_ms,
                &running,
                &lo,
                &hi,
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Orphaned {
            key: r.get(0),
            event_id: r.get(1),
            running: r.get(2),
            generation: r.get::<_, i32>(3).max(0) as u32,
        })
        .collect())
}
