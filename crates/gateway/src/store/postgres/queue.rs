//! The delivery queue's reads on PostgreSQL: the deliveries due (free, expired or this
//! replica's claims), pending deliveries with their events for the calls, the backlog counts
//! for metrics and readiness, and the plugin instances with pending deliveries.

use std::sync::Arc;

use deadpool_postgres::Client;

use super::{Claim, DB_NOW_MS};
use crate::store::{Backlog, Body, Due, DueDelivery, PendingDelivery, StoreError};

/// [`crate::store::Store::due`].
pub(super) async fn due(
    c: &Client,
    claim: &Claim,
    now_ms: i64,
    after: (i64, i64),
    limit: usize,
) -> Result<Due, StoreError> {
    // Free, expired or ours: another replica's live claim is its business.
    let sql = format!(
        "SELECT key, plugin, attempts, next_at, generation FROM deliveries
         WHERE state = 'pending' AND next_at <= $1 AND (next_at, key) > ($2, $3)
           AND (claimed_by IS NULL OR claimed_by = $5 OR lease_until < {DB_NOW_MS})
         ORDER BY next_at, key LIMIT $4"
    );
    let stmt = c.prepare_cached(&sql).await?;
    let rows = c
        .query(
            &stmt,
            &[&now_ms, &after.0, &after.1, &(limit as i64), &claim.replica],
        )
        .await?;
    let deliveries = rows
        .iter()
        .map(|r| DueDelivery {
            key: r.get(0),
            plugin: r.get(1),
            attempts: r.get::<_, i32>(2).max(0) as u32,
            next_at_ms: r.get(3),
            generation: r.get::<_, i32>(4).max(0) as u32,
        })
        .collect();
    let next_due_ms: Option<i64> = c
        .query_one(
            "SELECT MIN(next_at) FROM deliveries WHERE state = 'pending' AND next_at > $1",
            &[&now_ms],
        )
        .await?
        .get(0);
    Ok(Due {
        deliveries,
        next_due_ms,
    })
}

/// [`crate::store::Store::load_pending`].
pub(super) async fn load_pending(
    c: &Client,
    keys: &[i64],
) -> Result<Vec<PendingDelivery>, StoreError> {
    let stmt = c
        .prepare_cached(
            "SELECT d.key, d.event_id, d.plugin, d.attempts, e.app, e.event_type,
                    e.received_at, e.body, d.generation, d.crashes
             FROM deliveries d JOIN events e ON e.id = d.event_id
             WHERE d.key = ANY($1) AND d.state = 'pending' ORDER BY d.key",
        )
        .await?;
    let rows = c.query(&stmt, &[&keys]).await?;
    Ok(rows
        .iter()
        .map(|r| PendingDelivery {
            key: r.get(0),
            event_id: r.get(1),
            plugin: r.get(2),
            attempts: r.get::<_, i32>(3).max(0) as u32,
            app: r.get(4),
            event_type: r.get(5),
            received_at_ms: r.get(6),
            body: Body::stored(Arc::from(r.get::<_, String>(7))),
            generation: r.get::<_, i32>(8).max(0) as u32,
            crashes: r.get::<_, i32>(9).max(0) as u32,
        })
        .collect())
}

/// [`crate::store::Store::backlog`].
pub(super) async fn backlog(c: &Client) -> Result<Backlog, StoreError> {
    let row = c
        .query_one(
            "SELECT COUNT(*), MIN(e.received_at) FROM deliveries d
             JOIN events e ON e.id = d.event_id WHERE d.state = 'pending'",
            &[],
        )
        .await?;
    let pending: i64 = row.get(0);
    let oldest: Option<i64> = row.get(1);
    let pending_by_plugin = c
        .query(
            "SELECT plugin, COUNT(*) FROM deliveries WHERE state = 'pending'
             GROUP BY plugin",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1).max(0) as u64))
        .collect();
    let dead: i64 = c
        .query_one("SELECT COUNT(*) FROM deliveries WHERE state = 'dead'", &[])
        .await?
        .get(0);
    Ok(Backlog {
        pending: pending.max(0) as u64,
        oldest_pending_ms: oldest,
        pending_by_plugin,
        dead: dead.max(0) as u64,
    })
}

/// [`crate::store::Store::pending_plugins`].
pub(super) async fn pending_plugins(c: &Client) -> Result<Vec<String>, StoreError> {
    Ok(c.query(
        "SELECT DISTINCT plugin FROM deliveries WHERE state = 'pending' ORDER BY plugin",
        &[],
    )
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect())
}
