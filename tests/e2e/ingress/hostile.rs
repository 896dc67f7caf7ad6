//! Hostile input (JSON-ish token soup, valid bodies with a byte changed, truncated encrypted
//! bodies, to every app) never gets a 5xx and never stops the gateway. Part of `ingress.rs`.

use gateway_e2e::harness::{post, Lark};

use super::helpers::{start, KEY, TOKEN};

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
