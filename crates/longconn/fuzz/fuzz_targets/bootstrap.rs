//! Fuzz target `bootstrap`: the endpoint's answer ([`parse_response`]), handshake refusals
//! ([`classify_handshake`]) and the URL helpers on arbitrary input.
//!
//! Input: the first two bytes are the HTTP status (little-endian; 200 for a shorter input), the
//! rest the answer's body. Checked:
//!
//! - nothing panics;
//! - an endpoint is only given for a status below 500 and not 429, with a `ws://` or `wss://`
//!   URL whose `service_id` query parameter is the endpoint's, and its `Debug` never shows
//!   the URL's query (credentials);
//! - a 5xx or 429 is never fatal; a fatal verdict names the code;
//! - the `ClientConfig` of the answer, applied to the defaults, keeps every interval within
//!   its cap;
//! - the body as text, split at newlines, as handshake headers: fatal exactly for 514 with
//!   code 1000040350, or 403;
//! - [`redact_url`] keeps the text before the first `?` or `#` and nothing after it.

#![no_main]

use lark_longconn::bootstrap::{
    classify_handshake, parse_response, query_param, redact_url, BootstrapError, HandshakeVerdict,
    AUTH_ERR_CONNECTION_LIMIT, HANDSHAKE_AUTH_FAILED, HANDSHAKE_FORBIDDEN,
};
use lark_longconn::client_config::{MAX_PING_INTERVAL, MAX_RECONNECT_WAIT};
use lark_longconn::ClientConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (status, body) = match data {
        [a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]), rest),
        _ => (200, data),
    };
    match parse_response(status, body) {
        Ok(endpoint) => {
            assert!(
                status < 500 && status != 429,
                "an endpoint from HTTP {status}"
            );
            assert!(endpoint.url.starts_with("wss://") || endpoint.url.starts_with("ws://"));
            let sid = query_param(&endpoint.url, "service_id").expect("has a service_id");
            assert_eq!(sid.parse::<i32>(), Ok(endpoint.service_id));
            let shown = format!("{endpoint:?}");
            // The URL holds `service_id=` in its query; `Debug` shows no `=` of a query.
            assert!(
                !shown.contains(endpoint.url.as_str()),
                "Debug shows the URL: {shown}"
            );
            assert!(shown.contains(&format!("{:?}", redact_url(&endpoint.url))));
            let mut cc = ClientConfig::default();
            if let Some(update) = &endpoint.client_config {
                cc.apply(update);
            }
            assert!(!cc.ping_interval.is_zero() && cc.ping_interval <= MAX_PING_INTERVAL);
            assert!(!cc.reconnect_interval.is_zero());
            assert!(cc.reconnect_interval <= MAX_RECONNECT_WAIT);
            assert!(cc.reconnect_nonce <= MAX_RECONNECT_WAIT);
        }
        Err(e) => {
            if status >= 500 || status == 429 {
                assert!(
                    matches!(e, BootstrapError::Unavailable { .. }),
                    "HTTP {status}: {e:?}"
                );
            }
            if let BootstrapError::Fatal { code, .. } = &e {
                assert!(e.to_string().contains(&code.to_string()));
            }
            assert!(!e.to_string().is_empty());
        }
    }

    let text = String::from_utf8_lossy(body);
    let mut parts = text.splitn(3, '\n');
    let (hs, code, msg) = (parts.next(), parts.next(), parts.next());
    let verdict = classify_handshake(status, hs, code, msg);
    let fatal = matches!(
        (hs.map(str::trim), code.map(str::trim)),
        (Some(HANDSHAKE_AUTH_FAILED), Some(AUTH_ERR_CONNECTION_LIMIT))
            | (Some(HANDSHAKE_FORBIDDEN), _)
    );
    assert_eq!(
        matches!(verdict, HandshakeVerdict::Fatal(_)),
        fatal,
        "{verdict:?}"
    );

    let redacted = redact_url(&text);
    let end = text.find(['?', '#']).unwrap_or(text.len());
    match redacted.strip_prefix(&text[..end]) {
        Some("") => assert_eq!(end, text.len()),
        Some("?<redacted>") => assert!(end < text.len()),
        other => panic!("redact_url({text:?}) = {redacted:?} ({other:?})"),
    }
    let _ = query_param(&text, "service_id");
});
