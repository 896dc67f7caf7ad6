//! Every way an event can be refused, and the one place that maps each to its HTTP status, JSON
//! body and metrics reason (spec §6); on the long connection every refusal is acked with code
//! 500 (spec §11: any non-200 code makes Lark re-send), its reason kept for the acks metric.
//! Messages never contain secrets or the body.

use hyper::StatusCode;

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// No app at this path (webhook) or by this name any more (a reload removed it).
    NotFound,
    MethodNotAllowed,
    TooLarge {
        limit: usize,
    },
    /// The body could not be read from the connection.
    BodyRead(String),
    /// The body did not arrive in time (408).
    BodyTimeout,
    /// Malformed JSON / envelope / missing fields (400).
    Malformed(String),
    /// Base64, length, padding or UTF-8 failure of the encrypted body (400).
    Decrypt(String),
    /// A plain body for an app that has an Encrypt Key (400).
    PlainForEncryptedApp,
    /// An encrypted body for an app without an Encrypt Key (400).
    EncryptedForPlainApp,
    MissingSignature,
    BadSignature,
    StaleTimestamp,
    MissingToken,
    BadToken,
    AppIdMismatch,
    /// A schema 2.0 event without `header.app_id` for an app pinned to one (401).
    AppIdMissing,
    /// The store could not record the event (503: Lark retries).
    StoreUnavailable,
}

impl Rejection {
    pub fn status(&self) -> StatusCode {
        use Rejection::*;
        match self {
            NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            BodyRead(_) | Malformed(_) | Decrypt(_) | PlainForEncryptedApp
            | EncryptedForPlainApp => StatusCode::BAD_REQUEST,
            MissingSignature | BadSignature | StaleTimestamp | MissingToken | BadToken
            | AppIdMismatch | AppIdMissing => StatusCode::UNAUTHORIZED,
            StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        use Rejection::*;
        match self {
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            TooLarge { .. } => "too_large",
            BodyRead(_) => "body_read_error",
            BodyTimeout => "body_timeout",
            Malformed(_) => "malformed",
            Decrypt(_) => "decrypt_error",
            PlainForEncryptedApp => "plain_body_for_encrypted_app",
            EncryptedForPlainApp => "encrypted_body_for_plain_app",
            MissingSignature => "missing_signature",
            BadSignature => "bad_signature",
            StaleTimestamp => "stale_timestamp",
            MissingToken => "missing_token",
            BadToken => "bad_token",
            AppIdMismatch => "app_id_mismatch",
            AppIdMissing => "app_id_missing",
            StoreUnavailable => "store_unavailable",
        }
    }

    /// The message put in `{"msg": ...}`.
    pub fn message(&self) -> String {
        use Rejection::*;
        match self {
            NotFound => "no app is served at this path".into(),
            MethodNotAllowed => "only POST is accepted".into(),
            TooLarge { limit } => format!("body is larger than {limit} bytes"),
            BodyRead(e) => format!("could not read the body: {e}"),
            BodyTimeout => "the body did not arrive in time".into(),
            Malformed(e) => e.clone(),
            Decrypt(e) => format!("cannot decrypt body: {e}"),
            PlainForEncryptedApp => "body must be encrypted: this app has an encrypt_key".into(),
            EncryptedForPlainApp => {
                "body is encrypted but no encrypt_key is configured for this app".into()
            }
            MissingSignature => {
                "missing X-Lark-Request-Timestamp, X-Lark-Request-Nonce or X-Lark-Signature header"
                    .into()
            }
            BadSignature => "signature does not match".into(),
            StaleTimestamp => "request timestamp is outside the allowed clock skew".into(),
            MissingToken => "verification token missing".into(),
            BadToken => "verification token does not match".into(),
            AppIdMismatch => "event app_id does not match this app".into(),
            AppIdMissing => "event has no header.app_id, and this app is pinned to one".into(),
            StoreUnavailable => "event could not be stored; retry later".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Rejection::{self, *};

    /// The `reason` label of `gateway_requests_total` and `gateway_longconn_acks_total`
    /// (README, Metrics): one per refusal, stable, each with its status.
    #[test]
    fn every_refusal_has_its_own_reason_and_status() {
        let all: [(Rejection, &str, u16); 19] = [
            (NotFound, "not_found", 404),
            (MethodNotAllowed, "method_not_allowed", 405),
            (TooLarge { limit: 1 }, "too_large", 413),
            (BodyRead("x".into()), "body_read_error", 400),
            (BodyTimeout, "body_timeout", 408),
            (Malformed("x".into()), "malformed", 400),
            (Decrypt("x".into()), "decrypt_error", 400),
            (PlainForEncryptedApp, "plain_body_for_encrypted_app", 400),
            (EncryptedForPlainApp, "encrypted_body_for_plain_app", 400),
            (MissingSignature, "missing_signature", 401),
            (BadSignature, "bad_signature", 401),
            (StaleTimestamp, "stale_timestamp", 401),
            (MissingToken, "missing_token", 401),
            (BadToken, "bad_token", 401),
            (AppIdMismatch, "app_id_mismatch", 401),
            (AppIdMissing, "app_id_missing", 401),
            (StoreUnavailable, "store_unavailable", 503),
            (TooLarge { limit: 2 }, "too_large", 413),
            (Malformed("y".into()), "malformed", 400),
        ];
        for (rejection, reason, status) in &all {
            assert_eq!(rejection.reason(), *reason, "{rejection:?}");
            assert_eq!(rejection.status().as_u16(), *status, "{rejection:?}");
        }
        let distinct: std::collections::HashSet<&str> = all.iter().map(|(_, r, _)| *r).collect();
        assert_eq!(distinct.len(), 17, "one reason per kind of refusal");
    }
}
