//! The bootstrap exchange and the verdicts on failures (spec §11).
//!
//! `POST {domain}/callback/ws/endpoint` with `{"AppID","AppSecret"}` answers
//! `{"code":0,"data":{"URL":"wss://...","ClientConfig":{...}}}`. An HTTP status of 500 or more,
//! or 429, is retried whatever the body says (Lark, or a proxy in front of it, is overloaded or
//! failing: its JSON is no verdict on the app). Codes 1 (busy), 1000040343 (Lark internal error)
//! and 99991400 (Lark's rate limit) are worth retrying; any other non-zero code in a proper
//! answer is a problem of the app's credentials or console settings and is fatal. A body that
//! is not an endpoint answer is retried too. A refused WebSocket handshake carries a
//! `handshake-status` header: 514 with `handshake-autherrcode` 1000040350 (connection limit) and
//! 403 are fatal, anything else is retried.
//!
//! The connection URL holds credentials in its query (`access_key`, `ticket`): [`Endpoint`]'s
//! `Debug` and [`redact_url`] never show it.

use serde::Deserialize;

use crate::client_config::ClientConfigUpdate;

/// Appended to the configured domain.
pub const ENDPOINT_PATH: &str = "/callback/ws/endpoint";
/// Lark's bootstrap code for "system busy".
pub const CODE_BUSY: i64 = 1;
/// Lark's bootstrap code for an internal error.
pub const CODE_INTERNAL: i64 = 1_000_040_343;
/// Lark's Open Platform code for "request trigger frequency limit" (rate limited).
pub const CODE_RATE_LIMITED: i64 = 99_991_400;
/// The HTTP status of a rate-limited request.
pub const HTTP_TOO_MANY_REQUESTS: u16 = 429;
/// `handshake-status` of an authentication failure.
pub const HANDSHAKE_AUTH_FAILED: &str = "514";
/// `handshake-status` of a forbidden connection.
pub const HANDSHAKE_FORBIDDEN: &str = "403";
/// `handshake-autherrcode`: the app already holds the most connections Lark allows (50).
pub const AUTH_ERR_CONNECTION_LIMIT: &str = "1000040350";

/// The handshake refusal headers.
pub mod headers {
    pub const STATUS: &str = "handshake-status";
    pub const MSG: &str = "handshake-msg";
    pub const AUTH_ERR_CODE: &str = "handshake-autherrcode";
}

/// The bootstrap request body.
pub fn request_body(app_id: &str, app_secret: &str) -> Vec<u8> {
    serde_json::json!({ "AppID": app_id, "AppSecret": app_secret })
        .to_string()
        .into_bytes()
}

/// Where to connect, and the parameters to start with.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Holds credentials: never log it (use [`redact_url`]).
    pub url: String,
    /// The `service_id` of the URL's query, which every ping carries.
    pub service_id: i32,
    pub client_config: Option<ClientConfigUpdate>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &redact_url(&self.url))
            .field("service_id", &self.service_id)
            .field("client_config", &self.client_config)
            .finish()
    }
}

/// Why a bootstrap did not give an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootstrapError {
    /// Worth another try later (busy, internal error, rate limited).
    #[error("Lark's endpoint answered code {code} ({msg}); will retry")]
    Retry { code: i64, msg: String },
    /// The endpoint answered HTTP 5xx or 429: worth another try later, whatever the body.
    #[error("Lark's endpoint answered HTTP {status} ({detail}); will retry")]
    Unavailable { status: u16, detail: String },
    /// The app's settings are wrong; retrying cannot help.
    #[error(
        "Lark refused the long connection: code {code} ({msg}); check app_id and app_secret, \
         and that the app subscribes to events by long connection (Developer Console → Events & \
         Callbacks → subscription mode)"
    )]
    Fatal { code: i64, msg: String },
    /// The answer was not an endpoint answer.
    #[error("Lark's endpoint answered HTTP {status} with an unreadable body: {detail}")]
    Malformed { status: u16, detail: String },
}

impl BootstrapError {
    pub fn is_fatal(&self) -> bool {
        matches!(self, BootstrapError::Fatal { .. })
    }
}

#[derive(Deserialize)]
struct Answer {
    code: i64,
    #[serde(default)]
    msg: String,
    data: Option<AnswerData>,
}

#[derive(Deserialize)]
struct AnswerData {
    #[serde(rename = "URL")]
    url: Option<String>,
    #[serde(rename = "ClientConfig")]
    client_config: Option<ClientConfigUpdate>,
}

/// Classifies the endpoint's HTTP answer.
///
/// Only a proper answer (a status other than 5xx and 429) with a code other than 0 and the
/// retryable ones is [`BootstrapError::Fatal`].
pub fn parse_response(status: u16, body: &[u8]) -> Result<Endpoint, BootstrapError> {
    let parsed = serde_json::from_slice::<Answer>(body);
    if status >= 500 || status == HTTP_TOO_MANY_REQUESTS {
        let detail = match &parsed {
            Ok(a) => format!("code {}: {}", a.code, a.msg),
            Err(_) => "no endpoint answer".to_owned(),
        };
        return Err(BootstrapError::Unavailable { status, detail });
    }
    let answer = parsed.map_err(|e| BootstrapError::Malformed {
        status,
        detail: e.to_string(),
    })?;
    match answer.code {
        0 => {}
        CODE_BUSY | CODE_INTERNAL | CODE_RATE_LIMITED => {
            return Err(BootstrapError::Retry {
                code: answer.code,
                msg: answer.msg,
            })
        }
        code => {
            return Err(BootstrapError::Fatal {
                code,
                msg: answer.msg,
            })
        }
    }
    let malformed = |detail: &str| BootstrapError::Malformed {
        status,
        detail: detail.to_owned(),
    };
    let data = answer
        .data
        .ok_or_else(|| malformed("code 0 without data"))?;
    let url = data
        .url
        .ok_or_else(|| malformed("code 0 without data.URL"))?;
    if !(url.starts_with("wss://") || url.starts_with("ws://")) {
        return Err(malformed("data.URL is not a ws:// or wss:// URL"));
    }
    let service_id = query_param(&url, "service_id")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| malformed("data.URL has no numeric service_id"))?;
    Ok(Endpoint {
        url,
        service_id,
        client_config: data.client_config,
    })
}

/// What to do after a refused handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeVerdict {
    Retry(String),
    Fatal(String),
}

/// Classifies a refused handshake by its `handshake-status`, `handshake-autherrcode` and
/// `handshake-msg` headers and the HTTP status.
pub fn classify_handshake(
    http_status: u16,
    status: Option<&str>,
    auth_err_code: Option<&str>,
    msg: Option<&str>,
) -> HandshakeVerdict {
    let msg = msg.unwrap_or("");
    match (status.map(str::trim), auth_err_code.map(str::trim)) {
        (Some(HANDSHAKE_AUTH_FAILED), Some(AUTH_ERR_CONNECTION_LIMIT)) => {
            HandshakeVerdict::Fatal(format!(
                "Lark refused the connection: the app already holds the most long connections \
                 allowed (handshake 514, code 1000040350 {msg}); stop other gateways or SDK \
                 clients of this app"
            ))
        }
        (Some(HANDSHAKE_FORBIDDEN), _) => HandshakeVerdict::Fatal(format!(
            "Lark refused the connection: forbidden (handshake 403 {msg}); check the app's \
             permissions and that long-connection mode is enabled in the Developer Console"
        )),
        (Some(s), code) => HandshakeVerdict::Retry(format!(
            "handshake refused: status {s}, code {} {msg}",
            code.unwrap_or("-")
        )),
        (None, _) => HandshakeVerdict::Retry(format!("handshake refused: HTTP {http_status}")),
    }
}

/// The value of `name` in `url`'s query.
pub fn query_param<'u>(url: &'u str, name: &str) -> Option<&'u str> {
    let (_, query) = url.split_once('?')?;
    let query = query.split('#').next().unwrap_or("");
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `url` without its query and fragment (where the credentials are): safe to log.
pub fn redact_url(url: &str) -> String {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    let (base, rest) = url.split_at(end);
    if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "wss://msg-frontier.feishu.cn/ws/v2?fpid=493&aid=552564&device_id=7s&access_key=SECRET&service_id=33554678&ticket=T0P";

    fn answer(code: i64, url: &str) -> Vec<u8> {
        serde_json::json!({"code": code, "msg": "m", "data": {"URL": url, "ClientConfig":
            {"ReconnectCount": 3, "ReconnectInterval": 2, "ReconnectNonce": 1, "PingInterval": 4}}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn code_zero_gives_the_endpoint() {
        let e = parse_response(200, &answer(0, URL)).expect("endpoint");
        assert_eq!(e.service_id, 33_554_678);
        assert_eq!(e.client_config.and_then(|c| c.ping_interval), Some(4));
        let shown = format!("{e:?}");
        assert!(
            !shown.contains("SECRET") && !shown.contains("T0P"),
            "{shown}"
        );
    }

    #[test]
    fn codes_are_classified() {
        for code in [CODE_BUSY, CODE_INTERNAL] {
            let e = parse_response(200, &answer(code, URL)).expect_err("retry");
            assert!(!e.is_fatal(), "{code}");
        }
        for code in [1_000_040_344_i64, 10003, -1] {
            let e = parse_response(200, &answer(code, URL)).expect_err("fatal");
            assert!(e.is_fatal(), "{code}");
            assert!(e.to_string().contains(&code.to_string()));
        }
        let e = parse_response(502, b"<html>bad gateway</html>").expect_err("malformed");
        assert!(!e.is_fatal());
        assert!(parse_response(200, &answer(0, "https://x/?service_id=1")).is_err());
        assert!(parse_response(200, &answer(0, "wss://x/?service_id=abc")).is_err());
        assert!(parse_response(200, br#"{"code":0}"#).is_err());
    }

    /// A 5xx or a 429 is Lark (or a proxy in front of it) in trouble, whatever JSON it carries:
    /// once taken for a refusal of the app's settings (fatal: the app stopped until a reload).
    #[test]
    fn an_overloaded_or_failing_endpoint_is_retried_whatever_its_body() {
        for (status, body) in [
            (503, br#"{"code":503,"msg":"Service Unavailable"}"#.to_vec()),
            (502, br#"{"code":-1,"msg":"bad gateway"}"#.to_vec()),
            (500, answer(10003, URL)),
            (
                429,
                br#"{"code":99991400,"msg":"request trigger frequency limit"}"#.to_vec(),
            ),
            (429, b"slow down".to_vec()),
            (500, answer(0, URL)),
        ] {
            let e = parse_response(status, &body).expect_err("no endpoint from a 5xx or 429");
            assert!(!e.is_fatal(), "HTTP {status}: {e}");
            assert!(e.to_string().contains(&status.to_string()), "{e}");
        }
        // Lark's rate limit code is retried with any status.
        let limited = br#"{"code":99991400,"msg":"request trigger frequency limit"}"#;
        let e = parse_response(200, limited).expect_err("rate limited");
        assert!(!e.is_fatal(), "{e}");
        // A proper answer with another code stays fatal, 4xx included.
        for status in [200, 400, 401, 403] {
            let e = parse_response(status, &answer(10003, URL)).expect_err("refused");
            assert!(e.is_fatal(), "HTTP {status}: {e}");
        }
    }

    #[test]
    fn handshake_verdicts() {
        let v = |s, c| classify_handshake(400, s, c, None);
        assert!(matches!(
            v(Some("514"), Some("1000040350")),
            HandshakeVerdict::Fatal(_)
        ));
        assert!(matches!(v(Some("403"), None), HandshakeVerdict::Fatal(_)));
        assert!(matches!(
            v(Some("514"), Some("1")),
            HandshakeVerdict::Retry(_)
        ));
        assert!(matches!(v(Some("500"), None), HandshakeVerdict::Retry(_)));
        assert!(matches!(v(None, None), HandshakeVerdict::Retry(_)));
    }

    #[test]
    fn urls() {
        assert_eq!(query_param(URL, "service_id"), Some("33554678"));
        assert_eq!(query_param(URL, "nope"), None);
        assert_eq!(query_param("ws://h/p", "service_id"), None);
        assert_eq!(
            redact_url(URL),
            "wss://msg-frontier.feishu.cn/ws/v2?<redacted>"
        );
        assert_eq!(redact_url("ws://127.0.0.1:1/ws"), "ws://127.0.0.1:1/ws");
        let body = String::from_utf8(request_body("cli_a", "s3")).expect("utf8");
        assert_eq!(body, r#"{"AppID":"cli_a","AppSecret":"s3"}"#);
    }
}
