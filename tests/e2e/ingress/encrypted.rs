//! The encrypted app: signed events accepted, everything else refused with spec §6's status and
//! message, no secret in the log; and Lark's own fixture delivery accepted byte for byte. Part of
//! `ingress.rs`.

use std::io::{Read, Write};
use std::time::Duration;

use gateway_e2e::harness::{self, post, read_jsonl, wait_until, Lark};

use super::helpers::{audit_ids, start, KEY, TOKEN};

/// Request headers as (name, value) pairs.
type Headers = Vec<(String, String)>;

/// Writes a raw request and reads the answer until the server closes or 2 s pass.
fn raw_http(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let _ = s.write_all(request.as_bytes());
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"}") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn encrypted_app_accepts_signed_events_and_refuses_everything_else() {
    let (_dir, gw) = start();
    let url = gw.url("/enc");
    let lark = Lark::encrypted(TOKEN, KEY);

    // Challenge: encrypted, unsigned (spec §3, §5).
    let challenge =
        format!(r#"{{"challenge":"c-123","token":"{TOKEN}","type":"url_verification"}}"#);
    let (body, _) = lark.wrap(&challenge);
    let a = post(&url, &[], &body).expect("post");
    assert_eq!(
        (a.status, a.body.as_str()),
        (200, r#"{"challenge":"c-123"}"#)
    );
    // Unsigned, it can be sent again by anyone who saw it: each is answered, but the log
    // line is limited like the other per-request lines (one per request before).
    for _ in 0..100 {
        assert_eq!(post(&url, &[], &body).expect("post").status, 200);
    }
    let lines = gw
        .log()
        .matches("url_verification challenge answered")
        .count();
    assert!(lines <= 30, "{lines} lines for 101 challenges");

    // A challenge with the wrong token.
    let bad = challenge.replace(TOKEN, "nope");
    let a = post(&url, &[], &lark.wrap(&bad).0).expect("post");
    assert_eq!(a.status, 401, "{}", a.body);

    // A signed, encrypted assets_update reaches the logger; its duplicate does not.
    let event = lark.assets_update(
        "ev-1",
        "acc-1",
        100,
        r#"[{"currency_type":"CNY","amount":100.25}]"#,
        1,
    );
    let a = lark.send(&url, &event);
    assert_eq!((a.status, a.body.as_str()), (200, r#"{"msg":"success"}"#));
    let a = lark.send(&url, &event);
    assert_eq!(
        (a.status, a.body.as_str()),
        (200, r#"{"msg":"success"}"#),
        "duplicate is 200"
    );

    let (good_body, good_headers) = lark.wrap(&lark.assets_update("ev-2", "acc-1", 1, "[]", 2));
    let with = |f: &dyn Fn(&mut Headers)| {
        let mut h = good_headers.clone();
        f(&mut h);
        h
    };
    let set = |h: &mut Vec<(String, String)>, k: &str, v: &str| {
        for (name, value) in h.iter_mut() {
            if name == k {
                *value = v.to_owned();
            }
        }
    };
    let flip_sig = with(&|h| {
        let sig = h
            .iter()
            .find(|(k, _)| k == "X-Lark-Signature")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let flipped = format!(
            "{}{}",
            &sig[..63],
            if sig.ends_with('0') { '1' } else { '0' }
        );
        set(h, "X-Lark-Signature", &flipped);
    });
    let unsigned = vec![("Content-Type".to_owned(), "application/json".to_owned())];
    let other_nonce = with(&|h| set(h, "X-Lark-Request-Nonce", "other"));

    // Tampered ciphertext, correctly re-signed: signature passes, decryption fails → 400.
    let tampered = {
        let v: serde_json::Value = serde_json::from_str(&good_body).expect("json");
        let enc = v["encrypt"].as_str().expect("encrypt").to_owned();
        let mut bytes = enc.into_bytes();
        let i = bytes.len() - 6;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        serde_json::json!({"encrypt": String::from_utf8(bytes).expect("ascii")}).to_string()
    };
    let sign = |body: &str| {
        let mut h = good_headers.clone();
        let ts = h
            .iter()
            .find(|(k, _)| k == "X-Lark-Request-Timestamp")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let nonce = h
            .iter()
            .find(|(k, _)| k == "X-Lark-Request-Nonce")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let sig = lark_core::crypto::sign(&ts, &nonce, KEY, body.as_bytes());
        set(&mut h, "X-Lark-Signature", &sig);
        h
    };
    let wrong_token =
        lark.wrap(&Lark::encrypted("other-token", KEY).assets_update("ev-3", "a", 1, "[]", 1));
    let wrong_types = lark
        .wrap(r#"{"schema":"2.0","header":{"event_id":5,"event_type":"t","token":"enc-token"}}"#);
    let missing_header = lark.wrap(r#"{"schema":"2.0"}"#);
    let not_json = lark.wrap("this is not json");
    let plain_event = lark.assets_update("ev-4", "a", 1, "[]", 1);

    let cases: Vec<(&str, Headers, String, u16, &str)> = vec![
        (
            "bad signature",
            flip_sig,
            good_body.clone(),
            401,
            "signature does not match",
        ),
        (
            "signature of another nonce",
            other_nonce,
            good_body.clone(),
            401,
            "signature does not match",
        ),
        (
            "missing signature",
            unsigned.clone(),
            good_body.clone(),
            401,
            "missing X-Lark-Request-Timestamp",
        ),
        (
            "tampered ciphertext",
            sign(&tampered),
            tampered.clone(),
            400,
            "cannot decrypt body",
        ),
        (
            "wrong token",
            wrong_token.1,
            wrong_token.0,
            401,
            "verification token does not match",
        ),
        (
            "wrong types",
            wrong_types.1,
            wrong_types.0,
            400,
            "`header.event_id` must be a string",
        ),
        (
            "missing header",
            missing_header.1,
            missing_header.0,
            400,
            "missing field `header`",
        ),
        (
            "decrypted garbage",
            not_json.1,
            not_json.0,
            400,
            "decrypted body: body is not valid JSON",
        ),
        (
            "garbage body",
            sign("{not json"),
            "{not json".into(),
            400,
            "body is not valid JSON",
        ),
        (
            "plain body to encrypted app",
            unsigned.clone(),
            plain_event.clone(),
            400,
            "body must be encrypted",
        ),
        (
            "empty body",
            unsigned.clone(),
            String::new(),
            400,
            "body is not valid JSON",
        ),
    ];
    for (name, headers, body, status, msg) in cases {
        let a = post(&url, &headers, &body).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(a.status, status, "{name}: {}", a.body);
        assert!(
            a.msg().contains(msg),
            "{name}: {:?} does not contain {msg:?}",
            a.body
        );
    }

    // Oversized: refused from Content-Length before any body byte is read, and a chunked body
    // (no length) is cut off while reading. Raw sockets, so the client never writes a body the
    // server will not read.
    let head = raw_http(
        gw.addr,
        "POST /enc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("body is larger than 65536 bytes"), "{head}");
    let chunk = "A".repeat(70_000);
    let chunked = raw_http(
        gw.addr,
        &format!(
            "POST /enc HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
            chunk.len()
        ),
    );
    assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");
    // The limit itself is allowed: a body of exactly 65536 bytes is read (and is no envelope).
    let at_limit = raw_http(
        gw.addr,
        &format!(
            "POST /enc HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\n\r\n{}",
            "A".repeat(65_536)
        ),
    );
    assert!(at_limit.starts_with("HTTP/1.1 400"), "{at_limit}");

    // A body that never finishes arriving is cut off (408) instead of holding the connection.
    let slow = raw_http(
        gw.addr,
        "POST /enc HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"encrypt\"",
    );
    assert!(slow.starts_with("HTTP/1.1 408"), "{slow}");

    let a = harness::request("GET", &url, &[], "").expect("get");
    assert_eq!(a.status, 405);
    let a = post(&gw.url("/nowhere"), &[], "{}").expect("post");
    assert_eq!(a.status, 404);

    // Every refusal is counted under its own status (no app for an unknown path).
    let metrics = harness::get(&gw.admin_url("/metrics"))
        .expect("metrics")
        .body;
    for (series, count) in [
        (r#"app="enc",status="413",reason="too_large""#, 2.0),
        (r#"app="enc",status="408",reason="body_timeout""#, 1.0),
        (r#"app="enc",status="405",reason="method_not_allowed""#, 1.0),
        (r#"app="-",status="404",reason="not_found""#, 1.0),
        (r#"app="enc",status="401",reason="bad_signature""#, 2.0),
    ] {
        let series = format!("gateway_requests_total{{{series}}}");
        assert_eq!(harness::metric(&metrics, &series), count, "{series}");
    }

    assert!(
        wait_until(Duration::from_secs(10), || audit_ids(&gw) == ["ev-1"]),
        "audit: {:?}",
        audit_ids(&gw)
    );
    // Exactly once, even after a moment.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(audit_ids(&gw), ["ev-1"]);
    let line = &read_jsonl(&gw.dir.join("data/audit.jsonl"))[0];
    assert_eq!(
        line["event"]["event"]["assets"]["confirmed_bonus"]["cash_bonus"][0]["amount"].to_string(),
        "100.25"
    );
    assert_eq!(line["app"], "enc");
    assert_eq!(line["attempt"], 1);

    // Never a secret in the logs.
    let log = gw.log();
    assert!(
        !log.contains(KEY) && !log.contains(TOKEN),
        "secret in log:\n{log}"
    );
    assert!(!log.contains("acc-1"), "decrypted body in log:\n{log}");
}

#[test]
fn the_fixture_delivery_is_accepted_byte_for_byte() {
    let (_dir, gw) = start();
    let fx: serde_json::Value =
        serde_json::from_str(include_str!("../../../fixtures/encrypted_event.json"))
            .expect("fixture");
    let headers: Vec<(String, String)> = fx["headers"]
        .as_object()
        .expect("headers")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect();
    let body = fx["body"].as_str().expect("body");
    let a = post(&gw.url("/fixture"), &headers, body).expect("post");
    assert_eq!((a.status, a.body.as_str()), (200, r#"{"msg":"success"}"#));
    assert!(wait_until(Duration::from_secs(10), || audit_ids(&gw)
        == ["5e3702a84e847582be8db7fb73283c02"]));
    // The logger holds the decrypted envelope exactly as Lark sent it, but for the verification
    // token, which it redacts (the store keeps the envelope byte for byte).
    let text = std::fs::read_to_string(gw.dir.join("data/audit.jsonl")).expect("audit");
    let plaintext = fx["plaintext"].as_str().expect("plaintext");
    let token = fx["verification_token"].as_str().expect("token");
    let expected = plaintext.replace(
        &format!("\"token\":\"{token}\""),
        "\"token\":\"<redacted>\"",
    );
    assert_ne!(expected, plaintext, "the fixture carries its token");
    assert!(text.contains(&expected), "{text}");
    assert!(!text.contains(token), "{text}");
}
