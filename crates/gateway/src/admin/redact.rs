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

/// `text` with the secrets of every URL in it redacted: `scheme://user:password@host/...` →
/// `scheme://user:<redacted>@host/...`, a user alone (often a token: `https://TOKEN@host`) →
/// `scheme://<redacted>@host`, and the value of a query parameter with a secret-looking name
/// (`?password=...`, `access_token=...`: [`SECRET_KEYS`]) → `<redacted>`. A `user:password`
/// userinfo runs to the URL's last `@` (clients take a password with `/` or `?` in it: base64
/// has `/`), so the mask errs on the side of hiding more; a user alone ends at the first `/`.
fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let start = at + 3;
        let after = &rest[start..];
        let url_end = after.find(char::is_whitespace).unwrap_or(after.len());
        let url = &after[..url_end];
        out.push_str(&rest[..start]);
        // `user:password@`: up to the last `@` of the URL, when a `:` comes before it.
        let with_password = url.rfind('@').filter(|&sign| url[..sign].contains(':'));
        // A user alone: up to the last `@` before the first `/`.
        let user_only = || {
            let first_slash = url.find('/').unwrap_or(url.len());
            url[..first_slash].rfind('@').filter(|&sign| sign > 0)
        };
        let tail = match with_password {
            Some(sign) => {
                let user = url[..sign].split_once(':').map_or("", |(u, _)| u);
                out.push_str(user);
                out.push_str(":<redacted>");
                &url[sign..]
            }
            None => match user_only() {
                Some(sign) => {
                    out.push_str("<redacted>");
                    &url[sign..]
                }
                None => url,
            },
        };
        out.push_str(&redact_query(tail));
        rest = &after[url_end..];
    }
    out.push_str(rest);
    out
}

/// `rest` (a URL from its host on) with the values of secret-looking query parameters redacted.
fn redact_query(rest: &str) -> String {
    let Some(q) = rest.find('?') else {
        return rest.to_owned();
    };
    let (head, query) = rest.split_at(q + 1);
    let (query, fragment) = match query.find('#') {
        Some(h) => query.split_at(h),
        None => (query, ""),
    };
    let masked: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !v.is_empty() && secret_key(k) => format!("{k}=<redacted>"),
            _ => kv.to_owned(),
        })
        .collect();
    format!("{head}{}{fragment}", masked.join("&"))
}

fn secret_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    SECRET_KEYS.iter().any(|s| lower.contains(s)) || lower == "sig"
}

/// A plugin config with every value under a secret-looking key replaced by `"<redacted>"`, and
/// the password of any URL in any other string (at any depth) by `<redacted>`.
pub fn redact_config(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if secret_key(k) && !v.is_null() {
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

    #[test]
    fn event_bodies_lose_their_verification_token_and_nothing_else() {
        let body = r#"{"schema":"2.0","header":{"event_id":"e1","token":"v3r1fy","event_type":"x"},"event":{"n":1}}"#;
        let shown = redacted_body(body);
        assert!(!shown.contains("v3r1fy"), "{shown}");
        assert_eq!(shown, body.replace("v3r1fy", "<redacted>"));
        let plain = r#"{"schema":"2.0","header":{"event_id":"e1"},"event":{}}"#;
        assert_eq!(redacted_body(plain), plain);
    }

    /// A query right after the scheme's `//`, and the short `sig` name (matched whole, not as a
    /// part of a longer name).
    #[test]
    fn query_parameters_are_read_from_the_first_one() {
        let c = json!({
            "a": "https://h/send?sig=S1&x=1",
            "b": "x://?sig=S2",
            "c": "https://h/?signal=on&design=1",
        });
        assert_eq!(
            redact_config(&c),
            json!({
                "a": "https://h/send?sig=<redacted>&x=1",
                "b": "x://?sig=<redacted>",
                "c": "https://h/?signal=on&design=1",
            })
        );
    }

    /// A password the client reads past a `/` or `?` (base64, or `?password=` in the query, as
    /// PostgreSQL's client takes it) is redacted too; so are token-like query parameters.
    #[test]
    fn passwords_with_slashes_and_in_queries_are_redacted() {
        let c = json!({
            "ledger": "postgres://payout@db:5432/gw?sslmode=require&password=hunter2",
            "other": "postgres://payout:ab/cd+e=@db/gw",
            "q": "postgres://gw:a?b@db:5432/gw",
            "hook": "https://h/send?access_token=S3CRET#frag",
        });
        assert_eq!(
            redact_config(&c),
            json!({
                "ledger": "postgres://<redacted>@db:5432/gw?sslmode=require&password=<redacted>",
                "other": "postgres://payout:<redacted>@db/gw",
                "q": "postgres://gw:<redacted>@db:5432/gw",
                "hook": "https://h/send?access_token=<redacted>#frag",
            })
        );
    }
}
