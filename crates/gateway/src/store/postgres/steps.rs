//! Writes over every dead letter (a replay, a purge), and the orphan rule's over every pending
//! delivery of a removed plugin instance, in steps of [`DEAD_LETTER_STEP`] delivery keys, each
//! its own short transaction within the operation deadline, as the embedded store does. In one
//! statement they outgrew the deadline past about 600,000 dead letters: a replay
//! was rolled back every time (it could never be done), and a purge, one auto-committed
//! `DELETE`, went on committing on the server after the command had said it failed.
//!
//! Only what was dead when the command was asked is taken (a purge: died before its cutoff; a
//! replay: died by the time it was asked), so one that dies while the steps run is left for
//! the next command. The steps run on a task of their own: they go on if the API client that
//! asked goes away. A failed step ends them, saying how many went before it.

use deadpool_postgres::Client;

use super::{claims, PgStore, DB_NOW_MS, DEAD_RUNNING};
use crate::store::sqlite::now_ms;
use crate::store::{OrphanRun, StoreError, StoreFuture};

/// Delivery keys per step.
pub(super) const DEAD_LETTER_STEP: i64 = if cfg!(test) { 3 } else { 20_000 };

/// One step's write: the dead letters with keys in `(lo, hi)`.
#[derive(Debug, Clone)]
enum Step {
    /// Delete those (of `plugin`) that died before the cutoff.
    Purge {
        plugin: Option<String>,
        before_ms: i64,
    },
    /// Put back in the queue those (of `plugin`) that died by `asked_ms`; with `force`, those
    /// whose call runs too.
    Replay {
        plugin: Option<String>,
        force: bool,
        asked_ms: i64,
        lease_ms: i64,
    },
}

impl PgStore {
    /// `dead-letters --purge`: every dead letter (of `plugin`) that died before `before_ms`.
    pub(super) fn purge_dead_letter_steps(
        &self,
        plugin: Option<String>,
        before_ms: i64,
    ) -> StoreFuture<u64> {
        let before_ms = before_ms.min(now_ms().saturating_add(1));
        self.dead_letter_steps("purge", Step::Purge { plugin, before_ms })
    }

    /// `replay --dead-letters`: every dead letter (of `plugin`).
    pub(super) fn replay_dead_letter_steps(
        &self,
        plugin: Option<String>,
        force: bool,
    ) -> StoreFuture<u64> {
        let lease_ms = self.inner.claim.lease_ms;
        let asked_ms = now_ms();
        self.dead_letter_steps(
            "replay",
            Step::Replay {
                plugin,
                force,
                asked_ms,
                lease_ms,
            },
        )
    }

    /// The orphan rule ([`crate::store::Store::dead_letter_plugin`]) over the pending
    /// deliveries of `plugin`, in steps of [`DEAD_LETTER_STEP`] keys, each its own statement
    /// within the operation deadline: in one statement a large backlog outgrew it (about a
    /// million deliveries), was rolled back at every sweep and stayed pending for ever, and
    /// every failed try held this replica's crash count back (`reach`). A failed step ends
    /// them; those before it stand and are listed (the next round takes the rest).
    pub(super) fn dead_letter_plugin_steps(
        &self,
        plugin: String,
        error: String,
        before_ms: i64,
        running: Vec<i64>,
    ) -> StoreFuture<OrphanRun> {
        let store = self.clone();
        Box::pin(async move {
            let name = plugin.clone();
            let range = store
                .op(move |c, _| async move { claims::pending_key_range(&c, &name).await })
                .await?;
            let Some((lo, hi)) = range else {
                return Ok(OrphanRun::default());
            };
            let (plugin, error, running) = (
                std::sync::Arc::new(plugin),
                std::sync::Arc::new(error),
                std::sync::Arc::new(running),
            );
            let step = |keys| {
                let (plugin, error, running) = (plugin.clone(), error.clone(), running.clone());
                store.op(move |c, inner| async move {
                    claims::dead_letter_plugin(
                        &c,
                        &inner.claim,
                        (&plugin, &error, before_ms),
                        &running,
                        keys,
                    )
                    .await
                })
            };
            crate::store::key_steps::orphan_steps((lo, hi), DEAD_LETTER_STEP, step).await
        })
    }

    fn dead_letter_steps(&self, what: &'static str, step: Step) -> StoreFuture<u64> {
        let store = self.clone();
        let steps = async move {
            let plugin = match &step {
                Step::Purge { plugin, .. } | Step::Replay { plugin, .. } => plugin.clone(),
            };
            let windows = store
                .op(move |c, _| async move { dead_windows(&c, plugin).await })
                .await?;
            let one = |keys| {
                let step = step.clone();
                store.op(move |mut c, _| async move { apply(&mut c, &step, keys).await })
            };
            crate::store::key_steps::run(what, windows, None, one).await
        };
        let task = tokio::spawn(steps);
        Box::pin(async move {
            task.await
                .map_err(|e| StoreError(format!("the {what} of every dead letter failed: {e}")))?
        })
    }
}

/// The key ranges of [`DEAD_LETTER_STEP`] keys that hold a dead letter (of `plugin`), in
/// order: the steps go through these only, not through every key between the first dead letter
/// and the last (as the embedded store).
async fn dead_windows(c: &Client, plugin: Option<String>) -> Result<Vec<(i64, i64)>, StoreError> {
    let sql = format!(
        "SELECT DISTINCT {} AS w FROM deliveries
         WHERE state = 'dead' AND ($1::text IS NULL OR plugin = $1) ORDER BY w",
        crate::store::key_steps::window_sql("$2::bigint")
    );
    let numbers: Vec<i64> = c
        .query(&sql, &[&plugin, &DEAD_LETTER_STEP])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    Ok(crate::store::key_steps::windows(&numbers, DEAD_LETTER_STEP))
}

/// One step: its own transaction over the keys `lo..=hi`.
async fn apply(c: &mut Client, step: &Step, (lo, hi): (i64, i64)) -> Result<u64, StoreError> {
    match step {
        Step::Purge { plugin, before_ms } => Ok(c
            .execute(
                "DELETE FROM deliveries WHERE key BETWEEN $3 AND $4 AND state = 'dead'
                   AND ($1::text IS NULL OR plugin = $1) AND updated_at < $2",
                &[plugin, before_ms, &lo, &hi],
            )
            .await?),
        Step::Replay {
            plugin,
            force,
            asked_ms,
            lease_ms,
        } => {
            let tx = c.transaction().await?;
            // Their events share-locked first, as every replay does (see `retention`): only the
            // deliveries of events locked here change.
            let locked: Vec<String> = tx
                .query(
                    "SELECT e.id FROM events e WHERE EXISTS
                         (SELECT 1 FROM deliveries d WHERE d.event_id = e.id
                            AND d.key BETWEEN $2 AND $3 AND d.state = 'dead'
                            AND ($1::text IS NULL OR d.plugin = $1))
                     ORDER BY e.id FOR SHARE",
                    &[plugin, &lo, &hi],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let now = now_ms();
            let sql = format!(
                "UPDATE deliveries SET state = 'pending', attempts = 0,
                     generation = generation + 1, started = 0, crashes = 0,
                     next_at = $2, updated_at = $2, lease_until = LEAST(lease_until, {DB_NOW_MS} + $4)
                 WHERE key BETWEEN $6 AND $7 AND event_id = ANY($3) AND state = 'dead'
                   AND ($1::text IS NULL OR plugin = $1) AND ($5 OR NOT {DEAD_RUNNING})
                   AND updated_at <= $8"
            );
            let n = tx
                .execute(
                    &sql,
                    &[plugin, &now, &locked, lease_ms, force, &lo, &hi, asked_ms],
                )
                .await?;
            tx.commit().await?;
            Ok(n)
        }
    }
}
