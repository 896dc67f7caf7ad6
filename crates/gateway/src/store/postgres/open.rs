//! Opening the PostgreSQL store: its pool, the migrations (or, for the operator commands, the
//! check that the schema is already there: they never create a store), this process's replica
//! name, the ingest task and the renewals' own connection; and `gateway check`'s look at the
//! schema, which changes nothing. Nothing here runs once the store is open.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::{connect, ingest, reach, schema, tls, Claim, Inner, PgStore, SCHEMA_VERSION};
use crate::config::{redact_url, PgSettings};
use crate::store::StoreError;

/// Migrations may build an index over a large table (once, at the first start of a version),
/// and wait for another replica applying them: far longer than one operation.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(600);

/// A name for this process, unique per start.
fn replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    format!(
        "{host}:{}:{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

impl PgStore {
    /// Connects, migrates (see [`schema`]) when `migrate`, else requires the schema to be there
    /// already (the operator commands never create a store), and starts the ingest task.
    pub async fn open(settings: &PgSettings, migrate: bool) -> Result<PgStore, StoreError> {
        let shown = redact_url(&settings.url);
        let pool = connect::pool(settings)?;
        let mut client = connect::client(&pool)
            .await
            .map_err(|e| StoreError(format!("{shown}: {}", e.0)))?;
        if migrate {
            let applied = tokio::time::timeout(MIGRATION_TIMEOUT, schema::migrate(&mut client))
                .await
                .map_err(|_| StoreError(format!("{shown}: migrations did not finish in time")))??;
            if applied > 0 {
                tracing::info!(store = %shown, applied, version = SCHEMA_VERSION, "database schema migrated");
            }
        } else {
            schema::readable(schema::version(&client).await?, &shown)?;
        }
        drop(client);
        let claim = Claim {
            replica: replica_id(),
            lease_ms: settings.lease.as_millis() as i64,
        };
        if migrate {
            tracing::info!(store = %shown, replica = %claim.replica, lease_ms = claim.lease_ms, "shared PostgreSQL store");
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let reach = Arc::new(reach::Reach::starting());
        let tls = tls::connector(settings)?;
        tokio::spawn(ingest::run(
            pool.clone(),
            rx,
            claim.clone(),
            reach.clone(),
            tls.clone(),
        ));
        let renewals = connect::pool(&PgSettings {
            pool_size: 1,
            ..settings.clone()
        })?;
        Ok(PgStore {
            inner: Arc::new(Inner {
                pool,
                renewals,
                reach,
                tls,
                shown,
                claim,
                ingest: Mutex::new(Some(tx)),
            }),
        })
    }
}

/// For `gateway check`: connects and tells the schema's state, changing nothing.
pub async fn schema_state(settings: &PgSettings) -> Result<String, StoreError> {
    let pool = connect::pool(settings)?;
    let client = connect::client(&pool).await?;
    // Bounded like an operation: a server that accepts connections but answers nothing (frozen,
    // or a lock held on the schema table) must not hang `check` (run before every start).
    let version = tokio::time::timeout(super::OP_TIMEOUT, schema::version(&client))
        .await
        .map_err(|_| StoreError("database: no answer within 10 s".into()))??;
    pool.close();
    match version {
        0 => Ok("database reachable; empty (the gateway creates its tables at start)".into()),
        v if v == SCHEMA_VERSION => Ok(format!("database reachable; schema version {v}")),
        v if v < SCHEMA_VERSION => Ok(format!(
            "database reachable; schema version {v} (migrated to {SCHEMA_VERSION} at start)"
        )),
        v => Err(StoreError(format!(
            "the database is at schema version {v}, newer than this gateway's \
             ({SCHEMA_VERSION}): upgrade the gateway"
        ))),
    }
}
