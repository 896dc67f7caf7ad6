//! Making a substituted template value say only what it says: a value (an account id, an event
//! type, a currency code: text that came from the event, or the app name) is rewritten so that
//! the message language it lands in cannot read it as markup. Only values pass through here;
//! the operator's own template text is markup on purpose and is never touched. This module must
//! never change what a value says, only how it is written: every rule maps a character to one
//! that reads the same, except that in a bot message a value is kept on one line.
//!
//! The rules per target, and where they come from:
//!
//! - [`Markup::LarkText`], a bot `text` message. Lark interprets `<at user_id="…">…</at>` (a
//!   mention; `user_id="all"` mentions the whole group), the style tags `<b>`, `<i>`, `<u>`, `<s>`
//!   and `[text](url)` links ("发送消息内容结构", text section, open.feishu.cn, 2025-06-12; that
//!   page says styles and links are not yet honoured for custom bots, mentions are). No escape
//!   mechanism is documented for text messages, so the characters are replaced by their fullwidth
//!   forms, which read the same to a person and are not syntax: `<` `>` → `＜` `＞`, `[` `]` →
//!   `［` `］`, and `&` → `＆` (whether text messages decode HTML entities is not documented; a
//!   value must not be able to spell a tag as `&lt;at …&gt;` if they do).
//! - [`Markup::LarkMd`], the card body. Lark's message-card Markdown page ("Markdown", message
//!   cards, open.feishu.cn, 2024-08-20) says a character that is Markdown syntax must be written
//!   as an HTML entity, `&#number;`, to show as itself, and lists
//!   `` > < ~ - ! * / \ [ ] ( ) # : + " ' ` $ _ ``. Backslash escapes are not documented (the
//!   backslash is itself in that list). Every one of those, and `&` (so that a value spelling an
//!   entity shows as written), becomes `&#number;`. (The page writes `~` as `&sim;`, which in HTML is U+223C, not `~`: the numeric
//!   form is used for every character.)
//! - [`Markup::PlainText`], the card header: `plain_text` interprets nothing.
//! - [`Markup::Raw`], the `http` target: the receiver gets the values exactly as they are.
//!
//! In every bot format (not `Raw`) the values are single-line: a control character (line feed,
//! carriage return, tab, …) or a Unicode line or paragraph separator in a value becomes a space,
//! so a value cannot start a line of its own (a Markdown list, or a made-up line of the message).
//! And a Unicode bidirectional embedding, override or isolate control (U+202A–U+202E,
//! U+2066–U+2069) becomes U+FFFD `�`: one of them left open in a value would reorder what follows
//! it on the line, the operator's own text included (a right-to-left override turns
//! `paid CNY 100` into `001 YNC diap` on screen). These are the one exception to "reads the
//! same": the reader sees that a character was there, not what it did. The bidi marks
//! (U+200E, U+200F, U+061C) reorder nothing beyond their neighbours and are kept.

use std::fmt::Write as _;

/// The message language a rendered template is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Markup {
    /// An `http` target's `text`: values are inserted as they are.
    Raw,
    /// A card header (`plain_text`): no markup; values are kept on one line.
    PlainText,
    /// A bot `text` message: tags and links in values are neutralised.
    LarkText,
    /// A card body (`lark_md`): Markdown-significant characters in values become entities.
    LarkMd,
}

/// Appends `value` to `out`, written so that `markup` shows it literally.
pub fn push_value(out: &mut String, value: &str, markup: Markup) {
    if markup == Markup::Raw {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        if breaks_the_line(c) {
            out.push(' ');
            continue;
        }
        if reorders_the_line(c) {
            out.push(char::REPLACEMENT_CHARACTER);
            continue;
        }
        match markup {
            Markup::Raw | Markup::PlainText => out.push(c),
            Markup::LarkText => out.push(match c {
                '<' => '＜',
                '>' => '＞',
                '[' => '［',
                ']' => '］',
                '&' => '＆',
                other => other,
            }),
            Markup::LarkMd if LARK_MD_SYNTAX.contains(c) => {
                // `&#60;`: the decimal code point. Writing to a `String` cannot fail.
                let _ = write!(out, "&#{};", u32::from(c));
            }
            Markup::LarkMd => out.push(c),
        }
    }
}

/// The characters Lark's card Markdown page says must be written as entities to show as
/// themselves, plus `&`, which starts an entity.
const LARK_MD_SYNTAX: &str = "&<>~-!*/\\[]()#:+\"'`$_";

/// A character that would end the line a single-line value stands on (or is otherwise invisible
/// control): C0 and C1 controls (`\n`, `\r`, `\t`, NEL, …) and the Unicode line and paragraph
/// separators.
fn breaks_the_line(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// A bidirectional embedding, override or isolate control (LRE, RLE, PDF, LRO, RLO, LRI, RLI,
/// FSI, PDI): it changes the display order of the text after it.
fn reorders_the_line(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// [`push_value`] into a new string, for the tests.
#[cfg(test)]
fn escaped(value: &str, markup: Markup) -> String {
    let mut out = String::new();
    push_value(&mut out, value, markup);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT_ALL: &str = r#"<at user_id="all">x</at>"#;
    const LINK: &str = "[claim your bonus](https://evil.example/pay)";

    /// (value, markup, exactly what is written).
    const CASES: &[(&str, Markup, &str)] = &[
        // A mention of the whole group.
        (AT_ALL, Markup::LarkText, "＜at user_id=\"all\"＞x＜/at＞"),
        (
            AT_ALL,
            Markup::LarkMd,
            "&#60;at user&#95;id=&#34;all&#34;&#62;x&#60;&#47;at&#62;",
        ),
        (AT_ALL, Markup::PlainText, AT_ALL),
        (AT_ALL, Markup::Raw, AT_ALL),
        // The card Markdown's own mention syntax.
        (
            "<at id=all></at>",
            Markup::LarkMd,
            "&#60;at id=all&#62;&#60;&#47;at&#62;",
        ),
        // A link.
        (
            LINK,
            Markup::LarkText,
            "［claim your bonus］(https://evil.example/pay)",
        ),
        (
            LINK,
            Markup::LarkMd,
            "&#91;claim your bonus&#93;&#40;https&#58;&#47;&#47;evil.example&#47;pay&#41;",
        ),
        (LINK, Markup::PlainText, LINK),
        (LINK, Markup::Raw, LINK),
        // Emphasis and strikethrough.
        ("**bold**", Markup::LarkText, "**bold**"),
        ("**bold**", Markup::LarkMd, "&#42;&#42;bold&#42;&#42;"),
        (
            "__b__ ~~s~~",
            Markup::LarkMd,
            "&#95;&#95;b&#95;&#95; &#126;&#126;s&#126;&#126;",
        ),
        ("**bold**", Markup::Raw, "**bold**"),
        // A backslash.
        (r"a\b", Markup::LarkText, r"a\b"),
        (r"a\b", Markup::LarkMd, "a&#92;b"),
        (r"a\b", Markup::Raw, r"a\b"),
        // Line breaks: one line in every bot format, untouched for `http`.
        ("a\nb\r\nc", Markup::LarkText, "a b  c"),
        ("a\nb\r\nc", Markup::LarkMd, "a b  c"),
        ("a\nb\r\nc", Markup::PlainText, "a b  c"),
        ("a\nb\r\nc", Markup::Raw, "a\nb\r\nc"),
        (
            "a\tb\u{85}c\u{2028}d\u{2029}e",
            Markup::LarkText,
            "a b c d e",
        ),
        // The rest of the card table, `&` and `<font>`.
        (
            "# - + ! : / ' ` $",
            Markup::LarkMd,
            "&#35; &#45; &#43; &#33; &#58; &#47; &#39; &#96; &#36;",
        ),
        ("&#42; &lt;", Markup::LarkMd, "&#38;&#35;42; &#38;lt;"),
        ("&lt;b&gt;", Markup::LarkText, "＆lt;b＆gt;"),
        (
            "<font color='red'>x</font>",
            Markup::LarkMd,
            "&#60;font color=&#39;red&#39;&#62;x&#60;&#47;font&#62;",
        ),
        // What ordinary values look like: unchanged.
        ("7147998241542539527", Markup::LarkMd, "7147998241542539527"),
        (
            "CNY 100.25, USD 0.10",
            Markup::LarkMd,
            "CNY 100.25, USD 0.10",
        ),
        (
            "5e3702a84e847582be8db7fb73283c02",
            Markup::LarkText,
            "5e3702a84e847582be8db7fb73283c02",
        ),
        ("hire é 漢 😀", Markup::LarkText, "hire é 漢 😀"),
        ("hire é 漢 😀", Markup::LarkMd, "hire é 漢 😀"),
        ("", Markup::LarkMd, ""),
        // Bidi overrides and isolates are shown as U+FFFD in every bot format; marks are kept.
        (
            "acct\u{202E}001 YNC",
            Markup::LarkText,
            "acct\u{FFFD}001 YNC",
        ),
        (
            "\u{202A}\u{202B}\u{202C}\u{202D}\u{2066}\u{2067}\u{2068}\u{2069}",
            Markup::LarkMd,
            "\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}",
        ),
        ("a\u{202E}b", Markup::PlainText, "a\u{FFFD}b"),
        ("a\u{202E}b", Markup::Raw, "a\u{202E}b"),
        (
            "a\u{200F}b\u{200E}c\u{61C}",
            Markup::LarkText,
            "a\u{200F}b\u{200E}c\u{61C}",
        ),
    ];

    #[test]
    fn each_format_writes_exactly() {
        for (value, markup, expected) in CASES {
            assert_eq!(
                escaped(value, *markup),
                *expected,
                "{value:?} as {markup:?}"
            );
        }
    }

    #[test]
    fn appends_without_touching_what_is_already_there() {
        let mut out = String::from("**Account:** ");
        push_value(&mut out, "*x*", Markup::LarkMd);
        assert_eq!(out, "**Account:** &#42;x&#42;");
    }
}
