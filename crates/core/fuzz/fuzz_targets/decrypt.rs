//! Fuzz target `decrypt`: [`Cipher::decrypt`] on arbitrary strings, plus an encrypt → decrypt
//! round trip on arbitrary plaintext bytes.
//!
//! The key is the fixtures' `demo-encrypt-key`, so a seed holding the `encrypt` value of
//! `fixtures/encrypted_event.json` decrypts and the fuzzer can mutate real ciphertext. Checked:
//!
//! - decrypting never panics; a successful decrypt is UTF-8, and because base64 decoding and
//!   PKCS#7 stripping are both strict, re-encrypting it under the same IV gives back the input
//!   string exactly;
//! - `decrypt(encrypt(p, iv)) == p` for every UTF-8 `p`, and `Err(NotUtf8)` for every other `p`.

#![no_main]

use base64::{engine::general_purpose::STANDARD, Engine as _};
use lark_core::crypto::BLOCK;
use lark_core::{Cipher, DecryptError};
use libfuzzer_sys::fuzz_target;

const KEY: &str = "demo-encrypt-key";

fuzz_target!(|data: &[u8]| {
    let cipher = Cipher::new(KEY);

    // 1. Arbitrary strings as the `encrypt` value.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(plain) = cipher.decrypt(text) {
            assert!(std::str::from_utf8(&plain).is_ok(), "decrypt checks UTF-8");
            let raw = STANDARD.decode(text).expect("decrypt accepted this base64");
            let mut iv = [0u8; BLOCK];
            iv.copy_from_slice(&raw[..BLOCK]);
            assert_eq!(cipher.encrypt(&plain, &iv), text, "decrypt is exact");
        }
    }

    // 2. Round trip of arbitrary plaintext bytes, the IV taken from the input's tail.
    let mut iv = [0u8; BLOCK];
    for (slot, byte) in iv.iter_mut().zip(data.iter().rev()) {
        *slot = *byte;
    }
    let encrypt = cipher.encrypt(data, &iv);
    match std::str::from_utf8(data) {
        Ok(_) => assert_eq!(cipher.decrypt(&encrypt).as_deref(), Ok(data)),
        Err(_) => assert_eq!(cipher.decrypt(&encrypt), Err(DecryptError::NotUtf8)),
    }
});
