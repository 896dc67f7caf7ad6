//! The Open API's JSON shapes (spec §9) as serde types. Amounts are [`Money`], read from and
//! written as exact JSON number text (never through `f64`).

use lark_core::{CashBonus, Money};
use serde::{Deserialize, Serialize};

/// What Lark reports for one withdrawal (`data` of the withdraw response).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withdrawal {
    /// As echoed by Lark (absent if Lark did not echo it).
    pub external_order_id: Option<String>,
    /// Lark's transaction time, Unix ms as a decimal string (kept for reconciliation).
    pub trans_time: Option<String>,
    pub points: u64,
    /// Withdrawn cash per currency (several entries of one currency are summed).
    pub cash: Vec<CashBonus>,
    /// `X-Tt-Logid` of the call.
    pub log_id: Option<String>,
}

/// One account's totals, as sent in and received from reconciliation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewardInfo {
    #[serde(default)]
    pub point_bonus: u64,
    #[serde(default)]
    pub cash_bonus: Vec<CashAmount>,
}

/// A cash amount on the wire: `amount` is a JSON number, read and written exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CashAmount {
    pub currency_type: String,
    #[serde(serialize_with = "money_as_number")]
    pub amount: Money,
}

fn money_as_number<S: serde::Serializer>(m: &Money, s: S) -> Result<S::Ok, S::Error> {
    let raw = serde_json::value::RawValue::from_string(m.to_string())
        .map_err(serde::ser::Error::custom)?;
    raw.serialize(s)
}

/// One entry of `data.check_failed_list`: an account whose totals differ.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Mismatch {
    pub account_id: String,
    #[serde(default)]
    pub total_withdraw_reward_info: Option<RewardInfo>,
    #[serde(default)]
    pub total_recharge_reward_info: Option<RewardInfo>,
}

/// One account's line in a reconciliation request.
#[derive(Debug, Clone, Serialize)]
pub struct TradeDetail {
    pub account_id: String,
    pub total_recharge_reward_info: RewardInfo,
}

#[derive(Serialize)]
pub(crate) struct ReconcileRequest<'a> {
    pub(crate) start_trans_time: String,
    pub(crate) end_trans_time: String,
    pub(crate) trade_details: &'a [TradeDetail],
}

#[derive(Deserialize)]
pub(crate) struct Envelope<T> {
    pub(crate) code: i64,
    #[serde(default)]
    pub(crate) msg: String,
    pub(crate) data: Option<T>,
}

#[derive(Deserialize)]
pub(crate) struct TokenReply {
    pub(crate) code: i64,
    #[serde(default)]
    pub(crate) msg: String,
    #[serde(default)]
    pub(crate) tenant_access_token: String,
    #[serde(default)]
    pub(crate) expire: u64,
}

#[derive(Deserialize)]
pub(crate) struct WithdrawData {
    #[serde(default)]
    pub(crate) external_order_id: Option<String>,
    #[serde(default)]
    pub(crate) trans_time: Option<serde_json::Value>,
    #[serde(default)]
    pub(crate) withdrawal_details: Option<WithdrawDetails>,
}

#[derive(Deserialize)]
pub(crate) struct WithdrawDetails {
    #[serde(default)]
    pub(crate) point_bonus: Option<u64>,
    #[serde(default)]
    pub(crate) cash_bonus: Option<Vec<CashAmount>>,
    /// Keys other than those two, by name only: a sign that amounts may be under names this
    /// plugin does not read (see `reply::withdrawal`).
    #[serde(flatten)]
    pub(crate) other: std::collections::BTreeMap<String, serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
pub(crate) struct ReconcileData {
    #[serde(default)]
    pub(crate) check_failed_list: Vec<Mismatch>,
}

/// Sums entries per currency (its code in any case, as the event's are: the first-seen
/// spelling kept), keeping the first-seen order; `None` on overflow.
pub(crate) fn sum_cash(items: Vec<CashAmount>) -> Option<Vec<CashBonus>> {
    let mut out: Vec<CashBonus> = Vec::new();
    for item in items {
        match out
            .iter_mut()
            .find(|c| c.currency.eq_ignore_ascii_case(&item.currency_type))
        {
            Some(c) => c.amount = c.amount.checked_add(item.amount)?,
            None => out.push(CashBonus {
                currency: item.currency_type,
                amount: item.amount,
            }),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries of one currency are added up whatever the case of its code (as the event's
    /// are), under the first-seen spelling: one cash line, one total, one forwarded amount.
    #[test]
    fn a_currency_listed_in_two_cases_is_one_line() {
        let item = |c: &str, a: &str| CashAmount {
            currency_type: c.into(),
            amount: a.parse().expect("money"),
        };
        let summed = sum_cash(vec![
            item("CNY", "1.00"),
            item("USD", "0.10"),
            item("cny", "2.00"),
        ])
        .expect("no overflow");
        let shown: Vec<(String, String)> = summed
            .iter()
            .map(|c| (c.currency.clone(), c.amount.to_string()))
            .collect();
        assert_eq!(
            shown,
            [("CNY".into(), "3.00".into()), ("USD".into(), "0.10".into())]
        );
    }

    #[test]
    fn cash_amounts_are_exact_numbers_on_the_wire() {
        let c: CashAmount =
            serde_json::from_str(r#"{"currency_type":"CNY","amount":0.3}"#).expect("parses");
        assert_eq!(c.amount.to_string(), "0.30");
        let text = serde_json::to_string(&c).expect("serialises");
        assert_eq!(text, r#"{"currency_type":"CNY","amount":0.30}"#);
    }
}
