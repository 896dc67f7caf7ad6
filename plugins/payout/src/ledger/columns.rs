//! What both backends write, worked out the same way: a withdrawal's `trans_time` as Unix
//! milliseconds, whether a new snapshot is stale, a new delivery's row ([`Intent`]), a recorded
//! withdrawal's `forward_status`, and the error for a row that vanished mid-write.

use lark_core::AssetsUpdateV1;

use super::{LedgerError, Plan, SkipReason};
use crate::api::Withdrawal;

/// Lark's `trans_time` as Unix milliseconds, when it reads as one now
/// ([`crate::timefmt::plausible_unix_ms`]: not seconds, microseconds or a far future) and fits
/// the signed 64-bit column; otherwise `None`, and the row is placed by when its result was
/// recorded (its text is kept as Lark sent it). Lenient on purpose: a withdrawal Lark made is
/// always recorded.
pub(super) fn trans_time_ms(trans_time: Option<&str>) -> Option<i64> {
    let now = crate::plugin::now_ms();
    trans_time
        .and_then(|t| t.trim().parse::<u64>().ok())
        .filter(|&t| crate::timefmt::plausible_unix_ms(t, now))
        .and_then(|t| i64::try_from(t).ok())
}

/// Whether a new delivery's snapshot is stale given the newest one recorded for its account
/// (time and delivery): older, or equally old but from another delivery.
pub(super) fn is_stale(
    newest: Option<(u64, &str)>,
    event: &AssetsUpdateV1,
    delivery_id: &str,
) -> bool {
    newest.is_some_and(|(time, by)| {
        event.modify_time_ms < time || (event.modify_time_ms == time && by != delivery_id)
    })
}

/// The row a new delivery gets: a pending intent, or a skip (stale overrides the plan).
pub(super) struct Intent {
    pub(super) status: &'static str,
    /// JSON list of `withdraw_bonus_type` codes (`[]` for a skip).
    pub(super) types: String,
    pub(super) reason: Option<&'static str>,
    /// When the row was completed: set for a skip, which is final at once.
    pub(super) completed: Option<u64>,
}

impl Intent {
    pub(super) fn new(plan: &Plan, stale: bool, now_ms: u64) -> Intent {
        let plan = if stale {
            &Plan::Skip(SkipReason::Stale)
        } else {
            plan
        };
        let (status, types, reason, completed) = match plan {
            Plan::Withdraw(types) => ("pending", types.clone(), None, None),
            Plan::Skip(r) => ("skipped", Vec::new(), Some(r.as_str()), Some(now_ms)),
        };
        Intent {
            status,
            types: serde_json::to_string(&types).unwrap_or_else(|_| "[]".into()),
            reason,
            completed,
        }
    }
}

/// `forward_status` of a recorded withdrawal.
pub(super) fn forward_status_for(w: &Withdrawal, forwarding: bool) -> &'static str {
    let nothing = w.points == 0 && w.cash.iter().all(|c| c.amount.is_zero());
    match (forwarding, nothing) {
        (false, _) => "none",
        (true, true) => "not_needed",
        (true, false) => "pending",
    }
}

pub(super) fn vanished(delivery_id: &str, reason: &str) -> LedgerError {
    LedgerError::Corrupt {
        delivery_id: delivery_id.to_owned(),
        reason: reason.to_owned(),
    }
}
