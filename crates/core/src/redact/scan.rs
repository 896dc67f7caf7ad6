//! The fast path of [`redact_token`](super::redact_token): one pass over the envelope's bytes
//! that finds where the token values lie without building anything. Strings are skipped with
//! `memchr2` (a closing quote or a backslash), so the event's long text values cost little.
//!
//! On JSON text it answers only when it is sure: a top-level object whose keys, at the top and
//! in a `header` object, have no escapes, and nothing but whitespace after it. Anything else (an
//! escaped key such as `"tok\u0065n"`, another top-level shape, text that ends early) is
//! `None`, and the caller takes the full parser's answer instead. It is not a validator: text
//! that is not JSON but looks like an object (a malformed number, say) may still be answered,
//! where the parser would find no token at all; so it can only redact more, never less.

use std::ops::Range;

/// The byte ranges of every top-level `token` value and every `token` value of a top-level
/// `header` object, in text order; `None` when the scan cannot be sure (see the module docs).
pub(super) fn token_ranges(text: &str) -> Option<Vec<Range<usize>>> {
    let b = text.as_bytes();
    // An envelope has a handful of top-level entries and header fields.
    let mut top = Vec::with_capacity(8);
    let end = entries(b, ws(b, 0), &mut top)?;
    if ws(b, end) != b.len() {
        return None;
    }
    let mut found = Vec::new();
    let mut header = Vec::with_capacity(8);
    for (key, value) in top {
        match &b[key] {
            b"token" => found.push(value),
            b"header" if b.get(value.start) == Some(&b'{') => {
                header.clear();
                entries(b, value.start, &mut header)?;
                let tokens = header.iter().filter(|(k, _)| &b[k.clone()] == b"token");
                found.extend(tokens.map(|(_, v)| v.clone()));
            }
            _ => {}
        }
    }
    Some(found)
}

/// The entries of the object starting at `at` (which must be `{`), in order, into `out`: each
/// key's range (inside its quotes; refused if it holds an escape) and its value's range.
/// Returns the index past the closing `}`.
fn entries(b: &[u8], at: usize, out: &mut Vec<(Range<usize>, Range<usize>)>) -> Option<usize> {
    if b.get(at) != Some(&b'{') {
        return None;
    }
    let mut i = ws(b, at + 1);
    if b.get(i) == Some(&b'}') {
        return Some(i + 1);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(b, i)?;
        let key = i + 1..key_end - 1;
        if b[key.clone()].contains(&b'\\') {
            return None;
        }
        i = ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let start = ws(b, i + 1);
        let end = value_end(b, start)?;
        out.push((key, start..end));
        i = ws(b, end);
        match b.get(i) {
            Some(b',') => i = ws(b, i + 1),
            Some(b'}') => return Some(i + 1),
            _ => return None,
        }
    }
}

/// The index past the JSON value starting at `at`.
fn value_end(b: &[u8], at: usize) -> Option<usize> {
    match *b.get(at)? {
        b'"' => string_end(b, at),
        b'{' | b'[' => {
            // Open brackets as a stack of bits (1 for an object), up to 64 deep: deeper is
            // left to the full parser.
            let (mut stack, mut depth) = (0u64, 0u32);
            let mut i = at;
            while let Some(&c) = b.get(i) {
                match c {
                    b'"' => {
                        i = string_end(b, i)?;
                        continue;
                    }
                    b'{' | b'[' if depth < 64 => {
                        stack = (stack << 1) | u64::from(c == b'{');
                        depth += 1;
                    }
                    b'{' | b'[' => return None,
                    b'}' | b']' => {
                        if depth == 0 || (stack & 1 == 1) != (c == b'}') {
                            return None;
                        }
                        stack >>= 1;
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
            let len = b[at..]
                .iter()
                .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(b.len() - at);
            Some(at + len)
        }
        _ => None,
    }
}

/// The index past the string whose opening quote is at `at`.
fn string_end(b: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    loop {
        i += memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
        if b[i] == b'"' {
            return Some(i + 1);
        }
        // A backslash escapes the byte after it (a `\uXXXX`'s digits need no care).
        i += 2;
    }
}

/// The index of the first byte at or after `i` that is not JSON whitespace.
fn ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::token_ranges;

    fn tokens(text: &str) -> Option<Vec<&str>> {
        token_ranges(text).map(|r| r.into_iter().map(|r| &text[r]).collect())
    }

    #[test]
    fn finds_the_header_token_and_the_top_level_one() {
        let text = r#"{"schema":"2.0","header":{"event_id":"e","token":"s3","x":{"token":1}},"event":{"token":"no","s":"a\"}b\\"},"token" : 7 }"#;
        assert_eq!(tokens(text), Some(vec![r#""s3""#, "7"]));
        assert_eq!(
            tokens(r#"{"header":"str","a":[1,{"b":"]"}]}"#),
            Some(vec![])
        );
        assert_eq!(tokens(" {} \n"), Some(vec![]));
    }

    #[test]
    fn is_unsure_of_escaped_keys_other_shapes_and_cut_text() {
        for text in [
            r#"{"tok\u0065n":"s"}"#,
            r#"{"header":{"tok\u0065n":"s"}}"#,
            "[1]",
            "\"s\"",
            r#"{"a":"b""#,
            r#"{"a":[1,2}"#,
            r#"{"a":[1,2}}"#,
            r#"{"a":{"b":1]}"#,
            r#"{"a":"b\"}"#,
            r#"{"a":1} x"#,
            r#"{"a":}"#,
            r#"{"a" 1}"#,
            "",
        ] {
            assert_eq!(token_ranges(text), None, "{text}");
        }
    }
}
