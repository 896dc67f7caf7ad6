//! One ledger row ([`PayoutRow`]) and how it is built from what either backend stored
//! ([`StoredRow`]), checking every value (status names, non-negative numbers and amounts, the
//! requested types) on the way. Backend-neutral: no SQL here.

use lark_core::{CashBonus, Money};

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
    /// Why the last forwarding attempt failed, if it did.
    pub forward_error: Option<String>,
}

/// A row as a backend read it (SQL integers are signed), before it is checked.
#[derive(Debug)]
pub(super) struct StoredRow {
    pub delivery_id: String,
    pub external_order_id: String,
    pub account_id: String,
    pub modify_time: i64,
    pub requested_types: String,
    pub status: String,
    pub skip_reason: Option<String>,
    pub created_at: i64,
    pub completed_at: Option<i64>,
    pub trans_time: Option<String>,
    pub trans_time_ms: Option<i64>,
    pub points: i64,
    pub log_id: Option<String>,
    pub last_error: Option<String>,
    pub withdraw_attempts: i64,
    pub forward_status: String,
    pub forward_attempts: i64,
    pub forward_error: Option<String>,
    /// (currency, hundredths), in the order Lark sent them.
    pub cash: Vec<(String, i64)>,
}

/// The columns of a payout row, in [`StoredRow`]'s order (both backends select them so).
pub(super) const COLUMNS: &str = "delivery_id, external_order_id, account_id, modify_time,
    requested_types, status, skip_reason, created_at, completed_at, trans_time, trans_time_ms,
    points, log_id, last_error, withdraw_attempts, forward_status, forward_attempts, forward_error";

impl StoredRow {
    /// Checks every value; `Corrupt` names the first one that is not what the ledger writes.
    pub(super) fn check(self) -> Result<PayoutRow, LedgerError> {
        let delivery_id = self.delivery_id;
        let corrupt = |reason: String| LedgerError::Corrupt {
            delivery_id: delivery_id.clone(),
            reason,
        };
        let count = |what: &str, v: i64| {
            u64::try_from(v).map_err(|_| corrupt(format!("negative {what} {v}")))
        };
        let maybe = |what: &str, v: Option<i64>| v.map(|v| count(what, v)).transpose();
        let mut cash = Vec::with_capacity(self.cash.len());
        for (currency, minor) in self.cash {
            match Money::from_minor(minor) {
                Some(amount) => cash.push(CashBonus { currency, amount }),
                None => return Err(corrupt(format!("negative amount {minor}"))),
            }
        }
        let status = match self.status.as_str() {
            "pending" => Status::Pending,
            "withdrawn" => Status::Withdrawn,
            "rejected" => Status::Rejected,
            "skipped" => Status::Skipped,
            other => return Err(corrupt(format!("unknown status {other:?}"))),
        };
        let forward_status = match self.forward_status.as_str() {
            "none" => ForwardStatus::None,
            "pending" => ForwardStatus::Pending,
            "done" => ForwardStatus::Done,
            "not_needed" => ForwardStatus::NotNeeded,
            other => return Err(corrupt(format!("unknown forward status {other:?}"))),
        };
        let requested_types: Vec<u8> = serde_json::from_str(&self.requested_types)
            .map_err(|e| corrupt(format!("requested_types: {e}")))?;
        Ok(PayoutRow {
            external_order_id: self.external_order_id,
            account_id: self.account_id,
            modify_time: count("modify_time", self.modify_time)?,
            requested_types,
            status,
            skip_reason: self.skip_reason,
            created_at: count("created_at", self.created_at)?,
            completed_at: maybe("completed_at", self.completed_at)?,
            trans_time: self.trans_time,
            trans_time_ms: maybe("trans_time_ms", self.trans_time_ms)?,
            points: count("points", self.points)?,
            cash,
            log_id: self.log_id,
            last_error: self.last_error,
            withdraw_attempts: count("withdraw_attempts", self.withdraw_attempts)?,
            forward_status,
            forward_attempts: count("forward_attempts", self.forward_attempts)?,
            forward_error: self.forward_error,
            delivery_id,
        })
    }
}

#[cfg(test)]
impl PayoutRow {
    /// A withdrawn row of account `a` (delivery `d`, 1 point, no cash, `trans_time` 3), for
    /// tests to vary with struct update syntax.
    pub(crate) fn test_withdrawn() -> PayoutRow {
        PayoutRow {
            delivery_id: "d".into(),
            external_order_id: "gw-x".into(),
            account_id: "a".into(),
            modify_time: 1,
            requested_types: vec![1],
            status: Status::Withdrawn,
            skip_reason: None,
            created_at: 1,
            completed_at: Some(2),
            trans_time: Some("3".into()),
            trans_time_ms: Some(3),
            points: 1,
            cash: Vec::new(),
            log_id: None,
            last_error: None,
            withdraw_attempts: 1,
            forward_status: ForwardStatus::None,
            forward_attempts: 0,
            forward_error: None,
        }
    }
}
