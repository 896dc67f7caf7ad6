//! Fuzz target `money_ref`: `Money` parsing against a big-integer reference
//! of the documented rules (plain `digits[.digits]`, no sign or exponent, at most two
//! significant decimals, at most i64::MAX hundredths), on the `FromStr` path, the JSON-literal
//! path and inside a typed `assets_update` event (serde_json's number grammar in front).

#![no_main]

use lark_core::{AssetsUpdateV1, Money};
use libfuzzer_sys::fuzz_target;
use num_bigint::BigUint;

/// Some(Some(minor)) exact; Some(None) a valid decimal that must be refused (too precise or
/// too large); None not a plain decimal at all.
fn reference(s: &str) -> Option<Option<i64>> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || (s.contains('.') && frac.is_empty()) {
        return None;
    }
    let n = BigUint::parse_bytes(format!("{int}{frac}").as_bytes(), 10)?;
    let scaled = n * BigUint::from(100u32);
    let div = BigUint::from(10u32).pow(frac.len() as u32);
    if &scaled % &div != BigUint::from(0u32) {
        return Some(None);
    }
    let minor = scaled / div;
    Some(i64::try_from(minor).ok())
}

fuzz_target!(|text: &str| {
    let want = reference(text);
    let got = text.parse::<Money>();
    match (want, &got) {
        (Some(Some(m)), Ok(g)) => assert_eq!(g.minor(), m, "{text:?}"),
        (Some(Some(m)), Err(e)) => panic!("{text:?} is exactly {m} hundredths, refused: {e}"),
        (Some(None) | None, Ok(g)) => panic!("{text:?} accepted as {g}, reference refuses"),
        (_, Err(_)) => {}
    }
    // The JSON path: only where serde_json takes the text as a number.
    if serde_json::from_str::<serde_json::Number>(text).is_ok() {
        let text = text.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'));
        let want = reference(text);
        let body = format!(
            r#"{{"account_id":"a","assets":{{"confirmed_bonus":{{"cash_bonus":[{{"currency_type":"CNY","amount":{text}}}]}}}},"modify_time":"1"}}"#
        );
        let typed = AssetsUpdateV1::from_event(&body).map(|e| e.cash[0].amount.minor());
        let literal = Money::from_json_literal(text).map(|m| m.minor());
        match want {
            Some(Some(m)) => {
                assert_eq!(typed.as_ref().ok(), Some(&m), "{text:?}: {typed:?}");
                assert_eq!(literal.as_ref().ok(), Some(&m), "{text:?}");
            }
            _ => {
                assert!(typed.is_err(), "{text:?} accepted in an event: {typed:?}");
                assert!(literal.is_err(), "{text:?} accepted as a literal");
            }
        }
    }
});
