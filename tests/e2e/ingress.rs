//! Ingress end to end: the real binary, real HTTP, the real logger `.so`. Every row of spec §6
//! (status and message) for an encrypted app and a plain app, plus delivery of the accepted ones.

use std::io::{Read, Write};
use std::time::Duration;

use gateway_e2e::harness::{
    self, base_config, binaries, post, read_jsonl, wait_until, Lark, TestGateway,
};

/// Request headers as (name, value) pairs.
type Headers = Vec<(String, String)>;

const TOKEN: &str = "enc-token";
const KEY: &str = "enc-key";
const PLAIN_TOKEN: &str = "plain-token";
const ASSETS: &str = "hire.referral_account.assets_update_v1";

/// A config with an unknown key: must be refused.
fn config_with_typo() -> String {
    format!(
        r#"{base}
[server.ignored_so_this_fails]
"#,
        base = base_config()
    )
}

fn start() -> (tempfile::TempDir, TestGateway) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        r#"{base}
[[apps]]
name = "enc"
path = "/enc"
verification_token = "{TOKEN}"
encrypt_key = "{KEY}"

[[apps]]
name = "plain"
path = "/plain"
verification_token = "{PLAIN_TOKEN}"

[[apps]]
name = "fixture"
path = "/fixture"
verification_token = "demo-verification-token"
encrypt_key = "demo-encrypt-key"

[[plugins]]
name = "audit"
library = "{logger}"
config = {{ path = "data/audit.jsonl", fsync = "never" }}

[[routes]]
events = ["{ASSETS}", "approval"]
plugins = ["audit"]
"#,
        base = base_config().replace(
            "[server]\n",
            "[server]\nmax_body_bytes = 65536\nbody_timeout = \"300ms\"\n",
        ),
        logger = binaries().logger.display(),
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    (dir, gw)
}

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

fn audit_ids(gw: &TestGateway) -> Vec<String> {
    read_jsonl(&gw.dir.join("data/audit.jsonl"))
        .iter()
        .map(|l| l["event_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn unknown_keys_refuse_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config_with_typo()).expect("write");
    let (code, _, err) = harness::run_cli(&path, &["check"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("ignored_so_this_fails"), "{err}");
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
fn plain_app_schema_1_unrouted_and_refusals() {
    let (_dir, gw) = start();
    let url = gw.url("/plain");
    let lark = Lark::plain(PLAIN_TOKEN);

    let a = lark.send(
        &url,
        &format!(r#"{{"challenge":"pc","token":"{PLAIN_TOKEN}","type":"url_verification"}}"#),
    );
    assert_eq!((a.status, a.body.as_str()), (200, r#"{"challenge":"pc"}"#));

    let v1 = format!(
        r#"{{"ts":"1502199207.7171419","uuid":"v1-uuid","token":"{PLAIN_TOKEN}","type":"event_callback","event":{{"type":"approval","app_id":"cli_x","tenant_key":"tk"}}}}"#
    );
    assert_eq!(lark.send(&url, &v1).status, 200);

    let unrouted = lark.event_v2(
        "ev-unrouted",
        "im.message.receive_v1",
        serde_json::json!({}),
    );
    assert_eq!(lark.send(&url, &unrouted).status, 200);

    let encrypted = Lark::encrypted(PLAIN_TOKEN, "some-key").wrap(&unrouted);
    let a = post(&url, &encrypted.1, &encrypted.0).expect("post");
    assert_eq!(a.status, 400);
    assert_eq!(
        a.msg(),
        "body is encrypted but no encrypt_key is configured for this app"
    );

    let no_token = r#"{"schema":"2.0","header":{"event_id":"e","event_type":"t"}}"#;
    let a = lark.send(&url, no_token);
    assert_eq!(
        (a.status, a.msg().as_str()),
        (401, "verification token missing")
    );

    let a = lark.send(&url, "[1,2]");
    assert_eq!(
        (a.status, a.msg().as_str()),
        (400, "body is not a JSON object")
    );

    assert!(
        wait_until(Duration::from_secs(10), || audit_ids(&gw) == ["v1-uuid"]),
        "{:?}",
        audit_ids(&gw)
    );

    let (code, out, err) = gw.cli(&["events", "show", "ev-unrouted"]);
    assert_eq!(code, 0, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(shown["deliveries"].as_array().map(Vec::len), Some(0));
    assert_eq!(shown["schema"], "2.0");

    let metrics = harness::get(&gw.admin_url("/metrics"))
        .expect("metrics")
        .body;
    assert_eq!(
        harness::metric(&metrics, r#"gateway_unrouted_events_total{app="plain"}"#),
        1.0
    );
    assert_eq!(
        harness::metric(&metrics, r#"gateway_events_stored_total{app="plain"}"#),
        2.0
    );
    assert_eq!(
        harness::metric(
            &metrics,
            r#"gateway_requests_total{app="plain",status="400",reason="encrypted_body_for_plain_app"}"#
        ),
        1.0
    );
    assert_eq!(
        harness::metric(
            &metrics,
            r#"gateway_requests_total{app="plain",status="401",reason="missing_token"}"#
        ),
        1.0
    );
}

#[test]
fn the_fixture_delivery_is_accepted_byte_for_byte() {
    let (_dir, gw) = start();
    let fx: serde_json::Value =
        serde_json::from_str(include_str!("../../fixtures/encrypted_event.json")).expect("fixture");
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

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn hostile_input_never_gets_a_5xx_and_never_stops_the_gateway() {
    let (_dir, gw) = start();
    let lark = Lark::encrypted(TOKEN, KEY);
    let valid = lark.assets_update(
        "fuzz-base",
        "acc",
        1,
        r#"[{"currency_type":"CNY","amount":1.5}]"#,
        1,
    );
    let (enc_body, enc_headers) = lark.wrap(&valid);
    let fragments = [
        "{",
        "}",
        "[",
        "]",
        "\"",
        ":",
        ",",
        "null",
        "1e999",
        "-0",
        "\"encrypt\"",
        "\"schema\"",
        "\"2.0\"",
        "\"header\"",
        "\"event_id\"",
        "\"type\"",
        "\"url_verification\"",
        "\"challenge\"",
        "\"uuid\"",
        "\"event_callback\"",
        "\"event\"",
        "\"token\"",
        "\u{0}",
        "\\u0000",
        "\u{fffd}",
        "é",
        "\\",
        "true",
        "{}",
        "[]",
    ];
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for i in 0..300 {
        let path = ["/enc", "/plain", "/fixture"][rng.below(3)];
        let body: String = match rng.below(4) {
            // Token soup from JSON-ish fragments.
            0 => (0..rng.below(40))
                .map(|_| fragments[rng.below(fragments.len())])
                .collect(),
            // A valid encrypted body with one byte changed.
            1 => {
                let mut b = enc_body.clone().into_bytes();
                let at = rng.below(b.len());
                let junk = b"A{}\"=+/0 ";
                b[at] = junk[rng.below(junk.len())];
                String::from_utf8_lossy(&b).into_owned()
            }
            // A valid plaintext with one byte changed, sent plain.
            2 => {
                let mut b = valid.clone().into_bytes();
                let at = rng.below(b.len());
                let junk = b"x{}\"1.-: ";
                b[at] = junk[rng.below(junk.len())];
                String::from_utf8_lossy(&b).into_owned()
            }
            // A truncated encrypted body.
            _ => enc_body[..rng.below(enc_body.len())].to_owned(),
        };
        let headers = if rng.below(2) == 0 {
            enc_headers.clone()
        } else {
            Vec::new()
        };
        let a = post(&gw.url(path), &headers, &body).unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert!(
            [200, 400, 401].contains(&a.status),
            "request {i} to {path} got {}: {} (body {body:?})",
            a.status,
            a.body
        );
    }
    // Still serving.
    let a = lark.send(
        &gw.url("/enc"),
        &lark.assets_update("fuzz-after", "acc", 1, "[]", 2),
    );
    assert_eq!(a.status, 200);
    assert!(!gw.log().contains("panicked"), "{}", gw.log());
}
