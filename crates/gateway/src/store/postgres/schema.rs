//! The PostgreSQL schema and its migrations. Each migration is applied once, in order, inside
//! one transaction holding an advisory lock, and recorded in `gateway_schema`: several replicas
//! starting at once on an empty database apply it exactly once (the others wait on the lock,
//! then find it recorded). Tables are those of the embedded store plus the claim columns
//! (`claimed_by`, `lease_until`); times are Unix milliseconds (`BIGINT`). Migration 2 adds the
//! attempt history (`attempts`), migration 3 the index the crashed-attempt search uses, migration 4 the purge window's
//! (`received_at`, `id`) index in place of the one on `received_at`, migration 5 the name of
//! the write that added each history row.

use deadpool_postgres::Client;

use crate::store::StoreError;

/// Any constant shared by every gateway process: the key of the migration lock.
const MIGRATION_LOCK: i64 = 0x6761_7465_7761_7901;

/// The migrations, in order; version = index + 1. Never edit one that shipped: add another.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE events (
    id          TEXT PRIMARY KEY,
    app         TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    schema      TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    body        TEXT NOT NULL,
    routed      BOOLEAN NOT NULL
);
CREATE INDEX events_received ON events (received_at);
CREATE TABLE deliveries (
    key         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    plugin      TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'done', 'dead')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     BIGINT NOT NULL,
    last_error  TEXT,
    updated_at  BIGINT NOT NULL,
    generation  INTEGER NOT NULL DEFAULT 0,
    started     INTEGER NOT NULL DEFAULT 0,
    crashes     INTEGER NOT NULL DEFAULT 0,
    claimed_by  TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0,
    UNIQUE (event_id, plugin)
);
CREATE INDEX deliveries_due ON deliveries (next_at, key) WHERE state = 'pending';
CREATE INDEX deliveries_dead ON deliveries (updated_at) WHERE state = 'dead';
",
    "
CREATE TABLE attempts (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_key BIGINT NOT NULL REFERENCES deliveries (key) ON DELETE CASCADE,
    generation   INTEGER NOT NULL,
    attempt      INTEGER NOT NULL,
    outcome      TEXT NOT NULL,
    reason       TEXT,
    started_at   BIGINT,
    duration_ms  BIGINT,
    recorded_at  BIGINT NOT NULL
);
CREATE INDEX attempts_delivery ON attempts (delivery_key);
",
    // Every replica looks for crashed attempts (started, lease over) at each sweep: without it,
    // a scan of every pending delivery (50 ms at 300,000 pending, growing with the backlog).
    "
CREATE INDEX deliveries_started ON deliveries (lease_until) WHERE state = 'pending' AND started > 0;
",
    // The retention purge reads a window of the oldest events in (received_at, id) order: an
    // index in that order (PostgreSQL before 13 has no incremental sort over received_at's).
    "
CREATE INDEX events_received_id ON events (received_at, id);
DROP INDEX events_received;
",
    // The name of the outcome write that added a history row (`WriteId`): a write retried after
    // its answer was lost finds by it whether its first try applied. Nullable, no default: no
    // table rewrite.
    "
ALTER TABLE attempts ADD COLUMN write_id BIGINT;
",
];

/// The schema version this code writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Brings the database up to [`SCHEMA_VERSION`]; returns how many migrations this call applied.
/// Refuses a database migrated by a newer gateway.
pub async fn migrate(client: &mut Client) -> Result<usize, StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    // Created only when missing, not `CREATE TABLE IF NOT EXISTS`: its NOTICE ("relation
    // gateway_schema already exists, skipping") was logged by every replica but the first. The
    // lock is held: no other gateway creates it between the look and the create.
    let exists: bool = tx
        .query_one("SELECT to_regclass('gateway_schema') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        tx.batch_execute(
            "CREATE TABLE gateway_schema (
                 version    INTEGER PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .await?;
    }
    let current: i32 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM gateway_schema", &[])
        .await?
        .get(0);
    if current > SCHEMA_VERSION {
        return Err(StoreError(format!(
            "the database is at schema version {current}, newer than this gateway's \
             ({SCHEMA_VERSION}): upgrade the gateway"
        )));
    }
    let mut applied = 0;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO gateway_schema (version) VALUES ($1)",
            &[&(i as i32 + 1)],
        )
        .await?;
        applied += 1;
    }
    tx.commit().await?;
    Ok(applied)
}

/// For the operator commands, which never migrate (the store `shown`, password hidden, is at
/// `version`): anything but [`SCHEMA_VERSION`] is refused, saying which side is behind.
pub fn readable(version: i32, shown: &str) -> Result<(), StoreError> {
    match version {
        0 => Err(StoreError(format!(
            "no store in {shown} (is this the config the gateway runs with?)"
        ))),
        v if v < SCHEMA_VERSION => Err(StoreError(format!(
            "{shown} is at schema version {v}; this gateway reads version {SCHEMA_VERSION} \
             (start the gateway of this version once to migrate)"
        ))),
        v if v > SCHEMA_VERSION => Err(StoreError(format!(
            "{shown} is at schema version {v}, newer than this gateway's ({SCHEMA_VERSION}): \
             upgrade the gateway"
        ))),
        _ => Ok(()),
    }
}

/// The version recorded in the database (0 when never migrated).
pub async fn version(client: &Client) -> Result<i32, StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('gateway_schema') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_one("SELECT COALESCE(MAX(version), 0) FROM gateway_schema", &[])
        .await?
        .get(0))
}

/// The readiness probe's write ([`crate::store::Store::probe`]): the newest migration's row of
/// `gateway_schema` updated to the values it holds, in a transaction of its own. A new row
/// version and a commit record, so a database that takes no writes (read-only, a standby after
/// a failover, a full disk) fails it; the values never change and nothing reads them but
/// [`version`] and [`migrate`] (which adds rows, never updates one).
pub async fn probe(client: &Client) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE gateway_schema SET applied_at = applied_at
             WHERE version = (SELECT MAX(version) FROM gateway_schema)",
            &[],
        )
        .await?;
    Ok(())
}
