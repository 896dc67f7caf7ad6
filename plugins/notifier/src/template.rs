//! Message templates: text with `{placeholder}`s filled from the delivery and, for
//! `assets_update_v1`, from the typed event. Templates are compiled once at `new` (an unknown
//! placeholder is a config error) and rendered per delivery without failing. Values are written
//! through [`crate::escape`] for the message language they land in; the template's own text is
//! the operator's and is never rewritten. Also holds the readable time formatting (fixed UTC
//! offset, civil date computed here: no date library).

use lark_core::AssetsUpdateV1;

use crate::escape::{push_value, Markup};

/// Every placeholder a template may use.
pub const PLACEHOLDERS: &[&str] = &[
    "account_id",
    "points",
    "cash",
    "modify_time",
    "app",
    "event_id",
    "event_type",
];

/// Default text for `hire.referral_account.assets_update_v1`.
pub const DEFAULT_ASSETS_TEXT: &str = "Referral account {account_id} balance updated: \
{points} points; cash {cash}; changed at {modify_time}.\napp {app}, event {event_id}";
/// Default text for any other event type.
pub const DEFAULT_GENERIC_TEXT: &str =
    "Event {event_type} received on app {app} (event {event_id})";
/// Default card titles.
pub const DEFAULT_ASSETS_TITLE: &str = "Referral balance updated";
pub const DEFAULT_GENERIC_TITLE: &str = "{event_type}";

/// Why a template is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown placeholder {{{0}}}; known: {{account_id}} {{points}} {{cash}} {{modify_time}} {{app}} {{event_id}} {{event_type}} (write {{{{ and }}}} for literal braces)")]
    Unknown(String),
    #[error("unclosed `{{` at byte {0} (write {{{{ for a literal brace)")]
    Unclosed(usize),
    #[error("stray `}}` at byte {0} (write }}}} for a literal brace)")]
    Stray(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    /// An index into [`PLACEHOLDERS`].
    Field(usize),
}

/// A compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// The values placeholders expand to. Asset fields are empty for other event types.
#[derive(Debug, Default)]
pub struct Fields<'a> {
    pub app: &'a str,
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub assets: Option<&'a AssetsUpdateV1>,
}

impl Template {
    /// Compiles `text`. `{{` and `}}` are literal braces.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|p| p.1) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|p| p.1) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => return Err(TemplateError::Stray(at)),
                '{' => {
                    let rest = &text[at + 1..];
                    let end = rest.find('}').ok_or(TemplateError::Unclosed(at))?;
                    let name = &rest[..end];
                    let index = PLACEHOLDERS
                        .iter()
                        .position(|p| *p == name)
                        .ok_or_else(|| TemplateError::Unknown(name.to_owned()))?;
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Field(index));
                    // Skip the name and the closing brace.
                    for _ in 0..=name.chars().count() {
                        chars.next();
                    }
                }
                other => literal.push(other),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template { pieces })
    }

    /// Fills in the placeholders, each value written so that `markup` shows it literally; the
    /// template's own text is copied as written.
    pub fn render(&self, fields: &Fields<'_>, offset: UtcOffset, markup: Markup) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(i) => render_field(&mut out, PLACEHOLDERS[*i], fields, offset, markup),
            }
        }
        out
    }
}

fn render_field(out: &mut String, name: &str, f: &Fields<'_>, offset: UtcOffset, markup: Markup) {
    match (name, f.assets) {
        ("app", _) => push_value(out, f.app, markup),
        ("event_id", _) => push_value(out, f.event_id, markup),
        ("event_type", _) => push_value(out, f.event_type, markup),
        ("account_id", Some(a)) => push_value(out, &a.account_id, markup),
        // Digits only: escaping changes nothing, but every number goes the same way.
        ("points", Some(a)) => push_value(out, &a.points.to_string(), markup),
        // The amounts are formatted here, but the currency codes are the event's strings.
        ("cash", Some(a)) => push_value(out, &format_cash(a), markup),
        // Made here from a number: digits, `-`, `:`, `+`, spaces and `UTC`, none of them syntax
        // where they stand (the card escapes would only turn `-`, `:` and `+` into entities
        // that show the same), so it is inserted as is (`time_is_inert` checks the claim).
        ("modify_time", Some(a)) => out.push_str(&format_time(a.modify_time_ms, offset)),
        _ => {}
    }
}

/// `"CNY 100.25, USD 0.10"`, exact; `"none"` when no currency is listed.
pub fn format_cash(a: &AssetsUpdateV1) -> String {
    if a.cash.is_empty() {
        return "none".to_owned();
    }
    let shown: Vec<String> = a
        .cash
        .iter()
        .map(|c| format!("{} {}", c.currency, c.amount))
        .collect();
    shown.join(", ")
}

/// A fixed offset from UTC, in minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcOffset {
    minutes: i32,
}

impl UtcOffset {
    pub const UTC: UtcOffset = UtcOffset { minutes: 0 };

    /// `"Z"`, `"UTC"`, `"+08:00"`, `"-05:30"`, `"+0800"` (at most ±23:59).
    pub fn parse(text: &str) -> Option<UtcOffset> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("z") || text.eq_ignore_ascii_case("utc") {
            return Some(UtcOffset::UTC);
        }
        // An offset is ASCII; anything else is refused before any slicing by byte offsets.
        if !text.is_ascii() {
            return None;
        }
        let (sign, rest) = match text.as_bytes().first()? {
            b'+' => (1, &text[1..]),
            b'-' => (-1, &text[1..]),
            _ => return None,
        };
        let (h, m) = match rest.split_once(':') {
            Some(hm) => hm,
            None if rest.len() == 4 => rest.split_at(2),
            None => return None,
        };
        let two_digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
        if !two_digits(h) || !two_digits(m) {
            return None;
        }
        let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
        if h > 23 || m > 59 {
            return None;
        }
        Some(UtcOffset {
            minutes: sign * (h * 60 + m),
        })
    }
}

impl std::fmt::Display for UtcOffset {
    /// `UTC` or `+08:00`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.minutes == 0 {
            return f.write_str("UTC");
        }
        let sign = if self.minutes < 0 { '-' } else { '+' };
        let m = self.minutes.abs();
        write!(f, "{sign}{:02}:{:02}", m / 60, m % 60)
    }
}

/// `"2023-05-30 07:23:35 UTC"` or `"2023-05-30 15:23:35 +08:00"` (milliseconds dropped).
pub fn format_time(unix_ms: u64, offset: UtcOffset) -> String {
    // At most u64::MAX / 1000 seconds: an i64 holds it.
    let secs = (unix_ms / 1000) as i64 + i64::from(offset.minutes) * 60;
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02} {offset}",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assets() -> AssetsUpdateV1 {
        AssetsUpdateV1::from_event(
            r#"{"account_id":"acc1","assets":{"confirmed_bonus":{"point_bonus":7,"cash_bonus":[
            {"currency_type":"CNY","amount":100.25},{"currency_type":"USD","amount":0.1}]}},
            "modify_time":"1685431415036"}"#,
        )
        .expect("valid event")
    }

    #[test]
    fn renders_every_placeholder() {
        let a = assets();
        let f = Fields {
            app: "hire",
            event_id: "e1",
            event_type: "t",
            assets: Some(&a),
        };
        let t = Template::parse(
            "{account_id}|{points}|{cash}|{modify_time}|{app}|{event_id}|{event_type}|{{x}}",
        )
        .expect("valid");
        assert_eq!(
            t.render(&f, UtcOffset::UTC, Markup::Raw),
            "acc1|7|CNY 100.25, USD 0.10|2023-05-30 07:23:35 UTC|hire|e1|t|{x}"
        );
        let plus8 = UtcOffset::parse("+08:00").expect("offset");
        assert_eq!(
            Template::parse("{modify_time}")
                .expect("valid")
                .render(&f, plus8, Markup::Raw),
            "2023-05-30 15:23:35 +08:00"
        );
    }

    #[test]
    fn asset_fields_are_empty_for_other_events() {
        let f = Fields {
            app: "a",
            event_id: "e",
            event_type: "im.x",
            assets: None,
        };
        let t = Template::parse("[{account_id}{cash}] {event_type} é").expect("valid");
        assert_eq!(t.render(&f, UtcOffset::UTC, Markup::Raw), "[] im.x é");
    }

    /// An account id (any non-empty string the event carries) and an event type full of markup.
    fn hostile() -> AssetsUpdateV1 {
        AssetsUpdateV1::from_event(
            r#"{"account_id":"<at user_id=\"all\">x</at> [pay](https://evil.example) **b** a\\b\nc",
            "assets":{"confirmed_bonus":{"point_bonus":7,"cash_bonus":[
            {"currency_type":"<b>CNY</b>","amount":1}]}},"modify_time":"1685431415036"}"#,
        )
        .expect("the plugin's parsing accepts any account id")
    }

    #[test]
    fn values_are_escaped_for_their_format_and_the_template_text_is_not() {
        let a = hostile();
        assert_eq!(
            a.account_id,
            "<at user_id=\"all\">x</at> [pay](https://evil.example) **b** a\\b\nc"
        );
        let f = Fields {
            app: "hire",
            event_id: "e_1",
            event_type: "t",
            assets: Some(&a),
        };
        // The operator's own markup: a mention, a link, bold, a backslash and a line break.
        let t = Template::parse(
            "<at user_id=\"all\"></at> **{account_id}** [{cash}](https://ok.example) \\ {event_id}\n{points} {modify_time}",
        )
        .expect("valid");
        for (markup, expected) in [
            (
                Markup::LarkText,
                "<at user_id=\"all\"></at> **＜at user_id=\"all\"＞x＜/at＞ ［pay］(https://evil.example) \
                 **b** a\\b c** [＜b＞CNY＜/b＞ 1.00](https://ok.example) \\ e_1\n\
                 7 2023-05-30 07:23:35 UTC",
            ),
            (
                Markup::LarkMd,
                "<at user_id=\"all\"></at> **&#60;at user&#95;id=&#34;all&#34;&#62;x&#60;&#47;at&#62; \
                 &#91;pay&#93;&#40;https&#58;&#47;&#47;evil.example&#41; &#42;&#42;b&#42;&#42; \
                 a&#92;b c** [&#60;b&#62;CNY&#60;&#47;b&#62; 1.00](https://ok.example) \\ e&#95;1\n\
                 7 2023-05-30 07:23:35 UTC",
            ),
            (
                Markup::PlainText,
                "<at user_id=\"all\"></at> **<at user_id=\"all\">x</at> [pay](https://evil.example) \
                 **b** a\\b c** [<b>CNY</b> 1.00](https://ok.example) \\ e_1\n\
                 7 2023-05-30 07:23:35 UTC",
            ),
            (
                Markup::Raw,
                "<at user_id=\"all\"></at> **<at user_id=\"all\">x</at> [pay](https://evil.example) \
                 **b** a\\b\nc** [<b>CNY</b> 1.00](https://ok.example) \\ e_1\n\
                 7 2023-05-30 07:23:35 UTC",
            ),
        ] {
            assert_eq!(t.render(&f, UtcOffset::UTC, markup), expected, "{markup:?}");
        }
    }

    #[test]
    fn ordinary_values_and_the_defaults_render_as_before_in_every_format() {
        let a = assets();
        let f = Fields {
            app: "hire",
            event_id: "5e3702a84e847582be8db7fb73283c02",
            event_type: "hire.referral_account.assets_update_v1",
            assets: Some(&a),
        };
        let t = Template::parse(DEFAULT_ASSETS_TEXT).expect("valid");
        let raw = t.render(&f, UtcOffset::UTC, Markup::Raw);
        for markup in [Markup::LarkText, Markup::LarkMd, Markup::PlainText] {
            assert_eq!(t.render(&f, UtcOffset::UTC, markup), raw, "{markup:?}");
        }
    }

    /// `{modify_time}` is inserted without escaping: what the plugin writes there is never
    /// syntax. In a card the only characters the escapes would touch are `-`, `:` and `+`,
    /// between digits and after a space (no list, no `:emoji:` key); elsewhere nothing changes.
    #[test]
    fn time_is_inert() {
        for offset in ["Z", "+08:00", "-05:30"] {
            let offset = UtcOffset::parse(offset).expect("offset");
            for ms in [0, 1_685_431_415_036, 4_107_542_399_000, u64::MAX] {
                let shown = format_time(ms, offset);
                assert!(
                    shown
                        .chars()
                        .all(|c| c.is_ascii_digit() || " -:+UTC".contains(c)),
                    "{shown:?}"
                );
                assert!(shown.starts_with(|c: char| c.is_ascii_digit()), "{shown:?}");
                for markup in [Markup::Raw, Markup::PlainText, Markup::LarkText] {
                    let mut escaped = String::new();
                    push_value(&mut escaped, &shown, markup);
                    assert_eq!(escaped, shown, "{markup:?}");
                }
            }
        }
    }

    #[test]
    fn bad_templates() {
        assert_eq!(
            Template::parse("hi {user}"),
            Err(TemplateError::Unknown("user".into()))
        );
        assert_eq!(Template::parse("a {app"), Err(TemplateError::Unclosed(2)));
        assert_eq!(Template::parse("a } b"), Err(TemplateError::Stray(2)));
        assert!(Template::parse(DEFAULT_ASSETS_TEXT).is_ok());
        assert!(Template::parse(DEFAULT_GENERIC_TEXT).is_ok());
        assert!(Template::parse(DEFAULT_GENERIC_TITLE).is_ok());
        assert!(Template::parse(DEFAULT_ASSETS_TITLE).is_ok());
    }

    #[test]
    fn non_ascii_offsets_are_refused_not_a_panic() {
        for text in ["+1é1", "+é:00", "-0é", "é"] {
            assert_eq!(UtcOffset::parse(text), None, "{text}");
        }
    }

    #[test]
    fn offsets() {
        for (text, shown) in [
            ("Z", "UTC"),
            ("utc", "UTC"),
            ("+00:00", "UTC"),
            ("+08:00", "+08:00"),
            ("-05:30", "-05:30"),
            ("+0545", "+05:45"),
            ("+23:59", "+23:59"),
            ("-2359", "-23:59"),
        ] {
            assert_eq!(
                UtcOffset::parse(text).map(|o| o.to_string()).as_deref(),
                Some(shown),
                "{text}"
            );
        }
        for bad in [
            "",
            "8",
            "+8:00",
            "+24:00",
            "+08:60",
            "08:00",
            "+08:00:00",
            "+0",
            "+123",
            "+12345",
        ] {
            assert_eq!(UtcOffset::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn civil_dates() {
        assert_eq!(format_time(0, UtcOffset::UTC), "1970-01-01 00:00:00 UTC");
        // Leap day, end of century, and a negative offset crossing midnight backwards.
        assert_eq!(
            format_time(951_782_400_000, UtcOffset::UTC),
            "2000-02-29 00:00:00 UTC"
        );
        assert_eq!(
            format_time(4_107_542_399_000, UtcOffset::UTC),
            "2100-02-28 23:59:59 UTC"
        );
        // The day after: the first of a century's day counts (no 29 February in 2100).
        assert_eq!(
            format_time(4_107_542_400_000, UtcOffset::UTC),
            "2100-03-01 00:00:00 UTC"
        );
        let minus = UtcOffset::parse("-01:00").expect("offset");
        assert_eq!(format_time(0, minus), "1969-12-31 23:00:00 -01:00");
        assert_eq!(
            format_time(1_685_431_415_036, UtcOffset::UTC),
            "2023-05-30 07:23:35 UTC"
        );
    }
}
