//! `hire.referral_account.assets_update_v1` (spec §8): a referral account's balance after a change.
//!
//! The event is a *snapshot*, not a delta. Amounts are exact [`Money`]; currency codes are kept as
//! strings (no closed enum: Lark may add currencies). Absent `point_bonus`/`cash_bonus` mean zero.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::EventError;
use crate::money::Money;

/// A cash balance in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CashBonus {
    /// A currency code such as `"CNY"` or `"USD"`, as sent.
    pub currency: String,
    pub amount: Money,
}

/// The typed body of `hire.referral_account.assets_update_v1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssetsUpdateV1 {
    pub account_id: String,
    /// Confirmed points balance.
    pub points: u64,
    /// Confirmed cash balances, one per currency, in the order sent.
    pub cash: Vec<CashBonus>,
    /// When the balance changed, in Unix milliseconds (sent as a decimal string).
    pub modify_time_ms: u64,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    header: Option<Header<'a>>,
    #[serde(borrow)]
    event: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    event_type: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Body<'a> {
    account_id: Option<String>,
    #[serde(borrow)]
    assets: Option<Assets<'a>>,
    modify_time: Option<String>,
}

#[derive(Deserialize)]
struct Assets<'a> {
    #[serde(borrow)]
    confirmed_bonus: Option<Bonus<'a>>,
}

#[derive(Deserialize)]
struct Bonus<'a> {
    point_bonus: Option<&'a RawValue>,
    #[serde(borrow)]
    cash_bonus: Option<Vec<Cash<'a>>>,
}

#[derive(Deserialize)]
struct Cash<'a> {
    currency_type: Option<String>,
    #[serde(borrow)]
    amount: Option<&'a RawValue>,
}

impl AssetsUpdateV1 {
    pub const EVENT_TYPE: &'static str = "hire.referral_account.assets_update_v1";

    /// Parses the full schema 2.0 envelope text (`{"schema":"2.0","header":{..},"event":{..}}`).
    /// When the header names an event type, it must be this one.
    pub fn from_envelope(raw: &str) -> Result<Self, EventError> {
        let env: Envelope<'_> =
            serde_json::from_str(raw).map_err(|e| EventError::Shape(e.to_string()))?;
        if let Some(found) = env.header.and_then(|h| h.event_type) {
            if found != Self::EVENT_TYPE {
                return Err(EventError::WrongType {
                    expected: Self::EVENT_TYPE,
                    found: found.into_owned(),
                });
            }
        }
        let event = env.event.ok_or_else(|| field("event", "missing"))?;
        Self::from_event(event.get())
    }

    /// Parses only the `event` object.
    pub fn from_event(event: &str) -> Result<Self, EventError> {
        let body: Body<'_> =
            serde_json::from_str(event).map_err(|e| EventError::Shape(e.to_string()))?;
        let account_id = body
            .account_id
            .filter(|s| !s.is_empty())
            .ok_or_else(|| field("event.account_id", "missing or empty"))?;
        let modify_time = body
            .modify_time
            .ok_or_else(|| field("event.modify_time", "missing"))?;
        let modify_time_ms = modify_time
            .parse::<u64>()
            .map_err(|_| field("event.modify_time", "not a decimal millisecond timestamp"))?;

        let bonus = body.assets.and_then(|a| a.confirmed_bonus);
        let (points, cash) = match bonus {
            None => (0, Vec::new()),
            Some(b) => (parse_points(b.point_bonus)?, parse_cash(b.cash_bonus)?),
        };
        Ok(AssetsUpdateV1 {
            account_id,
            points,
            cash,
            modify_time_ms,
        })
    }

    /// True when there is nothing to withdraw: no points and every cash amount zero.
    pub fn is_zero(&self) -> bool {
        self.points == 0 && self.cash.iter().all(|c| c.amount.is_zero())
    }
}

fn parse_points(raw: Option<&RawValue>) -> Result<u64, EventError> {
    match raw.map(RawValue::get) {
        None | Some("null") => Ok(0),
        Some(text) => text.parse::<u64>().map_err(|_| {
            field(
                "event.assets.confirmed_bonus.point_bonus",
                &format!("{text} is not a non-negative integer"),
            )
        }),
    }
}

fn parse_cash(list: Option<Vec<Cash<'_>>>) -> Result<Vec<CashBonus>, EventError> {
    let list = list.unwrap_or_default();
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.into_iter().enumerate() {
        let at = |f: &str| format!("event.assets.confirmed_bonus.cash_bonus[{i}].{f}");
        let currency = item
            .currency_type
            .filter(|c| !c.is_empty())
            .ok_or_else(|| field(&at("currency_type"), "missing or empty"))?;
        let amount = item.amount.ok_or_else(|| field(&at("amount"), "missing"))?;
        let amount = Money::from_json_literal(amount.get())
            .map_err(|e| field(&at("amount"), &e.to_string()))?;
        out.push(CashBonus { currency, amount });
    }
    Ok(out)
}

fn field(name: &str, reason: &str) -> EventError {
    EventError::Field {
        field: name.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = include_str!("../../../../fixtures/assets_update_v1.json");

    #[test]
    fn seed_sample_parses() {
        let ev = AssetsUpdateV1::from_envelope(SEED).expect("seed parses");
        assert_eq!(ev.account_id, "7147998241542539527");
        assert_eq!(ev.points, 100);
        assert_eq!(
            ev.cash,
            vec![CashBonus {
                currency: "CNY".into(),
                amount: Money::from_minor(10_000).expect("non-negative"),
            }]
        );
        assert_eq!(ev.modify_time_ms, 1_685_431_415_036);
        assert!(!ev.is_zero());
    }

    #[test]
    fn absent_bonuses_are_zero() {
        for body in [
            r#"{"account_id":"a","modify_time":"1"}"#,
            r#"{"account_id":"a","assets":{},"modify_time":"1"}"#,
            r#"{"account_id":"a","assets":{"confirmed_bonus":{}},"modify_time":"1"}"#,
            r#"{"account_id":"a","assets":{"confirmed_bonus":{"cash_bonus":[]}},"modify_time":"1"}"#,
            r#"{"account_id":"a","assets":{"confirmed_bonus":{"point_bonus":0,"cash_bonus":[{"currency_type":"USD","amount":0}]}},"modify_time":"1"}"#,
        ] {
            let ev = AssetsUpdateV1::from_event(body).expect(body);
            assert!(ev.is_zero(), "{body}");
        }
    }

    /// Any points, or any one non-zero currency, is something to withdraw.
    #[test]
    fn any_balance_is_not_zero() {
        for body in [
            r#"{"account_id":"a","assets":{"confirmed_bonus":{"point_bonus":0,"cash_bonus":[{"currency_type":"CNY","amount":1}]}},"modify_time":"1"}"#,
            r#"{"account_id":"a","assets":{"confirmed_bonus":{"point_bonus":5,"cash_bonus":[{"currency_type":"CNY","amount":0}]}},"modify_time":"1"}"#,
            r#"{"account_id":"a","assets":{"confirmed_bonus":{"point_bonus":5}},"modify_time":"1"}"#,
            r#"{"account_id":"a","assets":{"confirmed_bonus":{"cash_bonus":[{"currency_type":"CNY","amount":0},{"currency_type":"USD","amount":0.01}]}},"modify_time":"1"}"#,
        ] {
            let ev = AssetsUpdateV1::from_event(body).expect(body);
            assert!(!ev.is_zero(), "{body}");
        }
    }

    #[test]
    fn several_currencies_exact() {
        let body = r#"{"account_id":"a","assets":{"confirmed_bonus":{"cash_bonus":[
            {"currency_type":"CNY","amount":0.1},{"currency_type":"USD","amount":100.25},
            {"currency_type":"JPY","amount":100.5}]}},"modify_time":"1685431415036","extra":true}"#;
        let ev = AssetsUpdateV1::from_event(body).expect("parses");
        let shown: Vec<String> = ev
            .cash
            .iter()
            .map(|c| format!("{} {}", c.currency, c.amount))
            .collect();
        assert_eq!(shown, ["CNY 0.10", "USD 100.25", "JPY 100.50"]);
    }

    #[test]
    fn bad_amounts_are_clear_errors() {
        for (amount, needle) in [
            ("1.005", "more than 2 decimal places"),
            ("-1", "negative"),
            ("\"100\"", "string"),
            ("1e3", "not a plain decimal"),
        ] {
            let body = format!(
                r#"{{"account_id":"a","assets":{{"confirmed_bonus":{{"cash_bonus":[{{"currency_type":"CNY","amount":{amount}}}]}}}},"modify_time":"1"}}"#
            );
            let err = AssetsUpdateV1::from_event(&body)
                .expect_err(amount)
                .to_string();
            assert!(err.contains(needle), "{amount}: {err}");
            assert!(err.contains("cash_bonus[0].amount"), "{err}");
        }
        let err = AssetsUpdateV1::from_event(
            r#"{"account_id":"a","assets":{"confirmed_bonus":{"point_bonus":1.5}},"modify_time":"1"}"#,
        )
        .expect_err("fractional points");
        assert!(err.to_string().contains("point_bonus"));
    }

    #[test]
    fn wrong_type_and_missing_fields() {
        let other = SEED.replace(
            "hire.referral_account.assets_update_v1",
            "im.message.receive_v1",
        );
        assert!(matches!(
            AssetsUpdateV1::from_envelope(&other),
            Err(EventError::WrongType { .. })
        ));
        assert!(AssetsUpdateV1::from_event(r#"{"modify_time":"1"}"#).is_err());
        assert!(AssetsUpdateV1::from_event(r#"{"account_id":"a"}"#).is_err());
        assert!(AssetsUpdateV1::from_event(r#"{"account_id":"a","modify_time":"x"}"#).is_err());
    }
}
