//! Fuzz target `redact_diff`: the one-pass token scan behind
//! `redact_token` against an independent reference built on serde_json (a copy of the
//! module's full-parser path, written against public API only).
//!
//! Checked: on valid JSON both give the same text, and the output is valid JSON again.

#![no_main]

use std::borrow::Cow;
use std::ops::Range;

use lark_core::redact::{redact_token, REDACTED};
use libfuzzer_sys::fuzz_target;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

struct Entries<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<'de>, A::Error> {
                let mut e = Vec::new();
                while let Some(kv) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    e.push(kv);
                }
                Ok(Entries(e))
            }
        }
        d.deserialize_map(V)
    }
}

fn place(whole: &str, part: &str) -> Range<usize> {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    start..start + part.len()
}

/// Reference: ranges of top-level `token` values and `header.token` values.
fn reference(text: &str) -> Option<Vec<Range<usize>>> {
    let top: Entries<'_> = serde_json::from_str(text).ok()?;
    let mut found = Vec::new();
    for (k, v) in &top.0 {
        if k == "token" {
            found.push(place(text, v.get()));
        }
        if k == "header" {
            if let Ok(h) = serde_json::from_str::<Entries<'_>>(v.get()) {
                for (k, v) in &h.0 {
                    if k == "token" {
                        found.push(place(text, v.get()));
                    }
                }
            }
        }
    }
    found.sort_by_key(|r| r.start);
    Some(found)
}

fn splice(text: &str, ranges: &[Range<usize>]) -> String {
    let mut out = String::new();
    let mut at = 0;
    for r in ranges {
        out.push_str(&text[at..r.start]);
        out.push('"');
        out.push_str(REDACTED);
        out.push('"');
        at = r.end;
    }
    out.push_str(&text[at..]);
    out
}

fuzz_target!(|text: &str| {
    let fast = redact_token(text);
    let valid = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
    let Some(found) = reference(text) else {
        return;
    };
    if valid {
        let expected = if found.is_empty() { None } else { Some(splice(text, &found)) };
        assert_eq!(fast, expected, "scan and parser disagree on valid JSON: {text:?}");
        if let Some(out) = &fast {
            assert!(
                serde_json::from_str::<serde::de::IgnoredAny>(out).is_ok(),
                "redacted valid JSON is not JSON: {out:?}"
            );
        }
    }
    // Invalid JSON: the reference (serde_json) finds nothing; the scan may redact more.
});
