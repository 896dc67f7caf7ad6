//! The bytes each target receives: the bot's text or card message (spec §10, signed when a secret
//! is set, cut to fit the 20 KB body limit) and the JSON object posted to `http` targets, with its
//! Standard Webhooks headers. Pure: the caller passes the clock reading.

use serde::Serialize;
use serde_json::value::RawValue;

use gateway_plugin::Delivery;

use crate::config::Format;
use crate::sign::{lark_bot_sign, webhook_signature};

/// The bot's body limit is 20 KB; we stay a little under it.
pub const MAX_BOT_BODY: usize = 20_000;
/// Appended to a text that had to be cut.
pub const TRUNCATED: &str = "\n…(truncated)";
/// Card titles longer than this (in characters) are cut.
const MAX_TITLE_CHARS: usize = 200;

#[derive(Serialize)]
struct BotMessage<'a> {
    msg_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<TextContent<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    card: Option<Card<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sign: Option<String>,
}

#[derive(Serialize)]
struct TextContent<'a> {
    text: &'a str,
}

/// A minimal message card: a coloured header and one markdown block.
#[derive(Serialize)]
struct Card<'a> {
    config: CardConfig,
    header: CardHeader<'a>,
    elements: [CardDiv<'a>; 1],
}

#[derive(Serialize)]
struct CardConfig {
    wide_screen_mode: bool,
}

#[derive(Serialize)]
struct CardHeader<'a> {
    title: CardText<'a>,
    template: &'static str,
}

#[derive(Serialize)]
struct CardDiv<'a> {
    tag: &'static str,
    text: CardText<'a>,
}

#[derive(Serialize)]
struct CardText<'a> {
    tag: &'static str,
    content: &'a str,
}

/// The body for a `lark_bot` target. `signing` is `(timestamp, secret)` when the bot has a
/// signing secret. A text that would push the body past [`MAX_BOT_BODY`] is cut on a character
/// boundary and marked with [`TRUNCATED`].
pub fn bot_body(
    format: Format,
    title: &str,
    text: &str,
    signing: Option<(&str, &str)>,
) -> Result<Vec<u8>, serde_json::Error> {
    let title = cut_chars(title, MAX_TITLE_CHARS);
    let (timestamp, sign) = match signing {
        Some((ts, secret)) => (Some(ts), Some(lark_bot_sign(ts, secret))),
        None => (None, None),
    };
    let build = |text: &str| {
        let message = match format {
            Format::Text => BotMessage {
                msg_type: "text",
                content: Some(TextContent { text }),
                card: None,
                timestamp,
                sign: sign.clone(),
            },
            Format::Card => BotMessage {
                msg_type: "interactive",
                content: None,
                card: Some(Card {
                    config: CardConfig {
                        wide_screen_mode: true,
                    },
                    header: CardHeader {
                        title: CardText {
                            tag: "plain_text",
                            content: title,
                        },
                        template: "blue",
                    },
                    elements: [CardDiv {
                        tag: "div",
                        text: CardText {
                            tag: "lark_md",
                            content: text,
                        },
                    }],
                }),
                timestamp,
                sign: sign.clone(),
            },
        };
        serde_json::to_vec(&message)
    };
    let body = build(text)?;
    if body.len() <= MAX_BOT_BODY {
        return Ok(body);
    }
    // Binary search for the longest prefix (on a character boundary) that fits with the marker:
    // JSON escapes make the serialised size of a prefix impossible to predict from its length.
    let (mut fits, mut too_long) = (0, text.len());
    let mut best = None;
    while fits < too_long {
        let halfway = fits + (too_long - fits).div_ceil(2);
        let mut mid = floor_char_boundary(text, halfway);
        if mid <= fits {
            mid = ceil_char_boundary(text, halfway);
            if mid > too_long {
                break;
            }
        }
        let candidate = build(&format!("{}{TRUNCATED}", &text[..mid]))?;
        if candidate.len() <= MAX_BOT_BODY {
            fits = mid;
            best = Some(candidate);
        } else {
            too_long = mid - 1;
        }
    }
    // A card's escaped values are entities (`&#60;`): a cut inside one would leave `&#6` to be
    // shown as text. Give the entity up whole (a shorter prefix still fits).
    let cut = outside_entity(text, fits);
    if cut != fits {
        best = Some(build(&format!("{}{TRUNCATED}", &text[..cut]))?);
    }
    match best {
        Some(body) => Ok(body),
        // Even one character does not fit (a huge title?): send the marker alone.
        None => build(TRUNCATED),
    }
}

/// The longest entities Lark's card Markdown uses are a few bytes (`&#126;`, `&emsp;`); a longer
/// run of name characters after `&` is not an entity.
const MAX_ENTITY_NAME: usize = 10;

/// `cut`, or the start of the HTML entity (`&name;`, `&#number;`) that `cut` would split.
fn outside_entity(text: &str, cut: usize) -> usize {
    let Some(amp) = text[..cut].rfind('&') else {
        return cut;
    };
    // A longer name is counted as MAX_ENTITY_NAME: the byte after that is then a name
    // character, not the `;`.
    let name = text[amp + 1..]
        .bytes()
        .take(MAX_ENTITY_NAME)
        .take_while(|b| *b == b'#' || b.is_ascii_alphanumeric())
        .count();
    let semicolon = amp + 1 + name;
    let is_entity = name > 0 && text.as_bytes().get(semicolon) == Some(&b';');
    // The prefix `text[..cut]` holds the whole entity only if it holds its `;`.
    if is_entity && semicolon >= cut {
        amp
    } else {
        cut
    }
}

/// The object posted to `http` targets (documented in the README).
#[derive(Serialize)]
struct HttpMessage<'a> {
    delivery_id: &'a str,
    attempt: u32,
    app: &'a str,
    event_id: &'a str,
    event_type: &'a str,
    received_at: u64,
    text: &'a str,
    event: &'a RawValue,
}

/// The body for an `http` target: the envelope as Lark sent it, but for its verification token
/// (`"<redacted>"`: it authenticates pushes to the gateway, and the receiver has no use for it).
pub fn http_body(d: &Delivery, text: &str) -> Result<Vec<u8>, serde_json::Error> {
    let redacted = match lark_core::redact::redact_token(d.event.get()) {
        Some(text) => Some(RawValue::from_string(text)?),
        None => None,
    };
    serde_json::to_vec(&HttpMessage {
        delivery_id: &d.delivery_id,
        attempt: d.attempt,
        app: &d.app,
        event_id: &d.event_id,
        event_type: &d.event_type,
        received_at: d.received_at,
        text,
        event: redacted.as_deref().unwrap_or(&d.event),
    })
}

/// The Standard Webhooks headers: `webhook-id` (the delivery id, stable across attempts, so the
/// receiver can de-duplicate), `webhook-timestamp` and, with a key, `webhook-signature`.
pub fn http_headers(
    delivery_id: &str,
    timestamp: &str,
    key: Option<&[u8]>,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("webhook-id", delivery_id.to_owned()),
        ("webhook-timestamp", timestamp.to_owned()),
    ];
    if let Some(key) = key {
        headers.push((
            "webhook-signature",
            webhook_signature(key, delivery_id, timestamp, body),
        ));
    }
    headers
}

/// The largest character boundary of `s` at or below `i` (`s.len()` past the end).
fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The smallest character boundary of `s` at or above `i` (`s.len()` past the end).
fn ceil_char_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

fn cut_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_body_exact_and_signed() {
        let body = bot_body(Format::Text, "", "hi \"you\"", Some(("100", "demo"))).expect("json");
        assert_eq!(
            String::from_utf8(body).expect("utf8"),
            r#"{"msg_type":"text","content":{"text":"hi \"you\""},"timestamp":"100","sign":"jquNHnVOwmDRfw+vqTIrY5dooJAgi5EcRtLsQE4wfXg="}"#
        );
        let unsigned = bot_body(Format::Text, "", "x", None).expect("json");
        assert_eq!(unsigned, br#"{"msg_type":"text","content":{"text":"x"}}"#);
    }

    #[test]
    fn card_body_shape() {
        let body = bot_body(Format::Card, "Title", "**x**", None).expect("json");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["msg_type"], "interactive");
        assert_eq!(v["card"]["header"]["title"]["content"], "Title");
        assert_eq!(v["card"]["elements"][0]["text"]["tag"], "lark_md");
        assert_eq!(v["card"]["elements"][0]["text"]["content"], "**x**");
        assert!(v.get("content").is_none());
    }

    #[test]
    fn long_texts_are_cut_to_the_limit() {
        for (unit, format) in [
            ("a", Format::Text),
            ("é", Format::Text),
            ("\"", Format::Text),
            ("\u{1}", Format::Card),
            ("漢", Format::Card),
            ("😀a\"", Format::Text),
        ] {
            let text = unit.repeat(30_000);
            let body = bot_body(format, "t", &text, Some(("100", "demo"))).expect("json");
            assert!(body.len() <= MAX_BOT_BODY, "{unit:?}: {}", body.len());
            let v: serde_json::Value = serde_json::from_slice(&body).expect("valid json");
            let shown = match format {
                Format::Text => v["content"]["text"].as_str(),
                Format::Card => v["card"]["elements"][0]["text"]["content"].as_str(),
            }
            .expect("text");
            assert!(shown.ends_with(TRUNCATED), "{unit:?}");
            assert!(shown.starts_with(unit));
            // Nearly the whole budget is used.
            assert!(body.len() > MAX_BOT_BODY - 8, "{unit:?}: {}", body.len());
        }
    }

    /// The cut keeps the longest prefix that fits: one more character would not (whatever the
    /// characters' widths and where they fall against the search's halves).
    #[test]
    fn the_cut_keeps_the_longest_prefix_that_fits() {
        let shown = |text: &str| -> String {
            let body = bot_body(Format::Text, "t", text, None).expect("json");
            let v: serde_json::Value = serde_json::from_slice(&body).expect("valid json");
            v["content"]["text"].as_str().expect("text").to_owned()
        };
        for unit in ["é😀a\"", "😀😀a", "aé", "\"😀"] {
            for lead in 0..6 {
                let text = format!("{}{}", "a".repeat(lead), unit.repeat(40_000 / unit.len()));
                let cut = shown(&text);
                let kept = cut.strip_suffix(TRUNCATED).expect("cut").len();
                let next = kept + text[kept..].chars().next().map_or(0, char::len_utf8);
                let longer = format!("{}{TRUNCATED}", &text[..next]);
                assert!(
                    shown(&longer) != longer,
                    "{unit:?}/{lead}: a prefix of {next} bytes fits too, {kept} were kept"
                );
            }
        }
    }

    /// Escaping grows a value (`<` is 5 bytes in a card, `＜` 3 in a text): the cut still fits the
    /// limit, and never leaves half an entity (`&#6`) for Lark to show as text.
    #[test]
    fn escaped_texts_are_cut_whole() {
        use crate::escape::{push_value, Markup};
        for (markup, format, unit) in [
            (Markup::LarkMd, Format::Card, "&#60;"),
            (Markup::LarkText, Format::Text, "＜"),
        ] {
            for lead in 0..unit.len() {
                let mut text = "x".repeat(lead);
                push_value(&mut text, &"<".repeat(8_000), markup);
                let body = bot_body(format, "t", &text, Some(("100", "demo"))).expect("json");
                assert!(
                    body.len() <= MAX_BOT_BODY,
                    "{markup:?}/{lead}: {}",
                    body.len()
                );
                let v: serde_json::Value = serde_json::from_slice(&body).expect("valid json");
                let shown = match format {
                    Format::Text => v["content"]["text"].as_str(),
                    Format::Card => v["card"]["elements"][0]["text"]["content"].as_str(),
                }
                .expect("text");
                let kept = shown
                    .strip_suffix(TRUNCATED)
                    .unwrap_or_else(|| panic!("{markup:?}/{lead}: not marked"));
                let escaped = kept
                    .strip_prefix(&"x".repeat(lead))
                    .expect("the lead is kept");
                assert!(
                    !escaped.is_empty() && escaped.len() % unit.len() == 0,
                    "{markup:?}/{lead}: cut inside an escape: …{:?}",
                    &escaped[escaped.len().saturating_sub(12)..]
                );
                assert_eq!(escaped, unit.repeat(escaped.len() / unit.len()));
                // At most one entity's worth of the budget is given up.
                assert!(body.len() > MAX_BOT_BODY - 8 - unit.len(), "{}", body.len());
            }
        }
    }

    #[test]
    fn cuts_back_off_only_from_split_entities() {
        for (text, cut, expected) in [
            ("ab&#60;cd", 4, 2),        // `&#` | `60;`
            ("ab&#60;cd", 6, 2),        // `&#60` | `;`
            ("ab&#60;cd", 7, 7),        // whole
            ("ab&#60;cd", 2, 2),        // before it
            ("x&nbsp;y", 3, 1),         // a named entity
            ("R&D team", 3, 3),         // `&` that starts no entity
            ("a & b;", 3, 3),           // nor this
            ("&#1234567890123;", 5, 5), // too long to be one
            ("&abcdefghij;", 5, 0),     // the longest name (10)
            ("&abcdefghijk;", 5, 5),    // one more: not an entity
            ("a&;b", 2, 2),             // no name
            ("no amp", 3, 3),
        ] {
            assert_eq!(outside_entity(text, cut), expected, "{text:?} at {cut}");
        }
    }

    #[test]
    fn char_boundaries_round_down_and_up() {
        let s = "aé"; // 'é' is bytes 1..3
        let floor: Vec<usize> = (0..5).map(|i| floor_char_boundary(s, i)).collect();
        let ceil: Vec<usize> = (0..5).map(|i| ceil_char_boundary(s, i)).collect();
        assert_eq!(floor, [0, 1, 1, 3, 3]);
        assert_eq!(ceil, [0, 1, 3, 3, 3]);
    }

    #[test]
    fn http_body_and_headers() {
        let d: Delivery = serde_json::from_str(
            r#"{"delivery_id": "d1", "attempt": 2, "plugin": "notify", "app": "hire",
            "event_id": "e1", "event_type": "t", "received_at": 5,
            "event": {"schema":"2.0","n":1}}"#,
        )
        .expect("delivery");
        let body = http_body(&d, "hello").expect("json");
        assert_eq!(
            String::from_utf8(body.clone()).expect("utf8"),
            r#"{"delivery_id":"d1","attempt":2,"app":"hire","event_id":"e1","event_type":"t","received_at":5,"text":"hello","event":{"schema":"2.0","n":1}}"#
        );
        let h = http_headers("d1", "7", None, &body);
        // Lark's verification token (it authenticates pushes to the gateway) is not sent on.
        let with_token: Delivery = serde_json::from_str(
            r#"{"delivery_id": "d1", "attempt": 1, "plugin": "notify", "app": "hire",
            "event_id": "e1", "event_type": "t", "received_at": 5,
            "event": {"schema":"2.0","header":{"event_id":"e1","token":"v-tok-123"},"event":{}}}"#,
        )
        .expect("delivery");
        let sent = String::from_utf8(http_body(&with_token, "x").expect("json")).expect("utf8");
        assert!(!sent.contains("v-tok-123"), "{sent}");
        let v: serde_json::Value = serde_json::from_str(&sent).expect("json");
        assert_eq!(v["event"]["header"]["token"], "<redacted>");
        assert_eq!(v["event"]["header"]["event_id"], "e1");
        assert_eq!(h.len(), 2);
        let h = http_headers("d1", "7", Some(b"k"), &body);
        assert_eq!(h[2].0, "webhook-signature");
        assert!(h[2].1.starts_with("v1,"));
    }
}
