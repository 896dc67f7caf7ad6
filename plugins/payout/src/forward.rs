//! Forwarding a recorded withdrawal to the company's payment platform: one JSON `POST` with the
//! header `Idempotency-Key: <external_order_id>` and, when a secret is configured,
//! `X-Gateway-Signature: hex(HMAC-SHA256(secret, body))`.
//!
//! The body is built from the ledger row alone, so every attempt for one withdrawal sends the
//! same bytes. Amounts are decimal strings (`"0.30"`), never floats.

use std::time::Duration;

use hmac::{Hmac, Mac};
use lark_core::Money;
use serde::Serialize;
use sha2::Sha256;

use crate::config::ForwardConfig;
use crate::ledger::PayoutRow;

/// Header carrying the idempotency key (the withdrawal's `external_order_id`).
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// Header carrying the body's HMAC-SHA256, lowercase hex.
pub const SIGNATURE_HEADER: &str = "X-Gateway-Signature";

/// A failed forwarding attempt.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Network error, timeout, HTTP 5xx, 408, 409, 425 or 429: try again later.
    #[error("forwarding failed: {reason}")]
    Transient {
        reason: String,
        status: Option<u16>,
        retry_after: Option<Duration>,
    },
    /// Any other non-2xx answer: the platform refuses this request as it is.
    #[error("forwarding refused: HTTP {status}")]
    Refused { status: u16 },
}

impl ForwardError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ForwardError::Transient { status, .. } => *status,
            ForwardError::Refused { status } => Some(*status),
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    external_order_id: &'a str,
    account_id: &'a str,
    trans_time: Option<&'a str>,
    points: u64,
    cash: Vec<Cash<'a>>,
}

#[derive(Serialize)]
struct Cash<'a> {
    currency: &'a str,
    amount: Money,
}

/// The forwarding client.
pub struct Forwarder {
    agent: ureq::Agent,
    url: String,
    secret: Option<String>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("url", &self.url)
            .field("signed", &self.secret.is_some())
            .finish()
    }
}

impl Forwarder {
    pub fn new(config: &ForwardConfig, timeout: Duration) -> Forwarder {
        Forwarder {
            agent: crate::api::agent(timeout),
            url: config.url.clone(),
            secret: config.secret.clone(),
        }
    }

    /// Sends the withdrawal of `row`; `Ok` carries the 2xx status.
    pub fn send(&self, row: &PayoutRow) -> Result<u16, ForwardError> {
        let body = body(row);
        let mut req = self
            .agent
            .post(&self.url)
            .set("Content-Type", "application/json; charset=utf-8")
            .set(IDEMPOTENCY_HEADER, &row.external_order_id);
        if let Some(secret) = &self.secret {
            req = req.set(SIGNATURE_HEADER, &signature(secret, body.as_bytes()));
        }
        let response = match req.send_string(&body) {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => {
                return Err(ForwardError::Transient {
                    reason: format!("network error: {}", crate::shown::transport_error(&t)),
                    status: None,
                    retry_after: None,
                })
            }
        };
        let status = response.status();
        let retry_after = crate::api::retry_after(&response);
        // Drain the body so the connection can be reused; its content is not needed.
        let _ = response.into_string();
        match status {
            200..=299 => Ok(status),
            408 | 409 | 425 | 429 | 500..=599 => Err(ForwardError::Transient {
                reason: format!("HTTP {status}"),
                status: Some(status),
                retry_after,
            }),
            _ => Err(ForwardError::Refused { status }),
        }
    }
}

/// The JSON body forwarded for `row` (deterministic for a given row).
pub fn body(row: &PayoutRow) -> String {
    let body = Body {
        external_order_id: &row.external_order_id,
        account_id: &row.account_id,
        trans_time: row.trans_time.as_deref(),
        points: row.points,
        cash: row
            .cash
            .iter()
            .map(|c| Cash {
                currency: &c.currency,
                amount: c.amount,
            })
            .collect(),
    };
    // Serialising plain strings and integers cannot fail.
    serde_json::to_string(&body).unwrap_or_default()
}

/// `hex(HMAC-SHA256(secret, body))`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC accepts keys of any length; this branch is unreachable.
        Err(_) => return String::new(),
    };
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_keeps_the_platform_status_it_got() {
        let refused = ForwardError::Refused { status: 422 };
        assert_eq!(refused.status(), Some(422));
        let answered = ForwardError::Transient {
            reason: "HTTP 503".into(),
            status: Some(503),
            retry_after: None,
        };
        assert_eq!(answered.status(), Some(503));
        let unreachable = ForwardError::Transient {
            reason: "connection refused".into(),
            status: None,
            retry_after: None,
        };
        assert_eq!(unreachable.status(), None);
    }

    #[test]
    fn debug_shows_where_and_whether_signed_never_the_secret() {
        let config = ForwardConfig {
            url: "http://127.0.0.1:9/payouts".into(),
            secret: Some("s3cr3t-value".into()),
        };
        let shown = format!("{:?}", Forwarder::new(&config, Duration::from_secs(1)));
        assert!(shown.contains("http://127.0.0.1:9/payouts"), "{shown}");
        assert!(shown.contains("signed: true"), "{shown}");
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
    }

    #[test]
    fn hmac_sha256_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
