//! The PostgreSQL ledger's schema: versioned migrations, applied at open in one transaction under
//! a transaction-level advisory lock, so gateway processes starting at once apply each exactly
//! once (the others wait, then find nothing left to do). Every table is named `payout_…` so the
//! ledger can share a database with the gateway's own store (`events`, `deliveries`,
//! `gateway_schema`). Never drops or rewrites data: a migration only adds, or widens a check.

use postgres::Client;

use super::Failure;

/// `pg_advisory_xact_lock` key serialising migrations: "payout" in ASCII, then 1. Advisory
/// locks are database-wide, so it differs from the gateway store's key.
pub(super) const MIGRATION_LOCK: i64 = 0x7061_796f_7574_0001;

/// The newest schema version this build knows.
pub(super) const LATEST: i32 = 3;

/// Version 1: the same tables as the SQLite ledger (`accounts` → `payout_accounts`, `payouts`
/// → `payout_ledger`, `payout_cash`), times as Unix milliseconds, money as integer points and
/// hundredths plus exact decimal text: no floating-point column anywhere.
const V1: &str = r"
CREATE TABLE payout_accounts (
    account_id          TEXT PRIMARY KEY,
    newest_modify_time  BIGINT NOT NULL CHECK (newest_modify_time >= 0),
    newest_delivery_id  TEXT NOT NULL,
    updated_at          BIGINT NOT NULL
);
CREATE TABLE payout_ledger (
    delivery_id         TEXT PRIMARY KEY,
    external_order_id   TEXT NOT NULL UNIQUE,
    account_id          TEXT NOT NULL,
    modify_time         BIGINT NOT NULL CHECK (modify_time >= 0),
    requested_types     TEXT NOT NULL,
    status              TEXT NOT NULL
        CHECK (status IN ('pending', 'withdrawn', 'rejected', 'skipped')),
    skip_reason         TEXT CHECK (skip_reason IN ('zero_balance', 'below_minimum', 'stale')),
    created_at          BIGINT NOT NULL,
    completed_at        BIGINT,
    trans_time          TEXT,
    trans_time_ms       BIGINT,
    points              BIGINT NOT NULL DEFAULT 0 CHECK (points >= 0),
    log_id              TEXT,
    last_error          TEXT,
    withdraw_attempts   BIGINT NOT NULL DEFAULT 0,
    forward_status      TEXT NOT NULL DEFAULT 'none'
        CHECK (forward_status IN ('none', 'pending', 'done', 'not_needed')),
    forward_attempts    BIGINT NOT NULL DEFAULT 0,
    forward_http_status INTEGER,
    forward_error       TEXT,
    forwarded_at        BIGINT
);
CREATE INDEX payout_ledger_by_time
    ON payout_ledger (status, (COALESCE(trans_time_ms, completed_at)));
CREATE TABLE payout_cash (
    delivery_id   TEXT NOT NULL REFERENCES payout_ledger (delivery_id),
    currency      TEXT NOT NULL,
    line          INTEGER NOT NULL,
    amount        TEXT NOT NULL CHECK (amount ~ '^[0-9]+\.[0-9]{2}$'),
    amount_minor  BIGINT NOT NULL CHECK (amount_minor >= 0),
    PRIMARY KEY (delivery_id, currency)
);
";

/// Every migration, oldest first: (version, SQL).
/// Version 2: `skip_reason` may also be `covered` (a snapshot whose balance an earlier
/// withdrawal took, found when Lark refused its own). The check is widened, under its
/// name from version 1 (PostgreSQL's default for a column's check).
const V2: &str = r"
ALTER TABLE payout_ledger
    DROP CONSTRAINT payout_ledger_skip_reason_check,
    ADD CONSTRAINT payout_ledger_skip_reason_check
        CHECK (skip_reason IN ('zero_balance', 'below_minimum', 'stale', 'covered'));
";

/// Version 3: `withdraw_nothing_upto`: the row's withdraw calls 1 to N are known to have made
/// no withdrawal (a snapshot is taken as covered only when every call before the refused one
/// is).
const V3: &str = r"
ALTER TABLE payout_ledger ADD COLUMN withdraw_nothing_upto BIGINT NOT NULL DEFAULT 0;
";

const MIGRATIONS: &[(i32, &str)] = &[(1, V1), (2, V2), (3, V3)];

/// Brings the schema to [`LATEST`]; returns the version found before. A database whose schema
/// is newer than this build is refused (an older plugin must not write to it).
pub(super) fn migrate(client: &mut Client) -> Result<i32, Failure> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS payout_schema (
             version     INTEGER PRIMARY KEY,
             applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )?;
    let found: i32 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM payout_schema", &[])?
        .try_get(0)?;
    if found > LATEST {
        return Err(Failure::Refused(format!(
            "its schema is version {found}, newer than this plugin knows ({LATEST}): \
             upgrade the payout plugin"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO payout_schema (version) VALUES ($1)",
            &[version],
        )?;
    }
    tx.commit()?;
    Ok(found)
}

/// For read-only use (reports): the schema must be there and be [`LATEST`]; nothing is created.
pub(super) fn check(client: &mut Client) -> Result<(), Failure> {
    let exists: bool = client
        .query_one("SELECT to_regclass('payout_schema') IS NOT NULL", &[])?
        .try_get(0)?;
    if !exists {
        return Err(Failure::Refused(
            "no payout ledger in this database (no payout_schema table): \
             the plugin creates it when it starts"
                .to_owned(),
        ));
    }
    let found: i32 = client
        .query_one("SELECT COALESCE(MAX(version), 0) FROM payout_schema", &[])?
        .try_get(0)?;
    if found != LATEST {
        return Err(Failure::Refused(format!(
            "its schema is version {found}, this build reads version {LATEST}"
        )));
    }
    Ok(())
}
