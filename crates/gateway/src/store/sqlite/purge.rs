//! The embedded store's retention purge, one bounded step at a time on the writer thread (see
//! [`crate::store::Store::purge_step`]).

use rusqlite::{params, OptionalExtension};

use super::dedup::Dedup;
use super::floors;
use crate::store::{PurgeCursor, PurgeStep, StoreError, PURGE_CHUNK};

/// One step of the retention purge: of the [`PURGE_CHUNK`] oldest events received before
/// `before` and after the cursor `after` (`(received_at, seq)`), removes the finished ones (and
/// their deliveries), so one step examines a bounded number of events however many old ones are
/// still held and never holds the writer long. The caller goes on from the returned cursor.
pub(super) fn step(
    tx: &rusqlite::Transaction<'_>,
    (before, dead_before): (i64, i64),
    after: (i64, i64),
    mut ids: Option<&mut Dedup>,
) -> Result<PurgeStep, StoreError> {
    let window = "SELECT seq FROM events WHERE received_at < ?1
                  AND (received_at, seq) > (?4, ?5) ORDER BY received_at, seq LIMIT ?2";
    let any_old = tx
        .prepare_cached(
            "SELECT 1 FROM events WHERE received_at < ?1 AND (received_at, seq) > (?2, ?3)
             LIMIT 1",
        )?
        .exists(params![before, after.0, after.1])?;
    if !any_old {
        // Nothing to examine: no write at all.
        return Ok(PurgeStep {
            removed: 0,
            next: None,
        });
    }
    floors::raise(tx)?;
    let last: Option<(i64, i64)> = tx
        .prepare_cached(
            "SELECT received_at, seq FROM events WHERE received_at < ?1
             AND (received_at, seq) > (?3, ?4) ORDER BY received_at, seq LIMIT 1 OFFSET ?2 - 1",
        )?
        .query_row(params![before, PURGE_CHUNK as i64, after.0, after.1], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    // The same window and check in the three statements: removing done and old dead
    // deliveries changes no event's "has a pending delivery or a recent dead letter".
    let old = format!(
        "SELECT e.seq FROM events e WHERE e.seq IN ({window}) AND NOT EXISTS
         (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND (d.state = 'pending'
             OR (d.state = 'dead' AND d.updated_at >= ?3)))"
    );
    let args = params![before, PURGE_CHUNK as i64, dead_before, after.0, after.1];
    tx.prepare_cached(&format!(
        "DELETE FROM deliveries WHERE event_seq IN ({old})"
    ))?
    .execute(args)?;
    let mut stmt = tx.prepare_cached(&format!(
        "DELETE FROM event_ids WHERE seq IN ({old}) RETURNING hash, seq"
    ))?;
    let mut gone = stmt.query(args)?;
    while let Some(row) = gone.next()? {
        if let Some(index) = ids.as_deref_mut() {
            index.remove(row.get(0)?, row.get(1)?);
        }
    }
    let n = tx
        .prepare_cached(&format!("DELETE FROM events WHERE seq IN ({old})"))?
        .execute(args)?;
    Ok(PurgeStep {
        removed: n as u64,
        next: last.map(|(at, seq)| PurgeCursor::Seq(at, seq)),
    })
}
