//! The plugin's configuration (`[[plugins]] config` of the gateway): parsing, defaults and
//! validation. Secrets (`app_secret`, `forward_secret`) are kept out of `Debug` output.
//!
//! Amounts in `min_cash` are exact [`Money`]: write them as strings (`"10.00"`); plain numbers
//! with at most two decimals are accepted too.

use std::collections::BTreeMap;
use std::time::Duration;

use lark_core::Money;
use serde::Deserialize;

use crate::ledger::LedgerLocation;
use crate::shown::shown_url;

/// Lark's Feishu domain, the default `base_url`.
pub const DEFAULT_BASE_URL: &str = "https://open.feishu.cn";
/// Default per-request HTTP timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("payout config: {0}")]
    Invalid(String),
}

/// A kind of referral bonus that can be withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BonusType {
    Points,
    Cash,
}

impl BonusType {
    /// Lark's `withdraw_bonus_type` code: 1 = points, 2 = cash.
    pub fn code(self) -> u8 {
        match self {
            BonusType::Points => 1,
            BonusType::Cash => 2,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    base_url: Option<String>,
    app_id: String,
    app_secret: String,
    #[serde(default)]
    withdraw: Option<Vec<BonusType>>,
    #[serde(default)]
    min_points: Option<u64>,
    #[serde(default)]
    min_cash: BTreeMap<String, Money>,
    ledger: String,
    #[serde(default)]
    forward_url: Option<String>,
    #[serde(default)]
    forward_secret: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    retry_codes: Vec<i64>,
    #[serde(default)]
    covered_codes: Vec<i64>,
}

/// The validated configuration. A `ledger` path is as written; the plugin resolves it with the
/// host.
#[derive(Clone)]
pub struct Config {
    pub base_url: String,
    pub app_id: String,
    pub app_secret: String,
    /// Bonus types to withdraw, sorted, without duplicates, never empty.
    pub withdraw: Vec<BonusType>,
    pub min_points: u64,
    /// Minimum cash per currency code; currencies not listed have no minimum.
    pub min_cash: BTreeMap<String, Money>,
    /// A path (SQLite) or a PostgreSQL URL; its `Debug` hides the URL's password.
    pub ledger: LedgerLocation,
    pub forward: Option<ForwardConfig>,
    pub timeout: Duration,
    /// Lark codes to retry (besides the rate limit and invalid-token codes) instead of ending
    /// the delivery as a dead letter.
    pub retry_codes: Vec<i64>,
    /// Lark codes of the withdraw call meaning "nothing to withdraw": such a refusal of a
    /// snapshot an earlier recorded withdrawal covered ends it as skipped (`covered`).
    pub covered_codes: Vec<i64>,
}

/// Where withdrawals are forwarded (the company's payment platform).
#[derive(Clone)]
pub struct ForwardConfig {
    pub url: String,
    pub secret: Option<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("base_url", &self.base_url)
            .field("app_id", &self.app_id)
            .field("app_secret", &"<redacted>")
            .field("withdraw", &self.withdraw)
            .field("min_points", &self.min_points)
            .field("min_cash", &self.min_cash)
            .field("ledger", &self.ledger)
            .field("forward", &self.forward)
            .field("timeout", &self.timeout)
            .field("retry_codes", &self.retry_codes)
            .field("covered_codes", &self.covered_codes)
            .finish()
    }
}

impl std::fmt::Debug for ForwardConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardConfig")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Config {
    /// Parses and validates the JSON config handed over by the host.
    pub fn from_json(value: &serde_json::Value) -> Result<Config, ConfigError> {
        // No message shows a secret or a URL's password, serde's included (it quotes a
        // number or a boolean it refuses where a string belongs).
        Config::parse(value)
            .map_err(|ConfigError::Invalid(m)| ConfigError::Invalid(scrub(m, value)))
    }

    fn parse(value: &serde_json::Value) -> Result<Config, ConfigError> {
        // Through text, so exact amounts are read from the number's digits (never an f64).
        let text = value.to_string();
        let raw: RawConfig =
            serde_json::from_str(&text).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let invalid = |m: &str| ConfigError::Invalid(m.to_owned());

        let base_url = raw.base_url.unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        check_http_url("base_url", &base_url)?;
        let base_url = base_url.trim_end_matches('/').to_owned();
        check_base_url(&base_url)?;
        if raw.app_id.trim().is_empty() {
            return Err(invalid("`app_id` is empty"));
        }
        if raw.app_secret.is_empty() {
            return Err(invalid("`app_secret` is empty"));
        }
        let mut withdraw = raw
            .withdraw
            .unwrap_or_else(|| vec![BonusType::Points, BonusType::Cash]);
        withdraw.sort();
        withdraw.dedup();
        if withdraw.is_empty() {
            return Err(invalid(
                "`withdraw` is empty: list \"points\", \"cash\" or both",
            ));
        }
        // Currency codes are matched without regard to case (`cny` is `CNY`): a minimum
        // written in lower case must not be skipped, withdrawing what it was meant to hold.
        let mut min_cash = BTreeMap::new();
        for (code, min) in raw.min_cash {
            if code.is_empty() || !code.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(ConfigError::Invalid(format!(
                    "`min_cash`: {code:?} is not a currency code (letters and digits, as `CNY`)"
                )));
            }
            let upper = code.to_ascii_uppercase();
            if min_cash.insert(upper.clone(), min).is_some() {
                return Err(ConfigError::Invalid(format!(
                    "`min_cash` lists {upper} twice (codes are matched without regard to case)"
                )));
            }
        }
        // A zero minimum is no minimum: harmless, accepted.
        if raw.min_points.is_some_and(|m| m > 0) && !withdraw.contains(&BonusType::Points) {
            return Err(invalid(
                "`min_points` is set but `withdraw` does not list \"points\": it would never apply",
            ));
        }
        if min_cash.values().any(|m| !m.is_zero()) && !withdraw.contains(&BonusType::Cash) {
            return Err(invalid(
                "`min_cash` is set but `withdraw` does not list \"cash\": it would never apply",
            ));
        }
        let ledger = LedgerLocation::parse(&raw.ledger).map_err(ConfigError::Invalid)?;
        let forward = match (raw.forward_url, raw.forward_secret) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(invalid("`forward_secret` is set but `forward_url` is not"))
            }
            (Some(url), secret) => {
                check_http_url("forward_url", &url)?;
                if secret.as_deref() == Some("") {
                    return Err(invalid("`forward_secret` is empty"));
                }
                Some(ForwardConfig { url, secret })
            }
        };
        let timeout = match raw.timeout {
            None => DEFAULT_TIMEOUT,
            Some(t) => {
                parse_duration(&t).map_err(|e| ConfigError::Invalid(format!("`timeout`: {e}")))?
            }
        };
        if timeout.is_zero() {
            return Err(invalid("`timeout` must be greater than zero"));
        }
        for (key, codes) in [
            ("retry_codes", &raw.retry_codes),
            ("covered_codes", &raw.covered_codes),
        ] {
            if codes.contains(&0) {
                return Err(invalid(&format!(
                    "`{key}`: 0 is Lark's success, not an error code"
                )));
            }
        }
        if let Some(both) = raw
            .covered_codes
            .iter()
            .find(|c| raw.retry_codes.contains(c))
        {
            return Err(invalid(&format!(
                "code {both} is in both `retry_codes` and `covered_codes`: retried, or taken as \
                 nothing left to withdraw, not both"
            )));
        }
        Ok(Config {
            base_url,
            app_id: raw.app_id,
            app_secret: raw.app_secret,
            withdraw,
            min_points: raw.min_points.unwrap_or(0),
            min_cash,
            ledger,
            forward,
            timeout,
            retry_codes: raw.retry_codes,
            covered_codes: raw.covered_codes,
        })
    }
}

/// `message` without the secrets and URL passwords of `value` (the config as given): secrets
/// become `<redacted>`, URLs are shown as [`shown_url`] shows them.
fn scrub(mut message: String, value: &serde_json::Value) -> String {
    let text = |key: &str| match value.get(key) {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    };
    for key in ["app_secret", "forward_secret"] {
        if let Some(secret) = text(key).filter(|s| !s.is_empty()) {
            message = message.replace(&secret, "<redacted>");
        }
    }
    for key in ["forward_url", "base_url", "ledger"] {
        if let Some(url) = text(key).filter(|s| !s.is_empty()) {
            message = message.replace(&url, &shown_url(&url));
            // A message may quote the URL changed (trimmed, escaped): its user info alone too.
            let after = url.find("://").map_or(url.as_str(), |i| &url[i + 3..]);
            if let Some(at) = after.rfind('@').filter(|&at| at > 0) {
                message = message.replace(&after[..at], "***");
            }
        }
    }
    message
}

/// An `http://` or `https://` URL with a host that the HTTP client can send to: parsed by the
/// client's own parser (ureq's), so a port out of range, a space in the host, ... are refused
/// at start, not found at the first request (for `forward_url`: after the withdrawal).
fn check_http_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let fault = match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => {
            match ureq::get(url).request_url() {
                Ok(_) => return Ok(()),
                Err(e) => format!(" ({})", e.kind()),
            }
        }
        _ => String::new(),
    };
    Err(ConfigError::Invalid(format!(
        "`{key}` must be an http:// or https:// URL with a host, got {}{fault}",
        shown_url(url)
    )))
}

/// The API's paths are appended to `base_url` (`{base_url}/open-apis/...`): a query or a
/// fragment would swallow them (every call to `/`), and the API's own prefix would be doubled.
/// A path (a proxy's prefix) is kept.
fn check_base_url(base_url: &str) -> Result<(), ConfigError> {
    let why = if base_url.contains(['?', '#']) {
        "a query or a fragment (`?`, `#`) would swallow the API paths appended to it"
    } else if base_url.ends_with("/open-apis") {
        "ends with `/open-apis`, which the plugin appends itself: give the host only \
         (e.g. https://open.feishu.cn)"
    } else {
        return Ok(());
    };
    Err(ConfigError::Invalid(format!(
        "`base_url` {}: {why}",
        shown_url(base_url)
    )))
}

/// Durations are read the way the gateway reads its own (`"500ms"`, `"10s"`, `"2m"`, ...).
pub use gateway_plugin::config::parse_duration;

#[cfg(test)]
mod tests;
