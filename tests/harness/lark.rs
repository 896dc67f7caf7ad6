//! Lark's side of a webhook delivery ([`Lark`]): schema 2.0 envelopes built, then encrypted and
//! signed exactly as Lark does when the app has an Encrypt Key.

use lark_core::{crypto, Cipher};

use super::{post, Answer};

/// Builds deliveries the way Lark sends them for one app.
#[derive(Debug, Clone)]
pub struct Lark {
    pub token: String,
    pub encrypt_key: Option<String>,
}

impl Lark {
    pub fn encrypted(token: &str, key: &str) -> Lark {
        Lark {
            token: token.into(),
            encrypt_key: Some(key.into()),
        }
    }

    pub fn plain(token: &str) -> Lark {
        Lark {
            token: token.into(),
            encrypt_key: None,
        }
    }

    /// A schema 2.0 envelope (plaintext).
    pub fn event_v2(&self, event_id: &str, event_type: &str, event: serde_json::Value) -> String {
        serde_json::json!({
            "schema": "2.0",
            "header": {
                "event_id": event_id,
                "event_type": event_type,
                "create_time": "1608725989000",
                "token": self.token,
                "app_id": "cli_9f5343c580712544",
                "tenant_key": "2ca1d211f64f6438",
            },
            "event": event,
        })
        .to_string()
    }

    /// An assets_update_v1 plaintext envelope.
    pub fn assets_update(
        &self,
        event_id: &str,
        account: &str,
        points: u64,
        cash: &str,
        modify_ms: u64,
    ) -> String {
        let cash: serde_json::Value = serde_json::from_str(cash).expect("cash JSON");
        self.event_v2(
            event_id,
            "hire.referral_account.assets_update_v1",
            serde_json::json!({
                "account_id": account,
                "assets": {"confirmed_bonus": {"point_bonus": points, "cash_bonus": cash}},
                "modify_time": modify_ms.to_string(),
            }),
        )
    }

    /// The body and headers Lark would send for `plaintext`: encrypted and signed when the app
    /// has a key, as is otherwise.
    pub fn wrap(&self, plaintext: &str) -> (String, Vec<(String, String)>) {
        let mut headers = vec![(
            "Content-Type".to_owned(),
            "application/json; charset=utf-8".to_owned(),
        )];
        let Some(key) = &self.encrypt_key else {
            return (plaintext.to_owned(), headers);
        };
        let iv: [u8; 16] = std::array::from_fn(|i| {
            (i as u8)
                .wrapping_mul(37)
                .wrapping_add(plaintext.len() as u8)
        });
        let encrypt = Cipher::new(key).encrypt(plaintext.as_bytes(), &iv);
        let body = serde_json::json!({ "encrypt": encrypt }).to_string();
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .to_string();
        let nonce = "8812345".to_owned();
        let sig = crypto::sign(&ts, &nonce, key, body.as_bytes());
        headers.push(("X-Lark-Request-Timestamp".into(), ts));
        headers.push(("X-Lark-Request-Nonce".into(), nonce));
        headers.push(("X-Lark-Signature".into(), sig));
        (body, headers)
    }

    /// Wraps and POSTs.
    pub fn send(&self, url: &str, plaintext: &str) -> Answer {
        let (body, headers) = self.wrap(plaintext);
        post(url, &headers, &body).unwrap_or_else(|e| panic!("POST {url}: {e}"))
    }
}
