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
    /// Mixed into every event id, from the run's prefix.
    id_seed: u64,
}

impl Generator {
    /// A generator whose event ids derive from `id_prefix` (must differ between runs against the
    /// same store, or the receiver sees duplicates).
    pub fn new(key: &str, token: &str, unix_secs: u64, id_prefix: String) -> Self {
        Self {
            cipher: Cipher::new(key),
            key: key.to_owned(),
            token: token.to_owned(),
            ts: unix_secs.to_string(),
            id_seed: fnv1a(id_prefix.as_bytes()),
        }
    }

    /// The generator of `loadgen make`: ids derived from `load-{unix_secs}`.
    pub fn for_files(key: &str, token: &str, unix_secs: u64) -> Self {
        Self::new(key, token, unix_secs, format!("load-{unix_secs}"))
    }

    /// The event id of index `i`: 32 hex digits like Lark's, spread uniformly rather than in
    /// index order, so a store indexing ids does the random inserts it does in production.
    /// Distinct indexes never share an id (the first half, `mix` of the index, is a bijection of it).
    pub fn event_id(&self, i: u64) -> String {
        let head = mix(i ^ self.id_seed);
        format!(
            "{head:016x}{:016x}",
            mix(head ^ self.id_seed.rotate_left(32))
        )
    }

    /// The plaintext schema 2.0 event of index `i` (the shape every load run uses).
    pub fn plaintext(&self, i: u64) -> String {
        let ts = &self.ts;
        serde_json::json!({
            "schema": "2.0",
            "header": {
                "event_id": self.event_id(i),
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

/// FNV-1a over `bytes`: the run prefix's seed.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// SplitMix64's finaliser: a bijection of `u64` that scatters consecutive inputs.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
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
        assert_eq!(a.id, g.event_id(0));
        assert_eq!(b.id, g.event_id(1));
        assert_eq!(a.id.len(), 32);
        assert!(a.id.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.id[..8], b.id[..8], "not in index order");
        let other = Generator::new("k", "t", 1_700_000_000, "run-2".into());
        assert_ne!(other.event_id(0), a.id, "another run, other ids");
        assert_eq!(a.token.as_deref(), Some("t"));
        assert_eq!(a.event_type, "hire.referral_account.assets_update_v1");
        assert_eq!(g.delivery(7), g.delivery(7));
    }

    #[test]
    fn ids_of_one_run_never_collide() {
        let g = Generator::new("k", "t", 1_700_000_000, "run-1".into());
        let ids: std::collections::HashSet<String> = (0..100_000).map(|i| g.event_id(i)).collect();
        assert_eq!(ids.len(), 100_000);
    }
}
