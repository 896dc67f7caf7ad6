//! Helpers for reading configuration the way the gateway reads its own, so a plugin's settings
//! look and behave like `gateway.toml`'s: the config as a typed struct ([`from_config`]), human
//! durations: `"500ms"`, `"30s"`, `"10m"`, `"2h"`,
//! `"7d"`, and compounds of them, largest unit first: `"1h30m"`, `"2d12h"`, `"1m30s500ms"`.

use std::time::Duration;

/// The plugin's config (what `Plugin::new` gets) as `T`, read through its JSON text so types
/// that read their value from its exact text (`Money`) see the digits, never an `f64`. An
/// error names the field and the problem (`min_cash.CNY: invalid amount ...`); it has no "at
/// line 1 column 18": that position is in the JSON the gateway made of the `[[plugins]]
/// config` table, which the user never sees, so it is turned into the field's path.
pub fn from_config<T: serde::de::DeserializeOwned>(
    config: &serde_json::Value,
) -> Result<T, String> {
    let json = config.to_string();
    serde_json::from_str(&json).map_err(|e| {
        let text = e.to_string();
        let position = format!(" at line {} column {}", e.line(), e.column());
        let Some(message) = text.strip_suffix(&position).filter(|_| e.line() > 0) else {
            return text;
        };
        // These name the field themselves.
        if message.starts_with("unknown field") || message.starts_with("missing field") {
            return message.to_owned();
        }
        match path_at(&json, e.column()) {
            Some(path) => format!("{path}: {message}"),
            None => message.to_owned(),
        }
    })
}

/// The path (`a.b[2].c`) of the value being read at byte column `column` (1-based) of `json`,
/// one line of JSON as `serde_json` writes it: the keys and indexes of the objects and arrays
/// open there. `None` at the top level.
fn path_at(json: &str, column: usize) -> Option<String> {
    enum Open {
        Object { key: Option<String>, in_key: bool },
        Array(usize),
    }
    let end = column.min(json.len());
    let mut open: Vec<Open> = Vec::new();
    let mut string: Option<String> = None;
    let mut escaped = false;
    for c in json.get(..end)?.chars() {
        if let Some(s) = string.as_mut() {
            match c {
                _ if escaped => {
                    escaped = false;
                    s.push(c);
                }
                '\\' => escaped = true,
                '"' => {
                    let done = string.take().unwrap_or_default();
                    if let Some(Open::Object { key, in_key: true }) = open.last_mut() {
                        *key = Some(done);
                    }
                }
                _ => s.push(c),
            }
            continue;
        }
        match c {
            '"' => string = Some(String::new()),
            '{' => open.push(Open::Object {
                key: None,
                in_key: true,
            }),
            '[' => open.push(Open::Array(0)),
            '}' | ']' => {
                open.pop();
            }
            ':' => {
                if let Some(Open::Object { in_key, .. }) = open.last_mut() {
                    *in_key = false;
                }
            }
            ',' => match open.last_mut() {
                Some(Open::Array(i)) => *i += 1,
                Some(Open::Object { in_key, .. }) => *in_key = true,
                None => {}
            },
            _ => {}
        }
    }
    let mut path = String::new();
    for o in &open {
        match o {
            Open::Object { key: Some(k), .. } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
            }
            Open::Object { key: None, .. } => {}
            Open::Array(i) => path.push_str(&format!("[{i}]")),
        }
    }
    (!path.is_empty()).then_some(path)
}

const UNITS: &str = "ms, s, m, h or d";

/// Parses one or more `<integer><unit>` parts (unit `ms`, `s`, `m`, `h`, `d`), each unit at most
/// once and in decreasing size, with no spaces inside: `"90s"`, `"1h30m"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err(format!(
            "{text:?} is empty: use a duration like \"30s\" or \"1h30m\""
        ));
    }
    let mut rest = t;
    let mut total: u64 = 0;
    let mut last_unit_ms = u64::MAX;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "{text:?} is not a duration like \"500ms\", \"30s\" or \"1h30m\""
            ));
        }
        let (num, after) = rest.split_at(digits);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(format!("{text:?} has no unit (use {UNITS}, e.g. \"30s\")"));
        }
        let per_unit_ms: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(format!("{text:?}: unknown unit {unit:?} (use {UNITS})")),
        };
        if per_unit_ms >= last_unit_ms {
            return Err(format!(
                "{text:?}: units must go from largest to smallest, each once (e.g. \"1h30m\")"
            ));
        }
        last_unit_ms = per_unit_ms;
        let n: u64 = num.parse().map_err(|_| format!("{text:?} is too large"))?;
        total = n
            .checked_mul(per_unit_ms)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| format!("{text:?} is too large"))?;
        rest = next;
    }
    Ok(Duration::from_millis(total))
}

/// `url` as it may be shown (a log line, an error, a status page): its user info and its query
/// and fragment replaced by `mask`, its scheme, host and path kept. User info ends at the last
/// `@` (a password may hold `/`, `?`, `#` or `@`), with or without a scheme; an `@` in the path
/// only makes it hide more.
pub fn shown_url(url: &str, mask: &str) -> String {
    let (scheme, after) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let (user, hostpart) = match after.rfind('@') {
        Some(at) => (true, &after[at + 1..]),
        None => (false, after),
    };
    let (host, rest) = hostpart.split_at(hostpart.find(['/', '?', '#']).unwrap_or(hostpart.len()));
    let mut shown = scheme.to_owned();
    if user {
        shown.push_str(mask);
        shown.push('@');
    }
    shown.push_str(host);
    match rest.find(['?', '#']) {
        Some(i) => {
            shown.push_str(&rest[..=i]);
            shown.push_str(mask);
        }
        None => shown.push_str(rest),
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Settings {
        min_cash: crate::events::Money,
        label: String,
    }

    #[test]
    fn the_path_of_the_value_read_at_a_column() {
        let json = r#"{"a":{"b":[1,{"c":"x"}]},"d":"e\"f","g":2}"#;
        let at = |needle: &str| json.find(needle).map(|i| i + needle.len()).unwrap_or(0);
        assert_eq!(path_at(json, at(r#""c":"x""#)).as_deref(), Some("a.b[1].c"));
        assert_eq!(path_at(json, at("[1")).as_deref(), Some("a.b[0]"));
        assert_eq!(path_at(json, at(r#""g":2"#)).as_deref(), Some("g"));
        assert_eq!(path_at(json, 0), None);
    }

    #[test]
    fn a_config_error_names_the_field_without_a_position_in_json_nobody_sees() {
        let ok: Settings =
            from_config(&serde_json::json!({"min_cash": "10.05", "label": "x"})).expect("valid");
        assert_eq!(ok.min_cash.to_string(), "10.05");
        let e = from_config::<Settings>(&serde_json::json!({"min_csh": "1", "label": "x"}))
            .expect_err("unknown field");
        assert!(
            e.starts_with("unknown field `min_csh`, expected") && !e.contains("line"),
            "{e}"
        );
        let e = from_config::<Settings>(&serde_json::json!({"min_cash": "abc", "label": "x"}))
            .expect_err("bad amount");
        // (A message serde_json gives no position names no field.)
        assert!(!e.contains(" at line "), "{e}");
        let e = from_config::<Settings>(&serde_json::json!({"label": 5, "min_cash": "1"}))
            .expect_err("bad type");
        assert!(
            e.starts_with("label: invalid type: integer `5`, expected a string"),
            "{e}"
        );
        let e =
            from_config::<Settings>(&serde_json::json!({"min_cash": "1"})).expect_err("missing");
        assert_eq!(e, "missing field `label`");
    }

    #[test]
    fn units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in [
            "",
            "10",
            "s",
            "1.5s",
            "-1s",
            "10 parsecs",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn compounds_go_from_the_largest_unit_down() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(
            parse_duration(" 2d12h "),
            Ok(Duration::from_secs(2 * 86_400 + 12 * 3600))
        );
        assert_eq!(
            parse_duration("1m30s500ms"),
            Ok(Duration::from_millis(90_500))
        );
        for bad in ["30m1h", "1h1h", "1h 30m", "1h30", "h30m", "1h30x"] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(e.contains(bad), "{e}");
        }
        assert!(parse_duration("1h30")
            .expect_err("no unit")
            .contains("no unit"));
    }

    #[test]
    fn a_shown_url_keeps_no_user_info_query_or_fragment() {
        for (url, shown) in [
            (
                "http://u:pw@127.0.0.1:1/pay?token=t#x",
                "http://***@127.0.0.1:1/pay?***",
            ),
            ("https://pay.example/a/b", "https://pay.example/a/b"),
            ("http://u:p@h?x=1", "http://***@h?***"),
            (
                "https://bot:Pa55#word@open.feishu.cn",
                "https://***@open.feishu.cn",
            ),
            (
                "https://bot:a/b?c@open.feishu.cn/x",
                "https://***@open.feishu.cn/x",
            ),
            ("bot:pw@open.feishu.cn", "***@open.feishu.cn"),
            ("ftp://u:P@ss@h/", "ftp://***@h/"),
        ] {
            assert_eq!(shown_url(url, "***"), shown, "{url}");
        }
    }
}
