//! One ledger row ([`PayoutRow`]) and how it is read back from SQLite, checking every stored
//! value (status names, non-negative amounts, the requested types) on the way.

use lark_core::{CashBonus, Money};
use rusqlite::{Connection, OptionalExtension};

use super::{ForwardStatus, LedgerError, Status};

/// One ledger row with its cash lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayoutRow {
    pub delivery_id: String,
    pub external_order_id: String,
    pub account_id: String,
    pub modify_time: u64,
    pub requested_types: Vec<u8>,
    pub status: Status,
    pub skip_reason: Option<String>,
    pub created_at: u64,
    pub completed_at: Option<u64>,
    pub trans_time: Option<String>,
    pub trans_time_ms: Option<u64>,
    pub points: u64,
    pub cash: Vec<CashBonus>,
    pub log_id: Option<String>,
    pub last_error: Option<String>,
    pub withdraw_attempts: u64,
    pub forward_status: ForwardStatus,
    pub forward_attempts: u64,
}

/// Loads one row with its cash lines. The inner `Result` reports corrupt content.
pub(super) fn load(
    conn: &Connection,
    delivery_id: &str,
) -> rusqlite::Result<Option<Result<PayoutRow, LedgerError>>> {
    type Raw = (
        String,
        String,
        u64,
        String,
        String,
        Option<String>,
        u64,
        Option<u64>,
    );
    type Raw2 = (
        Option<String>,
        Option<u64>,
        u64,
        Option<String>,
        Option<String>,
        u64,
        String,
        u64,
    );
    let found: Option<(Raw, Raw2)> = conn
        .query_row(
            "SELECT external_order_id, account_id, modify_time, requested_types, status,
                    skip_reason, created_at, completed_at, trans_time, trans_time_ms, points,
                    log_id, last_error, withdraw_attempts, forward_status, forward_attempts
             FROM payouts WHERE delivery_id = ?1",
            [delivery_id],
            |r| {
                Ok((
                    (
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                    ),
                    (
                        r.get(8)?,
                        r.get(9)?,
                        r.get(10)?,
                        r.get(11)?,
                        r.get(12)?,
                        r.get(13)?,
                        r.get(14)?,
                        r.get(15)?,
                    ),
                ))
            },
        )
        .optional()?;
    let Some((a, b)) = found else {
        return Ok(None);
    };
    let mut cash = Vec::new();
    let mut st = conn.prepare(
        "SELECT currency, amount_minor FROM payout_cash WHERE delivery_id = ?1 ORDER BY rowid",
    )?;
    let lines: Vec<(String, i64)> = st
        .query_map([delivery_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let corrupt = |reason: String| LedgerError::Corrupt {
        delivery_id: delivery_id.to_owned(),
        reason,
    };
    for (currency, minor) in lines {
        match Money::from_minor(minor) {
            Some(amount) => cash.push(CashBonus { currency, amount }),
            None => return Ok(Some(Err(corrupt(format!("negative amount {minor}"))))),
        }
    }
    let status = match a.4.as_str() {
        "pending" => Status::Pending,
        "withdrawn" => Status::Withdrawn,
        "rejected" => Status::Rejected,
        "skipped" => Status::Skipped,
        other => return Ok(Some(Err(corrupt(format!("unknown status {other:?}"))))),
    };
    let forward_status = match b.6.as_str() {
        "none" => ForwardStatus::None,
        "pending" => ForwardStatus::Pending,
        "done" => ForwardStatus::Done,
        "not_needed" => ForwardStatus::NotNeeded,
        other => {
            return Ok(Some(Err(corrupt(format!(
                "unknown forward status {other:?}"
            )))))
        }
    };
    let requested_types: Vec<u8> = match serde_json::from_str(&a.3) {
        Ok(t) => t,
        Err(e) => return Ok(Some(Err(corrupt(format!("requested_types: {e}"))))),
    };
    Ok(Some(Ok(PayoutRow {
        delivery_id: delivery_id.to_owned(),
        external_order_id: a.0,
        account_id: a.1,
        modify_time: a.2,
        requested_types,
        status,
        skip_reason: a.5,
        created_at: a.6,
        completed_at: a.7,
        trans_time: b.0,
        trans_time_ms: b.1,
        points: b.2,
        cash,
        log_id: b.3,
        last_error: b.4,
        withdraw_attempts: b.5,
        forward_status,
        forward_attempts: b.7,
    })))
}
