//! Who may use the admin API and console. With no `[admin] token` (only allowed on a loopback
//! listener) everyone who can connect may; with one, every `/api` call and console page needs it:
//! `Authorization: Bearer <token>` (scripts; the scheme in any case; an `Authorization` header of
//! another scheme, such as a basic-auth proxy's, is ignored: neither a try nor a failure), or a
//! session cookie from the login form (browsers: HttpOnly, SameSite=Strict). A cookie-authenticated POST also needs the session's CSRF token in
//! `X-CSRF-Token` (or a `csrf` form field); a POST with no token configured must come from the
//! console's own origin. Failed token checks are counted and, per client address, rate limited.
//!
//! The token is swapped by a reload ([`Auth::set_token`]); a changed token ends every session.
//!
//! Never: compares a secret with `==` (SHA-256 digests, compared with `subtle`), keeps a session
//! id in memory (only its digest), logs a token, or lets a poisoned lock turn a check off (a
//! panic elsewhere while a lock was held leaves its data usable: the locks are taken through
//! [`lock`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use hyper::header::{HeaderMap, HeaderValue};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::config::AdminToken;

/// The session cookie's name.
pub const COOKIE: &str = "gw_admin";
/// How long a login lasts.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions held at most (the oldest goes first).
const MAX_SESSIONS: usize = 1024;
/// Failed token checks one client address may make per [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Clients tracked at most (expired entries are dropped first; while all are live, a client not
/// tracked is refused: see [`table_full`]).
const MAX_TRACKED: usize = 10_000;

/// How a request proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No token configured (loopback only): anyone who can connect.
    Open,
    /// `Authorization: Bearer` with the token: not an ambient credential, no CSRF check.
    Bearer,
    /// The login cookie; POSTs must carry this session's CSRF token.
    Session { csrf: String },
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No credentials, or an expired session: log in (browsers) or send the token (scripts).
    Missing,
    /// A wrong token.
    Wrong,
    /// Too many wrong tokens from this address lately; try again after this long.
    Throttled(Duration),
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Takes `m` even if a thread panicked while holding it: every map here stays consistent between
/// statements, and refusing to work (or to count failures) after a panic would silently turn
/// sessions or throttling off.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How much longer an address with `failures` failures in a window that started `elapsed` ago is
/// refused; `None` when it is not (too few failures, or the window is over).
fn throttle_left(failures: u32, elapsed: Duration) -> Option<Duration> {
    let left = FAILURE_WINDOW.checked_sub(elapsed)?;
    (failures >= MAX_FAILURES && !left.is_zero()).then_some(left)
}

/// Constant-time equality of two strings (through their digests, so lengths do not leak).
pub fn secret_eq(a: &str, b: &str) -> bool {
    lark_core::crypto::tokens_match(a, b)
}

struct Session {
    csrf: String,
    expires: Instant,
}

/// The token, the live sessions and the failure counts.
pub struct Auth {
    /// Read per request; replaced by a reload ([`Auth::set_token`]).
    token: RwLock<Option<Arc<AdminToken>>>,
    /// The listener speaks HTTPS: the session cookie is also `Secure`.
    secure: bool,
    /// Keyed by the SHA-256 of the session id (the id itself is only in the browser's cookie).
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    /// Per client address: failures in the current window and when it started.
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("token", &self.token().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// The credential of the first `Authorization` header of the `Bearer` scheme (matched in any
/// case, as RFC 9110 says of schemes), trimmed: `None` when no header names that scheme;
/// `Some(None)` when its credential is not text a header can carry as such (not ASCII).
fn bearer(headers: &HeaderMap) -> Option<Option<&str>> {
    headers
        .get_all(hyper::header::AUTHORIZATION)
        .iter()
        .find_map(|v| {
            let bytes = v.as_bytes();
            let scheme_end = bytes.iter().position(|b| *b == b' ').unwrap_or(bytes.len());
            let (scheme, rest) = bytes.split_at(scheme_end);
            scheme.eq_ignore_ascii_case(b"bearer").then(|| {
                std::str::from_utf8(rest)
                    .ok()
                    .filter(|r| r.is_ascii())
                    .map(str::trim)
            })
        })
}

/// One cookie's value from a `Cookie` header.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

impl Auth {
    pub fn new(token: Option<AdminToken>, secure: bool) -> Auth {
        Auth {
            token: RwLock::new(token.map(Arc::new)),
            secure,
            sessions: Mutex::default(),
            failures: Mutex::default(),
        }
    }

    /// The token now.
    fn token(&self) -> Option<Arc<AdminToken>> {
        self.token
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether a token is configured (then pages and API calls need it).
    pub fn required(&self) -> bool {
        self.token().is_some()
    }

    /// Replaces the token (a reload). Returns whether it changed; when it did, every session
    /// ends (a rotation after a leak logs everyone out). Failure counts stay.
    pub fn set_token(&self, new: Option<AdminToken>) -> bool {
        // Sessions first, then the token: the order `login` takes them in.
        let mut sessions = lock(&self.sessions);
        let mut token = self.token.write().unwrap_or_else(PoisonError::into_inner);
        let same = match (token.as_deref(), new.as_ref()) {
            (Some(old), Some(new)) => secret_eq(&old.0, &new.0),
            (None, None) => true,
            _ => false,
        };
        if same {
            return false;
        }
        *token = new.map(Arc::new);
        sessions.clear();
        true
    }

    /// Checks a request's credentials. A wrong bearer token counts as a failure of `peer`; an
    /// `Authorization` header of another scheme is ignored (the session cookie, if any, decides).
    pub fn check(&self, headers: &HeaderMap, peer: IpAddr) -> Result<Principal, Denied> {
        let Some(token) = self.token() else {
            return Ok(Principal::Open);
        };
        // Only the `Bearer` scheme is ours: another one (a basic-auth proxy's `Basic ...`
        // passed on) is not a try at the token, and the request goes on as if it had none.
        if let Some(given) = bearer(headers) {
            self.throttled(peer)?;
            // A value that is not visible ASCII can never be the token (`check` refuses such a
            // token): a wrong token like any other.
            if given.is_some_and(|g| secret_eq(g, &token.0)) {
                return Ok(Principal::Bearer);
            }
            self.failed(peer, "bearer");
            return Err(Denied::Wrong);
        }
        let Some(id) = cookie(headers, COOKIE) else {
            return Err(Denied::Missing);
        };
        let key = digest(id.as_bytes());
        let mut sessions = lock(&self.sessions);
        match sessions.get(&key) {
            Some(s) if s.expires > Instant::now() => Ok(Principal::Session {
                csrf: s.csrf.clone(),
            }),
            Some(_) => {
                sessions.remove(&key);
                Err(Denied::Missing)
            }
            None => Err(Denied::Missing),
        }
    }

    /// A login attempt with `given`: a new session's cookie value when it is the token.
    pub fn login(&self, given: &str, peer: IpAddr) -> Result<String, Denied> {
        let Some(token) = self.token() else {
            return Err(Denied::Missing);
        };
        self.throttled(peer)?;
        if !secret_eq(given, &token.0) {
            self.failed(peer, "login");
            return Err(Denied::Wrong);
        }
        let id = random_hex();
        let mut sessions = lock(&self.sessions);
        // A reload may have replaced the token since it was checked: no session from an old one
        // (`set_token` holds the sessions lock while it swaps the token and clears them).
        if !self.token().is_some_and(|now| Arc::ptr_eq(&now, &token)) {
            return Err(Denied::Wrong);
        }
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| *k)
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            digest(id.as_bytes()),
            Session {
                csrf: random_hex(),
                expires: now + SESSION_TTL,
            },
        );
        Ok(id)
    }

    /// Ends the session of this request's cookie, if any.
    pub fn logout(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, COOKIE) {
            lock(&self.sessions).remove(&digest(id.as_bytes()));
        }
    }

    /// `Set-Cookie` for a new session (`Secure` over HTTPS).
    pub fn session_cookie(&self, id: &str) -> HeaderValue {
        HeaderValue::from_str(&format!(
            "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            SESSION_TTL.as_secs(),
            self.secure_attribute()
        ))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// `Set-Cookie` that removes the session cookie.
    pub fn clear_cookie(&self) -> HeaderValue {
        HeaderValue::from_str(&format!(
            "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
            self.secure_attribute()
        ))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    fn secure_attribute(&self) -> &'static str {
        if self.secure {
            "; Secure"
        } else {
            ""
        }
    }

    fn throttled(&self, peer: IpAddr) -> Result<(), Denied> {
        let mut failures = lock(&self.failures);
        // One reading of the clock: the window may end between two.
        let left = match failures.get(&throttle_key(peer)) {
            Some((n, since)) => throttle_left(*n, since.elapsed()),
            None => table_full(&mut failures),
        };
        drop(failures);
        match left {
            Some(left) => {
                crate::metrics::admin_auth_failure("throttled");
                Err(Denied::Throttled(left))
            }
            None => Ok(()),
        }
    }

    fn failed(&self, peer: IpAddr, method: &'static str) {
        crate::metrics::admin_auth_failure(method);
        tracing::warn!(client = %peer, method, "admin: wrong token");
        let mut failures = lock(&self.failures);
        let key = throttle_key(peer);
        if !failures.contains_key(&key) && table_full(&mut failures).is_some() {
            // Only when another thread filled the table since `throttled` looked: the next try
            // of this client is refused there.
            return;
        }
        let entry = failures.entry(key).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }
}

/// When every one of the [`MAX_TRACKED`] entries has a window still running (expired ones are
/// dropped first), how long until the oldest ends: a client not in the table is refused until
/// then. Forgetting the live entries instead would let anyone holding that many addresses reset
/// every count, and try tokens without limit.
fn table_full(failures: &mut HashMap<IpAddr, (u32, Instant)>) -> Option<Duration> {
    // The scan only once the table is full (entries of ended windows count for nothing).
    if failures.len() >= MAX_TRACKED {
        failures.retain(|_, (_, since)| window_runs(*since));
    }
    if failures.len() < MAX_TRACKED {
        return None;
    }
    let oldest = failures.values().map(|(_, since)| since.elapsed()).max()?;
    FAILURE_WINDOW
        .checked_sub(oldest)
        .filter(|left| !left.is_zero())
}

/// Whether a failure window that started at `since` still runs.
fn window_runs(since: Instant) -> bool {
    since.elapsed() < FAILURE_WINDOW
}

/// Whose failures a failure from `peer` counts with: one client is an IPv4 address, an IPv6 /64
/// (one host may hold a whole /64), or the machine itself (every loopback address: 127.0.0.0/8
/// is one host, whose users could otherwise try 10 tokens a minute from each of its addresses).
fn throttle_key(peer: IpAddr) -> IpAddr {
    // Looked at before the /64 (`::1`'s is `::`, not loopback), IPv4-mapped ones too.
    let loopback = match peer {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    };
    let client = crate::server::peers::client(peer);
    if loopback || client.is_loopback() {
        IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
    } else {
        client
    }
}

/// Whether `host` (a `Host` header: a name or address, maybe with a port) names this machine's
/// loopback interface: `localhost`, an address in 127.0.0.0/8, or `[::1]`. What a request must be
/// addressed to when no token is configured: a page whose own host name was rebound to
/// 127.0.0.1 (DNS rebinding) sends that name, and must not use the API.
pub fn loopback_host(host: &str) -> bool {
    let port_ok = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = host.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return false;
        };
        let after_ok = after.is_empty() || after.strip_prefix(':').is_some_and(port_ok);
        return after_ok
            && inside.parse::<std::net::Ipv6Addr>().is_ok_and(|a| {
                a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            });
    }
    let name = match host.split_once(':') {
        Some((name, port)) if port_ok(port) => name,
        Some(_) => return false,
        None => host,
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback())
}

/// Whether a state-changing request may proceed for `who`: a session needs its CSRF token
/// (header `X-CSRF-Token`, or `form_csrf` from a form body); with no token configured the request
/// must not come from another site (`Origin` / `Sec-Fetch-Site`); a bearer token needs nothing.
pub fn csrf_ok(who: &Principal, headers: &HeaderMap, form_csrf: Option<&str>) -> bool {
    match who {
        Principal::Bearer => true,
        Principal::Session { csrf } => {
            let given = headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .or(form_csrf)
                .unwrap_or("");
            !given.is_empty() && secret_eq(given, csrf)
        }
        Principal::Open => same_origin(headers),
    }
}

/// No `Origin` (not a browser, or a same-origin GET-initiated form in old browsers) or one naming
/// this host; and no `Sec-Fetch-Site` other than `same-origin` / `none`.
fn same_origin(headers: &HeaderMap) -> bool {
    let site_ok = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|s| s == "same-origin" || s == "none");
    let host = headers
        .get(hyper::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_ok = headers
        .get(hyper::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|o| {
            o.strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"))
                == Some(host)
        });
    site_ok && origin_ok
}

#[cfg(test)]
#[path = "auth/tests.rs"]
mod tests;
