//! Lark's body encryption (spec §2), request signature (spec §3) and token comparison (spec §4).
//!
//! The AES key is derived once when a [`Cipher`] is built, never per event. Every comparison of a
//! secret-derived value goes through `subtle` so its timing does not depend on where bytes differ.
//! Nothing here logs or stores a key.

use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::{engine::general_purpose::STANDARD, Engine as _};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;
type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;

/// AES block (and IV) size in bytes.
pub const BLOCK: usize = 16;

/// Why an `encrypt` value could not be turned back into plaintext. One variant per cause, so the
/// gateway can answer with a precise 400 message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    #[error("`encrypt` is not valid standard base64")]
    Base64,
    #[error("encrypted payload is {0} bytes, shorter than one 16-byte IV")]
    TooShort(usize),
    #[error("ciphertext is {0} bytes, not a non-zero multiple of 16")]
    BadLength(usize),
    #[error("bad PKCS#7 padding (wrong encrypt_key or tampered ciphertext)")]
    BadPadding,
    #[error("decrypted payload is not UTF-8 (wrong encrypt_key or tampered ciphertext)")]
    NotUtf8,
}

/// The AES-256 cipher of one app, keyed with `SHA-256(encrypt_key)`.
///
/// Cheap to clone; build it once per app when the config is loaded.
#[derive(Clone)]
pub struct Cipher {
    key: [u8; 32],
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher { key: <redacted> }")
    }
}

impl Cipher {
    /// Derives the AES key from the app's Encrypt Key string (spec §2 step 1).
    pub fn new(encrypt_key: &str) -> Self {
        Self {
            key: Sha256::digest(encrypt_key.as_bytes()).into(),
        }
    }

    /// The derived 32-byte AES key (exposed for tests against the spec's vectors).
    pub fn key_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// Decrypts the value of an `{"encrypt": "..."}` body into the plaintext bytes (UTF-8 checked).
    pub fn decrypt(&self, encrypt: &str) -> Result<Vec<u8>, DecryptError> {
        let raw = STANDARD
            .decode(encrypt.as_bytes())
            .map_err(|_| DecryptError::Base64)?;
        if raw.len() < BLOCK {
            return Err(DecryptError::TooShort(raw.len()));
        }
        let (iv, ciphertext) = raw.split_at(BLOCK);
        if ciphertext.is_empty() || ciphertext.len() % BLOCK != 0 {
            return Err(DecryptError::BadLength(ciphertext.len()));
        }
        let mut buf = ciphertext.to_vec();
        Aes256CbcDec::new((&self.key).into(), iv.into())
            .decrypt_padded_mut::<NoPadding>(&mut buf)
            .map_err(|_| DecryptError::BadLength(ciphertext.len()))?;
        let plain_len = strip_pkcs7(&buf)?;
        buf.truncate(plain_len);
        String::from_utf8(buf)
            .map(String::into_bytes)
            .map_err(|_| DecryptError::NotUtf8)
    }

    /// Encrypts `plaintext` with the given IV and returns the base64 `encrypt` value
    /// (`base64(iv ‖ AES-256-CBC(PKCS#7(plaintext)))`). Used by `gateway send` and by tests; the
    /// caller must supply a fresh random IV per message.
    pub fn encrypt(&self, plaintext: &[u8], iv: &[u8; BLOCK]) -> String {
        let ciphertext = Aes256CbcEnc::new((&self.key).into(), iv.into())
            .encrypt_padded_vec_mut::<aes::cipher::block_padding::Pkcs7>(plaintext);
        let mut raw = Vec::with_capacity(BLOCK + ciphertext.len());
        raw.extend_from_slice(iv);
        raw.extend_from_slice(&ciphertext);
        STANDARD.encode(raw)
    }
}

/// Strict PKCS#7: the last byte `n` is in `1..=16` and the last `n` bytes all equal `n`.
/// Returns the plaintext length. Checks every padding byte without early exit.
fn strip_pkcs7(buf: &[u8]) -> Result<usize, DecryptError> {
    let n = *buf.last().ok_or(DecryptError::BadPadding)? as usize;
    if n == 0 || n > BLOCK || n > buf.len() {
        return Err(DecryptError::BadPadding);
    }
    let tail = &buf[buf.len() - n..];
    let mismatch = tail.iter().fold(0u8, |acc, &b| acc | (b ^ n as u8));
    if mismatch != 0 {
        return Err(DecryptError::BadPadding);
    }
    Ok(buf.len() - n)
}

/// The request signature of spec §3:
/// `lowercase_hex(SHA-256(timestamp ‖ nonce ‖ encrypt_key ‖ raw_body))`.
pub fn sign(timestamp: &str, nonce: &str, encrypt_key: &str, raw_body: &[u8]) -> String {
    hex::encode(signature_digest(timestamp, nonce, encrypt_key, raw_body))
}

fn signature_digest(timestamp: &str, nonce: &str, encrypt_key: &str, raw_body: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(timestamp.as_bytes());
    hasher.update(nonce.as_bytes());
    hasher.update(encrypt_key.as_bytes());
    hasher.update(raw_body);
    hasher.finalize().into()
}

/// Checks an `X-Lark-Signature` header value against the request, in constant time.
///
/// The header is decoded from hex (either case is accepted) and the 32 raw bytes are compared,
/// so the comparison's timing does not reveal how many leading bytes matched.
pub fn verify_signature(
    timestamp: &str,
    nonce: &str,
    encrypt_key: &str,
    raw_body: &[u8],
    signature: &str,
) -> bool {
    let mut given = [0u8; 32];
    if hex::decode_to_slice(signature.as_bytes(), &mut given).is_err() {
        return false;
    }
    let expected = signature_digest(timestamp, nonce, encrypt_key, raw_body);
    expected.ct_eq(&given).into()
}

/// Compares a received secret (a verification token, an admin token) with the configured one
/// in constant time: their SHA-256 digests are compared, so neither the content nor the
/// configured length leaks through the timing.
pub fn tokens_match(expected: &str, given: &str) -> bool {
    let expected: [u8; 32] = Sha256::digest(expected.as_bytes()).into();
    let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
    expected.ct_eq(&given).into()
}

#[cfg(test)]
mod tests;
