//! The SQLite backend: the plugin's own database file (WAL, `synchronous=FULL`), one connection
//! behind a mutex. Every decision is one `IMMEDIATE` transaction, so the file's write lock
//! serialises admissions. Never used by two gateway processes at once (that is what the
//! PostgreSQL backend is for), and within the gateway's process by one connection at a time,
//! across copies of this library too ([`handover`]).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

mod handover;
pub(super) mod schema;

use schema::connect;

use lark_core::AssetsUpdateV1;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use super::pick::Param;
use super::row::{StoredRow, COLUMNS};
use super::{
    forward_status_for, int, is_stale, vanished, Intent, LedgerError, PayoutRow, Pick, Plan,
};
use crate::api::Withdrawal;

/// The SQLite ledger.
#[derive(Debug)]
pub(super) struct SqliteLedger {
    /// `None` until no other copy of this library has the file open ([`handover`]).
    conn: Mutex<Option<Open>>,
    /// When calls stop waiting for that (set by the first call that waits).
    wait_ends: Mutex<Option<Instant>>,
    file: PathBuf,
    /// The file, as shown in errors.
    path: String,
}

/// An open connection, counted for [`handover`] while it lives.
#[derive(Debug)]
struct Open {
    conn: Connection,
    /// Dropped after the connection (fields drop in order).
    _registered: handover::Registration,
}

impl Open {
    fn new(conn: Connection, path: &Path, shown: &str) -> Result<Open, LedgerError> {
        let registered = handover::Registration::new(path).map_err(|e| LedgerError::Handover {
            path: shown.to_owned(),
            reason: format!("cannot identify the file: {e}"),
        })?;
        Ok(Open {
            conn,
            _registered: registered,
        })
    }
}

/// The ledger's connection, locked and open ([`SqliteLedger::lock`]).
struct Conn<'a>(MutexGuard<'a, Option<Open>>);

impl std::ops::Deref for Conn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match self.0.as_ref() {
            Some(open) => &open.conn,
            None => unreachable!("a Conn is made only once the connection is open"),
        }
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        match self.0.as_mut() {
            Some(open) => &mut open.conn,
            None => unreachable!("a Conn is made only once the connection is open"),
        }
    }
}

impl SqliteLedger {
    /// Opens (creating or migrating) the ledger at `path` for writing; while another copy of
    /// this library has the file open (the instance a reload replaces), the connection is
    /// opened at the first use instead ([`handover`]).
    pub(super) fn open(path: &Path) -> Result<SqliteLedger, LedgerError> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| LedgerError::Folder {
                path: shown.clone(),
                source,
            })?;
        }
        let conn = open_if_free(path, &shown)?;
        Ok(SqliteLedger {
            conn: Mutex::new(conn),
            wait_ends: Mutex::new(None),
            file: path.to_owned(),
            path: shown,
        })
    }
}

/// A writing connection to the ledger at `path` (`shown` in errors), unless another copy of
/// the library has the file open in this process ([`handover`]).
fn open_if_free(path: &Path, shown: &str) -> Result<Option<Open>, LedgerError> {
    let handover = |what: &str, e: std::io::Error| LedgerError::Handover {
        path: shown.to_owned(),
        reason: format!("{what}: {e}"),
    };
    let _one_at_a_time = handover::OpenLock::take(path)
        .map_err(|e| handover("cannot lock the ledger's folder", e))?;
    if !handover::may_open(path)
        .map_err(|e| handover("cannot tell whether this process has it open", e))?
    {
        return Ok(None);
    }
    Ok(Some(Open::new(connect(path, shown)?, path, shown)?))
}

impl SqliteLedger {
    pub(super) fn open_read_only(path: &Path) -> Result<SqliteLedger, LedgerError> {
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
        let open = Open::new(conn, path, &shown)?;
        Ok(SqliteLedger {
            conn: Mutex::new(Some(open)),
            wait_ends: Mutex::new(None),
            file: path.to_owned(),
            path: shown,
        })
    }

    pub(super) fn shown(&self) -> &str {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> LedgerError {
        LedgerError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Whether the connection waits for another copy of the library to close the file
    /// ([`handover`]).
    pub(super) fn opens_later(&self) -> bool {
        self.conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    /// The connection, locked; opened first if this ledger waited for the file ([`handover`]).
    /// While another copy of the library still holds it, a call waits for it (without the
    /// connection's lock: calls wait side by side), but only within [`handover::WAIT`] from the
    /// first call that waited: after that, calls are retries at once until the file is free
    /// (a batch of deliveries, each a call, must not wait that long for each).
    fn lock(&self) -> Result<Conn<'_>, LedgerError> {
        loop {
            {
                let mut slot = self.conn.lock().unwrap_or_else(|p| p.into_inner());
                if slot.is_none() {
                    *slot = open_if_free(&self.file, &self.path)?;
                }
                if slot.is_some() {
                    return Ok(Conn(slot));
                }
            }
            let now = Instant::now();
            let end = *self
                .wait_ends
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(now + handover::WAIT);
            if now >= end {
                return Err(LedgerError::Handover {
                    path: self.path.clone(),
                    reason: "open in this process by another copy of the payout library (the \
                             instance a reload replaced, until it is shut down): retried"
                        .into(),
                });
            }
            std::thread::sleep(handover::POLL.min(end - now));
        }
    }

    pub(super) fn admit(
        &self,
        delivery_id: &str,
        external_order_id: &str,
        event: &AssetsUpdateV1,
        plan: &Plan,
        clock: &dyn Fn() -> u64,
    ) -> Result<PayoutRow, LedgerError> {
        let modify_time = int(delivery_id, "modify_time", event.modify_time_ms)?;
        let mut conn = self.lock()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        if let Some(row) = load(&tx, delivery_id).map_err(|e| self.err(e))? {
            return row.check();
        }
        // Read with the write lock held: `created_at` follows the order admissions took.
        let now_ms = clock();
        let now = int(delivery_id, "time", now_ms)?;
        let newest: Option<(u64, String)> = tx
            .query_row(
                "SELECT newest_modify_time, newest_delivery_id FROM accounts WHERE account_id = ?1",
                [&event.account_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let stale = is_stale(
            newest.as_ref().map(|(t, by)| (*t, by.as_str())),
            event,
            delivery_id,
        );
        if !stale {
            tx.execute(
                "INSERT INTO accounts (account_id, newest_modify_time, newest_delivery_id, updated_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (account_id) DO UPDATE SET newest_modify_time = ?2,
                     newest_delivery_id = ?3, updated_at = ?4",
                params![event.account_id, modify_time, delivery_id, now],
            )
            .map_err(|e| self.err(e))?;
        }
        let intent = Intent::new(plan, stale, now_ms);
        tx.execute(
            "INSERT INTO payouts (delivery_id, external_order_id, account_id, modify_time,
                 requested_types, status, skip_reason, created_at, completed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                delivery_id,
                external_order_id,
                event.account_id,
                modify_time,
                intent.types,
                intent.status,
                intent.reason,
                now,
                intent.completed
            ],
        )
        .map_err(|e| self.err(e))?;
        let row = load(&tx, delivery_id).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        row.ok_or_else(|| vanished(delivery_id, "row vanished after insert"))?
            .check()
    }

    pub(super) fn record_withdrawn(
        &self,
        delivery_id: &str,
        w: &Withdrawal,
        forwarding: bool,
        now_ms: u64,
    ) -> Result<PayoutRow, LedgerError> {
        let forward = forward_status_for(w, forwarding);
        let trans_ms = super::trans_time_ms(w.trans_time.as_deref());
        let points = int(delivery_id, "points", w.points)?;
        let now = int(delivery_id, "time", now_ms)?;
        let mut conn = self.lock()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let changed = tx
            .execute(
                "UPDATE payouts SET status = 'withdrawn', completed_at = ?2, trans_time = ?3,
                     trans_time_ms = ?4, points = ?5, log_id = ?6, last_error = NULL,
                     forward_status = ?7, skip_reason = NULL
                 WHERE delivery_id = ?1 AND (status IN ('pending', 'rejected')
                     OR (status = 'skipped' AND skip_reason = 'covered'))",
                params![
                    delivery_id,
                    now,
                    w.trans_time,
                    trans_ms,
                    points,
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
        row.ok_or_else(|| vanished(delivery_id, "no row to record the withdrawal in"))?
            .check()
    }

    pub(super) fn record_withdraw_error(
        &self,
        delivery_id: &str,
        error: &str,
        log_id: Option<&str>,
        status: &str,
        nothing: Option<i64>,
    ) -> Result<(), LedgerError> {
        self.lock()?
            .execute(
                "UPDATE payouts SET status = ?2, last_error = ?3, log_id = COALESCE(?4, log_id),
                     withdraw_nothing_upto = CASE WHEN withdraw_nothing_upto = ?5 - 1
                         THEN ?5 ELSE withdraw_nothing_upto END
                 WHERE delivery_id = ?1 AND status IN ('pending', 'rejected')",
                params![delivery_id, status, error, log_id, nothing],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub(super) fn record_covered(
        &self,
        delivery_id: &str,
        call: i64,
        reason: &str,
        note: &str,
        now: i64,
    ) -> Result<(), LedgerError> {
        self.lock()?
            .execute(
                "UPDATE payouts SET status = 'skipped', skip_reason = ?2, last_error = ?3,
                     completed_at = ?4
                 WHERE delivery_id = ?1 AND status IN ('pending', 'rejected')
                     AND withdraw_attempts = ?5 AND withdraw_nothing_upto = ?5 - 1",
                params![delivery_id, reason, note, now, call],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub(super) fn count_withdraw_attempt(
        &self,
        delivery_id: &str,
    ) -> Result<Option<i64>, LedgerError> {
        self.lock()?
            .query_row(
                "UPDATE payouts SET withdraw_attempts = withdraw_attempts + 1
                 WHERE delivery_id = ?1 AND status IN ('pending', 'rejected')
                 RETURNING withdraw_attempts",
                [delivery_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    pub(super) fn record_forward(
        &self,
        delivery_id: &str,
        (status, http, error, at): (&str, Option<u16>, Option<&str>, Option<u64>),
    ) -> Result<(), LedgerError> {
        self.lock()?
            .execute(
                "UPDATE payouts SET forward_status = ?2, forward_http_status = ?3,
                     forward_error = ?4, forwarded_at = ?5, forward_attempts = forward_attempts + 1
                 WHERE delivery_id = ?1 AND forward_status = 'pending'",
                params![delivery_id, status, http, error, at],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub(super) fn get(&self, delivery_id: &str) -> Result<Option<PayoutRow>, LedgerError> {
        let conn = self.lock()?;
        load(&conn, delivery_id)
            .map_err(|e| self.err(e))?
            .map(StoredRow::check)
            .transpose()
    }

    pub(super) fn rows(&self, pick: &Pick) -> Result<Vec<PayoutRow>, LedgerError> {
        let (condition, order) = pick.sql();
        let conn = self.lock()?;
        let ids: Vec<String> = conn
            .prepare(&format!(
                "SELECT p.delivery_id FROM payouts p WHERE {condition} ORDER BY {order}"
            ))
            .and_then(|mut st| {
                let params = pick.params().into_iter().map(|p| match p {
                    Param::Int(n) => rusqlite::types::Value::Integer(n),
                    Param::Text(t) => rusqlite::types::Value::Text(t.to_owned()),
                });
                st.query_map(rusqlite::params_from_iter(params), |r| r.get(0))?
                    .collect()
            })
            .map_err(|e| self.err(e))?;
        let mut rows = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(row) = load(&conn, &id).map_err(|e| self.err(e))? {
                rows.push(row.check()?);
            }
        }
        Ok(rows)
    }
}

/// Loads one row with its cash lines (unchecked).
fn load(conn: &Connection, delivery_id: &str) -> rusqlite::Result<Option<StoredRow>> {
    let found = conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM payouts WHERE delivery_id = ?1"),
            [delivery_id],
            |r| {
                Ok(StoredRow {
                    delivery_id: r.get(0)?,
                    external_order_id: r.get(1)?,
                    account_id: r.get(2)?,
                    modify_time: r.get(3)?,
                    requested_types: r.get(4)?,
                    status: r.get(5)?,
                    skip_reason: r.get(6)?,
                    created_at: r.get(7)?,
                    completed_at: r.get(8)?,
                    trans_time: r.get(9)?,
                    trans_time_ms: r.get(10)?,
                    points: r.get(11)?,
                    log_id: r.get(12)?,
                    last_error: r.get(13)?,
                    withdraw_attempts: r.get(14)?,
                    forward_status: r.get(15)?,
                    forward_attempts: r.get(16)?,
                    forward_error: r.get(17)?,
                    cash: Vec::new(),
                })
            },
        )
        .optional()?;
    let Some(mut row) = found else {
        return Ok(None);
    };
    let mut st = conn.prepare(
        "SELECT currency, amount_minor FROM payout_cash WHERE delivery_id = ?1 ORDER BY rowid",
    )?;
    row.cash = st
        .query_map([delivery_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some(row))
}
