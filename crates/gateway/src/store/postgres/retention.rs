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
//! 1. among a window of the oldest events (at most `PURGE_CHUNK`, after the previous step's
//!    cursor: a step's cost is bounded however many old events are still held), pick those that
//!    look finished and lock them, `FOR UPDATE SKIP LOCKED` (an event another replica is
//!    purging or replaying is skipped, never waited for);
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

use crate::store::{PurgeCursor, PurgeStep, StoreError, PURGE_CHUNK};

/// "Nothing keeps event `e`": no pending delivery, no dead letter that died at or after the
/// cutoff (the statement's parameter `dead_before`).
fn finished(dead_before: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id
             AND (d.state = 'pending' OR (d.state = 'dead' AND d.updated_at >= {dead_before})))"
    )
}

/// [`crate::store::Store::purge_step`]: of the [`PURGE_CHUNK`] oldest events received before
/// the cutoff and after `after` (`(received_at, id)`), deletes those finished; returns how many,
/// and the last event examined (the next step's start), so a step's cost is bounded however many
/// old events are still held.
pub(super) async fn purge(
    c: &mut Client,
    (before_ms, dead_before_ms): (i64, i64),
    after: Option<(i64, String)>,
) -> Result<PurgeStep, StoreError> {
    let (after_at, after_id) = after.unwrap_or((i64::MIN, String::new()));
    let tx = c.transaction().await?;
    let window = tx
        .query(
            "SELECT received_at, id FROM events WHERE received_at < $1
               AND (received_at, id) > ($3, $4)
             ORDER BY received_at, id LIMIT $2",
            &[&before_ms, &(PURGE_CHUNK as i64), &after_at, &after_id],
        )
        .await?;
    let next = (window.len() as u64 == PURGE_CHUNK)
        .then(|| window.last().map(|r| PurgeCursor::Id(r.get(0), r.get(1))))
        .flatten();
    let examined: Vec<String> = window.iter().map(|r| r.get(1)).collect();
    let pick = format!(
        "SELECT e.id FROM events e WHERE e.id = ANY($1) AND {}
         ORDER BY e.received_at, e.id FOR UPDATE SKIP LOCKED",
        finished("$2")
    );
    let ids: Vec<String> = tx
        .query(&pick, &[&examined, &dead_before_ms])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if ids.is_empty() {
        tx.commit().await?;
        return Ok(PurgeStep { removed: 0, next });
    }
    // A new statement, a new snapshot: taken after the locks above.
    let delete = format!(
        "DELETE FROM events e WHERE e.id = ANY($1) AND {}",
        finished("$2")
    );
    let n = tx.execute(&delete, &[&ids, &dead_before_ms]).await?;
    tx.commit().await?;
    Ok(PurgeStep { removed: n, next })
}
