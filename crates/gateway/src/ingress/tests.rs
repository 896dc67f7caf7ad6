//! The ingress's pure steps, without a server: which client a request came from, the signature
//! headers, the clock-skew check at its boundary, verify/decrypt/classify (`open`), and the JSON
//! answers. The whole request path (statuses, metrics, logs) is tested end to end in
//! `tests/e2e/ingress.rs` and `tests/e2e/operator.rs`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::StatusCode;
use lark_core::crypto::{self, Cipher};

use super::{
    check_skew, client, json, open, signature_headers, Opened, Rejection, H_NONCE, H_SIGNATURE,
    H_TIMESTAMP,
};
use crate::config::WebhookApp;
use crate::store::sqlite::now_ms;

const KEY: &str = "unit-key";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn peer(s: &str) -> SocketAddr {
    SocketAddr::new(ip(s), 40_000)
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        h.insert(*name, HeaderValue::from_str(value).expect("header value"));
    }
    h
}

#[test]
fn the_client_is_the_peer_unless_the_peer_is_a_trusted_proxy() {
    let xff = headers(&[("x-forwarded-for", "203.0.113.9, 198.51.100.7 ")]);
    let proxy = [ip("10.0.0.1")];
    // An untrusted peer's X-Forwarded-For is ignored: anyone can write one.
    assert_eq!(client(peer("192.0.2.1"), &xff, &proxy), ip("192.0.2.1"));
    assert_eq!(client(peer("192.0.2.1"), &xff, &[]), ip("192.0.2.1"));
    // A trusted proxy's rightmost entry (the one it appended) is the client.
    assert_eq!(client(peer("10.0.0.1"), &xff, &proxy), ip("198.51.100.7"));
    // A trusted proxy without a usable header: the proxy itself.
    assert_eq!(
        client(peer("10.0.0.1"), &HeaderMap::new(), &proxy),
        ip("10.0.0.1")
    );
    let junk = headers(&[("x-forwarded-for", "not an address")]);
    assert_eq!(client(peer("10.0.0.1"), &junk, &proxy), ip("10.0.0.1"));
    // Behind a `[::]` listener an IPv4 proxy is `::ffff:10.0.0.1` (it was not recognised).
    assert_eq!(
        client(peer("::ffff:10.0.0.1"), &xff, &proxy),
        ip("198.51.100.7")
    );
    assert_eq!(
        client(peer("::ffff:192.0.2.1"), &xff, &proxy),
        ip("192.0.2.1")
    );
}

#[test]
fn signature_headers_need_all_three() {
    let all = headers(&[
        (H_TIMESTAMP, "1700000000"),
        (H_NONCE, "n-1"),
        (H_SIGNATURE, "ab"),
    ]);
    assert_eq!(signature_headers(&all), Some(("1700000000", "n-1", "ab")));
    for missing in [H_TIMESTAMP, H_NONCE, H_SIGNATURE] {
        let mut h = all.clone();
        h.remove(missing);
        assert_eq!(signature_headers(&h), None, "without {missing}");
    }
}

/// Runs `f` with the current Unix second, retrying until the second did not change during the
/// call, so a boundary case is never off by the clock ticking.
fn at_a_steady_second<T>(mut f: impl FnMut(i64) -> T) -> T {
    loop {
        let before = now_ms() / 1000;
        let out = f(before);
        if now_ms() / 1000 == before {
            return out;
        }
    }
}

#[test]
fn the_clock_skew_check_allows_exactly_the_configured_skew_either_way() {
    let skew = Duration::from_secs(300);
    let check = |ts: i64| check_skew(&ts.to_string(), skew);
    at_a_steady_second(|now| {
        assert_eq!(check(now), Ok(()));
        assert_eq!(check(now - 300), Ok(()), "300 s old, the limit");
        assert_eq!(check(now + 300), Ok(()), "300 s ahead, the limit");
        assert_eq!(check(now - 301), Err(Rejection::StaleTimestamp));
        assert_eq!(check(now + 301), Err(Rejection::StaleTimestamp));
        assert_eq!(check(now - 86_400), Err(Rejection::StaleTimestamp));
        assert_eq!(check(1), Err(Rejection::StaleTimestamp));
    });
    // Surrounding spaces are tolerated; anything else that is not a number is stale.
    at_a_steady_second(|now| assert_eq!(check_skew(&format!(" {now} "), skew), Ok(())));
    for bad in ["", "soon", "1.5e9", "0x10"] {
        assert_eq!(
            check_skew(bad, skew),
            Err(Rejection::StaleTimestamp),
            "{bad:?}"
        );
    }
}

fn encrypted_app(max_clock_skew: Option<Duration>) -> WebhookApp {
    WebhookApp {
        path: "/enc".into(),
        encrypt_key: Some(KEY.into()),
        cipher: Some(Cipher::new(KEY)),
        max_clock_skew,
    }
}

fn plain_app() -> WebhookApp {
    WebhookApp {
        path: "/plain".into(),
        encrypt_key: None,
        cipher: None,
        max_clock_skew: None,
    }
}

const EVENT: &str =
    r#"{"schema":"2.0","header":{"event_id":"ev-1","event_type":"t","token":"tok"},"event":{}}"#;
const CHALLENGE: &str = r#"{"challenge":"c-1","token":"tok","type":"url_verification"}"#;

/// `{"encrypt": ...}` for `plaintext` under `key`.
fn encrypt(key: &str, plaintext: &str) -> String {
    let encrypt = Cipher::new(key).encrypt(plaintext.as_bytes(), &[7; 16]);
    serde_json::json!({ "encrypt": encrypt }).to_string()
}

/// Signature headers for `body`, signed at `ts` with `key`.
fn signed(key: &str, ts: &str, body: &str) -> HeaderMap {
    let sig = crypto::sign(ts, "nonce-1", key, body.as_bytes());
    headers(&[(H_TIMESTAMP, ts), (H_NONCE, "nonce-1"), (H_SIGNATURE, &sig)])
}

fn now_s() -> String {
    (now_ms() / 1000).to_string()
}

/// What `open` made of a body: the event id, the challenge, or the rejection.
fn opened(app: &WebhookApp, headers: &HeaderMap, body: &str) -> Result<String, Rejection> {
    open(app, headers, body.as_bytes()).map(|o| match o {
        Opened::Event(e) => format!("event {}", e.id),
        Opened::Challenge { challenge, token } => {
            format!("challenge {challenge} {}", token.unwrap_or_default())
        }
    })
}

#[test]
fn an_encrypted_app_opens_signed_events_and_unsigned_challenges_only() {
    let app = encrypted_app(None);
    let body = encrypt(KEY, EVENT);
    assert_eq!(
        opened(&app, &signed(KEY, &now_s(), &body), &body),
        Ok("event ev-1".into())
    );
    // Without a max_clock_skew, any timestamp goes (the signature still covers it).
    assert_eq!(
        opened(&app, &signed(KEY, "1", &body), &body),
        Ok("event ev-1".into())
    );
    assert_eq!(
        opened(&app, &HeaderMap::new(), &body),
        Err(Rejection::MissingSignature)
    );
    assert_eq!(
        opened(&app, &signed("other-key", &now_s(), &body), &body),
        Err(Rejection::BadSignature)
    );
    // The challenge may come unsigned (spec §3), or signed.
    let challenge = encrypt(KEY, CHALLENGE);
    assert_eq!(
        opened(&app, &HeaderMap::new(), &challenge),
        Ok("challenge c-1 tok".into())
    );
    assert_eq!(
        opened(&app, &signed(KEY, &now_s(), &challenge), &challenge),
        Ok("challenge c-1 tok".into())
    );
    // Unsigned, a body far larger than a challenge is refused before it is decrypted (signed,
    // the same body is opened).
    let long = CHALLENGE.replace("c-1", &"c".repeat(4000));
    let long = encrypt(KEY, &long);
    assert_eq!(
        opened(&app, &HeaderMap::new(), &long),
        Err(Rejection::MissingSignature)
    );
    assert!(opened(&app, &signed(KEY, &now_s(), &long), &long).is_ok());
    // Encrypted twice: refused, signed or not.
    let twice = encrypt(KEY, &encrypt(KEY, EVENT));
    assert_eq!(
        opened(&app, &signed(KEY, &now_s(), &twice), &twice),
        Err(Rejection::Malformed(
            "decrypted body is encrypted again".into()
        ))
    );
    assert_eq!(
        opened(&app, &HeaderMap::new(), &twice),
        Err(Rejection::MissingSignature)
    );
    // Encrypted with another key: the signature passes, decryption does not.
    let foreign = encrypt("other-key", EVENT);
    assert!(matches!(
        opened(&app, &signed(KEY, &now_s(), &foreign), &foreign),
        Err(Rejection::Decrypt(_) | Rejection::Malformed(_))
    ));
    assert_eq!(
        opened(&app, &signed(KEY, &now_s(), EVENT), EVENT),
        Err(Rejection::PlainForEncryptedApp)
    );
    assert!(matches!(
        opened(&app, &HeaderMap::new(), "{not json"),
        Err(Rejection::Malformed(_))
    ));
}

#[test]
fn an_unsigned_body_that_is_no_challenge_gets_one_answer_whatever_its_decryption_did() {
    // Bad padding, bad text, bad JSON, an event: all "missing signature", so an unsigned
    // sender learns nothing about what the key made of its ciphertext.
    let app = encrypted_app(None);
    let foreign = encrypt("other-key", EVENT); // almost surely bad padding under KEY
    let not_json = encrypt(KEY, "plain words, not JSON");
    let event = encrypt(KEY, EVENT);
    let not_base64 = r#"{"encrypt":"%%%"}"#.to_owned();
    let short = r#"{"encrypt":"AAAA"}"#.to_owned();
    for body in [&foreign, &not_json, &event, &not_base64, &short] {
        assert_eq!(
            opened(&app, &HeaderMap::new(), body),
            Err(Rejection::MissingSignature),
            "{body}"
        );
    }
    // Signed with the key, the detail stays (only the key's holder gets it).
    assert!(matches!(
        opened(&app, &signed(KEY, &now_s(), &not_json), &not_json),
        Err(Rejection::Malformed(_))
    ));
}

#[test]
fn a_max_clock_skew_refuses_stale_signed_requests() {
    let app = encrypted_app(Some(Duration::from_secs(300)));
    let body = encrypt(KEY, EVENT);
    assert_eq!(
        opened(&app, &signed(KEY, &now_s(), &body), &body),
        Ok("event ev-1".into())
    );
    let old = (now_ms() / 1000 - 3600).to_string();
    assert_eq!(
        opened(&app, &signed(KEY, &old, &body), &body),
        Err(Rejection::StaleTimestamp)
    );
    // A stale request with a wrong signature is refused for the signature first.
    assert_eq!(
        opened(&app, &signed("other-key", &old, &body), &body),
        Err(Rejection::BadSignature)
    );
}

#[test]
fn a_plain_app_opens_plain_bodies_and_refuses_encrypted_ones() {
    let app = plain_app();
    assert_eq!(
        opened(&app, &HeaderMap::new(), EVENT),
        Ok("event ev-1".into())
    );
    assert_eq!(
        opened(&app, &HeaderMap::new(), CHALLENGE),
        Ok("challenge c-1 tok".into())
    );
    let body = encrypt(KEY, EVENT);
    assert_eq!(
        opened(&app, &signed(KEY, &now_s(), &body), &body),
        Err(Rejection::EncryptedForPlainApp)
    );
}

async fn body_text(res: hyper::Response<super::Body>) -> String {
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8(bytes.to_vec()).expect("utf-8")
}

#[tokio::test]
async fn answers_are_json_with_the_status_and_a_msg() {
    let res = json(StatusCode::OK, serde_json::json!({ "challenge": "c-1" }));
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers().get(CONTENT_TYPE).map(HeaderValue::as_bytes),
        Some(&b"application/json; charset=utf-8"[..])
    );
    assert_eq!(
        res.headers()
            .get("x-content-type-options")
            .map(HeaderValue::as_bytes),
        Some(&b"nosniff"[..])
    );
    assert_eq!(body_text(res).await, r#"{"challenge":"c-1"}"#);

    let res = Rejection::BadToken.into_response();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.headers().get(CONTENT_TYPE).map(HeaderValue::as_bytes),
        Some(&b"application/json; charset=utf-8"[..])
    );
    assert_eq!(
        body_text(res).await,
        r#"{"msg":"verification token does not match"}"#
    );
    let res = Rejection::TooLarge { limit: 10 }.into_response();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        body_text(res).await,
        r#"{"msg":"body is larger than 10 bytes"}"#
    );
}
