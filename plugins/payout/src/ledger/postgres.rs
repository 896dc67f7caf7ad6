//! The PostgreSQL backend: a ledger shared by several gateway processes (replicas) through one
//! database. One connection per process behind a mutex (calls are short; plugin calls already
//! run on the gateway's blocking threads, so the driver's blocking client is used — which must
//! never be called from inside an async task).
//!
//! At most one withdrawal per balance snapshot across processes: [`PgLedger::admit`] locks the
//! account's row (`INSERT … ON CONFLICT DO NOTHING`, then `SELECT … FOR UPDATE`) before it reads
//! the newest snapshot or the delivery's row, so admissions of one account are serialised by
//! the database, and the intent is committed before the caller may call Lark.
//!
//! A connection found broken is dropped and a new one made on the next call (or at once, when a
//! call on an old connection finds it dead: every call is safe to make twice). Never shows the
//! URL's password: errors carry the redacted URL and scrubbed driver messages.
//!
//! TLS per host ([`gateway_pgtls::Connector`]): rustls towards a TCP host as the URL's
//! `sslmode` says, none on a Unix socket; a URL of sockets only is connected as with
//! `sslmode=disable` (`location.rs`), as libpq ignores `sslmode` on a socket.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use lark_core::AssetsUpdateV1;

use super::location::{pg_config, redact_url};
use super::pick::Param;
use super::row::{StoredRow, COLUMNS};
use super::{
    forward_status_for, int, is_stale, vanished, Intent, LedgerError, PayoutRow, Pick, Plan,
};
use crate::api::Withdrawal;
use connection::{tls, Session};
use load::{load, stored};

mod claim;
mod connection;
mod load;
mod schema;

pub(super) use claim::ClaimKey;

/// Why a call failed: the driver, or the ledger's own checks.
#[derive(Debug)]
pub(super) enum Failure {
    Db(postgres::Error),
    Ledger(LedgerError),
    /// The database is reachable but not usable as a ledger (schema version).
    Refused(String),
}

impl From<postgres::Error> for Failure {
    fn from(e: postgres::Error) -> Failure {
        Failure::Db(e)
    }
}

impl From<LedgerError> for Failure {
    fn from(e: LedgerError) -> Failure {
        Failure::Ledger(e)
    }
}

/// The PostgreSQL ledger.
pub(super) struct PgLedger {
    config: postgres::Config,
    /// TLS by rustls towards a TCP host, used when the URL's `sslmode` asks (`prefer`, the
    /// default, or `require`); none on a Unix socket, whatever the `sslmode`.
    tls: gateway_pgtls::Connector,
    /// The URL as written: only to scrub its password out of driver messages. Never shown.
    url: String,
    /// The URL with its password hidden, for errors and logs.
    shown: String,
    /// Reports: every transaction read-only, no migrations.
    read_only: bool,
    session: Mutex<Option<Session>>,
    /// How many connections were made so far (numbers each [`Session`]).
    generations: AtomicU64,
    /// Why the server refused the TCP keepalive settings, if it did (see `connection`).
    keepalives_refused: Mutex<Option<String>>,
}

impl std::fmt::Debug for PgLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLedger")
            .field("url", &self.shown)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

impl PgLedger {
    /// Connects; `read_only` checks the schema, else brings it up to date (migrations).
    pub(super) fn open(url: &str, read_only: bool) -> Result<PgLedger, LedgerError> {
        let shown = redact_url(url);
        let config = pg_config(url).map_err(|message| LedgerError::Postgres {
            url: shown.clone(),
            what: "invalid URL",
            message,
        })?;
        let tls = tls().map_err(|message| LedgerError::Postgres {
            url: shown.clone(),
            what: "TLS roots",
            message,
        })?;
        let ledger = PgLedger {
            config,
            tls,
            url: url.to_owned(),
            shown,
            read_only,
            session: Mutex::new(None),
            generations: AtomicU64::new(0),
            keepalives_refused: Mutex::new(None),
        };
        let mut session = ledger.connect()?;
        let checked = if read_only {
            schema::check(&mut session.client)
        } else {
            schema::migrate(&mut session.client).map(|_| ())
        };
        let what = if read_only {
            "checking the schema"
        } else {
            "preparing the schema"
        };
        checked.map_err(|f| ledger.fail(what, f))?;
        *ledger.lock() = Some(session);
        Ok(ledger)
    }

    /// Why the server refused the TCP keepalive settings at the last connection, if it did.
    pub(super) fn keepalives_refused(&self) -> Option<String> {
        self.keepalives_refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn shown(&self) -> &str {
        &self.shown
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
        let account = &event.account_id;
        let row = self.call("admit", |c, _| {
            let mut tx = c.transaction()?;
            // A delivery's row, once committed, decides: no lock needed to find it.
            if let Some(row) = load(&mut tx, delivery_id)? {
                return Ok(row);
            }
            // The new account row's first `updated_at`; the row's own time is read again below
            // once the account is locked, so `created_at` follows the order admissions took.
            let mut now_ms = clock();
            let mut now = int(delivery_id, "time", now_ms)?;
            // Lock the account: the first admission creates its row (a concurrent one waits
            // on it); later ones lock it. Until commit, no other admission of the account runs.
            let first = tx.execute(
                "INSERT INTO payout_accounts
                     (account_id, newest_modify_time, newest_delivery_id, updated_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (account_id) DO NOTHING",
                &[account, &modify_time, &delivery_id, &now],
            )? == 1;
            let stale = if first {
                // Locked by the insert (which may have waited for a concurrent insert of the
                // account that then rolled back).
                now_ms = clock();
                now = int(delivery_id, "time", now_ms)?;
                false
            } else {
                let newest = tx.query_one(
                    "SELECT newest_modify_time, newest_delivery_id FROM payout_accounts
                     WHERE account_id = $1 FOR UPDATE",
                    &[account],
                )?;
                // Another attempt of this delivery may have committed while this one waited.
                if let Some(row) = load(&mut tx, delivery_id)? {
                    return Ok(row);
                }
                now_ms = clock();
                now = int(delivery_id, "time", now_ms)?;
                let time: i64 = newest.try_get(0)?;
                let by: String = newest.try_get(1)?;
                let time = u64::try_from(time).map_err(|_| LedgerError::Corrupt {
                    delivery_id: delivery_id.to_owned(),
                    reason: format!("account {account} has a negative newest_modify_time"),
                })?;
                let stale = is_stale(Some((time, &by)), event, delivery_id);
                if !stale {
                    tx.execute(
                        "UPDATE payout_accounts SET newest_modify_time = $2,
                             newest_delivery_id = $3, updated_at = $4
                         WHERE account_id = $1",
                        &[account, &modify_time, &delivery_id, &now],
                    )?;
                }
                stale
            };
            let intent = Intent::new(plan, stale, now_ms);
            let completed = intent.completed.map(|_| now);
            tx.execute(
                "INSERT INTO payout_ledger (delivery_id, external_order_id, account_id,
                     modify_time, requested_types, status, skip_reason, created_at, completed_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &delivery_id,
                    &external_order_id,
                    account,
                    &modify_time,
                    &intent.types,
                    &intent.status,
                    &intent.reason,
                    &now,
                    &completed,
                ],
            )?;
            let row = load(&mut tx, delivery_id)?;
            tx.commit()?;
            Ok(row.ok_or_else(|| vanished(delivery_id, "row vanished after insert"))?)
        })?;
        row.check()
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
        let now = int(delivery_id, "time", now_ms)?;
        let points = int(delivery_id, "points", w.points)?;
        let lines: Vec<(&str, String, i64, i32)> = w
            .cash
            .iter()
            .zip(0..)
            .map(|(c, line)| {
                (
                    c.currency.as_str(),
                    c.amount.to_string(),
                    c.amount.minor(),
                    line,
                )
            })
            .collect();
        let row = self.call("recording a withdrawal", |c, _| {
            let mut tx = c.transaction()?;
            let changed = tx.execute(
                "UPDATE payout_ledger SET status = 'withdrawn', completed_at = $2,
                     trans_time = $3, trans_time_ms = $4, points = $5, log_id = $6,
                     last_error = NULL, forward_status = $7, skip_reason = NULL
                 WHERE delivery_id = $1 AND (status IN ('pending', 'rejected')
                     OR (status = 'skipped' AND skip_reason = 'covered'))",
                &[
                    &delivery_id,
                    &now,
                    &w.trans_time,
                    &trans_ms,
                    &points,
                    &w.log_id,
                    &forward,
                ],
            )?;
            if changed == 1 {
                tx.execute(
                    "DELETE FROM payout_cash WHERE delivery_id = $1",
                    &[&delivery_id],
                )?;
                for (currency, amount, minor, line) in &lines {
                    tx.execute(
                        "INSERT INTO payout_cash (delivery_id, currency, line, amount, amount_minor)
                         VALUES ($1, $2, $3, $4, $5)",
                        &[&delivery_id, currency, line, amount, minor],
                    )?;
                }
            }
            let row = load(&mut tx, delivery_id)?;
            tx.commit()?;
            Ok(row.ok_or_else(|| vanished(delivery_id, "no row to record the withdrawal in"))?)
        })?;
        row.check()
    }

    /// One statement (its own transaction).
    fn execute(
        &self,
        what: &'static str,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<(), LedgerError> {
        self.call(what, |c, _| Ok(c.execute(sql, params).map(|_| ())?))
    }

    pub(super) fn record_withdraw_error(
        &self,
        delivery_id: &str,
        error: &str,
        log_id: Option<&str>,
        status: &str,
        nothing: Option<i64>,
    ) -> Result<(), LedgerError> {
        self.execute(
            "recording a withdraw error",
            "UPDATE payout_ledger SET status = $2, last_error = $3, log_id = COALESCE($4, log_id),
                 withdraw_nothing_upto = CASE WHEN withdraw_nothing_upto = $5::BIGINT - 1
                     THEN $5::BIGINT ELSE withdraw_nothing_upto END
             WHERE delivery_id = $1 AND status IN ('pending', 'rejected')",
            &[&delivery_id, &status, &error, &log_id, &nothing],
        )
    }

    pub(super) fn record_covered(
        &self,
        delivery_id: &str,
        call: i64,
        reason: &str,
        note: &str,
        now: i64,
    ) -> Result<(), LedgerError> {
        self.execute(
            "recording a covered snapshot",
            "UPDATE payout_ledger SET status = 'skipped', skip_reason = $2, last_error = $3,
                 completed_at = $4
             WHERE delivery_id = $1 AND status IN ('pending', 'rejected')
                 AND withdraw_attempts = $5::BIGINT AND withdraw_nothing_upto = $5::BIGINT - 1",
            &[&delivery_id, &reason, &note, &now, &call],
        )
    }

    pub(super) fn count_withdraw_attempt(
        &self,
        delivery_id: &str,
    ) -> Result<Option<i64>, LedgerError> {
        // Run again on a new connection when the old one was found dead (`call`): a count
        // whose answer was lost then counts one more, so the next call's number skips one and
        // `withdraw_nothing_upto` stops short of it: such a row is never taken as covered.
        self.call("counting a withdraw attempt", |c, _| {
            let row = c.query_opt(
                "UPDATE payout_ledger SET withdraw_attempts = withdraw_attempts + 1
                 WHERE delivery_id = $1 AND status IN ('pending', 'rejected')
                 RETURNING withdraw_attempts",
                &[&delivery_id],
            )?;
            Ok(row.map(|r| r.get::<_, i64>(0)))
        })
    }

    pub(super) fn record_forward(
        &self,
        delivery_id: &str,
        (status, http, error, at): (&str, Option<u16>, Option<&str>, Option<u64>),
    ) -> Result<(), LedgerError> {
        let http = http.map(i32::from);
        let at = at.map(|t| int(delivery_id, "time", t)).transpose()?;
        self.execute(
            "recording a forwarding attempt",
            "UPDATE payout_ledger SET forward_status = $2, forward_http_status = $3,
                 forward_error = $4, forwarded_at = $5, forward_attempts = forward_attempts + 1
             WHERE delivery_id = $1 AND forward_status = 'pending'",
            &[&delivery_id, &status, &http, &error, &at],
        )
    }

    /// What tells this ledger from any other whatever URL reached it: its database's name, its
    /// table's object id and when its schema was created (Unix microseconds: the session's
    /// time zone or date style, which a role or `options` may set, must not change it).
    pub(super) fn identity(&self) -> Result<String, LedgerError> {
        let (db, table, created) = self.call("reading the ledger's identity", |c, _| {
            let row = c.query_one(
                "SELECT current_database()::text, 'payout_ledger'::regclass::oid::bigint,
                        (SELECT (extract(epoch FROM applied_at) * 1000000)::bigint::text
                         FROM payout_schema WHERE version = 1)",
                &[],
            )?;
            let found: (String, i64, Option<String>) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            Ok(found)
        })?;
        Ok(format!("{db}/{table}/{}", created.unwrap_or_default()))
    }

    pub(super) fn get(&self, delivery_id: &str) -> Result<Option<PayoutRow>, LedgerError> {
        let row = self.call("reading a row", |c, _| {
            let mut tx = c.build_transaction().read_only(true).start()?;
            load(&mut tx, delivery_id)
        })?;
        row.map(StoredRow::check).transpose()
    }

    pub(super) fn rows(&self, pick: &Pick) -> Result<Vec<PayoutRow>, LedgerError> {
        let (condition, order) = pick.sql();
        let params = pick.params();
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|p| match p {
                Param::Int(n) => n as &(dyn postgres::types::ToSql + Sync),
                Param::Text(t) => t,
            })
            .collect();
        // `delivery_id` in byte order, as SQLite sorts it.
        let order = order.replace("p.delivery_id", "p.delivery_id COLLATE \"C\"");
        let (rows, lines) = self.call("listing payouts", |c, _| {
            let mut tx = c
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let rows = tx.query(
                &format!(
                    "SELECT {COLUMNS} FROM payout_ledger p WHERE {condition} ORDER BY {order}"
                ),
                &params,
            )?;
            let rows = rows
                .iter()
                .map(stored)
                .collect::<Result<Vec<_>, postgres::Error>>()?;
            let lines = tx.query(
                &format!(
                    "SELECT c.delivery_id, c.currency, c.amount_minor
                     FROM payout_cash c JOIN payout_ledger p USING (delivery_id)
                     WHERE {condition} ORDER BY c.delivery_id, c.line"
                ),
                &params,
            )?;
            let lines = lines
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                .collect::<Result<Vec<(String, String, i64)>, postgres::Error>>()?;
            tx.commit()?;
            Ok((rows, lines))
        })?;
        let mut cash: HashMap<String, Vec<(String, i64)>> = HashMap::new();
        for (delivery_id, currency, minor) in lines {
            cash.entry(delivery_id).or_default().push((currency, minor));
        }
        rows.into_iter()
            .map(|mut row| {
                row.cash = cash.remove(&row.delivery_id).unwrap_or_default();
                row.check()
            })
            .collect()
    }
}
