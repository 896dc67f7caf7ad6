//! Group commit for ingest: every `accept` waiting at that moment goes into one transaction of
//! two statements (the events, then the deliveries of those that were new), committed once, and
//! only then answered. `ON CONFLICT DO NOTHING` on the event id is the dedup across replicas;
//! ids are inserted in sorted order so that two replicas' batches sharing ids cannot deadlock.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};

use super::{connect, retryable, DB_NOW_MS};
use crate::store::sqlite::now_ms;
use crate::store::{Accepted, NewEvent, StoreError};

/// The most events in one transaction.
const MAX_BATCH: usize = 512;
/// Under Lark's 3 s answer deadline: a database slower than this answers 503 (Lark retries).
const ACCEPT_TIMEOUT: Duration = Duration::from_millis(2_500);
/// Attempts of one batch when the database reports a deadlock or serialization failure.
const TRIES: usize = 3;

/// One `accept` waiting for its commit.
pub(super) struct Job {
    pub event: NewEvent,
    pub reply: oneshot::Sender<Result<Accepted, StoreError>>,
}

/// The most event bytes in one transaction: the bodies travel as one array parameter, and
/// PostgreSQL refuses a value over 1 GiB (a few events near `max_body_bytes` would fail the
/// whole commit, the small ones with them). A larger event goes alone.
const MAX_BATCH_BYTES: usize = 64 << 20;

/// The ingest task: batch, commit, answer; ends when every sender is gone.
pub(super) async fn run(
    pool: Pool,
    mut rx: mpsc::UnboundedReceiver<Job>,
    claim: super::Claim,
    reach: std::sync::Arc<super::reach::Reach>,
    tls: super::tls::Connector,
) {
    let mut waiting = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut waiting, MAX_BATCH).await > 0 {
        while !waiting.is_empty() {
            let n = within_budget(waiting.iter().map(|j| j.event.body.len()), MAX_BATCH_BYTES);
            let batch: Vec<Job> = waiting.drain(..n).collect();
            commit_and_answer(&pool, batch, &claim, (&reach, &tls)).await;
        }
    }
}

/// How many of the first events (at least one) fit `budget` bytes together.
fn within_budget(sizes: impl Iterator<Item = usize>, budget: usize) -> usize {
    let mut total = 0usize;
    let mut n = 0;
    for size in sizes {
        total = total.saturating_add(size);
        if n > 0 && total > budget {
            break;
        }
        n += 1;
    }
    n
}

/// Commits `batch` (retrying a deadlock or serialization failure) and answers each job.
async fn commit_and_answer(
    pool: &Pool,
    batch: Vec<Job>,
    claim: &super::Claim,
    (reach, tls): (&super::reach::Reach, &super::tls::Connector),
) {
    crate::metrics::observe_commit_batch(batch.len(), false);
    let events: Vec<&NewEvent> = batch.iter().map(|j| &j.event).collect();
    let mut result = Err(StoreError("not tried".into()));
    for _ in 0..TRIES {
        let running = std::sync::OnceLock::new();
        let attempt = commit(pool, &events, claim, &running);
        result = match tokio::time::timeout(ACCEPT_TIMEOUT, attempt).await {
            Ok(r) => r,
            Err(_) => {
                // Given up on (answered 503, Lark re-sends): not left running on the server,
                // where its uncommitted rows would hold the re-sent ids' inserts back.
                // The connection closed first (see `PgStore::op`), then the cancel sent.
                super::connect::discard_idle(pool);
                if let Some(token) = running.get() {
                    super::connect::cancel_in_background(token.clone(), tls.clone());
                }
                Err(StoreError(format!(
                    "database: no commit within {} ms",
                    ACCEPT_TIMEOUT.as_millis()
                )))
            }
        };
        match &result {
            Err(e) if retryable(e) => continue,
            _ => break,
        }
    }
    match result {
        Ok(outcomes) => {
            for (job, outcome) in batch.into_iter().zip(outcomes) {
                let _ = job.reply.send(Ok(outcome));
            }
        }
        Err(e) => {
            reach.failed();
            // A database down (or refusing every batch) fails every batch while Lark re-sends:
            // at most 10 lines a second, the next one counting those not logged.
            static FAILURES: std::sync::LazyLock<crate::ingress::log_limit::RefusalLog> =
                std::sync::LazyLock::new(Default::default);
            if let Some(skipped) = FAILURES.admit(std::time::Instant::now()) {
                tracing::error!(error = %e, events = batch.len(), skipped, "store transaction failed");
            }
            for job in batch {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
}

const INSERT_EVENTS: &str = "
INSERT INTO events (id, app, event_type, schema, received_at, body, routed)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[],
                     $7::bool[])
ON CONFLICT (id) DO NOTHING
RETURNING id";

/// Commits one batch; one answer per event, in order.
async fn commit(
    pool: &Pool,
    batch: &[&NewEvent],
    claim: &super::Claim,
    running: &std::sync::OnceLock<tokio_postgres::CancelToken>,
) -> Result<Vec<Accepted>, StoreError> {
    // The first of several same-id events in a batch is the candidate; the rest are duplicates.
    let mut seen = HashSet::new();
    let mut candidates: Vec<&NewEvent> = batch
        .iter()
        .copied()
        .filter(|e| seen.insert(e.id.as_str()))
        .collect();
    candidates.sort_by(|a, b| a.id.cmp(&b.id));
    let ids: Vec<&str> = candidates.iter().map(|e| e.id.as_str()).collect();
    let apps: Vec<&str> = candidates.iter().map(|e| e.app.as_str()).collect();
    let types: Vec<&str> = candidates.iter().map(|e| e.event_type.as_str()).collect();
    let schemas: Vec<&str> = candidates.iter().map(|e| e.schema).collect();
    let received: Vec<i64> = candidates.iter().map(|e| e.received_at_ms).collect();
    let bodies: Vec<&str> = candidates.iter().map(|e| &*e.body).collect();
    let routed: Vec<bool> = candidates.iter().map(|e| !e.plugins.is_empty()).collect();

    let mut client = connect::client(pool).await?;
    let _ = running.set(client.cancel_token());
    let tx = client.transaction().await?;
    let stmt = tx.prepare_cached(INSERT_EVENTS).await?;
    let inserted: HashSet<String> = tx
        .query(
            &stmt,
            &[&ids, &apps, &types, &schemas, &received, &bodies, &routed],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut d_events = Vec::new();
    let mut d_plugins = Vec::new();
    for e in candidates.iter().filter(|e| inserted.contains(&e.id)) {
        for p in &e.plugins {
            d_events.push(e.id.as_str());
            d_plugins.push(p.as_str());
        }
    }
    let mut keys: HashMap<(String, String), i64> = HashMap::new();
    if !d_events.is_empty() {
        // The accepting replica claims its fresh deliveries: it runs them at once, and the
        // others take them only if its lease runs out.
        let sql = format!(
            "INSERT INTO deliveries
                 (event_id, plugin, state, attempts, next_at, updated_at, claimed_by, lease_until)
             SELECT e, p, 'pending', 0, $3, $3, $4, {DB_NOW_MS} + $5
             FROM unnest($1::text[], $2::text[]) AS u(e, p)
             RETURNING key, event_id, plugin"
        );
        let stmt = tx.prepare_cached(&sql).await?;
        let now = now_ms();
        for row in tx
            .query(
                &stmt,
                &[&d_events, &d_plugins, &now, &claim.replica, &claim.lease_ms],
            )
            .await?
        {
            keys.insert((row.get(1), row.get(2)), row.get(0));
        }
    }
    tx.commit().await?;

    let mut first = HashSet::new();
    Ok(batch
        .iter()
        .map(|e| {
            if !inserted.contains(&e.id) || !first.insert(e.id.as_str()) {
                return Accepted::Duplicate;
            }
            let deliveries = e
                .plugins
                .iter()
                .filter_map(|p| {
                    keys.get(&(e.id.clone(), p.clone()))
                        .map(|k| (*k, p.clone()))
                })
                .collect();
            Accepted::New { deliveries }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::within_budget;

    #[test]
    fn a_batch_takes_events_up_to_its_byte_budget_and_at_least_one() {
        let take = |sizes: &[usize]| within_budget(sizes.iter().copied(), 100);
        assert_eq!(take(&[10, 20, 30]), 3);
        assert_eq!(take(&[60, 40, 1]), 2);
        assert_eq!(take(&[150, 1]), 1, "a larger event goes alone");
        assert_eq!(take(&[1, 150]), 1);
        assert_eq!(take(&[usize::MAX, usize::MAX]), 1);
        assert_eq!(take(&[]), 0);
    }
}
