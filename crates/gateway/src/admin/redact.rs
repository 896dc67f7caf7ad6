//! What the admin API and the console never show: an event body's verification token
//! ([`redacted_body`]), and a plugin config's secrets ([`redact_config`]: values under
//! secret-looking keys, and the password of any URL anywhere in it).

use serde_json::Value;

/// The verification token is redacted from an event body wherever it leaves the store.
pub fn redacted_body(body: &str) -> String {
    lark_core::redact::redact_token(body).unwrap_or_else(|| body.to_owned())
}

/// Key fragments whose values are secrets in a plugin's config.
const SECRET_KEYS: [&str; 11] = [
    "token",
    "secret",
    "key",
    "password",
    "passwd",
    "credential",
    "auth",
    "signature",
    "webhook",
    "url",
    "dsn",
];

/// `text` with the password of every URL in it redacted: `scheme://user:password@host/...` →
/// `scheme://user:<redacted>@host/...`, and a user alone (often a token:
/// `https://TOKEN@host`) → `scheme://<redacted>@host`. The userinfo is what precedes the last
/// `@` before the URL's first `/` (or whitespace).
fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let start = at + 3;
        let after = &rest[start..];
        let end = after
            .find(|c: char| c == '/' || c.is_whitespace())
            .unwrap_or(after.len());
        let authority = &after[..end];
        out.push_str(&rest[..start]);
        match authority.rfind('@') {
            Some(sign) if sign > 0 => {
                match authority[..sign].split_once(':') {
                    Some((user, _)) => {
                        out.push_str(user);
                        out.push_str(":<redacted>");
                    }
                    None => out.push_str("<redacted>"),
                }
                out.push_str(&authority[sign..]);
            }
            _ => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// A plugin config with every value under a secret-looking key replaced by `"<redacted>"`, and
/// the password of any URL in any other string (at any depth) by `<redacted>`.
pub fn redact_config(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let lower = k.to_ascii_lowercase();
                    let secret = SECRET_KEYS.iter().any(|s| lower.contains(s));
                    let v = if secret && !v.is_null() {
                        Value::String("<redacted>".into())
                    } else {
                        redact_config(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact_config).collect()),
        Value::String(text) => Value::String(redact_userinfo(text)),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plugin_configs_lose_their_secrets() {
        let c = json!({"path": "data/x.jsonl", "bot_url": "https://x/hook/abc", "nested": {"app_secret": "s", "n": 1}, "list": [{"token": "t"}]});
        assert_eq!(
            redact_config(&c),
            json!({"path": "data/x.jsonl", "bot_url": "<redacted>", "nested": {"app_secret": "<redacted>", "n": 1}, "list": [{"token": "<redacted>"}]})
        );
    }

    #[test]
    fn passwords_in_urls_are_redacted_under_any_key_at_any_depth() {
        let c = json!({
            "ledger": "postgres://payout:hunter2-pw@db.internal:5432/payout?sslmode=require",
            "path": "data/x.jsonl",
            "n": 3,
            "forward": {"targets": [
                "https://ops:p%40ss@pay.example/hook",
                "https://pay.example/no-userinfo?a=b@c",
                {"mirror": "mysql://root:r00t@10.0.0.2/db and amqp://guest:guest-pw@mq:5672/"},
            ]},
            "clone": "https://ghp_tokenvalue@github.com/org/repo.git",
            "odd": "a://u:p@w@host/x",
            "empty": "scheme://@host",
        });
        assert_eq!(
            redact_config(&c),
            json!({
                "ledger": "postgres://payout:<redacted>@db.internal:5432/payout?sslmode=require",
                "path": "data/x.jsonl",
                "n": 3,
                "forward": {"targets": [
                    "https://ops:<redacted>@pay.example/hook",
                    "https://pay.example/no-userinfo?a=b@c",
                    {"mirror": "mysql://root:<redacted>@10.0.0.2/db and amqp://guest:<redacted>@mq:5672/"},
                ]},
                "clone": "https://<redacted>@github.com/org/repo.git",
                "odd": "a://u:<redacted>@host/x",
                "empty": "scheme://@host",
            })
        );
        let text = redact_config(&c).to_string();
        for secret in ["hunter2", "p%40ss", "r00t", "guest-pw", "ghp_tokenvalue"] {
            assert!(!text.contains(secret), "{secret}: {text}");
        }
    }
}
