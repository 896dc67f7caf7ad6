//! Redaction of the verification token that every Lark envelope carries (`header.token` in
//! schema 2.0, top-level `token` in 1.0), for copies of an event that leave the store: log files,
//! the CLI. Keys keep their order and every other value stays byte-exact; only the token's value
//! becomes [`REDACTED`].

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// What a token is replaced with.
pub const REDACTED: &str = "<redacted>";

/// A JSON object's entries in their original order, values untouched.
struct Entries(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(V)
    }
}

impl Serialize for Entries {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

fn redacted() -> Option<Box<RawValue>> {
    RawValue::from_string(format!("\"{REDACTED}\"")).ok()
}

/// Replaces `token` in `object`'s entries; true if there was one to replace.
fn replace_token(entries: &mut Entries) -> Option<bool> {
    let mut changed = false;
    for (k, v) in entries.0.iter_mut() {
        if k == "token" {
            *v = redacted()?;
            changed = true;
        }
    }
    Some(changed)
}

/// The envelope with its verification token redacted, or `None` when it carries none (or is not
/// a JSON object): then the original can be used as is.
pub fn redact_token(envelope: &str) -> Option<String> {
    let mut top: Entries = serde_json::from_str(envelope).ok()?;
    let mut changed = replace_token(&mut top)?;
    for (k, v) in top.0.iter_mut() {
        if k != "header" {
            continue;
        }
        let Ok(mut header) = serde_json::from_str::<Entries>(v.get()) else {
            continue;
        };
        if replace_token(&mut header)? {
            *v = RawValue::from_string(serde_json::to_string(&header).ok()?).ok()?;
            changed = true;
        }
    }
    if changed {
        serde_json::to_string(&top).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
