//! Building Lark deliveries: one unique `hire.referral_account.assets_update_v1` event per index,
//! encrypted with the app's Encrypt Key (spec §2) and signed (spec §3), exactly as
//! the load runs need them, so the receiver does its full work for every request.
//!
//! [`Generator::delivery`] is a pure function of the index: the same generator always yields the
//! same bytes for the same index, and different indexes never share an event id.

use lark_core::{crypto, Cipher};

/// One ready-to-send delivery: the three signature headers and the raw `{"encrypt":...}` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// `X-Lark-Request-Timestamp` (unix seconds).
    pub ts: String,
    /// `X-Lark-Request-Nonce`.
    pub nonce: String,
    /// `X-Lark-Signature` over `ts ‖ nonce ‖ key ‖ body`.
    pub sig: String,
    /// The encrypted body, exactly the bytes that were signed.
    pub body: String,
}

/// Builds the deliveries of one app (key + token) for one run.
#[derive(Debug, Clone)]
pub struct Generator {
    cipher: Cipher,
    key: String,
    token: String,
    /// Unix seconds, used for the timestamp header, `create_time` and `modify_time`.
    ts: String,
    /// Event ids are `{id_prefix}-{index:08}`.
    id_prefix: String,
}

impl Generator {
    /// A generator whose event ids start with `id_prefix` (must differ between runs against the
    /// same store, or the receiver sees duplicates).
    pub fn new(key: &str, token: &str, unix_secs: u64, id_prefix: String) -> Self {
        Self {
            cipher: Cipher::new(key),
            key: key.to_owned(),
            token: token.to_owned(),
            ts: unix_secs.to_string(),
            id_prefix,
        }
    }

    /// The generator of `loadgen make`: ids `load-{unix_secs}-{index:08}`.
    pub fn for_files(key: &str, token: &str, unix_secs: u64) -> Self {
        Self::new(key, token, unix_secs, format!("load-{unix_secs}"))
    }

    /// The plaintext schema 2.0 event of index `i` (the shape every load run uses).
    pub fn plaintext(&self, i: u64) -> String {
        let ts = &self.ts;
        serde_json::json!({
            "schema": "2.0",
            "header": {
                "event_id": format!("{}-{i:08}", self.id_prefix),
                "event_type": "hire.referral_account.assets_update_v1",
                "create_time": format!("{ts}000"),
                "token": self.token,
                "app_id": "cli_9f5343c580712544",
                "tenant_key": "2ca1d211f64f6438",
            },
            "event": {
                "account_id": format!("{}", 7_147_998_241_542_539_527u64.wrapping_add(i)),
                "assets": {"confirmed_bonus": {"point_bonus": i % 1000,
                    "cash_bonus": [{"currency_type": "CNY", "amount": 100.25}]}},
                "modify_time": format!("{ts}000"),
            }
        })
        .to_string()
    }

    /// The encrypted, signed delivery of index `i`.
    pub fn delivery(&self, i: u64) -> Delivery {
        let plaintext = self.plaintext(i);
        let mut iv = [0u8; 16];
        iv[..8].copy_from_slice(&i.to_le_bytes());
        let body = serde_json::json!({ "encrypt": self.cipher.encrypt(plaintext.as_bytes(), &iv) })
            .to_string();
        let nonce = format!("{}", 100_000_000u64.wrapping_add(i));
        let sig = crypto::sign(&self.ts, &nonce, &self.key, body.as_bytes());
        Delivery {
            ts: self.ts.clone(),
            nonce,
            sig,
            body,
        }
    }
}

/// Seconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use lark_core::{Envelope, Event};

    /// Decrypts and parses a delivery the way the gateway does; panics (test only) on failure.
    pub(crate) fn open(d: &Delivery, key: &str) -> Event {
        assert!(crypto::verify_signature(
            &d.ts,
            &d.nonce,
            key,
            d.body.as_bytes(),
            &d.sig
        ));
        let Ok(Envelope::Encrypted { encrypt }) = Envelope::parse(d.body.as_bytes()) else {
            panic!("not an encrypted envelope: {}", d.body);
        };
        let plain = Cipher::new(key).decrypt(&encrypt).expect("decrypts");
        let Ok(Envelope::Event(event)) = Envelope::parse(&plain) else {
            panic!("not an event");
        };
        event
    }

    #[test]
    fn deliveries_are_unique_and_open() {
        let g = Generator::new("k", "t", 1_700_000_000, "run-1".into());
        let a = open(&g.delivery(0), "k");
        let b = open(&g.delivery(1), "k");
        assert_eq!(a.id, "run-1-00000000");
        assert_eq!(b.id, "run-1-00000001");
        assert_eq!(a.token.as_deref(), Some("t"));
        assert_eq!(a.event_type, "hire.referral_account.assets_update_v1");
        assert_eq!(g.delivery(7), g.delivery(7));
    }
}
