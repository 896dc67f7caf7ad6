//! An outcome's detail buffer: `{"reason": str, "retry_after_ms": int|null}`, or plain text as
//! the reason; a `retry_after_ms` of the wrong type is reported, not silently dropped.

/// What an outcome's detail buffer says. The ABI's shape is the JSON object
/// `{"reason": str, "retry_after_ms": int|null}`; anything else (plain text, other JSON) is the
/// reason as a whole.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Detail {
    pub(super) reason: String,
    pub(super) retry_after_ms: Option<u64>,
    /// `retry_after_ms` was present but not a non-negative integer: what it was instead.
    pub(super) bad_retry_after: Option<String>,
}

impl Detail {
    pub(super) fn parse(text: String) -> Detail {
        let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(&text)
        else {
            return Detail {
                reason: text,
                retry_after_ms: None,
                bad_retry_after: None,
            };
        };
        let (retry_after_ms, bad_retry_after) = match map.get("retry_after_ms") {
            None | Some(serde_json::Value::Null) => (None, None),
            Some(v) => match v.as_u64() {
                Some(ms) => (Some(ms), None),
                None => (None, Some(describe(v))),
            },
        };
        let reason = match map.get("reason") {
            Some(serde_json::Value::String(r)) => r.clone(),
            _ => text,
        };
        Detail {
            reason,
            retry_after_ms,
            bad_retry_after,
        }
    }
}

/// A JSON value that should have been a whole number of milliseconds, for the warning.
fn describe(v: &serde_json::Value) -> String {
    use serde_json::Value as J;
    let shown: String = v.to_string().chars().take(64).collect();
    match v {
        J::String(_) => format!("the string {shown} (write the number without quotes)"),
        J::Number(n) if n.as_i64().is_some_and(|n| n < 0) => {
            format!("the negative number {shown}")
        }
        J::Number(_) => format!("the number {shown} (not a whole number of milliseconds)"),
        J::Bool(_) => format!("the boolean {shown}"),
        J::Array(_) => "an array".to_owned(),
        J::Object(_) => "an object".to_owned(),
        J::Null => "null".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::{describe, Detail};

    fn parse(text: &str) -> Detail {
        Detail::parse(text.to_owned())
    }

    #[test]
    fn a_well_formed_detail_gives_reason_and_retry_after() {
        assert_eq!(
            parse(r#"{"reason":"busy","retry_after_ms":1500}"#),
            Detail {
                reason: "busy".into(),
                retry_after_ms: Some(1500),
                bad_retry_after: None
            }
        );
        assert_eq!(
            parse(r#"{"reason":"busy","retry_after_ms":null}"#).retry_after_ms,
            None
        );
        assert_eq!(parse(r#"{"reason":"busy"}"#).bad_retry_after, None);
    }

    #[test]
    fn text_that_is_not_a_detail_object_is_the_reason() {
        for text in [
            "plain text",
            "[1,2]",
            "\"quoted\"",
            r#"{"retry_after_ms":5}"#,
        ] {
            assert_eq!(parse(text).reason, text, "{text}");
        }
        // Without a reason the delay still counts: it is well formed.
        assert_eq!(parse(r#"{"retry_after_ms":5}"#).retry_after_ms, Some(5));
    }

    /// Regression: `"retry_after_ms":"5000"` used to turn the whole detail into the reason and
    /// drop the delay without a word.
    #[test]
    fn a_retry_after_of_the_wrong_type_is_reported_and_ignored() {
        for (value, says) in [
            (r#""5000""#, "the string \"5000\""),
            ("-5", "the negative number -5"),
            ("1.5", "the number 1.5"),
            ("1e30", "not a whole number"),
            ("true", "the boolean true"),
            ("[5000]", "an array"),
        ] {
            let d = parse(&format!(r#"{{"reason":"busy","retry_after_ms":{value}}}"#));
            assert_eq!(d.reason, "busy", "{value}");
            assert_eq!(d.retry_after_ms, None, "{value}");
            let bad = d.bad_retry_after.expect(value);
            assert!(bad.contains(says), "{value}: {bad}");
        }
        assert!(describe(&serde_json::json!("x".repeat(500))).len() < 150);
    }
}
