//! The SQLite ledger's schema, and the writing connection that creates it or checks it (a
//! ledger made before `withdraw_nothing_upto` gets the column in place).

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::super::LedgerError;

pub(in crate::ledger) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS accounts (
    account_id          TEXT PRIMARY KEY,
    newest_modify_time  INTEGER NOT NULL,
    newest_delivery_id  TEXT NOT NULL,
    updated_at          INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS payouts (
    delivery_id         TEXT PRIMARY KEY,
    external_order_id   TEXT NOT NULL UNIQUE,
    account_id          TEXT NOT NULL,
    modify_time         INTEGER NOT NULL,
    requested_types     TEXT NOT NULL,
    status              TEXT NOT NULL
        CHECK (status IN ('pending', 'withdrawn', 'rejected', 'skipped')),
    skip_reason         TEXT,
    created_at          INTEGER NOT NULL,
    completed_at        INTEGER,
    trans_time          TEXT,
    trans_time_ms       INTEGER,
    points              INTEGER NOT NULL DEFAULT 0 CHECK (typeof(points) = 'integer'),
    log_id              TEXT,
    last_error          TEXT,
    withdraw_attempts   INTEGER NOT NULL DEFAULT 0,
    withdraw_nothing_upto INTEGER NOT NULL DEFAULT 0,
    forward_status      TEXT NOT NULL DEFAULT 'none'
        CHECK (forward_status IN ('none', 'pending', 'done', 'not_needed')),
    forward_attempts    INTEGER NOT NULL DEFAULT 0,
    forward_http_status INTEGER,
    forward_error       TEXT,
    forwarded_at        INTEGER
);
CREATE INDEX IF NOT EXISTS payouts_by_time
    ON payouts (status, COALESCE(trans_time_ms, completed_at));
CREATE TABLE IF NOT EXISTS payout_cash (
    delivery_id   TEXT NOT NULL REFERENCES payouts (delivery_id),
    currency      TEXT NOT NULL,
    amount        TEXT NOT NULL,
    amount_minor  INTEGER NOT NULL CHECK (typeof(amount_minor) = 'integer' AND amount_minor >= 0),
    PRIMARY KEY (delivery_id, currency)
);
PRAGMA user_version = 1;
";

/// The `user_version` [`SCHEMA`] sets.
const SCHEMA_VERSION: i64 = 1;

/// Creates the ledger's file, empty, readable by its owner only (0600: who was paid what, and
/// SQLite gives its WAL and shared-memory files the same mode), unless it exists (then it keeps
/// its mode).
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut create = std::fs::OpenOptions::new();
    create.write(true).create_new(true).mode(0o600);
    let made = match create.open(path) {
        // A symbolic link whose target does not exist yet: the target is made through it.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && !path.exists() => {
            create.create_new(false).create(true).open(path)
        }
        made => made,
    };
    match made {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// A writing connection to the ledger at `path` (`shown` in errors), its schema created or
/// checked.
pub(super) fn connect(path: &Path, shown: &str) -> Result<Connection, LedgerError> {
    let err = |source| LedgerError::Sqlite {
        path: shown.to_owned(),
        source,
    };
    create_private(path).map_err(|source| LedgerError::Create {
        path: shown.to_owned(),
        source,
    })?;
    let mut conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(err)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(err)?;
    // A ledger written by a newer plugin is never written by this one (the SCHEMA below
    // would also set its version back).
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    if found > SCHEMA_VERSION {
        return Err(LedgerError::NewerSchema {
            path: shown.to_owned(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    conn.execute_batch(SCHEMA).map_err(err)?;
    add_refusals(&mut conn).map_err(err)?;
    Ok(conn)
}

/// Adds `withdraw_nothing_upto` (the row's withdraw calls 1 to N are known to have made no
/// withdrawal) to a ledger made before it, in place: the version stays 1, since a plugin that
/// does not know the column still writes the ledger correctly (it names the columns it
/// inserts; its rows count no such calls, which only keeps them from being taken as covered).
fn add_refusals(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let has: i64 = tx.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('payouts') WHERE name = 'withdraw_nothing_upto'",
        [],
        |r| r.get(0),
    )?;
    if has == 0 {
        tx.execute_batch(
            "ALTER TABLE payouts ADD COLUMN withdraw_nothing_upto INTEGER NOT NULL DEFAULT 0",
        )?;
    }
    tx.commit()
}
