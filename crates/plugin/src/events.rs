//! Typed events and exact money for plugin authors, re-exported from `lark_core` (the pure
//! protocol crate: no I/O, no async) so a plugin needs one dependency, this SDK, and reads an
//! event the same way the shipped plugins do. Nothing here touches the ABI or does I/O.
//!
//! ```
//! use gateway_plugin::events::{AssetsUpdateV1, EventError, Money};
//! use gateway_plugin::{Delivery, Outcome};
//!
//! fn handle(d: &Delivery) -> Outcome {
//!     match d.event::<AssetsUpdateV1>() {
//!         Ok(ev) => {
//!             let cny = ev.cash.iter().find(|c| c.currency == "CNY").map(|c| c.amount);
//!             if cny.unwrap_or(Money::ZERO) >= "100.00".parse().expect("a literal") {
//!                 // ... pay out, notify, ...
//!             }
//!             Outcome::Ok
//!         }
//!         // Another event type routed here: not ours to refuse.
//!         Err(EventError::WrongType { .. }) => Outcome::Ok,
//!         // The event has this type but not its documented shape: retrying cannot fix it.
//!         Err(e) => Outcome::reject(e.to_string()),
//!     }
//! }
//! ```
//!
//! # `hire.referral_account.assets_update_v1` ([`AssetsUpdateV1`])
//! A referral account's balance **after** a change (a snapshot, not a delta). From the envelope's
//! `event` object:
//!
//! | JSON field | Rust field | notes |
//! |---|---|---|
//! | `account_id` | `account_id: String` | the referral account (named `account_id`, not `referral_account_id`); never empty |
//! | `assets.confirmed_bonus.point_bonus` | `points: u64` | absent or `null` means 0 |
//! | `assets.confirmed_bonus.cash_bonus[]` | `cash: Vec<CashBonus>` | one `{currency, amount}` per currency, in the order sent; absent means none |
//! | `cash_bonus[].currency_type` | `CashBonus::currency: String` | `"CNY"`, `"USD"`, ... kept as sent (no closed list) |
//! | `cash_bonus[].amount` | `CashBonus::amount: Money` | a JSON number parsed from its text into hundredths |
//! | `modify_time` | `modify_time_ms: u64` | Unix milliseconds, sent as a decimal string; order snapshots by it |
//!
//! # Exact money ([`Money`])
//! Integer hundredths, never `f64`: `100`, `100.5` and `100.25` are exact; a third decimal that is
//! not zero (`1.005`), a negative amount, an exponent or a string in the event is an error, never
//! a rounding. `Display` always prints two decimals (`100.50`); `FromStr` and serde (from a JSON
//! number's text, or from a decimal string such as `"10.00"` in your config) read it back;
//! `checked_add` sums without overflow.

pub use lark_core::event::{AssetsUpdateV1, CashBonus, EventError};
pub use lark_core::money::{Money, MoneyError};

/// An event type with a typed form, for [`Delivery::event`](crate::Delivery::event).
pub trait TypedEvent: Sized {
    /// The `event_type` this form parses (`header.event_type` of a schema 2.0 envelope).
    const EVENT_TYPE: &'static str;

    /// Parses the full envelope text (a delivery's `event`).
    fn from_envelope(envelope: &str) -> Result<Self, EventError>;
}

impl TypedEvent for AssetsUpdateV1 {
    const EVENT_TYPE: &'static str = AssetsUpdateV1::EVENT_TYPE;

    fn from_envelope(envelope: &str) -> Result<Self, EventError> {
        AssetsUpdateV1::from_envelope(envelope)
    }
}

/// `Err(WrongType)` unless `event_type` is `T`'s, then `T` parsed from `envelope`.
pub(crate) fn typed<T: TypedEvent>(event_type: &str, envelope: &str) -> Result<T, EventError> {
    if event_type != T::EVENT_TYPE {
        return Err(EventError::WrongType {
            expected: T::EVENT_TYPE,
            found: event_type.to_owned(),
        });
    }
    T::from_envelope(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = include_str!("../../../fixtures/assets_update_v1.json");

    #[test]
    fn the_seed_event_reads_typed_with_exact_money() {
        let ev: AssetsUpdateV1 =
            typed("hire.referral_account.assets_update_v1", SEED).expect("the seed parses");
        assert_eq!(ev.account_id, "7147998241542539527");
        assert_eq!(ev.points, 100);
        assert_eq!(ev.cash[0].currency, "CNY");
        assert_eq!(ev.cash[0].amount.to_string(), "100.00");
        assert_eq!(ev.modify_time_ms, 1_685_431_415_036);
    }

    #[test]
    fn another_event_type_is_wrong_type_before_any_parsing() {
        let err = typed::<AssetsUpdateV1>("im.message.receive_v1", "not even JSON")
            .expect_err("another type");
        assert_eq!(
            err,
            EventError::WrongType {
                expected: AssetsUpdateV1::EVENT_TYPE,
                found: "im.message.receive_v1".into()
            }
        );
    }

    #[test]
    fn a_malformed_amount_is_a_field_error_not_a_rounding() {
        let bad = SEED.replace("\"amount\": 100", "\"amount\": 1.005");
        let err =
            typed::<AssetsUpdateV1>(AssetsUpdateV1::EVENT_TYPE, &bad).expect_err("three decimals");
        assert!(matches!(err, EventError::Field { .. }), "{err}");
        assert!(err.to_string().contains("cash_bonus[0].amount"), "{err}");
    }
}
