//! A snapshot whose balance an earlier withdrawal already took. Lark's withdraw empties the
//! balance of the types asked as it stands when Lark makes it, so a withdrawal made after a
//! snapshot (by Lark's `trans_time` against the snapshot's `modify_time`) took that snapshot's
//! balance with it, and the snapshot's own withdraw then finds nothing. What Lark answers then
//! is not documented: the operator lists the codes that mean "nothing to withdraw" in
//! `covered_codes` (none by default). A refusal of the withdraw call with such a code (for a
//! repeated `external_order_id` too: one Lark had executed would be answered with its original
//! withdrawal) shows that this id moved no money and that the balance was already empty; when
//! every earlier withdraw call of the row is known to have withdrawn nothing
//! ([`crate::api::ApiError::withdrew_nothing`]: none of them can still be executed) and the
//! ledger also holds a withdrawal of the account made after the snapshot, asking for every type
//! this one asks and of at least its amounts of those, the row is recorded as skipped
//! (`covered`), not as a refusal for an operator to chase. Any other refusal (another code, the
//! token call, an earlier call in doubt) stays a refusal.

use std::collections::BTreeMap;

use lark_core::{AssetsUpdateV1, CashBonus, Money};

use super::{now_ms, HandleError, Payout};
use crate::api::ApiError;
use crate::config::BonusType;
use crate::ledger::{PayoutRow, Status};
use gateway_plugin::Level;

impl Payout {
    /// After Lark refused `row`'s withdraw with one of `covered_codes` (nothing to withdraw):
    /// when a recorded withdrawal of the account made after its snapshot took that snapshot's
    /// balance (see `covered.rs`) and every earlier withdraw call of the row is known to have
    /// withdrawn nothing, the row is recorded as skipped (`covered`) and returned; returned withdrawn when a
    /// concurrent attempt recorded Lark's success first; `None` otherwise (the refusal stands).
    pub(super) fn covered(
        &self,
        row: &PayoutRow,
        call: u64,
        snapshot: &AssetsUpdateV1,
        refusal: &ApiError,
    ) -> Result<Option<PayoutRow>, HandleError> {
        let after = self
            .ledger
            .withdrawals_after(&row.account_id, row.modify_time)?;
        let Some(by) = after.iter().find(|w| {
            w.delivery_id != row.delivery_id && covers(w, &row.requested_types, snapshot)
        }) else {
            return Ok(None);
        };
        let note = format!(
            "covered: withdrawal {} (delivery {}, trans_time {}) took this snapshot's balance; \
             Lark refused this one: {refusal}",
            by.external_order_id,
            by.delivery_id,
            by.trans_time.as_deref().unwrap_or("-"),
        );
        let row = self
            .ledger
            .record_covered(&row.delivery_id, call, &note, now_ms())?;
        if row.status == Status::Withdrawn {
            return Ok(Some(row));
        }
        if row.status != Status::Skipped {
            // An earlier withdraw call in doubt (or one running): left to the refusal.
            return Ok(None);
        }
        self.host.log(
            Level::Info,
            &format!(
                "payout: account {} snapshot {}: nothing withdrawn ({note})",
                row.account_id, row.modify_time
            ),
        );
        Ok(Some(row))
    }
}

/// Whether withdrawal `w` took the balance of `snapshot` for the `types` asked (Lark's
/// `withdraw_bonus_type` codes): it asked for each of them too and withdrew at least the
/// snapshot's points and, per currency (its code in any case), at least its cash.
pub(super) fn covers(w: &PayoutRow, types: &[u8], snapshot: &AssetsUpdateV1) -> bool {
    if types.is_empty() || !types.iter().all(|t| w.requested_types.contains(t)) {
        return false;
    }
    if types.contains(&BonusType::Points.code()) && w.points < snapshot.points {
        return false;
    }
    if types.contains(&BonusType::Cash.code()) {
        let taken = totals(&w.cash);
        for (currency, wanted) in totals(&snapshot.cash) {
            let enough = match (wanted, taken.get(&currency).copied().flatten()) {
                (Some(wanted), Some(taken)) => taken >= wanted,
                // Nothing of it taken, or a total past what an amount holds: not shown.
                _ => false,
            };
            if !enough {
                return false;
            }
        }
    }
    true
}

/// Cash per currency (upper case), added up; `None` past what an amount holds. Zero amounts
/// are left out (no balance to take).
fn totals(cash: &[CashBonus]) -> BTreeMap<String, Option<Money>> {
    let mut out: BTreeMap<String, Option<Money>> = BTreeMap::new();
    for c in cash.iter().filter(|c| !c.amount.is_zero()) {
        let total = out
            .entry(c.currency.to_ascii_uppercase())
            .or_insert(Some(Money::ZERO));
        *total = total.and_then(|t| t.checked_add(c.amount));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(text: &str) -> Money {
        text.parse().expect("money")
    }

    fn cash(list: &[(&str, &str)]) -> Vec<CashBonus> {
        list.iter()
            .map(|(c, a)| CashBonus {
                currency: (*c).to_owned(),
                amount: money(a),
            })
            .collect()
    }

    fn withdrawal(types: &[u8], points: u64, c: &[(&str, &str)]) -> PayoutRow {
        PayoutRow {
            requested_types: types.to_vec(),
            points,
            cash: cash(c),
            ..PayoutRow::test_withdrawn()
        }
    }

    fn snapshot(points: u64, c: &[(&str, &str)]) -> AssetsUpdateV1 {
        AssetsUpdateV1 {
            account_id: "a".into(),
            points,
            cash: cash(c),
            modify_time_ms: 2,
        }
    }

    #[test]
    fn a_withdrawal_of_at_least_the_snapshot_in_every_type_asked_covers_it() {
        let w = withdrawal(&[1, 2], 30, &[("CNY", "5.00"), ("USD", "1.00")]);
        assert!(covers(
            &w,
            &[1, 2],
            &snapshot(30, &[("cny", "2.50"), ("CNY", "2.50")])
        ));
        assert!(
            covers(&w, &[1], &snapshot(20, &[("EUR", "9.00")])),
            "cash not asked"
        );
        assert!(
            covers(&w, &[2], &snapshot(99, &[("USD", "1.00")])),
            "points not asked"
        );
        assert!(covers(&w, &[2], &snapshot(0, &[("USD", "0.00")])));
    }

    #[test]
    fn less_than_the_snapshot_or_a_type_not_asked_then_does_not() {
        let w = withdrawal(&[1, 2], 30, &[("CNY", "5.00")]);
        assert!(!covers(&w, &[1], &snapshot(31, &[])), "fewer points");
        assert!(
            !covers(&w, &[2], &snapshot(0, &[("CNY", "5.01")])),
            "less cash"
        );
        assert!(
            !covers(&w, &[2], &snapshot(0, &[("USD", "0.01")])),
            "another currency"
        );
        let points_only = withdrawal(&[1], 30, &[]);
        assert!(
            !covers(&points_only, &[1, 2], &snapshot(30, &[])),
            "cash not asked then"
        );
        assert!(!covers(&w, &[], &snapshot(0, &[])), "nothing asked");
    }
}
