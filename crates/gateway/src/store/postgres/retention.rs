//! The retention purge on PostgreSQL, safe beside replays made at the same time by any replica
//! or operator command.
//!
//! A purge removes an old event (and, by `ON DELETE CASCADE`, its deliveries and their history)
//! only if no delivery of it is pending and none died at or after the dead-letter cutoff. One
//! statement cannot both check that and act on it: under READ COMMITTED its snapshot is taken
//! when it starts, so a replay that commits after that and before the statement locks the event
//! is invisible to the check, and the delete (then the cascade, which takes whatever deliveries
//! exist by then) removes the delivery just replayed: it is never delivered.
//!
//! So a purge is one transaction of two statements:
//! 1. pick old events that look finished and lock them, `FOR UPDATE SKIP LOCKED` (an event
//!    another replica is purging or replaying is skipped, never waited for);
//! 2. delete those that are *still* finished, checked again by a statement that starts once the
//!    locks are held, hence with a snapshot taken after them.
//!
//! Why that is enough: a finished delivery becomes pending again only through a replay
//! ([`super::inspect::replay`]), and a replay share-locks the event rows first, changes only the
//! deliveries of events it locked, and holds the locks until it commits. (Every other writer
//! takes a delivery out of `pending`, changes a pending one, or turns a dead letter into `done`
//! after a success of the same attempt: none makes a finished event unfinished.) For one event E, either:
//! - the replay locked E first: step 1 skips E while the replay runs; and if the replay committed
//!   before step 1 reached E, its commit precedes step 2's snapshot: step 2 sees the pending
//!   delivery and keeps E; or
//! - step 1 locked E first: the replay waits for the purge's commit, then finds E deleted
//!   (nothing to replay: its deliveries were finished when it went) or kept.
//!
//! Tested by `tests/e2e/pg_races.rs`, which holds the purge after its first snapshot while a
//! replay commits.

use deadpool_postgres::Client;

use crate::store::{StoreError, PURGE_CHUNK};

/// "Nothing keeps event `e`": no pending delivery, no dead letter that died at or after the
/// cutoff (the statement's parameter `dead_before`).
fn finished(dead_before: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id
             AND (d.state = 'pending' OR (d.state = 'dead' AND d.updated_at >= {dead_before})))"
    )
}

/// [`crate::store::Store::purge`]: at most [`PURGE_CHUNK`] events, oldest first; returns how
/// many were deleted.
pub(super) async fn purge(
    c: &mut Client,
    before_ms: i64,
    dead_before_ms: i64,
) -> Result<u64, StoreError> {
    let tx = c.transaction().await?;
    let pick = format!(
        "SELECT e.id FROM events e WHERE e.received_at < $1 AND {}
         ORDER BY e.received_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        finished("$3")
    );
    let ids: Vec<String> = tx
        .query(&pick, &[&before_ms, &(PURGE_CHUNK as i64), &dead_before_ms])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if ids.is_empty() {
        tx.commit().await?;
        return Ok(0);
    }
    // A new statement, a new snapshot: taken after the locks above.
    let delete = format!(
        "DELETE FROM events e WHERE e.id = ANY($1) AND {}",
        finished("$2")
    );
    let n = tx.execute(&delete, &[&ids, &dead_before_ms]).await?;
    tx.commit().await?;
    Ok(n)
}
