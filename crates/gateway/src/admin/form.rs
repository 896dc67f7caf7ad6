//! Query strings and `application/x-www-form-urlencoded` bodies (percent-decoding, `+` as space),
//! path segments (percent-decoding only), and HTML escaping for the console. Small on purpose:
//! the admin listener needs nothing more.

/// `a=1&b=x%20y` → `[("a", "1"), ("b", "x y")]`; undecodable pairs are dropped.
pub fn pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

/// A request's query string as [`pairs`], but strict: `Err` (naming the parameter, as far as
/// it reads) for one that is not valid percent-encoded UTF-8, which [`pairs`] would drop — a
/// filter dropped that way widens what a listing (or a replay of its rows) selects.
pub fn query(text: &str) -> Result<Vec<(String, String)>, String> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            match (decode(k), decode(v)) {
                (Some(k), Some(v)) => Ok((k, v)),
                (Some(k), None) => Err(format!("query parameter {k:?}")),
                (None, _) => Err("a query parameter's name".into()),
            }
        })
        .collect()
}

/// The first value of `key` in `pairs`, if not empty.
pub fn get<'p>(pairs: &'p [(String, String)], key: &str) -> Option<&'p str> {
    pairs
        .iter()
        .find(|(k, v)| k == key && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

/// Percent-decodes (and `+` → space); `None` for a bad escape or non-UTF-8 result.
pub fn decode(text: &str) -> Option<String> {
    decode_as(text, true)
}

/// Percent-decodes a path segment: `+` is itself there (an event id `evt+1`), not a space.
pub fn decode_path(text: &str) -> Option<String> {
    decode_as(text, false)
}

fn decode_as(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                // Two hex digits: `from_str_radix` also takes a sign (`%+a`).
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes everything but unreserved characters (for links the console builds).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Escapes text for HTML content and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // As a reference: a browser turns a raw CR into LF before it parses the page, so
            // an event id with one, read back from an attribute, would name no event.
            c if c.is_control() => {
                use std::fmt::Write as _;
                let _ = write!(out, "&#{};", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(
            pairs("a=1&b=x%20y+z&c&bad=%zz"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y z".into()),
                ("c".into(), "".into())
            ]
        );
        let odd = "ev/1 ?&=é";
        assert_eq!(decode(&encode(odd)).as_deref(), Some(odd));
        assert_eq!(
            esc("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
    }

    #[test]
    fn a_query_that_does_not_decode_is_refused_not_narrowed() {
        assert_eq!(
            query("app=caf%C3%A9&limit=2"),
            Ok(vec![
                ("app".into(), "café".into()),
                ("limit".into(), "2".into())
            ])
        );
        assert_eq!(query("app=caf%E9"), Err("query parameter \"app\"".into()));
        assert_eq!(query("limit=%zz"), Err("query parameter \"limit\"".into()));
        assert!(query("%FF=1").is_err());
        // A sign is no hex digit.
        assert_eq!(decode("%+a"), None);
        assert_eq!(decode_path("%-1"), None);
        assert_eq!(decode_path("%2B%2f").as_deref(), Some("+/"));
    }

    #[test]
    fn control_characters_are_escaped_as_references() {
        assert_eq!(esc("x\r\ny\tz"), "x&#13;&#10;y&#9;z");
        assert_eq!(esc("é\u{85}"), "é&#133;");
    }

    #[test]
    fn get_finds_the_first_set_value_of_its_key() {
        let p = pairs("a=1&b=&b=2&b=3");
        assert_eq!(get(&p, "b"), Some("2"));
        assert_eq!(get(&p, "a"), Some("1"));
        assert_eq!(get(&p, "c"), None);
        assert_eq!(get(&pairs("a=1&c="), "c"), None);
    }

    #[test]
    fn encode_keeps_only_unreserved_characters() {
        assert_eq!(encode("aZ09-_.~"), "aZ09-_.~");
        assert_eq!(encode("a b/é+%"), "a%20b%2F%C3%A9%2B%25");
    }

    #[test]
    fn a_path_keeps_its_plus() {
        assert_eq!(decode_path("evt+1").as_deref(), Some("evt+1"));
        assert_eq!(decode_path("evt%2B1%20x").as_deref(), Some("evt+1 x"));
        assert_eq!(decode("evt+1").as_deref(), Some("evt 1"));
    }
}
