//! The payout ledger: one row per handled delivery, written *before* Lark is called (the intent)
//! and completed after (the result), plus each account's newest snapshot time for stale-snapshot
//! detection. Two backends behind one API: the plugin's own SQLite file (`ledger/sqlite.rs`), or a
//! PostgreSQL database shared by several gateway replicas (`ledger/postgres.rs`).
//!
//! Money is never stored as a float: points are integers, cash is one row per currency with the
//! exact decimal text (`"0.30"`) and the integer hundredths. See the README for the schemas.
//! Nothing here ever shows a database password (`ledger/location.rs` redacts URLs).

use std::path::Path;

use lark_core::AssetsUpdateV1;

use crate::api::Withdrawal;

mod columns;
mod location;
mod pick;
mod postgres;
mod row;
mod sqlite;

use columns::{forward_status_for, is_stale, trans_time_ms, vanished, Intent};
pub use location::{redact_url, LedgerLocation};
use pick::Pick;
pub use row::PayoutRow;

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
    #[error("ledger {path}: cannot create it: {source}")]
    Create {
        path: String,
        source: std::io::Error,
    },
    /// `url` has its password hidden and `message` is scrubbed of it.
    #[error("ledger {url}: {what}: {message}")]
    Postgres {
        url: String,
        what: &'static str,
        message: String,
    },
    #[error("ledger {path}: its schema version {found} is newer than this plugin's ({known}): use the newer plugin, or a copy of the ledger")]
    NewerSchema {
        path: String,
        found: i64,
        known: i64,
    },
    /// The file is still open elsewhere in this process (the instance a reload replaced), or
    /// that cannot be told: see `ledger/sqlite/handover.rs`.
    #[error("ledger {path}: {reason}")]
    Handover { path: String, reason: String },
    #[error("ledger: corrupt row for delivery {delivery_id}: {reason}")]
    Corrupt { delivery_id: String, reason: String },
    #[error("ledger: {what} {value} of delivery {delivery_id} is too large to store")]
    TooLarge {
        delivery_id: String,
        what: &'static str,
        value: u64,
    },
}

/// Stored integers are 64-bit signed (SQLite's `INTEGER`, PostgreSQL's `BIGINT`); `u64`
/// values above `i64::MAX` are refused (`TooLarge`: the delivery is rejected), never wrapped
/// nor left to fail at the bind (which read as a passing fault, retried).
fn int(delivery_id: &str, what: &'static str, value: u64) -> Result<i64, LedgerError> {
    i64::try_from(value).map_err(|_| LedgerError::TooLarge {
        delivery_id: delivery_id.to_owned(),
        what,
        value,
    })
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

/// How a withdraw call failed, as [`Ledger::record_withdraw_error`] records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed {
    /// A business error: the row becomes `rejected` (else it stays `pending`).
    pub rejected: bool,
    /// `Some(n)`: the row's withdraw call number `n` (from
    /// [`Ledger::count_withdraw_attempt`]) is known to have made no withdrawal
    /// ([`crate::api::ApiError::withdrew_nothing`]). The row's `withdraw_nothing_upto` moves
    /// from `n - 1` to `n` (calls 1 to `n` all made nothing); from any other value it stays, so
    /// recording it twice, or out of order, never counts a call that was not so answered.
    pub withdrew_nothing: Option<u64>,
}

/// Why a delivery withdraws nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    ZeroBalance,
    BelowMinimum,
    Stale,
    /// Lark refused the withdrawal, and an earlier withdrawal of the account, made after this
    /// snapshot and of at least its amounts, had taken its balance ([`Ledger::record_covered`]).
    Covered,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::ZeroBalance => "zero_balance",
            SkipReason::BelowMinimum => "below_minimum",
            SkipReason::Stale => "stale",
            SkipReason::Covered => "covered",
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
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    /// Boxed as the other: one ledger lives as long as the plugin.
    Sqlite(Box<sqlite::SqliteLedger>),
    /// Boxed: its driver config is large, and one ledger lives as long as the plugin.
    Postgres(Box<postgres::PgLedger>),
}

/// Held while one attempt of a delivery runs (see [`Ledger::claim`]); released on drop.
#[derive(Debug)]
pub struct DeliveryClaim<'a> {
    /// `None` for SQLite: one process owns the file, and the plugin's in-process claim suffices.
    held: Option<(&'a postgres::PgLedger, postgres::ClaimKey)>,
}

impl Drop for DeliveryClaim<'_> {
    fn drop(&mut self) {
        if let Some((pg, key)) = self.held.take() {
            pg.release(&key);
        }
    }
}

impl Ledger {
    /// Opens (creating if needed) the SQLite ledger at `path` for writing.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        sqlite::SqliteLedger::open(path).map(|l| Ledger {
            backend: Backend::Sqlite(Box::new(l)),
        })
    }

    /// Opens an existing SQLite ledger read-only (for reports; safe while the gateway writes).
    pub fn open_read_only(path: &Path) -> Result<Ledger, LedgerError> {
        sqlite::SqliteLedger::open_read_only(path).map(|l| Ledger {
            backend: Backend::Sqlite(Box::new(l)),
        })
    }

    /// Connects to the PostgreSQL ledger at `url` for writing, creating or migrating its
    /// schema (safe when several processes start at once). The password is the URL's, else
    /// `$PGPASSWORD`. Fails when the database cannot be reached.
    pub fn connect(url: &str) -> Result<Ledger, LedgerError> {
        postgres::PgLedger::open(url, false).map(|l| Ledger {
            backend: Backend::Postgres(Box::new(l)),
        })
    }

    /// Connects to the PostgreSQL ledger at `url` for reading only (reports): every transaction
    /// is read-only, and a database without the ledger's schema is refused.
    pub fn connect_read_only(url: &str) -> Result<Ledger, LedgerError> {
        postgres::PgLedger::open(url, true).map(|l| Ledger {
            backend: Backend::Postgres(Box::new(l)),
        })
    }

    /// Opens the ledger at `location` (a relative path is taken as it is: resolve it first).
    pub fn open_at(location: &LedgerLocation, read_only: bool) -> Result<Ledger, LedgerError> {
        match (location, read_only) {
            (LedgerLocation::File(path), false) => Ledger::open(path),
            (LedgerLocation::File(path), true) => Ledger::open_read_only(path),
            (LedgerLocation::Postgres(url), false) => Ledger::connect(url),
            (LedgerLocation::Postgres(url), true) => Ledger::connect_read_only(url),
        }
    }

    /// Whether the connection waits for another copy of the library in this process to close
    /// the SQLite file (an upgrade by reload): the first call after opens it; calls before are
    /// retries. Never with PostgreSQL.
    pub fn opens_later(&self) -> bool {
        match &self.backend {
            Backend::Sqlite(l) => l.opens_later(),
            Backend::Postgres(_) => false,
        }
    }

    /// Why the PostgreSQL server refused the TCP keepalive settings the ledger's sessions ask
    /// for (see the README), if it did: a replica that vanishes then holds its delivery claims
    /// until the server notices by its own means.
    pub fn keepalives_refused(&self) -> Option<String> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(pg) => pg.keepalives_refused(),
        }
    }

    /// For a PostgreSQL ledger, what tells it from any other ledger whatever URL reached it
    /// (`localhost` or `127.0.0.1`, another user, other parameters): `None` for a file, which
    /// its canonical path tells.
    pub fn identity(&self) -> Result<Option<String>, LedgerError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(None),
            Backend::Postgres(pg) => pg.identity().map(Some),
        }
    }

    /// Where the ledger is, fit to show: the file, or the URL with its password hidden.
    pub fn shown(&self) -> &str {
        match &self.backend {
            Backend::Sqlite(l) => l.shown(),
            Backend::Postgres(l) => l.shown(),
        }
    }

    /// Claims `delivery_id` for this process while one attempt of it runs: `None` when another
    /// gateway process sharing the PostgreSQL ledger is running an attempt of it (then answer
    /// `Retry`). A courtesy that saves a second withdraw call, not what prevents paying twice
    /// (the `external_order_id` does): a claim lapses if its connection is lost. Always granted
    /// with SQLite.
    pub fn claim(&self, delivery_id: &str) -> Result<Option<DeliveryClaim<'_>>, LedgerError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(Some(DeliveryClaim { held: None })),
            Backend::Postgres(pg) => Ok(pg.claim(delivery_id)?.map(|key| DeliveryClaim {
                held: Some((pg, key)),
            })),
        }
    }

    /// Returns the row of `delivery_id`, creating it first if this delivery is new: a new
    /// delivery is stale (recorded as skipped) when its snapshot is older than the newest one
    /// seen for the account, or equally old but from another delivery; otherwise it becomes the
    /// newest and `plan` is recorded (a pending intent, or a skip). One transaction, committed
    /// before this returns; admissions of one account are serialised (with PostgreSQL, across
    /// every process sharing the database), so one snapshot admits at most one withdrawal.
    /// `now_ms` is read once the admission holds that lock: the rows' `created_at` follow the
    /// order admissions took (clocks of different processes permitting).
    pub fn admit(
        &self,
        delivery_id: &str,
        external_order_id: &str,
        event: &AssetsUpdateV1,
        plan: &Plan,
        now_ms: impl Fn() -> u64,
    ) -> Result<PayoutRow, LedgerError> {
        let row = match &self.backend {
            Backend::Sqlite(l) => l.admit(delivery_id, external_order_id, event, plan, &now_ms),
            Backend::Postgres(l) => l.admit(delivery_id, external_order_id, event, plan, &now_ms),
        }?;
        // A row found for this delivery id must be of this snapshot: another event under the
        // same id would otherwise be taken as already paid.
        if row.account_id != event.account_id || row.modify_time != event.modify_time_ms {
            return Err(LedgerError::Corrupt {
                delivery_id: delivery_id.to_owned(),
                reason: format!(
                    "the row is of account {} snapshot {}, the event of account {} snapshot {}",
                    row.account_id, row.modify_time, event.account_id, event.modify_time_ms
                ),
            });
        }
        Ok(row)
    }

    /// Records Lark's result for a pending (or rejected) intent, or one a concurrent attempt
    /// recorded as covered (Lark executed this attempt's id after all: the money it moved is
    /// recorded); a row already withdrawn (by a concurrent attempt) is left as it is. Returns
    /// the row as it now stands.
    pub fn record_withdrawn(
        &self,
        delivery_id: &str,
        w: &Withdrawal,
        forwarding: bool,
        now_ms: u64,
    ) -> Result<PayoutRow, LedgerError> {
        match &self.backend {
            Backend::Sqlite(l) => l.record_withdrawn(delivery_id, w, forwarding, now_ms),
            Backend::Postgres(l) => l.record_withdrawn(delivery_id, w, forwarding, now_ms),
        }
    }

    /// Notes a failed withdraw attempt (see [`Failed`]); a row no longer `pending` or
    /// `rejected` (withdrawn, skipped) is left as it is.
    pub fn record_withdraw_error(
        &self,
        delivery_id: &str,
        error: &str,
        log_id: Option<&str>,
        failed: Failed,
    ) -> Result<(), LedgerError> {
        let status = if failed.rejected {
            "rejected"
        } else {
            "pending"
        };
        let nothing = failed
            .withdrew_nothing
            .map(|n| int(delivery_id, "call number", n))
            .transpose()?;
        match &self.backend {
            Backend::Sqlite(l) => {
                l.record_withdraw_error(delivery_id, error, log_id, status, nothing)
            }
            Backend::Postgres(l) => {
                l.record_withdraw_error(delivery_id, error, log_id, status, nothing)
            }
        }
    }

    /// Counts a withdraw attempt that is about to be made, when the row is still `pending` or
    /// `rejected`, and returns its number (the row's `withdraw_attempts` now); `None` when it is
    /// not (a concurrent attempt finished it: withdrawn, or skipped as covered), and then no
    /// call must be made.
    pub fn count_withdraw_attempt(&self, delivery_id: &str) -> Result<Option<u64>, LedgerError> {
        let counted = match &self.backend {
            Backend::Sqlite(l) => l.count_withdraw_attempt(delivery_id)?,
            Backend::Postgres(l) => l.count_withdraw_attempt(delivery_id)?,
        };
        counted
            .map(|n| {
                u64::try_from(n).map_err(|_| LedgerError::Corrupt {
                    delivery_id: delivery_id.to_owned(),
                    reason: format!("negative withdraw_attempts {n}"),
                })
            })
            .transpose()
    }

    /// Records one forwarding attempt: `Ok(http_status)` done, `Err(reason)` still pending.
    pub fn record_forward(
        &self,
        delivery_id: &str,
        result: Result<u16, (Option<u16>, &str)>,
        now_ms: u64,
    ) -> Result<(), LedgerError> {
        let values = match result {
            Ok(code) => ("done", Some(code), None, Some(now_ms)),
            Err((code, reason)) => ("pending", code, Some(reason), None),
        };
        match &self.backend {
            Backend::Sqlite(l) => l.record_forward(delivery_id, values),
            Backend::Postgres(l) => l.record_forward(delivery_id, values),
        }
    }

    /// The row of `delivery_id`, if any.
    pub fn get(&self, delivery_id: &str) -> Result<Option<PayoutRow>, LedgerError> {
        match &self.backend {
            Backend::Sqlite(l) => l.get(delivery_id),
            Backend::Postgres(l) => l.get(delivery_id),
        }
    }

    /// Withdrawals (status `withdrawn`) whose time — Lark's `trans_time`, else when the result
    /// was recorded — lies in `[from_ms, to_ms]` (both inclusive, both optional), oldest first.
    pub fn withdrawals(
        &self,
        from_ms: Option<u64>,
        to_ms: Option<u64>,
    ) -> Result<Vec<PayoutRow>, LedgerError> {
        let from = i64::try_from(from_ms.unwrap_or(0)).unwrap_or(i64::MAX);
        let to = i64::try_from(to_ms.unwrap_or(u64::MAX)).unwrap_or(i64::MAX);
        self.rows(&Pick::Withdrawn { from, to })
    }

    /// Rows whose payout is not finished, recorded at or before `before_ms`, oldest first: a
    /// withdrawal not known to be done (`pending`, or `rejected` by Lark), or withdrawn and
    /// not yet forwarded. Each is a delivery still being retried, a dead letter to replay, or
    /// one whose dead letter was purged: nothing else will finish it.
    pub fn unfinished(&self, before_ms: u64) -> Result<Vec<PayoutRow>, LedgerError> {
        let before = i64::try_from(before_ms).unwrap_or(i64::MAX);
        self.rows(&Pick::Unfinished { before })
    }

    /// Withdrawals of `account_id` (status `withdrawn`) that Lark made, by its `trans_time`,
    /// after `modify_time_ms`, oldest first: each took the account's whole balance of its types
    /// as it stood then, so the balance of a snapshot of that time among it.
    pub fn withdrawals_after(
        &self,
        account_id: &str,
        modify_time_ms: u64,
    ) -> Result<Vec<PayoutRow>, LedgerError> {
        self.rows(&Pick::After {
            account: account_id.to_owned(),
            after: i64::try_from(modify_time_ms).unwrap_or(i64::MAX),
        })
    }

    /// Records a pending (or rejected) intent as skipped for reason `covered`, `note` saying by
    /// what (kept in `last_error`), only when `call` (the number of the withdraw call just
    /// refused) is the row's last and every call before it is known to have withdrawn nothing
    /// (`withdraw_attempts = call` and `withdraw_nothing_upto = call - 1`: no earlier call of
    /// its id, whose answer was lost, can still be executed, and no later one runs); a row in
    /// any other state, or with a call in doubt, is left as it is. Returns the row as it now
    /// stands.
    pub fn record_covered(
        &self,
        delivery_id: &str,
        call: u64,
        note: &str,
        now_ms: u64,
    ) -> Result<PayoutRow, LedgerError> {
        let now = int(delivery_id, "time", now_ms)?;
        let call = int(delivery_id, "call number", call)?;
        let reason = SkipReason::Covered.as_str();
        match &self.backend {
            Backend::Sqlite(l) => l.record_covered(delivery_id, call, reason, note, now)?,
            Backend::Postgres(l) => l.record_covered(delivery_id, call, reason, note, now)?,
        }
        self.get(delivery_id)?
            .ok_or_else(|| vanished(delivery_id, "row vanished while recorded as covered"))
    }

    fn rows(&self, pick: &Pick) -> Result<Vec<PayoutRow>, LedgerError> {
        match &self.backend {
            Backend::Sqlite(l) => l.rows(pick),
            Backend::Postgres(l) => l.rows(pick),
        }
    }
}

#[cfg(test)]
#[path = "ledger/clock_tests.rs"]
mod clock_tests;

#[cfg(test)]
#[path = "ledger/tests.rs"]
mod tests;
