//! The operator commands' queries on PostgreSQL (`events show/list`, `deliveries list`,
//! `dead-letters`, `replay`, `store check`): the same answers as the embedded store's.

use deadpool_postgres::Client;
use tokio_postgres::Row;

use super::{schema, DB_NOW_MS, DEAD_RUNNING};
use crate::store::sqlite::now_ms;
use crate::store::{
    AttemptRecord, DeadLetterCounts, DeadLetterQuery, DeliveryFilter, DeliveryRecord, EventFilter,
    EventRecord, EventSummary, ReplaySelector, StoreError,
};

const DELIVERY_COLUMNS: &str = concat!(
    "event_id, plugin, state, attempts, next_at, last_error, updated_at, crashes, started > 0 OR ",
    dead_running!()
);

fn delivery(r: &Row) -> DeliveryRecord {
    DeliveryRecord {
        event_id: r.get(0),
        plugin: r.get(1),
        state: r.get(2),
        attempts: r.get::<_, i32>(3).max(0) as u32,
        next_at_ms: r.get(4),
        last_error: r.get(5),
        updated_at_ms: r.get(6),
        crashes: r.get::<_, i32>(7).max(0) as u32,
        running: r.get(8),
        history: Vec::new(),
    }
}

pub(super) async fn event(c: &Client, id: &str) -> Result<Option<EventRecord>, StoreError> {
    let Some(r) = c
        .query_opt(
            "SELECT id, app, event_type, schema, received_at, body FROM events WHERE id = $1",
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let mut deliveries: Vec<(i64, DeliveryRecord)> = c
        .query(
            &format!(
                "SELECT {DELIVERY_COLUMNS}, key FROM deliveries WHERE event_id = $1
                 ORDER BY plugin"
            ),
            &[&id],
        )
        .await?
        .iter()
        .map(|r| (r.get(9), delivery(r)))
        .collect();
    let history = c
        .query(
            "SELECT a.delivery_key, a.generation, a.attempt, a.outcome, a.reason, a.started_at,
                    a.duration_ms, a.recorded_at
             FROM attempts a JOIN deliveries d ON d.key = a.delivery_key
             WHERE d.event_id = $1 ORDER BY a.id",
            &[&id],
        )
        .await?;
    for a in &history {
        let key: i64 = a.get(0);
        if let Some((_, d)) = deliveries.iter_mut().find(|(k, _)| *k == key) {
            d.history.push(AttemptRecord {
                generation: a.get::<_, i32>(1).max(0) as u32,
                attempt: a.get::<_, i32>(2).max(0) as u32,
                outcome: a.get(3),
                reason: a.get(4),
                started_at_ms: a.get(5),
                duration_ms: a.get::<_, Option<i64>>(6).map(|d| d.max(0) as u64),
                recorded_at_ms: a.get(7),
            });
        }
    }
    let deliveries = deliveries.into_iter().map(|(_, d)| d).collect();
    Ok(Some(EventRecord {
        id: r.get(0),
        app: r.get(1),
        event_type: r.get(2),
        schema: r.get(3),
        received_at_ms: r.get(4),
        body: r.get(5),
        deliveries,
    }))
}

pub(super) async fn dead_letters(
    c: &Client,
    q: &DeadLetterQuery,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    let limit = q.limit.map(i64::from);
    let after = q.after.as_ref();
    let (at, id, plugin) = (
        after.map(|a| a.updated_at_ms),
        after.map(|a| a.event_id.as_str()),
        after.map(|a| a.plugin.as_str()),
    );
    Ok(c
        .query(
            // `COLLATE "C"`: byte order, as SQLite's, so a page ends where the next one starts
            // whatever the database's collation. The bounds on `updated_at` outside any `OR`,
            // as SQLite's (`sqlite/inspect.rs`): an index range from the cursor on, whatever
            // plan the server makes.
            &format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE state = 'dead'
                   AND ($1::text IS NULL OR plugin = $1)
                   AND updated_at >= COALESCE($2::bigint, -9223372036854775808)
                   AND updated_at <= COALESCE($4::bigint, 9223372036854775807)
                   AND ($4::bigint IS NULL OR (updated_at, event_id COLLATE \"C\", plugin COLLATE \"C\") < ($4, $5::text COLLATE \"C\", $6::text COLLATE \"C\"))
                 ORDER BY updated_at DESC, event_id COLLATE \"C\" DESC, plugin COLLATE \"C\" DESC LIMIT $3"
            ),
            &[&q.plugin, &q.since_ms, &limit, &at, &id, &plugin],
        )
        .await?
        .iter()
        .map(delivery)
        .collect())
}

pub(super) async fn dead_letter_counts(
    c: &Client,
    plugin: Option<String>,
) -> Result<DeadLetterCounts, StoreError> {
    let r = c
        .query_one(
            concat!(
                "SELECT COUNT(*), COUNT(*) FILTER (WHERE started > 0 OR ",
                dead_running!(),
                ") FROM deliveries WHERE state = 'dead' AND ($1::text IS NULL OR plugin = $1)"
            ),
            &[&plugin],
        )
        .await?;
    Ok(DeadLetterCounts {
        dead: r.get::<_, i64>(0).max(0) as u64,
        running: r.get::<_, i64>(1).max(0) as u64,
    })
}

pub(super) async fn list_events(
    c: &Client,
    f: EventFilter,
) -> Result<Vec<EventSummary>, StoreError> {
    let (before_ms, before_id) = f.before.clone().unzip();
    let rows = c
        .query(
            "SELECT e.id, e.app, e.event_type, e.received_at,
                    (SELECT COUNT(*) FROM deliveries d WHERE d.event_id = e.id),
                    (SELECT COUNT(*) FROM deliveries d WHERE d.event_id = e.id
                        AND d.state = 'pending'),
                    (SELECT COUNT(*) FROM deliveries d WHERE d.event_id = e.id
                        AND d.state = 'dead')
             FROM events e
             WHERE ($1::text IS NULL OR e.app = $1) AND ($2::text IS NULL OR e.event_type = $2)
               AND e.received_at >= $3
               AND ($4::text IS NULL OR EXISTS
                    (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.state = $4))
               AND ($6::bigint IS NULL OR e.received_at < $6
                    OR (e.received_at = $6 AND e.id < $7::text))
             ORDER BY e.received_at DESC, e.id DESC LIMIT $5",
            &[
                &f.app,
                &f.event_type,
                &f.since_ms,
                &f.state,
                &i64::from(f.limit),
                &before_ms,
                &before_id,
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| EventSummary {
            id: r.get(0),
            app: r.get(1),
            event_type: r.get(2),
            received_at_ms: r.get(3),
            deliveries: r.get::<_, i64>(4).max(0) as u64,
            pending: r.get::<_, i64>(5).max(0) as u64,
            dead: r.get::<_, i64>(6).max(0) as u64,
        })
        .collect())
}

pub(super) async fn list_deliveries(
    c: &Client,
    f: DeliveryFilter,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    Ok(c.query(
        &format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries
                 WHERE state = $1 AND (NOT $2 OR attempts > 0)
                   AND ($3::text IS NULL OR plugin = $3)
                 ORDER BY updated_at DESC LIMIT $4"
        ),
        &[&f.state, &f.retrying, &f.plugin, &i64::from(f.limit)],
    )
    .await?
    .iter()
    .map(delivery)
    .collect())
}

/// The schema version, and deliveries whose counters contradict each other.
pub(super) async fn check(c: &Client) -> Result<Vec<String>, StoreError> {
    let mut problems = Vec::new();
    let version = schema::version(c).await?;
    if version != schema::SCHEMA_VERSION {
        problems.push(format!(
            "schema version {version}, expected {}",
            schema::SCHEMA_VERSION
        ));
        return Ok(problems);
    }
    let bad: i64 = c
        .query_one(
            "SELECT COUNT(*) FROM deliveries WHERE attempts < 0 OR crashes < 0 OR generation < 0
                OR (state <> 'pending' AND started <> 0)",
            &[],
        )
        .await?
        .get(0);
    if bad > 0 {
        problems.push(format!(
            "{bad} deliveries with negative counters or a finished one marked started"
        ));
    }
    Ok(problems)
}

/// Replays (events by id, or the orphan rule's put-back; every dead letter goes in steps:
/// `steps.rs`) in one transaction that first share-locks the events concerned and then changes only
/// the deliveries of the events it locked, holding the locks until it commits: a retention purge
/// (which skips locked events, and checks again once it holds its own locks) can then never
/// delete an event whose delivery this replay made pending (see [`super::retention`]). An event
/// a purge deleted first is simply not replayed: it was finished.
pub(super) async fn replay(
    c: &mut Client,
    selector: ReplaySelector,
    lease_ms: i64,
) -> Result<u64, StoreError> {
    let now = now_ms();
    let tx = c.transaction().await?;
    // A replayed delivery's claim lasts at most one lease from now: a retry's claim runs to its
    // `next_at` plus a lease, so the replay of a delivery whose holder died waited up to
    // `max_backoff` more for another replica. A live holder whose call still runs renews it
    // (`GREATEST`), and the replay still waits for that call.
    let n = match selector {
        ReplaySelector::Events {
            ids,
            plugin,
            force: done_too,
            dead_only,
        } => {
            let locked = ids_of(
                &tx.query(
                    "SELECT id FROM events WHERE id = ANY($1) ORDER BY id FOR SHARE",
                    &[&ids],
                )
                .await?,
            );
            let sql = format!(
                "UPDATE deliveries SET state = 'pending', attempts = 0,
                     generation = generation + 1, started = 0, crashes = 0,
                     next_at = $3, updated_at = $3, lease_until = LEAST(lease_until, {DB_NOW_MS} + $6)
                 WHERE event_id = ANY($1) AND ($2::text IS NULL OR plugin = $2)
                   AND ($4 OR (state <> 'done' AND started = 0 AND NOT {DEAD_RUNNING}))
                   AND (NOT $5 OR state = 'dead')"
            );
            tx.execute(
                &sql,
                &[&locked, &plugin, &now, &done_too, &dead_only, &lease_ms],
            )
            .await?
        }
        ReplaySelector::Orphans { keys, reason } => {
            let (k, generation): (Vec<i64>, Vec<i32>) =
                keys.iter().map(|(k, g)| (*k, *g as i32)).unzip();
            // Their events share-locked first, as every replay does (see `retention`).
            tx.query(
                "SELECT e.id FROM events e JOIN deliveries d ON d.event_id = e.id
                 WHERE d.key = ANY($1) ORDER BY e.id FOR SHARE OF e",
                &[&k],
            )
            .await?;
            let sql = format!(
                "UPDATE deliveries d SET state = 'pending', attempts = 0,
                     generation = d.generation + 1, started = 0, crashes = 0,
                     next_at = $3, updated_at = $3,
                     lease_until = LEAST(d.lease_until, {DB_NOW_MS} + $5)
                 FROM unnest($1::bigint[], $2::int[]) AS u(key, generation)
                 WHERE d.key = u.key AND d.generation = u.generation AND d.state = 'dead'
                   AND d.started = 0 AND d.last_error = $4
                   AND NOT (d.claimed_by IS NOT NULL AND d.lease_until > {DB_NOW_MS})"
            );
            tx.execute(&sql, &[&k, &generation, &now, &reason, &lease_ms])
                .await?
        }
        // Written in steps of their own (`steps.rs`), never in one transaction.
        ReplaySelector::DeadLetters { .. } => {
            return Err(StoreError(
                "internal: every dead letter is replayed in steps".into(),
            ))
        }
    };
    tx.commit().await?;
    Ok(n)
}

/// The first column of `rows`, as event ids.
fn ids_of(rows: &[Row]) -> Vec<String> {
    rows.iter().map(|r| r.get(0)).collect()
}
