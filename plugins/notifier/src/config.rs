//! The plugin's configuration in two phases: [`RawConfig`] is exactly what the operator wrote
//! (serde, unknown keys refused) and [`Config`] is the validated, ready-to-use form (durations
//! parsed, template compiled, secrets decoded). Error messages name the key at fault but never echo
//! the webhook URL or the secret.

use std::time::Duration;

use gateway_plugin::config::parse_duration;

use serde::Deserialize;

use crate::redact::{redact_url, Scrubber};
use crate::sign::{webhook_key, SecretError};
use crate::template::{Template, TemplateError, UtcOffset};

/// Default `timeout` of one HTTP call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `max_wait` for a rate-limit slot. With the default timeout the worst case stays under
/// the gateway's default 30 s call timeout.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(10);
/// Lark's documented custom-bot limits (spec §10).
pub const DEFAULT_RATE_PER_SECOND: u32 = 5;
pub const DEFAULT_RATE_PER_MINUTE: u32 = 100;

/// The `config` table as written in `gateway.toml`. No `Debug`: it holds the URL and the secret.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub target: TargetKind,
    pub url: String,
    pub secret: Option<String>,
    pub format: Option<Format>,
    pub template: Option<String>,
    pub title: Option<String>,
    pub timeout: Option<String>,
    pub utc_offset: Option<String>,
    pub rate_per_second: Option<u32>,
    pub rate_per_minute: Option<u32>,
    pub max_wait: Option<String>,
}

/// Where messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// A Feishu/Lark custom group bot webhook (spec §10).
    LarkBot,
    /// Any HTTP endpoint: a JSON object per delivery, optionally Standard-Webhooks signed.
    Http,
}

/// How a bot message is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// `{"msg_type":"text",...}`
    #[default]
    Text,
    /// `{"msg_type":"interactive","card":{...}}`
    Card,
}

/// The signing secret, in the form its target needs.
#[derive(Clone)]
pub enum Signing {
    None,
    /// The bot secret, used as text in the HMAC key.
    LarkBot(String),
    /// The decoded Standard Webhooks key bytes.
    Webhook(Vec<u8>),
}

impl std::fmt::Debug for Signing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Signing::None => "None",
            Signing::LarkBot(_) => "LarkBot(<redacted>)",
            Signing::Webhook(_) => "Webhook(<redacted>)",
        })
    }
}

/// The validated configuration. Its `Debug` shows the redacted URL only.
pub struct Config {
    pub target: TargetKind,
    /// The real URL: only ever handed to the HTTP client.
    pub url: String,
    /// `scheme://host/…/<redacted>`: the only form of the URL that may be shown.
    pub url_shown: String,
    pub signing: Signing,
    pub format: Format,
    /// `None`: the per-event-type default template.
    pub template: Option<Template>,
    /// Card header; `None`: the per-event-type default.
    pub title: Option<Template>,
    pub timeout: Duration,
    pub utc_offset: UtcOffset,
    pub rate_per_second: u32,
    pub rate_per_minute: u32,
    pub max_wait: Duration,
    /// Removes the URL, its token and the secret from any text shown to the outside.
    pub scrubber: Scrubber,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("target", &self.target)
            .field("url", &self.url_shown)
            .field("signing", &self.signing)
            .field("format", &self.format)
            .field("timeout", &self.timeout)
            .field("utc_offset", &self.utc_offset)
            .field("rate_per_second", &self.rate_per_second)
            .field("rate_per_minute", &self.rate_per_minute)
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

/// Why a configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Shape(String),
    #[error(
        "`url` must be an http:// or https:// URL with a host (value not shown: it is secret)"
    )]
    Url,
    #[error("`{key}` = {value:?}: {reason}")]
    Value {
        key: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("`{key}` is only valid with target = \"lark_bot\"")]
    BotOnly { key: &'static str },
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("`{key}`: {source}")]
    Template {
        key: &'static str,
        source: TemplateError,
    },
}

impl Config {
    /// Phase one and two together: parses the JSON the host passes to `new` and validates it.
    pub fn from_json(value: serde_json::Value) -> Result<Config, ConfigError> {
        // Learn the secrets first so that even a serde message cannot leak them (a secret of
        // the wrong type too: serde's message quotes a number or a boolean it refuses).
        let text = |key: &str| {
            value.get(key).and_then(|v| match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Null => None,
                other => Some(other.to_string()),
            })
        };
        let (url, secret) = (text("url"), text("secret"));
        let pre = Scrubber::new(url.as_deref(), secret.as_deref());
        let raw: RawConfig = serde_json::from_value(value)
            .map_err(|e| ConfigError::Shape(pre.scrub(&e.to_string())))?;
        Config::validate(raw)
    }

    fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
        let url_shown = redact_url(&raw.url).ok_or(ConfigError::Url)?;
        // Parsed as the HTTP client will (a port out of range, a bad host): refused here rather
        // than at every delivery as a dead letter.
        ureq::post(&raw.url)
            .request_url()
            .map_err(|_| ConfigError::Url)?;
        let scrubber = Scrubber::new(Some(&raw.url), raw.secret.as_deref());
        let signing = match (&raw.secret, raw.target) {
            (None, _) => Signing::None,
            (Some(s), TargetKind::LarkBot) if s.is_empty() => {
                return Err(ConfigError::Secret(SecretError::Empty))
            }
            (Some(s), TargetKind::LarkBot) => Signing::LarkBot(s.clone()),
            (Some(s), TargetKind::Http) => Signing::Webhook(webhook_key(s)?),
        };
        if raw.target == TargetKind::Http {
            if raw.format.is_some() {
                return Err(ConfigError::BotOnly { key: "format" });
            }
            if raw.title.is_some() {
                return Err(ConfigError::BotOnly { key: "title" });
            }
        }
        let format = raw.format.unwrap_or_default();
        if raw.title.is_some() && format != Format::Card {
            return Err(ConfigError::Value {
                key: "title",
                value: raw.title.unwrap_or_default(),
                reason: "a title is only shown with format = \"card\"",
            });
        }
        let compile = |key: &'static str, text: Option<String>| match text {
            Some(t) if t.trim().is_empty() => Err(ConfigError::Value {
                key,
                value: t,
                reason: "it would send empty messages (leave it out for the default)",
            }),
            text => text
                .map(|t| Template::parse(&t))
                .transpose()
                .map_err(|source| ConfigError::Template { key, source }),
        };
        let template = compile("template", raw.template)?;
        let title = compile("title", raw.title)?;
        let utc_offset = match raw.utc_offset {
            None => UtcOffset::UTC,
            Some(text) => UtcOffset::parse(&text).ok_or(ConfigError::Value {
                key: "utc_offset",
                value: text,
                reason: "expected \"Z\", \"UTC\" or ±HH:MM such as \"+08:00\"",
            })?,
        };
        let timeout = duration("timeout", raw.timeout, DEFAULT_TIMEOUT)?;
        if timeout.is_zero() {
            return Err(ConfigError::Value {
                key: "timeout",
                value: "0".into(),
                reason: "must be greater than zero",
            });
        }
        let max_wait = duration("max_wait", raw.max_wait, DEFAULT_MAX_WAIT)?;
        Ok(Config {
            target: raw.target,
            url: raw.url,
            url_shown,
            signing,
            format,
            template,
            title,
            timeout,
            utc_offset,
            rate_per_second: raw.rate_per_second.unwrap_or(DEFAULT_RATE_PER_SECOND),
            rate_per_minute: raw.rate_per_minute.unwrap_or(DEFAULT_RATE_PER_MINUTE),
            max_wait,
            scrubber,
        })
    }
}

fn duration(
    key: &'static str,
    text: Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match text {
        None => Ok(default),
        Some(text) => parse_duration(&text).map_err(|_| ConfigError::Value {
            key,
            value: text,
            reason: "expected a duration such as \"500ms\", \"10s\", \"2m\" or \"1h\"",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults() {
        let c = Config::from_json(json!({"target": "lark_bot", "url": "https://h/x/tok"}))
            .expect("valid");
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.max_wait, DEFAULT_MAX_WAIT);
        assert_eq!((c.rate_per_second, c.rate_per_minute), (5, 100));
        assert_eq!(c.format, Format::Text);
        assert_eq!(c.url_shown, "https://h/…/<redacted>");
    }

    /// `{:?}` of a config (what a plugin author's debug line would print) shows the redacted
    /// URL and the kind of signing, never the hook token or the secret.
    #[test]
    fn debug_output_never_shows_secrets() {
        let url = "https://open.feishu.cn/open-apis/bot/v2/hook/HOOKTOKEN";
        for (config, signing) in [
            (
                json!({"target": "lark_bot", "url": url, "secret": "BOTSECRET"}),
                "LarkBot(<redacted>)",
            ),
            (
                json!({"target": "http", "url": url, "secret": "whsec_U0VDUkVUU0VDUkVU"}),
                "Webhook(<redacted>)",
            ),
            (json!({"target": "lark_bot", "url": url}), "None"),
        ] {
            let c = Config::from_json(config).expect("valid");
            let shown = format!("{c:?}");
            assert!(
                shown.contains("https://open.feishu.cn/…/<redacted>")
                    && shown.contains(&format!("signing: {signing}")),
                "{shown}"
            );
            for secret in ["HOOKTOKEN", "BOTSECRET", "U0VDUkVU"] {
                assert!(!shown.contains(secret), "{shown}");
            }
        }
    }

    #[test]
    fn a_url_the_http_client_cannot_use_is_refused() {
        for url in [
            "http://127.0.0.1:99999/hooks/TOKEN-abcdef",
            "http://exa mple.com/hooks/TOKEN-abcdef",
        ] {
            match Config::from_json(json!({"target": "http", "url": url})) {
                Err(ConfigError::Url) => {}
                other => panic!("{url}: {:?}", other.map(|c| c.url_shown)),
            }
        }
    }

    #[test]
    fn refusals_never_echo_secrets() {
        let url = "https://open.feishu.cn/open-apis/bot/v2/hook/HOOKTOKEN";
        for bad in [
            json!({"target": "lark_bot", "url": url, "colour": 1}),
            json!({"target": "pager", "url": url}),
            json!({"target": "lark_bot", "url": "ftp://x/HOOKTOKEN"}),
            json!({"target": "lark_bot", "url": url, "secret": ""}),
            json!({"target": "http", "url": url, "secret": "whsec_!!SECRET"}),
            json!({"target": "http", "url": url, "format": "card"}),
            json!({"target": "lark_bot", "url": url, "title": "x"}),
            json!({"target": "lark_bot", "url": url, "template": "{nope}"}),
            json!({"target": "lark_bot", "url": url, "template": " "}),
            json!({"target": "lark_bot", "url": url, "format": "card", "title": ""}),
            json!({"target": "lark_bot", "url": url, "template": "{account_id"}),
            json!({"target": "lark_bot", "url": url, "timeout": "ten"}),
            json!({"target": "lark_bot", "url": url, "timeout": "0s"}),
            json!({"target": "lark_bot", "url": url, "utc_offset": "+25:00"}),
            json!({"target": "lark_bot", "url": url, "rate_per_second": -1}),
            json!({"target": "lark_bot", "url": url, "secret": 12345}),
            json!({"target": "lark_bot"}),
        ] {
            let err = Config::from_json(bad.clone()).expect_err(&bad.to_string());
            let text = err.to_string();
            assert!(!text.contains("HOOKTOKEN"), "{text}");
            assert!(!text.contains("SECRET"), "{text}");
            assert!(!text.contains("12345"), "{text}");
        }
    }
}
