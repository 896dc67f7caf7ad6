//! Spec vectors V1–V2, round trips over many lengths, tampering, strict PKCS#7, a `Debug` that
//! hides the key, and no-panic properties.

use super::*;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

const V1_KEY: &str = "test key";
const V1_ENCRYPT: &str = "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=";

#[test]
fn v1_key_derivation() {
    assert_eq!(
        hex::encode(Cipher::new(V1_KEY).key_bytes()),
        "fa2bdca424f01f01ffb48df93acc35d439c7fd331a1a7fba6ac2fd83aa9ab31a"
    );
}

#[test]
fn v1_decrypt() {
    let plain = Cipher::new(V1_KEY).decrypt(V1_ENCRYPT).expect("decrypts");
    assert_eq!(plain, b"hello world");
}

#[test]
fn v2_signature() {
    let body = format!(r#"{{"encrypt":"{V1_ENCRYPT}"}}"#);
    let sig = sign("1752346850", "950646929", V1_KEY, body.as_bytes());
    assert_eq!(
        sig,
        "44cd1c114dbce2df6d5c0a5e849db7d1c34e597708c36e3112157c8c322e0d1e"
    );
    assert!(verify_signature(
        "1752346850",
        "950646929",
        V1_KEY,
        body.as_bytes(),
        &sig
    ));
    assert!(verify_signature(
        "1752346850",
        "950646929",
        V1_KEY,
        body.as_bytes(),
        &sig.to_uppercase()
    ));
}

#[test]
fn fixture_delivery_verifies_and_decrypts() {
    let fx: serde_json::Value =
        serde_json::from_str(include_str!("../../../../fixtures/encrypted_event.json"))
            .expect("fixture is JSON");
    let key = fx["encrypt_key"].as_str().expect("key");
    let body = fx["body"].as_str().expect("body");
    let h = &fx["headers"];
    let ts = h["X-Lark-Request-Timestamp"].as_str().expect("ts");
    let nonce = h["X-Lark-Request-Nonce"].as_str().expect("nonce");
    let sig = h["X-Lark-Signature"].as_str().expect("sig");
    assert!(verify_signature(ts, nonce, key, body.as_bytes(), sig));
    let env: serde_json::Value = serde_json::from_str(body).expect("body JSON");
    let plain = Cipher::new(key)
        .decrypt(env["encrypt"].as_str().expect("encrypt"))
        .expect("decrypts");
    assert_eq!(
        plain,
        fx["plaintext"].as_str().expect("plaintext").as_bytes()
    );
}

#[test]
fn tampering_any_part_flips_the_verdict() {
    let (ts, nonce, key, body) = ("1752346850", "950646929", V1_KEY, br#"{"encrypt":"abc"}"#);
    let sig = sign(ts, nonce, key, body);
    assert!(verify_signature(ts, nonce, key, body, &sig));
    assert!(!verify_signature("1752346851", nonce, key, body, &sig));
    assert!(!verify_signature(ts, "950646928", key, body, &sig));
    assert!(!verify_signature(ts, nonce, "test kez", body, &sig));
    assert!(!verify_signature(
        ts,
        nonce,
        key,
        br#"{"encrypt":"abd"}"#,
        &sig
    ));
    let mut flipped = sig.clone().into_bytes();
    flipped[63] = if flipped[63] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).expect("ascii");
    assert!(!verify_signature(ts, nonce, key, body, &flipped));
    assert!(!verify_signature(ts, nonce, key, body, &sig[..62]));
    assert!(!verify_signature(ts, nonce, key, body, ""));
    assert!(!verify_signature(ts, nonce, key, body, &"z".repeat(64)));
}

#[test]
fn round_trip_every_small_length() {
    let cipher = Cipher::new("round trip");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for len in 0..=100usize {
        let plain: Vec<u8> = (0..len).map(|_| rng.gen_range(b' '..=b'~')).collect();
        let iv: [u8; 16] = rng.gen();
        let enc = cipher.encrypt(&plain, &iv);
        let raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &enc)
            .expect("base64");
        // A multiple of 16 gets a whole extra padding block.
        assert_eq!(raw.len(), 16 + (len / 16 + 1) * 16, "len {len}");
        assert_eq!(cipher.decrypt(&enc).expect("decrypts"), plain, "len {len}");
    }
}

#[test]
fn round_trip_random_lengths_up_to_64k() {
    let cipher = Cipher::new("big");
    let mut rng = rand::rngs::StdRng::seed_from_u64(64);
    for _ in 0..40 {
        let len = rng.gen_range(0..=64 * 1024);
        let plain: String = (0..len).map(|_| rng.gen_range('a'..='z')).collect();
        let iv: [u8; 16] = rng.gen();
        let enc = cipher.encrypt(plain.as_bytes(), &iv);
        assert_eq!(cipher.decrypt(&enc).expect("decrypts"), plain.as_bytes());
    }
}

#[test]
fn each_decrypt_error_has_its_cause() {
    let c = Cipher::new(V1_KEY);
    assert_eq!(c.decrypt("not base64!"), Err(DecryptError::Base64));
    assert_eq!(c.decrypt("AAAA"), Err(DecryptError::TooShort(3)));
    let iv_only = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [0u8; 16]);
    assert_eq!(c.decrypt(&iv_only), Err(DecryptError::BadLength(0)));
    let odd = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [0u8; 16 + 17]);
    assert_eq!(c.decrypt(&odd), Err(DecryptError::BadLength(17)));
    // Wrong key: the padding check catches it (with overwhelming probability for this vector).
    assert_eq!(
        Cipher::new("other key").decrypt(V1_ENCRYPT),
        Err(DecryptError::BadPadding)
    );
    // Valid padding but invalid UTF-8 plaintext.
    let enc = c.encrypt(&[0xff, 0xfe], &[1; 16]);
    assert_eq!(c.decrypt(&enc), Err(DecryptError::NotUtf8));
}

#[test]
fn tampered_ciphertext_is_refused() {
    let c = Cipher::new(V1_KEY);
    let mut raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, V1_ENCRYPT)
        .expect("b64");
    let last = raw.len() - 1;
    raw[last] ^= 0x01;
    let enc = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &raw);
    assert!(c.decrypt(&enc).is_err());
}

/// Encrypts `plain` (already a whole number of blocks) with *no* padding, so a test can hand
/// `decrypt` exactly the padding bytes it wants to see refused.
fn encrypt_unpadded(cipher: &Cipher, plain: &[u8]) -> String {
    assert_eq!(plain.len() % BLOCK, 0, "whole blocks only");
    let iv = [7u8; BLOCK];
    let ciphertext = Aes256CbcEnc::new(cipher.key_bytes().into(), (&iv).into())
        .encrypt_padded_vec_mut::<NoPadding>(plain);
    STANDARD.encode([&iv[..], &ciphertext].concat())
}

/// A 16-byte block of `b'a'` with `tail` as its last bytes.
fn block_ending(tail: &[u8]) -> Vec<u8> {
    let mut block = vec![b'a'; BLOCK - tail.len()];
    block.extend_from_slice(tail);
    block
}

/// Strict PKCS#7 through the public `decrypt`: only `n` copies of `n` (`1 ..= 16`) are padding.
/// Each refused case names what a looser check would let through.
#[test]
fn decrypt_refuses_every_non_pkcs7_padding() {
    let c = Cipher::new(V1_KEY);
    let mut two_blocks_of_17 = vec![b'a'; 15];
    two_blocks_of_17.extend_from_slice(&[17; 17]);
    let mut sixteen_with_two_15s = [16u8; 16];
    sixteen_with_two_15s[3] = 15;
    sixteen_with_two_15s[9] = 15;
    let refused: &[(&str, Vec<u8>)] = &[
        ("a zero padding byte", block_ending(&[0])),
        ("a zero padding byte after zeros", vec![0; 16]),
        ("a padding byte of 17 in one block", block_ending(&[17])),
        // 17 copies of 17 fit in two blocks: only the `n > 16` bound refuses them.
        ("17 copies of 17 (longer than a block)", two_blocks_of_17),
        ("a padding byte of 255", block_ending(&[0xff])),
        ("one wrong byte in the padding", block_ending(&[3, 2])),
        ("the first byte of 16 wrong", {
            let mut b = [16u8; 16];
            b[0] = 15;
            b.to_vec()
        }),
        // An XOR fold (instead of OR) would let these through: the differences cancel out.
        (
            "two equal wrong bytes (15 ^ 16 twice)",
            sixteen_with_two_15s.to_vec(),
        ),
        (
            "three wrong bytes whose XOR is zero",
            block_ending(&[5, 6, 7, 4]),
        ),
    ];
    for (why, plain) in refused {
        assert_eq!(
            c.decrypt(&encrypt_unpadded(&c, plain)),
            Err(DecryptError::BadPadding),
            "{why}: {plain:?}"
        );
    }
    // The same construction with correct padding is accepted, for every padding length.
    for n in 1..=16u8 {
        let plain = block_ending(&vec![n; n as usize]);
        assert_eq!(
            c.decrypt(&encrypt_unpadded(&c, &plain)),
            Ok(vec![b'a'; 16 - n as usize]),
            "padding {n}"
        );
    }
    let mut two_blocks = vec![b'b'; 16];
    two_blocks.extend_from_slice(&[16; 16]);
    assert_eq!(
        c.decrypt(&encrypt_unpadded(&c, &two_blocks)),
        Ok(vec![b'b'; 16])
    );
}

#[test]
fn debug_never_prints_the_key() {
    let c = Cipher::new(V1_KEY);
    let key = c.key_bytes();
    for shown in [format!("{c:?}"), format!("{c:#?}")] {
        assert_eq!(shown, "Cipher { key: <redacted> }");
        assert!(!shown.contains(&hex::encode(key)), "{shown}");
        assert!(!shown.contains(&format!("{key:?}")), "{shown}");
        assert!(!shown.contains(V1_KEY), "{shown}");
    }
}

#[test]
fn strip_pkcs7_on_short_buffers() {
    assert_eq!(strip_pkcs7(&[]), Err(DecryptError::BadPadding));
    assert_eq!(strip_pkcs7(&[3, 3]), Err(DecryptError::BadPadding));
    assert_eq!(strip_pkcs7(&[2, 2]), Ok(0));
    assert_eq!(strip_pkcs7(&[b'x', 1]), Ok(1));
}

#[test]
fn strict_pkcs7() {
    assert_eq!(strip_pkcs7(&[b'a'; 16]), Err(DecryptError::BadPadding));
    let mut full = [16u8; 16];
    assert_eq!(strip_pkcs7(&full), Ok(0));
    full[0] = 15;
    assert_eq!(strip_pkcs7(&full), Err(DecryptError::BadPadding));
    let mut block = [b'x'; 16];
    block[15] = 0;
    assert_eq!(strip_pkcs7(&block), Err(DecryptError::BadPadding));
    block[15] = 17;
    assert_eq!(strip_pkcs7(&block), Err(DecryptError::BadPadding));
    block[14] = 2;
    block[15] = 2;
    assert_eq!(strip_pkcs7(&block), Ok(14));
}

#[test]
fn tokens_compare() {
    assert!(tokens_match("abc", "abc"));
    assert!(!tokens_match("abc", "abd"));
    assert!(!tokens_match("abc", "ab"));
    assert!(!tokens_match("abc", ""));
}

proptest! {
    #[test]
    fn decrypt_never_panics(s in ".{0,200}") {
        let _ = Cipher::new(V1_KEY).decrypt(&s);
    }

    #[test]
    fn decrypt_random_ciphertexts_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let enc = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &bytes);
        let _ = Cipher::new(V1_KEY).decrypt(&enc);
    }

    #[test]
    fn round_trip_any_bytes_text(plain in ".{0,300}", iv in any::<[u8; 16]>()) {
        let c = Cipher::new("prop");
        prop_assert_eq!(c.decrypt(&c.encrypt(plain.as_bytes(), &iv)).ok(), Some(plain.into_bytes()));
    }

    #[test]
    fn verify_never_panics(sig in ".{0,80}", body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = verify_signature("1", "2", "k", &body, &sig);
    }
}
