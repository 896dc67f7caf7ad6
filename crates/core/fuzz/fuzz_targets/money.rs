//! Fuzz target `money`: [`Money::from_str`](std::str::FromStr) on arbitrary strings.
//!
//! Parsing never panics; whatever parses prints (always two decimals) and parses back to the same
//! amount, through `FromStr`, [`Money::from_json_literal`] and the serde string form alike.

#![no_main]

use lark_core::Money;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Ok(money) = text.parse::<Money>() else {
        return;
    };
    assert!(money.minor() >= 0, "amounts are non-negative");
    let shown = money.to_string();
    assert_eq!(
        shown.parse::<Money>(),
        Ok(money),
        "Display round-trips: {shown}"
    );
    assert_eq!(Money::from_json_literal(&shown), Ok(money));
    let json = serde_json::to_string(&money).expect("Money serializes");
    assert_eq!(json, format!("\"{shown}\""));
    let back: Money = serde_json::from_str(&json).expect("serde string form parses");
    assert_eq!(back, money);
    let number: Money = serde_json::from_str(&shown).expect("JSON number form parses");
    assert_eq!(number, money);
});
