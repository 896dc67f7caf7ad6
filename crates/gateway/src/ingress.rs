//! The webhook ingress: one hyper service for every app path, implementing spec §3–6 exactly.
//!
//! Order of checks for a request: path → method → body size (413 while reading) → signature
//! (apps with an Encrypt Key; constant time, on the raw bytes) → decrypt → envelope → challenge
//! answered at once (after the token check), or the event goes to the shared [`Intake`] (token,
//! dedup, durable store) → 200. Plugin delivery happens afterwards in the [`crate::delivery`]
//! engine, never on this path.
//!
//! Invariants: no input reaches a panic or a 5xx (503 only when the store fails); an event is
//! answered 200 only after the store confirmed it durable; no secret, token or decrypted body is
//! logged at info level.

mod body;
pub mod log_limit;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use lark_core::{crypto, Envelope, Event};

use crate::config::WebhookApp;
use crate::intake::{check_token, Intake, Rejection, Stored};
use crate::metrics;
use crate::store::sqlite::now_ms;

const H_TIMESTAMP: &str = "x-lark-request-timestamp";
const H_NONCE: &str = "x-lark-request-nonce";
const H_SIGNATURE: &str = "x-lark-signature";

/// The webhook transport in front of the shared [`Intake`].
pub struct Ingress {
    pub intake: Arc<Intake>,
    /// Limits the "request refused" log lines.
    pub refusals: log_limit::RefusalLog,
    /// Limits the "request failed" (5xx) log lines: a store that refuses writes (a full disk)
    /// fails every request while Lark keeps sending.
    pub failures: log_limit::RefusalLog,
    /// Limits the "url_verification challenge answered" lines: a challenge carries no
    /// signature, so one seen once can be sent again by anyone, each a 200 and a line.
    pub challenges: log_limit::RefusalLog,
}

/// The client a request came from: the peer, or — when the peer is a trusted proxy — the
/// rightmost address of its `X-Forwarded-For`. An IPv4 peer of a `[::]` listener arrives as
/// `::ffff:a.b.c.d`: it is `a.b.c.d`, as everywhere else.
fn client(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let peer = peer.ip().to_canonical();
    if !trusted.iter().any(|t| t.to_canonical() == peer) {
        return peer;
    }
    headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or(peer)
}

impl std::fmt::Debug for Ingress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingress").finish_non_exhaustive()
    }
}

/// The response body type.
pub type Body = Full<Bytes>;

fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from(value.to_string())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    // A challenge's echo is text the sender chose: never sniffed as anything but JSON.
    res.headers_mut().insert(
        hyper::header::X_CONTENT_TYPE_OPTIONS,
        hyper::header::HeaderValue::from_static("nosniff"),
    );
    res
}

impl Rejection {
    fn into_response(self) -> Response<Body> {
        json(self.status(), serde_json::json!({ "msg": self.message() }))
    }
}

/// What a successful request turned into.
enum Accept {
    Challenge(String),
    Event(Stored),
}

impl Ingress {
    /// The hyper service entry point. Never fails.
    pub async fn serve(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<Body>, Infallible> {
        let started = Instant::now();
        let routes = self.intake.routes();
        let app = routes
            .as_ref()
            .and_then(|r| r.by_path.get(req.uri().path()).cloned());
        let client = client(
            peer,
            req.headers(),
            routes.as_ref().map_or(&[][..], |r| &r.trusted_proxies),
        );
        let app_name = app.as_ref().map_or("-", |a| a.name.as_str()).to_owned();
        let span =
            tracing::info_span!("request", app = %app_name, event_id = tracing::field::Empty);
        let result = tracing::Instrument::instrument(self.handle(req), span.clone()).await;
        let (response, status, reason) = match result {
            Ok(Accept::Challenge(challenge)) => (
                json(
                    StatusCode::OK,
                    serde_json::json!({ "challenge": challenge }),
                ),
                "200",
                "challenge",
            ),
            Ok(Accept::Event(stored)) => (
                json(StatusCode::OK, serde_json::json!({ "msg": "success" })),
                "200",
                match stored {
                    Stored::New => "stored",
                    Stored::Duplicate => "duplicate",
                },
            ),
            Err(rejection) => {
                let reason = rejection.reason();
                let status = rejection.status();
                span.in_scope(|| {
                    if status.is_server_error() {
                        if let Some(skipped) = self.failures.admit(Instant::now()) {
                            tracing::error!(status = status.as_u16(), reason, %client, skipped, "request failed");
                        }
                    } else if let Some(skipped) = self.refusals.admit(Instant::now()) {
                        tracing::info!(status = status.as_u16(), reason, %client, skipped, "request refused");
                    }
                });
                let code = match status.as_u16() {
                    400 => "400",
                    401 => "401",
                    404 => "404",
                    405 => "405",
                    408 => "408",
                    413 => "413",
                    503 => "503",
                    _ => "other",
                };
                (rejection.into_response(), code, reason)
            }
        };
        let m = metrics::get();
        m.requests
            .get_or_create(&metrics::RequestLabels {
                app: app_name,
                status: status.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
        m.request_latency.observe(started.elapsed().as_secs_f64());
        Ok(response)
    }

    async fn handle(&self, req: Request<Incoming>) -> Result<Accept, Rejection> {
        let routes = self.intake.routes().ok_or(Rejection::StoreUnavailable)?;
        if !routes.by_path.contains_key(req.uri().path()) {
            return Err(Rejection::NotFound);
        }
        if req.method() != Method::POST {
            return Err(Rejection::MethodNotAllowed);
        }
        let limit = routes.max_body_bytes;
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(Rejection::TooLarge { limit });
        }
        let (parts, body) = req.into_parts();
        let read = tokio::time::timeout(routes.body_timeout, body::read(body, limit, declared));
        let body = read
            .await
            .map_err(|_| Rejection::BodyTimeout)?
            .map_err(|e| match e {
                body::BodyError::TooLarge => Rejection::TooLarge { limit },
                body::BodyError::Read(e) => Rejection::BodyRead(e),
            })?;

        // The body may have taken up to `body_timeout`: verify and route with the config that
        // is current now, so a reload meanwhile never routes to a removed plugin.
        let routes = self.intake.routes().ok_or(Rejection::StoreUnavailable)?;
        let app = routes
            .by_path
            .get(parts.uri.path())
            .cloned()
            .ok_or(Rejection::NotFound)?;
        let webhook = app.webhook().ok_or(Rejection::NotFound)?;
        let event = match open(webhook, &parts.headers, &body)? {
            Opened::Challenge { challenge, token } => {
                check_token(&app, token.as_deref())?;
                if let Some(skipped) = self.challenges.admit(std::time::Instant::now()) {
                    tracing::info!(skipped, "url_verification challenge answered");
                }
                return Ok(Accept::Challenge(challenge));
            }
            Opened::Event(event) => event,
        };
        self.intake
            .event(&app, &routes, event)
            .await
            .map(Accept::Event)
    }
}

/// The largest `encrypt` field an unsigned body may have (it can only be a challenge, whose
/// ciphertext is a few hundred characters).
const MAX_UNSIGNED_ENCRYPTED: usize = 4096;

/// Verifies, decrypts and classifies a body for a webhook app.
fn open(app: &WebhookApp, headers: &HeaderMap, body: &[u8]) -> Result<Opened, Rejection> {
    let envelope = Envelope::parse(body).map_err(|e| Rejection::Malformed(e.to_string()))?;
    let plain = match (&app.encrypt_key, &app.cipher, envelope) {
        (Some(key), Some(cipher), Envelope::Encrypted { encrypt }) => {
            let signed = signature_headers(headers);
            if let Some((ts, nonce, sig)) = signed {
                if !crypto::verify_signature(ts, nonce, key, body, sig) {
                    return Err(Rejection::BadSignature);
                }
                if let Some(skew) = app.max_clock_skew {
                    check_skew(ts, skew)?;
                }
            }
            // Unsigned, only a challenge may pass (spec §3), and whatever else it is, the
            // answer is the same 401: telling a bad padding from bad text or a non-challenge
            // to an unsigned sender would make the decryption an oracle for the key's
            // ciphertexts.
            let unsigned = |e: Rejection| {
                if signed.is_none() {
                    Rejection::MissingSignature
                } else {
                    e
                }
            };
            // An unsigned body can only be a challenge, a few hundred bytes: a larger one is
            // refused before any work on it (anyone may send one: no decryption for them).
            if signed.is_none() && encrypt.len() > MAX_UNSIGNED_ENCRYPTED {
                return Err(Rejection::MissingSignature);
            }
            let plain = cipher
                .decrypt(&encrypt)
                .map_err(|e| unsigned(Rejection::Decrypt(e.to_string())))?;
            let inner = Envelope::parse(&plain)
                .map_err(|e| unsigned(Rejection::Malformed(format!("decrypted body: {e}"))))?;
            match inner {
                // Only the challenge may arrive unsigned (spec §3).
                Envelope::Challenge { .. } => {}
                _ if signed.is_none() => return Err(Rejection::MissingSignature),
                Envelope::Encrypted { .. } => {
                    return Err(Rejection::Malformed(
                        "decrypted body is encrypted again".into(),
                    ))
                }
                Envelope::Event(_) => {}
            }
            inner
        }
        (Some(_), _, _) => return Err(Rejection::PlainForEncryptedApp),
        (None, _, Envelope::Encrypted { .. }) => return Err(Rejection::EncryptedForPlainApp),
        (None, _, plain) => plain,
    };
    match plain {
        Envelope::Challenge { challenge, token } => Ok(Opened::Challenge { challenge, token }),
        Envelope::Event(e) => Ok(Opened::Event(e)),
        Envelope::Encrypted { .. } => Err(Rejection::Malformed("unexpected encrypted body".into())),
    }
}

enum Opened {
    Challenge {
        challenge: String,
        token: Option<String>,
    },
    Event(Event),
}

fn signature_headers(headers: &HeaderMap) -> Option<(&str, &str, &str)> {
    let get = |name| headers.get(name).and_then(|v| v.to_str().ok());
    Some((get(H_TIMESTAMP)?, get(H_NONCE)?, get(H_SIGNATURE)?))
}

fn check_skew(timestamp: &str, skew: std::time::Duration) -> Result<(), Rejection> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| Rejection::StaleTimestamp)?;
    let now = now_ms() / 1000;
    if now.abs_diff(ts) > skew.as_secs() {
        return Err(Rejection::StaleTimestamp);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
