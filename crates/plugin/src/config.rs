//! Helpers for reading configuration the way the gateway reads its own, so a plugin's settings
//! look and behave like `gateway.toml`'s: the config as a typed struct ([`from_config`]), human
//! durations: `"500ms"`, `"30s"`, `"10m"`, `"2h"`,
//! `"7d"`, and compounds of them, largest unit first: `"1h30m"`, `"2d12h"`, `"1m30s500ms"`.

use std::time::Duration;

/// The plugin's config (what `Plugin::new` gets) as `T`, read through its JSON text so types
/// that read their value from its exact text (`Money`) see the digits, never an `f64`. An
/// error names the field and the problem; it has no "at line 1 column 18": that position is in
/// the JSON the gateway made of the `[[plugins]] config` table, which the user never sees.
pub fn from_config<T: serde::de::DeserializeOwned>(
    config: &serde_json::Value,
) -> Result<T, String> {
    serde_json::from_str(&config.to_string()).map_err(|e| {
        let text = e.to_string();
        let position = format!(" at line {} column {}", e.line(), e.column());
        match text.strip_suffix(&position) {
            Some(message) if e.line() > 0 => message.to_owned(),
            _ => text,
        }
    })
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

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Settings {
        min_cash: crate::events::Money,
        label: String,
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
        assert!(!e.contains(" at line "), "{e}");
        let e =
            from_config::<Settings>(&serde_json::json!({"min_cash": "1"})).expect_err("missing");
        assert_eq!(e, "missing field `label`");
    }

    use super::*;

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
