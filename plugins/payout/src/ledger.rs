//! The payout ledger: the plugin's own SQLite database (WAL, `synchronous=FULL`), one row per
//! handled delivery, written *before* Lark is called (the intent) and completed after (the
//! result), plus each account's newest snapshot time for stale-snapshot detection.
//!
//! Money is never stored as `REAL`: points are integers, cash is one row per currency with the
//! exact decimal text (`"0.30"`) and the integer hundredths. See the README for the schema.

use std::path::Path;
use std::sync::Mutex;

use lark_core::AssetsUpdateV1;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::api::Withdrawal;

mod row;

use row::load;
pub use row::PayoutRow;

const SCHEMA: &str = "
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

/// A ledger failure (the plugin answers `Retry`: nothing is decided without the ledger).
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error("ledger {path}: cannot create its folder: {source}")]
    Folder {
        path: String,
        source: std::io::Error,
    },
    #[error("ledger: corrupt row for delivery {delivery_id}: {reason}")]
    Corrupt { delivery_id: String, reason: String },
}

/// Where a payout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Intent recorded; withdraw not (known to be) done.
    Pending,
    Withdrawn,
    /// Lark refused (business error); a replay of the delivery tries again with the same id.
    Rejected,
    /// Nothing to withdraw (see `skip_reason`).
    Skipped,
}

/// Where forwarding to the payment platform stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardStatus {
    /// Forwarding was not configured when the withdrawal was recorded.
    None,
    Pending,
    Done,
    /// Nothing was withdrawn, so nothing to forward.
    NotNeeded,
}

/// Why a delivery withdraws nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    ZeroBalance,
    BelowMinimum,
    Stale,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::ZeroBalance => "zero_balance",
            SkipReason::BelowMinimum => "below_minimum",
            SkipReason::Stale => "stale",
        }
    }
}

/// What the plugin intends for a new delivery (staleness is decided by the ledger).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Withdraw these `withdraw_bonus_type` codes.
    Withdraw(Vec<u8>),
    Skip(SkipReason),
}

/// The ledger; one per plugin instance, safe to share between threads.
#[derive(Debug)]
pub struct Ledger {
    conn: Mutex<Connection>,
    path: String,
}

impl Ledger {
    /// Opens (creating if needed) the ledger at `path` for writing.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| LedgerError::Folder {
                path: shown.clone(),
                source,
            })?;
        }
        let err = |source| LedgerError::Sqlite {
            path: shown.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Ledger {
            conn: Mutex::new(conn),
            path: shown,
        })
    }

    /// Opens an existing ledger read-only (for reports; safe while the gateway writes).
    pub fn open_read_only(path: &Path) -> Result<Ledger, LedgerError> {
        let shown = path.display().to_string();
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| {
                c.busy_timeout(std::time::Duration::from_secs(10))?;
                Ok(c)
            })
            .map_err(|source| LedgerError::Sqlite {
                path: shown.clone(),
                source,
            })?;
        Ok(Ledger {
            conn: Mutex::new(conn),
            path: shown,
        })
    }

    fn err(&self, source: rusqlite::Error) -> LedgerError {
        LedgerError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns the row of `delivery_id`, creating it first if this delivery is new: a new
    /// delivery is stale (recorded as skipped) when its snapshot is older than the newest one
    /// seen for the account, or equally old but from another delivery; otherwise it becomes the
    /// newest and `plan` is recorded (a pending intent, or a skip). One transaction.
    pub fn admit(
        &self,
        delivery_id: &str,
        external_order_id: &str,
        event: &AssetsUpdateV1,
        plan: &Plan,
        now_ms: u64,
    ) -> Result<PayoutRow, LedgerError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        if let Some(row) = load(&tx, delivery_id).map_err(|e| self.err(e))? {
            return row;
        }
        let newest: Option<(u64, String)> = tx
            .query_row(
                "SELECT newest_modify_time, newest_delivery_id FROM accounts WHERE account_id = ?1",
                [&event.account_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let stale = newest.is_some_and(|(time, by)| {
            event.modify_time_ms < time || (event.modify_time_ms == time && by != delivery_id)
        });
        let plan = if stale {
            Plan::Skip(SkipReason::Stale)
        } else {
            tx.execute(
                "INSERT INTO accounts (account_id, newest_modify_time, newest_delivery_id, updated_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (account_id) DO UPDATE SET newest_modify_time = ?2,
                     newest_delivery_id = ?3, updated_at = ?4",
                params![event.account_id, event.modify_time_ms, delivery_id, now_ms],
            )
            .map_err(|e| self.err(e))?;
            plan.clone()
        };
        let (status, types, reason, completed) = match &plan {
            Plan::Withdraw(types) => ("pending", types.clone(), None, None),
            Plan::Skip(r) => ("skipped", Vec::new(), Some(r.as_str()), Some(now_ms)),
        };
        let types = serde_json::to_string(&types).unwrap_or_else(|_| "[]".into());
        tx.execute(
            "INSERT INTO payouts (delivery_id, external_order_id, account_id, modify_time,
                 requested_types, status, skip_reason, created_at, completed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                delivery_id,
                external_order_id,
                event.account_id,
                event.modify_time_ms,
                types,
                status,
                reason,
                now_ms,
                completed
            ],
        )
        .map_err(|e| self.err(e))?;
        let row = load(&tx, delivery_id).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        row.unwrap_or_else(|| {
            Err(LedgerError::Corrupt {
                delivery_id: delivery_id.to_owned(),
                reason: "row vanished after insert".into(),
            })
        })
    }

    /// Records Lark's result for a pending (or rejected) intent; a row already withdrawn (by a
    /// concurrent attempt) is left as it is. Returns the row as it now stands.
    pub fn record_withdrawn(
        &self,
        delivery_id: &str,
        w: &Withdrawal,
        forwarding: bool,
        now_ms: u64,
    ) -> Result<PayoutRow, LedgerError> {
        let nothing = w.points == 0 && w.cash.iter().all(|c| c.amount.is_zero());
        let forward = match (forwarding, nothing) {
            (false, _) => "none",
            (true, true) => "not_needed",
            (true, false) => "pending",
        };
        let trans_ms = w
            .trans_time
            .as_deref()
            .and_then(|t| t.trim().parse::<u64>().ok());
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let changed = tx
            .execute(
                "UPDATE payouts SET status = 'withdrawn', completed_at = ?2, trans_time = ?3,
                     trans_time_ms = ?4, points = ?5, log_id = ?6, last_error = NULL,
                     forward_status = ?7
                 WHERE delivery_id = ?1 AND status IN ('pending', 'rejected')",
                params![
                    delivery_id,
                    now_ms,
                    w.trans_time,
                    trans_ms,
                    w.points,
                    w.log_id,
                    forward
                ],
            )
            .map_err(|e| self.err(e))?;
        if changed == 1 {
            tx.execute(
                "DELETE FROM payout_cash WHERE delivery_id = ?1",
                [delivery_id],
            )
            .map_err(|e| self.err(e))?;
            for c in &w.cash {
                tx.execute(
                    "INSERT INTO payout_cash (delivery_id, currency, amount, amount_minor)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![
                        delivery_id,
                        c.currency,
                        c.amount.to_string(),
                        c.amount.minor()
                    ],
                )
                .map_err(|e| self.err(e))?;
            }
        }
        let row = load(&tx, delivery_id).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        row.unwrap_or_else(|| {
            Err(LedgerError::Corrupt {
                delivery_id: delivery_id.to_owned(),
                reason: "no row to record the withdrawal in".into(),
            })
        })
    }

    /// Notes a failed withdraw attempt. `rejected` marks a business error (else it stays
    /// pending); a row already withdrawn is never downgraded.
    pub fn record_withdraw_error(
        &self,
        delivery_id: &str,
        error: &str,
        log_id: Option<&str>,
        rejected: bool,
    ) -> Result<(), LedgerError> {
        let status = if rejected { "rejected" } else { "pending" };
        self.lock()
            .execute(
                "UPDATE payouts SET status = ?2, last_error = ?3, log_id = COALESCE(?4, log_id)
                 WHERE delivery_id = ?1 AND status IN ('pending', 'rejected')",
                params![delivery_id, status, error, log_id],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Counts a withdraw attempt that is about to be made.
    pub fn count_withdraw_attempt(&self, delivery_id: &str) -> Result<(), LedgerError> {
        self.lock()
            .execute(
                "UPDATE payouts SET withdraw_attempts = withdraw_attempts + 1 WHERE delivery_id = ?1",
                [delivery_id],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records one forwarding attempt: `Ok(http_status)` done, `Err(reason)` still pending.
    pub fn record_forward(
        &self,
        delivery_id: &str,
        result: Result<u16, (Option<u16>, &str)>,
        now_ms: u64,
    ) -> Result<(), LedgerError> {
        let (status, http, error, at) = match result {
            Ok(code) => ("done", Some(code), None, Some(now_ms)),
            Err((code, reason)) => ("pending", code, Some(reason), None),
        };
        self.lock()
            .execute(
                "UPDATE payouts SET forward_status = ?2, forward_http_status = ?3,
                     forward_error = ?4, forwarded_at = ?5, forward_attempts = forward_attempts + 1
                 WHERE delivery_id = ?1 AND forward_status = 'pending'",
                params![delivery_id, status, http, error, at],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The row of `delivery_id`, if any.
    pub fn get(&self, delivery_id: &str) -> Result<Option<PayoutRow>, LedgerError> {
        let conn = self.lock();
        load(&conn, delivery_id)
            .map_err(|e| self.err(e))?
            .transpose()
    }

    /// Withdrawals (status `withdrawn`) whose time — Lark's `trans_time`, else when the result
    /// was recorded — lies in `[from_ms, to_ms]` (both inclusive, both optional), oldest first.
    pub fn withdrawals(
        &self,
        from_ms: Option<u64>,
        to_ms: Option<u64>,
    ) -> Result<Vec<PayoutRow>, LedgerError> {
        let conn = self.lock();
        let ids: Vec<String> = conn
            .prepare(
                "SELECT delivery_id FROM payouts
                 WHERE status = 'withdrawn'
                   AND COALESCE(trans_time_ms, completed_at) >= ?1
                   AND COALESCE(trans_time_ms, completed_at) <= ?2
                 ORDER BY COALESCE(trans_time_ms, completed_at), delivery_id",
            )
            .and_then(|mut st| {
                let from = i64::try_from(from_ms.unwrap_or(0)).unwrap_or(i64::MAX);
                let to = i64::try_from(to_ms.unwrap_or(u64::MAX)).unwrap_or(i64::MAX);
                st.query_map(params![from, to], |r| r.get(0))?.collect()
            })
            .map_err(|e| self.err(e))?;
        let mut rows = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(row) = load(&conn, &id).map_err(|e| self.err(e))? {
                rows.push(row?);
            }
        }
        Ok(rows)
    }
}
