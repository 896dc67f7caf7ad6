//! Request signatures: the Lark custom bot's `sign` field (spec §10) and the Standard Webhooks
//! `webhook-signature` header. Pure functions over bytes: no clock, no I/O, nothing logged — the
//! inputs are secrets and must never leave this module except as the finished MAC.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a configured signing secret cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// A `whsec_…` secret whose remainder is not standard base64 (the value itself is not echoed).
    #[error("`secret` starts with `whsec_` but the rest is not valid base64")]
    BadWhsec,
    /// An empty secret would make every signature forgeable.
    #[error("`secret` is empty; remove the key to disable signing")]
    Empty,
}

/// The bot signature: `base64(HMAC-SHA256(key = timestamp + "\n" + secret, message = ""))`.
/// Note the unusual shape: the concatenation is the HMAC *key* and the message is empty.
pub fn lark_bot_sign(timestamp: &str, secret: &str) -> String {
    let key = format!("{timestamp}\n{secret}");
    let mac = mac(key.as_bytes(), &[b""]);
    STANDARD.encode(mac)
}

/// The key bytes of a Standard Webhooks secret: `whsec_<base64>` is decoded, anything else is
/// used as its raw UTF-8 bytes.
pub fn webhook_key(secret: &str) -> Result<Vec<u8>, SecretError> {
    if secret.is_empty() {
        return Err(SecretError::Empty);
    }
    match secret.strip_prefix("whsec_") {
        Some(encoded) => match STANDARD.decode(encoded) {
            Ok(key) if !key.is_empty() => Ok(key),
            _ => Err(SecretError::BadWhsec),
        },
        None => Ok(secret.as_bytes().to_vec()),
    }
}

/// The `webhook-signature` header value: `v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`.
pub fn webhook_signature(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    let mac = mac(
        key,
        &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    );
    format!("v1,{}", STANDARD.encode(mac))
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
        unreachable!("HMAC accepts keys of any length");
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_vector_v3() {
        assert_eq!(
            lark_bot_sign("100", "demo"),
            "jquNHnVOwmDRfw+vqTIrY5dooJAgi5EcRtLsQE4wfXg="
        );
    }

    #[test]
    fn whsec_is_decoded_raw_is_not() {
        assert_eq!(
            webhook_key("whsec_aGVsbG8=").expect("valid"),
            b"hello".to_vec()
        );
        assert_eq!(webhook_key("hello").expect("raw"), b"hello".to_vec());
        assert_eq!(webhook_key("whsec_!!"), Err(SecretError::BadWhsec));
        assert_eq!(
            webhook_key("whsec_"),
            Err(SecretError::BadWhsec),
            "no key bytes"
        );
        assert_eq!(webhook_key(""), Err(SecretError::Empty));
    }

    #[test]
    fn webhook_signature_matches_standard_webhooks_example() {
        // The example from the Standard Webhooks specification.
        let key = webhook_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("key");
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            webhook_signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
