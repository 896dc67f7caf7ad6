//! Redaction of the verification token that every Lark envelope carries (`header.token` in
//! schema 2.0, top-level `token` in 1.0), for copies of an event that leave the store: log files,
//! the CLI. Only the token's value becomes [`REDACTED`]; every other byte stays as it was.

use std::borrow::Cow;
use std::ops::Range;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

mod scan;

/// What a token is replaced with.
pub const REDACTED: &str = "<redacted>";

/// A JSON object's entries in their original order, each value borrowed from the text parsed
/// (nothing of it is copied but keys with escapes).
struct Entries<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<'de>, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    entries.push((k, v));
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(V)
    }
}

/// Where `part` (a slice of `whole`) lies in `whole`.
fn place(whole: &str, part: &str) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let range = start..start + part.len();
    (whole.get(range.clone()) == Some(part)).then_some(range)
}

/// The places of the `token` values among `entries`.
fn tokens(whole: &str, entries: &Entries<'_>, found: &mut Vec<Range<usize>>) -> Option<()> {
    for (k, v) in &entries.0 {
        if k == "token" {
            found.push(place(whole, v.get())?);
        }
    }
    Some(())
}

/// The envelope with its verification token redacted, or `None` when it carries none (or is not
/// a JSON object): then the original can be used as is. Fails closed: should a token's value
/// not be placed in the text (the parser's slices always lie in it, so this is not expected),
/// the whole envelope becomes the quoted [`REDACTED`] rather than a copy with the token in it.
///
/// One pass over the bytes finds the tokens (`redact/scan.rs`); an envelope it cannot be sure of (an
/// escaped key, not an object) goes through the full parser, which gives the same answer on
/// every envelope the scan reads (a property test checks it).
pub fn redact_token(envelope: &str) -> Option<String> {
    match scan::token_ranges(envelope) {
        Some(found) if found.is_empty() => None,
        Some(found) => Some(splice(envelope, found).unwrap_or_else(all_redacted)),
        None => parsed(envelope),
    }
}

/// The quoted [`REDACTED`] in place of a whole envelope.
fn all_redacted() -> String {
    format!("\"{REDACTED}\"")
}

/// [`redact_token`] by the full parser (serde_json): the reference the fast scan must agree
/// with, and the answer wherever the scan is unsure.
fn parsed(envelope: &str) -> Option<String> {
    let top: Entries<'_> = serde_json::from_str(envelope).ok()?;
    let mut found = Vec::new();
    let mut placed = tokens(envelope, &top, &mut found);
    for (k, v) in &top.0 {
        if k != "header" {
            continue;
        }
        if let Ok(header) = serde_json::from_str::<Entries<'_>>(v.get()) {
            placed = placed.and(tokens(envelope, &header, &mut found));
        }
    }
    if placed.is_none() {
        return Some(all_redacted());
    }
    if found.is_empty() {
        return None;
    }
    Some(splice(envelope, found).unwrap_or_else(all_redacted))
}

/// `text` with each of `ranges` (in any order, not overlapping) replaced by the quoted
/// [`REDACTED`]; `None` if a range does not lie on `text`'s character boundaries or two overlap.
fn splice(text: &str, mut ranges: Vec<Range<usize>>) -> Option<String> {
    ranges.sort_by_key(|r| r.start);
    let quoted = format!("\"{REDACTED}\"");
    let mut out = String::with_capacity(text.len() + quoted.len() * ranges.len());
    let mut at = 0;
    for range in ranges {
        out.push_str(text.get(at..range.start)?);
        out.push_str(&quoted);
        at = range.end;
    }
    out.push_str(text.get(at..)?);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn schema_2_header_token_is_redacted_keeping_order_and_values() {
        let text = r#"{"schema":"2.0","header":{"event_id":"e1","token":"s3cret","app_id":"cli"},"event":{"amount":100.25,"z":1,"a":2}}"#;
        let out = redact_token(text).expect("changed");
        assert_eq!(
            out,
            r#"{"schema":"2.0","header":{"event_id":"e1","token":"<redacted>","app_id":"cli"},"event":{"amount":100.25,"z":1,"a":2}}"#
        );
        assert!(!out.contains("s3cret"));
    }

    #[test]
    fn schema_1_top_level_token_is_redacted() {
        let text = r#"{"uuid":"u","token":"s3cret","ts":"1","type":"event_callback","event":{}}"#;
        let out = redact_token(text).expect("changed");
        assert_eq!(
            out,
            r#"{"uuid":"u","token":"<redacted>","ts":"1","type":"event_callback","event":{}}"#
        );
    }

    #[test]
    fn nothing_to_redact_or_not_an_object_is_none() {
        assert_eq!(
            redact_token(r#"{"schema":"2.0","header":{"event_id":"e"}}"#),
            None
        );
        assert_eq!(redact_token("[1,2]"), None);
        assert_eq!(redact_token("not json"), None);
        assert_eq!(redact_token(r#"{"header":"a string"}"#), None);
    }

    #[test]
    fn a_splice_that_cannot_be_made_is_refused_not_half_done() {
        assert_eq!(
            splice("abcdef", vec![4..5, 1..2]).as_deref(),
            Some(r#"a"<redacted>"cd"<redacted>"f"#)
        );
        assert_eq!(splice("abcdef", vec![1..3, 2..4]), None, "overlapping");
        assert_eq!(
            splice("abc", std::iter::once(2..9).collect()),
            None,
            "past the end"
        );
        assert_eq!(
            splice("aé", std::iter::once(2..3).collect()),
            None,
            "inside a character"
        );
    }

    #[test]
    fn every_other_byte_stays_even_spacing_escapes_and_repeated_keys() {
        let text = "{ \"schema\" : \"2.0\",\n  \"header\": { \"tok\\u0065n\": \"a\\\"b\", \"x\":[1, 2] },\n  \"token\": 7, \"token\": {\"k\": \"v\"} }";
        let out = redact_token(text).expect("changed");
        assert_eq!(
            out,
            "{ \"schema\" : \"2.0\",\n  \"header\": { \"tok\\u0065n\": \"<redacted>\", \"x\":[1, 2] },\n  \"token\": \"<redacted>\", \"token\": \"<redacted>\" }"
        );
        assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok());
    }

    /// A JSON value whose keys are often the ones that matter (and sometimes need escapes).
    fn json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let key = prop_oneof![
            Just("token".to_string()),
            Just("header".to_string()),
            Just("event".to_string()),
            Just("tok\"en".to_string()),
            "[a-z\\\\\n\u{e9}]{0,6}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "[ -~\\\\\"\n\t\u{e9}\u{1F600}]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::vec((key.clone(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The fast scan and the full parser agree on every JSON text, compact or pretty, and
        /// on texts cut short or with a byte changed.
        #[test]
        fn the_scan_agrees_with_the_parser(v in json(), cut in any::<prop::sample::Index>(), b in any::<u8>()) {
            for text in [v.to_string(), serde_json::to_string_pretty(&v).unwrap_or_default()] {
                prop_assert_eq!(redact_token(&text), parsed(&text));
                let at = cut.index(text.len() + 1);
                if let Some(head) = text.get(..at) {
                    if serde_json::from_str::<serde_json::Value>(head).is_err() {
                        prop_assert_eq!(scan::token_ranges(head), None, "{}", head);
                    }
                }
                let mut bytes = text.clone().into_bytes();
                if let Some(x) = bytes.get_mut(cut.index(text.len().max(1))) {
                    *x = b;
                }
                if let Ok(changed) = String::from_utf8(bytes) {
                    if serde_json::from_str::<serde_json::Value>(&changed).is_ok() {
                        prop_assert_eq!(redact_token(&changed), parsed(&changed));
                    }
                }
            }
        }

        /// Any text, JSON or not, is answered without a panic (the logger and the console redact
        /// what a store holds).
        #[test]
        fn any_text_is_answered(text in r#"[{}\[\]":,\\ a-z0-9.\-\u{e9}]{0,64}"#) {
            let _ = redact_token(&text);
            let _ = scan::token_ranges(&text);
        }

        /// Envelopes shaped like Lark's: the token is always found, whatever surrounds it.
        #[test]
        fn an_envelope_token_is_always_redacted(v in json(), token in "[ -~]{1,20}") {
            let mut env = serde_json::json!({"schema": "2.0", "header": {"token": token}, "event": v});
            let text = env.to_string();
            env["header"]["token"] = serde_json::Value::from(REDACTED);
            prop_assert_eq!(redact_token(&text), Some(env.to_string()));
        }
    }
}
