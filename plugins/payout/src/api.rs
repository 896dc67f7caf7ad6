//! A small blocking client of the Lark Open API (spec §9): `tenant_access_token` (cached until five
//! minutes before it expires), "withdraw the whole referral balance" and reconciliation.
//!
//! Every failure is classified once, here: [`ApiError::is_transient`] says whether trying again
//! later can help (network errors, timeouts, HTTP 5xx/429, rate-limit and invalid-token codes) or
//! not (any other non-zero `code`: a business error). Errors carry Lark's `code`, `msg` and the
//! `X-Tt-Logid` of the call, never the app secret or a token.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

mod reply;
mod wire;

use reply::{check_status, lark_error, parse_envelope, unreadable, withdrawal, Reply};
pub use wire::{CashAmount, Mismatch, RewardInfo, TradeDetail, Withdrawal};
use wire::{ReconcileData, ReconcileRequest, TokenReply, WithdrawData};

/// `code`s meaning the token is invalid or expired: refresh it and retry once.
pub const INVALID_TOKEN_CODES: [i64; 3] = [99_991_663, 99_991_664, 99_991_671];
/// `code`s meaning "too many requests": retry later.
pub const RATE_LIMIT_CODES: [i64; 1] = [99_991_400];
/// A cached token is dropped this long before Lark says it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(300);

/// The longest token lifetime believed: one day.
const MAX_TOKEN_LIFETIME_S: u64 = 86_400;

/// The withdraw call's name in errors.
pub const WITHDRAW: &str = "withdraw";

/// A failed Open API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Network error, timeout, HTTP 5xx or an unreadable success response: whether Lark acted
    /// on the call is not known.
    #[error("{call}: {reason}")]
    Transient {
        call: &'static str,
        reason: String,
        retry_after: Option<Duration>,
    },
    /// HTTP 429: Lark's rate limit turned the call away before handling it.
    #[error("{call}: {reason}")]
    Throttled {
        call: &'static str,
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Lark answered with a non-zero `code`.
    #[error("{call} refused by Lark: code {code}, msg {msg:?}, log id {}", log_id.as_deref().unwrap_or("-"))]
    Lark {
        call: &'static str,
        code: i64,
        msg: String,
        log_id: Option<String>,
        http_status: u16,
        retry_after: Option<Duration>,
        /// The operator listed this code in `retry_codes`: worth trying again.
        retry: bool,
    },
    /// A non-JSON client-error answer (wrong `base_url`, say): trying again will not help.
    #[error("{call}: unexpected HTTP {status} (log id {})", log_id.as_deref().unwrap_or("-"))]
    Unexpected {
        call: &'static str,
        status: u16,
        log_id: Option<String>,
    },
}

impl ApiError {
    /// True when a later attempt may succeed (the host should retry).
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Transient { .. } | ApiError::Throttled { .. } => true,
            ApiError::Lark { code, retry, .. } => {
                *retry || RATE_LIMIT_CODES.contains(code) || INVALID_TOKEN_CODES.contains(code)
            }
            ApiError::Unexpected { .. } => false,
        }
    }

    /// How long Lark asked us to wait, when it said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Transient { retry_after, .. }
            | ApiError::Throttled { retry_after, .. }
            | ApiError::Lark { retry_after, .. } => *retry_after,
            ApiError::Unexpected { .. } => None,
        }
    }

    /// Whether this failure of a withdraw shows that Lark made no withdrawal in it, and never
    /// will: every withdraw request of the call was turned away by the rate limit (HTTP 429,
    /// or a rate-limit code) or refused for its token (an invalid-token code), or answered with
    /// one of `nothing_codes` (the operator's `covered_codes`: nothing to withdraw), or none
    /// went out because the token call failed. Anything else leaves it unknown: a network
    /// error, a timeout, an HTTP 5xx, an unreadable answer or an unexpected status, and any
    /// other code too (Lark does not document which of its codes are final: an internal
    /// error's may come from a call its backend still executes).
    pub fn withdrew_nothing(&self, nothing_codes: &[i64]) -> bool {
        match self {
            ApiError::Throttled { .. } => true,
            ApiError::Lark { call, code, .. } => {
                *call != WITHDRAW
                    || RATE_LIMIT_CODES.contains(code)
                    || INVALID_TOKEN_CODES.contains(code)
                    || nothing_codes.contains(code)
            }
            ApiError::Transient { call, .. } | ApiError::Unexpected { call, .. } => {
                *call != WITHDRAW
            }
        }
    }

    fn is_invalid_token(&self) -> bool {
        matches!(self, ApiError::Lark { code, .. } if INVALID_TOKEN_CODES.contains(code))
    }
}

struct CachedToken {
    value: String,
    valid_until: Instant,
}

/// The client; share one per plugin instance (it caches the token).
pub struct LarkClient {
    agent: ureq::Agent,
    base_url: String,
    app_id: String,
    app_secret: String,
    token: Mutex<Option<CachedToken>>,
    /// Lark codes the operator declared worth retrying (`retry_codes`).
    retry_codes: Vec<i64>,
}

impl std::fmt::Debug for LarkClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LarkClient")
            .field("base_url", &self.base_url)
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

impl LarkClient {
    /// A client for `base_url` (no trailing slash) with a per-request `timeout`.
    pub fn new(base_url: &str, app_id: &str, app_secret: &str, timeout: Duration) -> LarkClient {
        LarkClient {
            agent: agent(timeout),
            base_url: base_url.trim_end_matches('/').to_owned(),
            app_id: app_id.to_owned(),
            app_secret: app_secret.to_owned(),
            token: Mutex::new(None),
            retry_codes: Vec::new(),
        }
    }

    /// The same client, treating a Lark answer with one of `codes` as transient (retried)
    /// rather than final.
    pub fn with_retry_codes(mut self, codes: Vec<i64>) -> LarkClient {
        self.retry_codes = codes;
        self
    }

    /// `e`, marked transient when its code is one of the operator's `retry_codes`.
    fn classify(&self, e: ApiError) -> ApiError {
        match e {
            ApiError::Lark {
                call,
                code,
                msg,
                log_id,
                http_status,
                retry_after,
                retry,
            } => ApiError::Lark {
                retry: retry || self.retry_codes.contains(&code),
                call,
                code,
                msg,
                log_id,
                http_status,
                retry_after,
            },
            other => other,
        }
    }

    /// Withdraws the whole balance of `bonus_types` (1 points, 2 cash) of `account_id`, with
    /// `external_order_id` as Lark's idempotency key.
    pub fn withdraw(
        &self,
        account_id: &str,
        bonus_types: &[u8],
        external_order_id: &str,
    ) -> Result<Withdrawal, ApiError> {
        const CALL: &str = WITHDRAW;
        let url = format!(
            "{}/open-apis/hire/v1/referral_account/{}/withdraw",
            self.base_url,
            encode_segment(account_id)
        );
        let body = serde_json::json!({
            "withdraw_bonus_type": bonus_types,
            "external_order_id": external_order_id,
        })
        .to_string();
        let (data, log_id): (Option<WithdrawData>, _) = self.call_with_token(CALL, &url, &body)?;
        withdrawal(data, bonus_types, log_id)
    }

    /// Submits per-account totals for `[start_ms, end_ms]`; returns Lark's mismatches.
    pub fn reconcile(
        &self,
        start_ms: u64,
        end_ms: u64,
        details: &[TradeDetail],
    ) -> Result<Vec<Mismatch>, ApiError> {
        let url = format!(
            "{}/open-apis/hire/v1/referral_account/reconciliation",
            self.base_url
        );
        // Serialised directly (not through `serde_json::Value`) so amounts stay exact text.
        let body = serde_json::to_string(&ReconcileRequest {
            start_trans_time: start_ms.to_string(),
            end_trans_time: end_ms.to_string(),
            trade_details: details,
        })
        .map_err(|e| ApiError::Transient {
            call: "reconciliation",
            reason: format!("cannot encode request: {e}"),
            retry_after: None,
        })?;
        let (data, _): (Option<ReconcileData>, _) =
            self.call_with_token("reconciliation", &url, &body)?;
        Ok(data.map(|d| d.check_failed_list).unwrap_or_default())
    }

    /// POSTs with a bearer token; on an invalid-token code, refreshes it and tries once more.
    /// A Lark error (of the token call too) is classified with the operator's `retry_codes`.
    fn call_with_token<T: DeserializeOwned>(
        &self,
        call: &'static str,
        url: &str,
        body: &str,
    ) -> Result<(Option<T>, Option<String>), ApiError> {
        self.call_with_fresh_token(call, url, body)
            .map_err(|e| self.classify(e))
    }

    fn call_with_fresh_token<T: DeserializeOwned>(
        &self,
        call: &'static str,
        url: &str,
        body: &str,
    ) -> Result<(Option<T>, Option<String>), ApiError> {
        let mut refreshed = false;
        loop {
            let token = self.token()?;
            let result = self
                .post(call, url, Some(&token), body)
                .and_then(|reply| parse_envelope::<T>(call, reply));
            match result {
                Err(e) if e.is_invalid_token() => {
                    // Refused twice: the fresh token is dropped too (the next delivery fetches
                    // another), and this one is retried later.
                    self.invalidate(&token);
                    if refreshed {
                        return Err(e);
                    }
                    refreshed = true;
                }
                other => return other,
            }
        }
    }

    /// The cached `tenant_access_token`, fetched when absent or about to expire.
    fn token(&self) -> Result<String, ApiError> {
        const CALL: &str = "tenant_access_token";
        // Held across the fetch so concurrent deliveries make one token call, not several.
        let mut cached = self.token.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = cached.as_ref() {
            if Instant::now() < t.valid_until {
                return Ok(t.value.clone());
            }
        }
        let url = format!(
            "{}/open-apis/auth/v3/tenant_access_token/internal",
            self.base_url
        );
        let body =
            serde_json::json!({"app_id": self.app_id, "app_secret": self.app_secret}).to_string();
        let reply = self.post(CALL, &url, None, &body)?;
        check_status(CALL, &reply)?;
        let parsed: TokenReply = match serde_json::from_str(&reply.body) {
            Ok(p) => p,
            Err(_) => return Err(unreadable(CALL, &reply)),
        };
        if parsed.code != 0 {
            return Err(lark_error(CALL, parsed.code, parsed.msg, &reply));
        }
        if parsed.tenant_access_token.is_empty() {
            return Err(unreadable(CALL, &reply));
        }
        // Lark says 7200 s; a lifetime past a day is not believed (and an absurd one must not
        // overflow the clock arithmetic below).
        let lifetime = Duration::from_secs(parsed.expire.min(MAX_TOKEN_LIFETIME_S))
            .saturating_sub(TOKEN_MARGIN);
        *cached = Some(CachedToken {
            value: parsed.tenant_access_token.clone(),
            valid_until: Instant::now() + lifetime,
        });
        Ok(parsed.tenant_access_token)
    }

    /// Forgets `token` if it is still the cached one.
    fn invalidate(&self, token: &str) {
        let mut cached = self.token.lock().unwrap_or_else(|p| p.into_inner());
        if cached.as_ref().is_some_and(|t| t.value == token) {
            *cached = None;
        }
    }

    fn post(
        &self,
        call: &'static str,
        url: &str,
        bearer: Option<&str>,
        body: &str,
    ) -> Result<Reply, ApiError> {
        let mut req = self
            .agent
            .post(url)
            .set("Content-Type", "application/json; charset=utf-8");
        if let Some(token) = bearer {
            req = req.set("Authorization", &format!("Bearer {token}"));
        }
        let response = match req.send_string(body) {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => {
                return Err(ApiError::Transient {
                    call,
                    reason: format!("network error: {}", crate::shown::transport_error(&t)),
                    retry_after: None,
                })
            }
        };
        let status = response.status();
        let log_id = response.header("X-Tt-Logid").map(str::to_owned);
        let retry_after = retry_after(&response);
        let body = response.into_string().map_err(|e| ApiError::Transient {
            call,
            reason: format!("reading the HTTP {status} response failed: {e}"),
            retry_after,
        })?;
        // Whatever part of the answer is quoted later (Lark's `msg`), an echo of the app secret
        // must not be: scrub it before anything reads or cuts the text.
        let body = scrub(body, &self.app_secret);
        Ok(Reply {
            status,
            body,
            log_id,
            retry_after,
        })
    }
}

/// `text` with every copy of `secret` replaced by `<redacted>` (secrets under 4 characters are
/// left alone: they would shred ordinary words).
fn scrub(text: String, secret: &str) -> String {
    if secret.len() >= 4 && text.contains(secret) {
        text.replace(secret, "<redacted>")
    } else {
        text
    }
}

/// An agent with one overall timeout per request and no redirects (a POST is never replayed).
pub(crate) fn agent(timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(timeout)
        .redirects(0)
        .build()
}

/// `Retry-After` (seconds), or Lark's `x-ogw-ratelimit-reset` (seconds).
pub(crate) fn retry_after(response: &ureq::Response) -> Option<Duration> {
    ["Retry-After", "x-ogw-ratelimit-reset"]
        .iter()
        .filter_map(|h| response.header(h))
        .find_map(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Percent-encodes a URL path segment (everything but RFC 3986 unreserved characters).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        // `.` is encoded too: a segment `.` or `..` would be resolved as a path step.
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod scrub_tests {
    use super::scrub;

    #[test]
    fn an_echoed_app_secret_is_redacted_and_json_stays_valid() {
        let body = r#"{"code":10014,"msg":"app secret s3cr3t-app-secret is invalid"}"#.to_owned();
        let out = scrub(body, "s3cr3t-app-secret");
        assert!(!out.contains("s3cr3t"), "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("still JSON");
        assert_eq!(v["msg"], "app secret <redacted> is invalid");
        assert_eq!(
            scrub("abc".into(), "ab"),
            "abc",
            "short secrets are not scrubbed"
        );
    }
}

#[cfg(test)]
mod tests;
