//! Exact money amounts: [`Money`] counts integer minor units (hundredths), never floating point.
//!
//! Lark documents cash amounts as decimals "kept to two places" that arrive as JSON numbers such as
//! `100`, `100.5` or `100.25`. We parse the number's *text* (never an `f64`) into hundredths.
//! Decision, for safety with money: a third significant decimal place is **rejected**, not rounded
//! (`1.005` is an error; `1.500` is fine because the extra digits are zeros). Negative amounts,
//! exponents, strings, `NaN` and values beyond `i64` hundredths are errors too.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// Number of decimal places a [`Money`] keeps.
pub const SCALE: u32 = 2;
const UNIT: i64 = 100;

/// A non-negative exact amount in hundredths of a currency unit (or of a point).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money {
    minor: i64,
}

/// Why a value is not an exact, non-negative, two-decimal amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount is empty")]
    Empty,
    #[error("amount {0:?} is a string; expected a JSON number")]
    String(String),
    #[error("amount {0:?} is negative")]
    Negative(String),
    #[error("amount {0:?} is not a plain decimal number")]
    NotANumber(String),
    #[error("amount {0:?} has more than 2 decimal places")]
    TooPrecise(String),
    #[error("amount {0:?} is too large")]
    Overflow(String),
}

impl Money {
    pub const ZERO: Money = Money { minor: 0 };

    /// An amount from hundredths (`12345` → `123.45`).
    pub const fn from_minor(minor: i64) -> Option<Money> {
        if minor < 0 {
            None
        } else {
            Some(Money { minor })
        }
    }

    /// The amount in hundredths.
    pub const fn minor(self) -> i64 {
        self.minor
    }

    pub const fn is_zero(self) -> bool {
        self.minor == 0
    }

    /// Exact addition; `None` on overflow.
    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.minor
            .checked_add(other.minor)
            .map(|minor| Money { minor })
    }

    /// Parses the text of a JSON value that must be a number literal (`100`, `100.5`, `0.10`).
    pub fn from_json_literal(text: &str) -> Result<Money, MoneyError> {
        let text = text.trim();
        if text.starts_with('"') {
            return Err(MoneyError::String(text.trim_matches('"').to_owned()));
        }
        text.parse()
    }
}

impl FromStr for Money {
    type Err = MoneyError;

    /// Parses a plain decimal (`digits[.digits]`), the textual form of a JSON number without
    /// exponent.
    fn from_str(s: &str) -> Result<Money, MoneyError> {
        if s.is_empty() {
            return Err(MoneyError::Empty);
        }
        if s.starts_with('-') {
            return Err(MoneyError::Negative(s.to_owned()));
        }
        let (int, frac) = match s.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (s, None),
        };
        let all_digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(int) || frac.is_some_and(|f| !all_digits(f)) {
            return Err(MoneyError::NotANumber(s.to_owned()));
        }
        let frac = frac.unwrap_or("");
        let (kept, rest) = frac.split_at(frac.len().min(SCALE as usize));
        if rest.bytes().any(|b| b != b'0') {
            return Err(MoneyError::TooPrecise(s.to_owned()));
        }
        let overflow = || MoneyError::Overflow(s.to_owned());
        let whole: i64 = int.parse().map_err(|_| overflow())?;
        let mut cents: i64 = 0;
        for (i, b) in kept.bytes().enumerate() {
            let place = if i == 0 { 10 } else { 1 };
            cents += i64::from(b - b'0') * place;
        }
        let minor = whole
            .checked_mul(UNIT)
            .and_then(|m| m.checked_add(cents))
            .ok_or_else(overflow)?;
        Ok(Money { minor })
    }
}

impl fmt::Display for Money {
    /// Always two decimals: `100.00`, `0.30`, `100.25`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.minor / UNIT, self.minor % UNIT)
    }
}

/// Serialized as a decimal string (`"100.25"`), the exact and portable form.
impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Deserialized from a JSON number literal (through its raw text, never `f64`), or from a decimal
/// string as written by [`Serialize`]. Only meaningful with `serde_json`.
impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Money, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        let text = raw.get();
        let parsed = match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
            Some(inner) => inner.parse(),
            None => Money::from_json_literal(text),
        };
        parsed.map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_amounts() {
        for (text, minor) in [
            ("100", 10_000),
            ("100.5", 10_050),
            ("100.25", 10_025),
            ("0.1", 10),
            ("0", 0),
            ("0.00", 0),
            ("1.500", 150),
            ("007.07", 707),
        ] {
            assert_eq!(
                Money::from_json_literal(text),
                Ok(Money { minor }),
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_inexact_or_invalid() {
        assert!(matches!(
            "1.005".parse::<Money>(),
            Err(MoneyError::TooPrecise(_))
        ));
        assert!(matches!(
            "-1".parse::<Money>(),
            Err(MoneyError::Negative(_))
        ));
        assert!(matches!(
            "1e2".parse::<Money>(),
            Err(MoneyError::NotANumber(_))
        ));
        assert!(matches!(
            "NaN".parse::<Money>(),
            Err(MoneyError::NotANumber(_))
        ));
        assert!(matches!(
            "1.".parse::<Money>(),
            Err(MoneyError::NotANumber(_))
        ));
        assert!(matches!(
            ".5".parse::<Money>(),
            Err(MoneyError::NotANumber(_))
        ));
        assert!(matches!("".parse::<Money>(), Err(MoneyError::Empty)));
        assert!(matches!(
            Money::from_json_literal("\"100\""),
            Err(MoneyError::String(_))
        ));
        assert!(matches!(
            "99999999999999999999".parse::<Money>(),
            Err(MoneyError::Overflow(_))
        ));
    }

    /// `from_minor` takes exactly the non-negative range, `minor` gives it back unchanged.
    #[test]
    fn from_minor_bounds_and_minor_round_trip() {
        for minor in [i64::MIN, -12_345, -1] {
            assert_eq!(Money::from_minor(minor), None, "{minor}");
        }
        for minor in [0, 1, 99, 12_345, i64::MAX] {
            let m = Money::from_minor(minor).expect("non-negative");
            assert_eq!(m.minor(), minor);
        }
        assert_eq!(Money::from_minor(0), Some(Money::ZERO));
        assert_eq!(
            Money::from_minor(5).map(|m| m.to_string()).as_deref(),
            Some("0.05")
        );
        let parsed: Money = "123.45".parse().expect("valid");
        assert_eq!(parsed.minor(), 12_345);
    }

    #[test]
    fn is_zero_only_for_zero() {
        assert!(Money::ZERO.is_zero());
        assert!(Money::default().is_zero());
        assert!("0.00".parse::<Money>().expect("valid").is_zero());
        for text in ["0.01", "1", "100.25"] {
            assert!(!text.parse::<Money>().expect("valid").is_zero(), "{text}");
        }
    }

    #[test]
    fn point_one_plus_point_two_is_point_three() {
        let a: Money = "0.1".parse().expect("valid");
        let b: Money = "0.2".parse().expect("valid");
        assert_eq!(a.checked_add(b).map(|m| m.to_string()), Some("0.30".into()));
    }

    #[test]
    fn serde_round_trip() {
        let m: Money = serde_json::from_str("100.25").expect("number");
        assert_eq!(serde_json::to_string(&m).expect("ser"), "\"100.25\"");
        let back: Money = serde_json::from_str("\"100.25\"").expect("string form");
        assert_eq!(back, m);
        assert!(serde_json::from_str::<Money>("1.234").is_err());
    }
}
