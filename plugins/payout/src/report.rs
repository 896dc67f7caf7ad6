//! What `payout-report` does, as library functions: list recorded withdrawals with exact totals
//! per currency, and reconcile per-account totals with Lark (spec §9).
//!
//! Sums are exact ([`Money`] hundredths and integer points, checked for overflow); a time range
//! `[from, to]` is inclusive at both ends and applies to Lark's `trans_time` (or, when Lark gave
//! none, to when the result was recorded).

use std::collections::BTreeMap;
use std::io::Write;

use lark_core::Money;

use crate::api::{ApiError, CashAmount, LarkClient, Mismatch, RewardInfo, TradeDetail};
use crate::ledger::{ForwardStatus, Ledger, LedgerError, PayoutRow, Status};
use crate::timefmt::format_ms;

/// A report failure (exit code 2 in the CLI).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("writing the report: {0}")]
    Io(#[from] std::io::Error),
    #[error("totals overflow")]
    Overflow,
}

/// Exact totals: points and cash per currency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub withdrawals: u64,
    pub points: u64,
    pub cash: BTreeMap<String, Money>,
}

impl Totals {
    /// Adds one withdrawal; `Err` on overflow.
    pub fn add(&mut self, row: &PayoutRow) -> Result<(), ReportError> {
        self.withdrawals += 1;
        self.points = self
            .points
            .checked_add(row.points)
            .ok_or(ReportError::Overflow)?;
        for c in &row.cash {
            // One total per currency whatever the case of its code (the first-seen spelling).
            let key = self
                .cash
                .keys()
                .find(|k| k.eq_ignore_ascii_case(&c.currency))
                .cloned()
                .unwrap_or_else(|| c.currency.clone());
            let slot = self.cash.entry(key).or_default();
            *slot = slot.checked_add(c.amount).ok_or(ReportError::Overflow)?;
        }
        Ok(())
    }

    fn reward_info(&self) -> RewardInfo {
        RewardInfo {
            point_bonus: self.points,
            cash_bonus: self
                .cash
                .iter()
                .map(|(currency, amount)| CashAmount {
                    currency_type: currency.clone(),
                    amount: *amount,
                })
                .collect(),
        }
    }
}

/// The time used for ranges: Lark's `trans_time`, else when the result was recorded.
pub fn row_time(row: &PayoutRow) -> Option<u64> {
    row.trans_time_ms.or(row.completed_at)
}

/// Sums the withdrawals in the range.
pub fn totals(
    ledger: &Ledger,
    from_ms: Option<u64>,
    to_ms: Option<u64>,
) -> Result<Totals, ReportError> {
    let mut t = Totals::default();
    for row in ledger.withdrawals(from_ms, to_ms)? {
        t.add(&row)?;
    }
    Ok(t)
}

/// Prints every withdrawal in the range, then the totals; returns the totals.
pub fn list(
    ledger: &Ledger,
    from_ms: Option<u64>,
    to_ms: Option<u64>,
    out: &mut dyn Write,
) -> Result<Totals, ReportError> {
    let rows = ledger.withdrawals(from_ms, to_ms)?;
    let mut totals = Totals::default();
    writeln!(
        out,
        "{:<24}  {:<20}  {:<35}  {:>10}  {:<24}  forward",
        "time (UTC)", "account_id", "external_order_id", "points", "cash"
    )?;
    for row in &rows {
        totals.add(row)?;
        let cash: Vec<String> = row
            .cash
            .iter()
            .map(|c| format!("{} {}", c.currency, c.amount))
            .collect();
        let forward = match row.forward_status {
            crate::ledger::ForwardStatus::None => "-",
            crate::ledger::ForwardStatus::Pending => "pending",
            crate::ledger::ForwardStatus::Done => "done",
            crate::ledger::ForwardStatus::NotNeeded => "not_needed",
        };
        writeln!(
            out,
            "{:<24}  {:<20}  {:<35}  {:>10}  {:<24}  {forward}",
            row_time(row).map_or_else(|| "-".to_owned(), format_ms),
            row.account_id,
            row.external_order_id,
            row.points,
            if cash.is_empty() {
                "-".to_owned()
            } else {
                cash.join(", ")
            },
        )?;
    }
    writeln!(out)?;
    writeln!(out, "withdrawals: {}", totals.withdrawals)?;
    writeln!(out, "total points: {}", totals.points)?;
    for (currency, amount) in &totals.cash {
        writeln!(out, "total {currency}: {amount}")?;
    }
    Ok(totals)
}

/// Prints every unfinished payout recorded at or before `before_ms` (see
/// [`Ledger::unfinished`]): when, delivery, account, order id, what is missing, attempts and
/// the last error. Returns how many.
pub fn unfinished(
    ledger: &Ledger,
    before_ms: u64,
    out: &mut dyn Write,
) -> Result<usize, ReportError> {
    let rows = ledger.unfinished(before_ms)?;
    writeln!(
        out,
        "{:<24}  {:<40}  {:<20}  {:<35}  {:<18}  {:>8}  last error",
        "recorded (UTC)", "delivery_id", "account_id", "external_order_id", "missing", "attempts"
    )?;
    for row in &rows {
        let (missing, attempts, error) = match (&row.status, &row.forward_status) {
            (Status::Withdrawn, ForwardStatus::Pending) => {
                ("forward", row.forward_attempts, &row.forward_error)
            }
            (Status::Rejected, _) => ("withdraw (refused)", row.withdraw_attempts, &row.last_error),
            _ => ("withdraw", row.withdraw_attempts, &row.last_error),
        };
        writeln!(
            out,
            "{:<24}  {:<40}  {:<20}  {:<35}  {:<18}  {:>8}  {}",
            format_ms(row.created_at),
            row.delivery_id,
            row.account_id,
            row.external_order_id,
            missing,
            attempts,
            error.as_deref().unwrap_or("-"),
        )?;
    }
    writeln!(out)?;
    writeln!(out, "unfinished: {}", rows.len())?;
    Ok(rows.len())
}

/// Per-account totals of the range, as reconciliation `trade_details`, ordered by account. An
/// account with a withdrawal not known to be done (`pending`, or `rejected`), whenever
/// recorded, is submitted too, with what the ledger has withdrawn in the range (nothing, if
/// that is all): Lark answers only for the accounts submitted, and one whose withdraw call Lark
/// carried out while its answer was lost (a timeout, then a dead letter) would be in no
/// mismatch. (Lark withdrew nothing for it in the range: no mismatch either.)
pub fn trade_details(
    ledger: &Ledger,
    from_ms: u64,
    to_ms: u64,
) -> Result<Vec<TradeDetail>, ReportError> {
    let mut per_account: BTreeMap<String, Totals> = BTreeMap::new();
    for row in ledger.withdrawals(Some(from_ms), Some(to_ms))? {
        per_account
            .entry(row.account_id.clone())
            .or_default()
            .add(&row)?;
    }
    for row in ledger.unfinished(u64::MAX)? {
        if matches!(row.status, Status::Pending | Status::Rejected) {
            per_account.entry(row.account_id.clone()).or_default();
        }
    }
    Ok(per_account
        .into_iter()
        .map(|(account_id, t)| TradeDetail {
            account_id,
            total_recharge_reward_info: t.reward_info(),
        })
        .collect())
}

/// Submits the range's per-account totals to Lark, prints the mismatches and returns them.
pub fn reconcile(
    ledger: &Ledger,
    client: &LarkClient,
    from_ms: u64,
    to_ms: u64,
    out: &mut dyn Write,
) -> Result<Vec<Mismatch>, ReportError> {
    let details = trade_details(ledger, from_ms, to_ms)?;
    let mismatches = client.reconcile(from_ms, to_ms, &details)?;
    writeln!(
        out,
        "reconciled {} account(s) from {} to {}",
        details.len(),
        format_ms(from_ms),
        format_ms(to_ms)
    )?;
    if mismatches.is_empty() {
        writeln!(out, "no mismatches")?;
    }
    for m in &mismatches {
        writeln!(
            out,
            "MISMATCH account {}: Lark withdrew {}; ledger has {}",
            m.account_id,
            show(m.total_withdraw_reward_info.as_ref()),
            show(m.total_recharge_reward_info.as_ref()),
        )?;
    }
    Ok(mismatches)
}

fn show(info: Option<&RewardInfo>) -> String {
    match info {
        None => "nothing".to_owned(),
        Some(i) => {
            let mut parts = vec![format!("{} points", i.point_bonus)];
            parts.extend(
                i.cash_bonus
                    .iter()
                    .map(|c| format!("{} {}", c.currency_type, c.amount)),
            );
            parts.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(trans_time_ms: Option<u64>, completed_at: Option<u64>) -> PayoutRow {
        PayoutRow {
            completed_at,
            trans_time: trans_time_ms.map(|t| t.to_string()),
            trans_time_ms,
            ..PayoutRow::test_withdrawn()
        }
    }

    /// One total per currency whatever the case of its code (rows recorded before the
    /// withdraw answer's entries were added up that way may hold both).
    #[test]
    fn totals_add_a_currency_in_any_case_under_one_code() {
        let cash = |c: &str, a: &str| lark_core::CashBonus {
            currency: c.into(),
            amount: a.parse().expect("money"),
        };
        let mut t = Totals::default();
        for (c, a) in [("CNY", "1.00"), ("cny", "2.50")] {
            t.add(&PayoutRow {
                cash: vec![cash(c, a)],
                ..PayoutRow::test_withdrawn()
            })
            .expect("added");
        }
        let shown: Vec<(String, String)> = t
            .cash
            .iter()
            .map(|(c, a)| (c.clone(), a.to_string()))
            .collect();
        assert_eq!(shown, [("CNY".to_owned(), "3.50".to_owned())]);
    }

    #[test]
    fn a_row_is_placed_at_larks_trans_time_else_when_its_result_was_recorded() {
        assert_eq!(row_time(&row(Some(1_500), Some(2_000))), Some(1_500));
        assert_eq!(row_time(&row(None, Some(2_000))), Some(2_000));
        assert_eq!(row_time(&row(None, None)), None);
    }

    #[test]
    fn totals_are_shown_as_points_then_each_currency() {
        assert_eq!(show(None), "nothing");
        let info = RewardInfo {
            point_bonus: 5,
            cash_bonus: vec![
                CashAmount {
                    currency_type: "CNY".into(),
                    amount: "0.30".parse().expect("money"),
                },
                CashAmount {
                    currency_type: "USD".into(),
                    amount: "100.25".parse().expect("money"),
                },
            ],
        };
        assert_eq!(show(Some(&info)), "5 points, CNY 0.30, USD 100.25");
    }
}
