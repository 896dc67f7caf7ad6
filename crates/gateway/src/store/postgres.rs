//! The PostgreSQL store, shared by several gateway replicas: dedup by the events' primary key,
//! one delivery queue, and claims with leases so that a delivery's attempt runs in one replica
//! at a time.
//!
//! - Ingest is group-committed ([`ingest`]); a fresh delivery is claimed by the replica that
//!   accepted it (`claimed_by`, `lease_until`), which hands it to its engine at once.
//! - [`Store::start_attempts`] is the arbiter: it marks an attempt started only if this replica
//!   holds the claim or the claim is free or expired (and no crashed call awaits counting), and
//!   renews the lease. Others skip a delivery whose lease holds.
//! - While a replica works on a delivery (its call, its outcome write), its engine renews the
//!   lease ([`Store::renew_claims`], every third of the lease): a live replica keeps its claims
//!   however long a call or a write takes ([`claims`]).
//! - A replica that dies leaves its claims behind; once their leases expire, any replica's
//!   sweeper counts an attempt that was running as crashed ([`Store::recover_crashed`]) and
//!   takes the delivery over.
//! - The retention purge locks the events it is about to remove and checks again, under those
//!   locks, that nothing holds them; a replay share-locks the events it changes first. So a
//!   replay racing a purge either keeps its event or finds it gone before it changed anything
//!   ([`retention`] has the argument).
//! - Leases are measured on the database's clock; `next_at` on the replica's (keep replicas'
//!   clocks in sync, as for any cluster).
//!
//! Every operation has a deadline, and a connection the server closed is replaced on the next
//! checkout: while the database is down, ingest answers 503 and delivery waits; both resume on
//! their own once it is back.

/// The database's clock in Unix milliseconds, as SQL text (a macro so that other texts can
/// embed it: [`DB_NOW_MS`]).
macro_rules! db_now_ms {
    () => {
        "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT"
    };
}

/// A dead letter whose call still runs on the replica that claims it (a call hung past its
/// timeout, or one running when the orphan rule took its delivery): the claim is kept and
/// renewed while the call runs, dropped once its outcome is in, and lapses if that replica
/// dies. Shown as running; replayed only when forced ([`DEAD_RUNNING`]).
macro_rules! dead_running {
    () => {
        concat!(
            "(state = 'dead' AND claimed_by IS NOT NULL AND lease_until > ",
            db_now_ms!(),
            ")"
        )
    };
}

mod claims;
mod connect;
mod ingest;
mod inspect;
mod open;
mod outcome;
mod queue;
mod reach;
mod retention;
mod schema;
mod steps;
mod tls;

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};

pub use connect::error_text;
pub use open::schema_state;
pub use schema::SCHEMA_VERSION;

use super::{
    Accepted, Backlog, DeadLetterCounts, DeadLetterQuery, DeliveryFilter, DeliveryRecord, Due,
    EventFilter, EventRecord, EventSummary, FinishRecord, Guard, NewEvent, OrphanRun,
    PendingDelivery, PurgeCursor, PurgeStep, ReplaySelector, Store, StoreError, StoreFuture,
};

/// The database's clock in Unix milliseconds (leases are measured on it).
const DB_NOW_MS: &str = db_now_ms!();
/// See [`dead_running`].
const DEAD_RUNNING: &str = dead_running!();
/// The longest any one operation may take before it fails.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// Who claims, and for how long.
#[derive(Debug, Clone)]
struct Claim {
    /// This process: host, pid and a random suffix (unique per start).
    replica: String,
    lease_ms: i64,
}

impl Claim {
    fn lease(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.lease_ms).unwrap_or(0))
    }

    /// A live replica renews its claims within this of the database answering.
    fn third_of_lease(&self) -> Duration {
        self.lease() / 3
    }
}

/// The PostgreSQL-backed [`Store`].
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// One connection of its own for lease renewals: slow outcome writes holding every pooled
    /// connection (the case renewals exist for) must not keep a renewal waiting.
    renewals: Pool,
    /// When an operation last failed (crashed attempts wait for a steady lease: `reach`).
    reach: Arc<reach::Reach>,
    /// For the cancel request of an operation given up on (`connect::cancel`).
    tls: tls::Connector,
    shown: String,
    claim: Claim,
    ingest: Mutex<Option<mpsc::UnboundedSender<ingest::Job>>>,
}

/// Why `store backup` refuses a PostgreSQL store (said before the store is opened, so also
/// when the database is unreachable).
pub const BACKUP_REFUSED: &str = "a PostgreSQL store is backed up with PostgreSQL's tools \
     (pg_dump, or the server's base backups and WAL archiving), not by the gateway";

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.inner.shown)
            .field("replica", &self.inner.claim.replica)
            .finish()
    }
}

/// A deadlock (SQLSTATE 40P01) or serialization failure (40001): the same work may simply be
/// tried again. By code, which [`connect::error_text`] puts in every database error: the
/// message is in the server's `lc_messages` language (a German server's deadlock was answered
/// 503 instead of tried again).
fn retryable(e: &StoreError) -> bool {
    e.0.ends_with("(SQLSTATE 40P01)") || e.0.ends_with("(SQLSTATE 40001)")
}

impl PgStore {
    /// Runs `f` with a pooled connection, within [`OP_TIMEOUT`].
    fn op<T, F, Fut>(&self, f: F) -> StoreFuture<T>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Client, Arc<Inner>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send,
    {
        let inner = self.inner.clone();
        Box::pin(async move {
            let began = std::time::Instant::now();
            let running = std::sync::OnceLock::new();
            let work = async {
                let client = connect::client(&inner.pool).await?;
                let _ = running.set(client.cancel_token());
                f(client, inner.clone()).await
            };
            let result = match tokio::time::timeout(OP_TIMEOUT, work).await {
                Ok(done) => done,
                Err(_) => {
                    // The connection went back to the pool as the work was dropped: closed
                    // first, before the cancel's round trip, so no other operation takes it
                    // meanwhile (the cancel would end that one's statement, or it would wait
                    // behind the hung one).
                    connect::discard_idle(&inner.pool);
                    // Sent before the answer: the caller may be a command about to exit.
                    if let Some(token) = running.get() {
                        connect::cancel(token.clone(), inner.tls.clone()).await;
                    }
                    Err(StoreError("database: no answer within 10 s".into()))
                }
            };
            // An answer that took a third of a lease is an outage too: the database (or the
            // way to it) stalled long enough that other replicas' renewals may have failed
            // meanwhile, their leases run out while they live (`reach`).
            if began.elapsed() > inner.claim.third_of_lease() {
                inner.reach.failed();
            }
            inner.reach.note(result)
        })
    }
}

/// Rows' first column as a set of keys.
fn keys(rows: &[tokio_postgres::Row]) -> HashSet<i64> {
    rows.iter().map(|r| r.get(0)).collect()
}

impl Store for PgStore {
    fn accept(&self, event: NewEvent) -> StoreFuture<Accepted> {
        let (reply, rx) = oneshot::channel();
        let sent = match self.inner.ingest.lock() {
            Ok(guard) => guard
                .as_ref()
                .is_some_and(|s| s.send(ingest::Job { event, reply }).is_ok()),
            Err(_) => false,
        };
        Box::pin(async move {
            if !sent {
                return Err(StoreError("store is closed".into()));
            }
            rx.await
                .map_err(|_| StoreError("store ingest stopped".into()))?
        })
    }

    fn finish_many(&self, records: Vec<FinishRecord>) -> StoreFuture<Vec<bool>> {
        self.op(
            move |c, inner| async move { outcome::finish_many(&c, &inner.claim, &records).await },
        )
    }

    fn due(&self, now_ms: i64, after: (i64, i64), limit: usize) -> StoreFuture<Due> {
        self.op(
            move |c, inner| async move { queue::due(&c, &inner.claim, now_ms, after, limit).await },
        )
    }

    fn load_pending(&self, keys: Vec<i64>) -> StoreFuture<Vec<PendingDelivery>> {
        self.op(move |c, _| async move { queue::load_pending(&c, &keys).await })
    }

    fn purge_step(
        &self,
        before_ms: i64,
        dead_before_ms: i64,
        after: Option<PurgeCursor>,
    ) -> StoreFuture<PurgeStep> {
        let after = match after {
            None => None,
            Some(PurgeCursor::Id(at, id)) => Some((at, id)),
            Some(other) => {
                return Box::pin(async move {
                    Err(StoreError(format!(
                        "not this store's purge cursor: {other:?}"
                    )))
                })
            }
        };
        self.op(move |mut c, _| async move {
            retention::purge(&mut c, (before_ms, dead_before_ms), after).await
        })
    }

    fn probe(&self) -> StoreFuture<()> {
        self.op(|c, _| async move { schema::probe(&c).await })
    }

    fn backlog(&self) -> StoreFuture<Backlog> {
        self.op(|c, _| async move { queue::backlog(&c).await })
    }

    fn pending_plugins(&self) -> StoreFuture<Vec<String>> {
        self.op(|c, _| async move { queue::pending_plugins(&c).await })
    }

    fn dead_letter_plugin(
        &self,
        plugin: String,
        error: String,
        before_ms: i64,
        running: Vec<i64>,
    ) -> StoreFuture<OrphanRun> {
        self.dead_letter_plugin_steps(plugin, error, before_ms, running)
    }

    fn start_attempts(&self, deliveries: Vec<(i64, Guard)>) -> StoreFuture<Vec<bool>> {
        // Another replica's lapsed claim is taken only once this one has reached the database
        // for a whole lease: after an outage, that replica may live, its call running, and
        // renew within a third of a lease (`reach`); and only by a statement the database runs
        // within a third of a lease of now on its clock (one held up by a stall takes none).
        let lapsed_until = match self.inner.reach.clock_offset_ms() {
            Some(offset) if self.inner.reach.steady_for(self.inner.claim.lease()) => {
                let third = i64::try_from(self.inner.claim.third_of_lease().as_millis())
                    .unwrap_or(i64::MAX);
                Some(
                    crate::store::sqlite::now_ms()
                        .saturating_add(offset)
                        .saturating_add(third),
                )
            }
            _ => None,
        };
        self.op(move |c, inner| async move {
            claims::start_attempts(&c, &inner.claim, &deliveries, lapsed_until).await
        })
    }

    fn recover_crashed(
        &self,
        max_attempts: u32,
        max_crashes: u32,
        running: Vec<i64>,
    ) -> StoreFuture<crate::store::Recovered> {
        if !self.inner.reach.steady_for(self.inner.claim.lease()) {
            // Just back from a failure: the other replicas have not had a lease to renew in.
            return Box::pin(async { Ok(crate::store::Recovered::default()) });
        }
        self.op(move |c, inner| async move {
            // Counted only by a statement the database runs within a third of a lease of its
            // clock read just before, in a round trip that took less: one held up by a stall
            // (the database frozen, then resumed with every lease run out) counts nothing,
            // since the replicas that own those calls could not renew meanwhile.
            let third = inner.claim.third_of_lease();
            let asked = std::time::Instant::now();
            let asked_ms = crate::store::sqlite::now_ms();
            let db_now: i64 = c
                .query_one(&format!("SELECT {DB_NOW_MS}"), &[])
                .await?
                .get(0);
            let rtt = asked.elapsed();
            if rtt > third {
                inner.reach.failed();
                return Ok(crate::store::Recovered::default());
            }
            let rtt_ms = i64::try_from(rtt.as_millis()).unwrap_or(i64::MAX);
            inner.reach.clock_read(db_now, asked_ms, rtt_ms);
            let deadline = db_now.saturating_add(i64::try_from(third.as_millis()).unwrap_or(0));
            outcome::recover_crashed(&c, max_attempts, max_crashes, &running, deadline).await
        })
    }

    fn shared(&self) -> bool {
        true
    }

    fn release_claims(&self, running: Vec<i64>) -> StoreFuture<u64> {
        self.op(
            move |c, inner| async move { claims::release_claims(&c, &inner.claim, &running).await },
        )
    }

    fn lease(&self) -> Option<Duration> {
        Some(Duration::from_millis(
            u64::try_from(self.inner.claim.lease_ms).unwrap_or(0),
        ))
    }

    fn renew_claims(&self, keys: Vec<i64>) -> StoreFuture<u64> {
        // On its own connection, not the pool's (see `Inner::renewals`); the engine bounds the
        // wait (a renewal outlasting its period is given up and the next one sent).
        let inner = self.inner.clone();
        Box::pin(async move {
            // A renewal the engine gives up on (dropped past its period) failed too.
            let failed = reach::OnDrop(Some((inner.reach.clone(), inner.renewals.clone())));
            let renewed = async {
                let c = connect::client(&inner.renewals).await?;
                claims::renew_claims(&c, &inner.claim, &keys).await
            }
            .await;
            failed.settle(renewed.is_ok());
            renewed
        })
    }

    fn describe(&self) -> String {
        self.inner.shown.clone()
    }

    fn close(&self) {
        if let Ok(mut tx) = self.inner.ingest.lock() {
            tx.take();
        }
        self.inner.pool.close();
        self.inner.renewals.close();
    }

    fn event(&self, id: String) -> StoreFuture<Option<EventRecord>> {
        self.op(move |c, _| async move { inspect::event(&c, &id).await })
    }

    fn dead_letters(&self, query: DeadLetterQuery) -> StoreFuture<Vec<DeliveryRecord>> {
        self.op(move |c, _| async move { inspect::dead_letters(&c, &query).await })
    }

    fn dead_letter_counts(&self, plugin: Option<String>) -> StoreFuture<DeadLetterCounts> {
        self.op(move |c, _| async move { inspect::dead_letter_counts(&c, plugin).await })
    }

    fn plugin_names(&self) -> StoreFuture<Vec<String>> {
        self.op(|c, _| async move {
            Ok(c.query(
                "SELECT DISTINCT plugin FROM deliveries ORDER BY plugin",
                &[],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
        })
    }

    fn list_events(&self, filter: EventFilter) -> StoreFuture<Vec<EventSummary>> {
        self.op(move |c, _| async move { inspect::list_events(&c, filter).await })
    }

    fn list_deliveries(&self, filter: DeliveryFilter) -> StoreFuture<Vec<DeliveryRecord>> {
        self.op(move |c, _| async move { inspect::list_deliveries(&c, filter).await })
    }

    fn check(&self) -> StoreFuture<Vec<String>> {
        self.op(|c, _| async move { inspect::check(&c).await })
    }

    fn replay(&self, selector: ReplaySelector) -> StoreFuture<u64> {
        if let ReplaySelector::DeadLetters { plugin, force } = selector {
            return self.replay_dead_letter_steps(plugin, force);
        }
        self.op(move |mut c, inner| async move {
            inspect::replay(&mut c, selector, inner.claim.lease_ms).await
        })
    }

    fn backup(&self, _dest: std::path::PathBuf) -> StoreFuture<u64> {
        Box::pin(async { Err(StoreError(BACKUP_REFUSED.into())) })
    }

    fn purge_dead_letters(&self, plugin: Option<String>, before_ms: i64) -> StoreFuture<u64> {
        self.purge_dead_letter_steps(plugin, before_ms)
    }
}
