//! `[[apps]]`: one Lark app, reached by one of two transports. A webhook app is served on its own
//! request path (Lark pushes, optionally encrypted and signed); a websocket app dials Lark's long
//! connection with its app credentials (plaintext events, no public address needed). Keys of one
//! transport on an app of the other are errors, never silently ignored.

use std::time::Duration;

use lark_core::Cipher;

use super::Validator;
use crate::config::raw::RawApp;

/// The smallest `max_clock_skew` the gateway honours.
const MIN_CLOCK_SKEW: Duration = Duration::from_secs(10);

/// Feishu's Open Platform; Lark's international one is `https://open.larksuite.com`.
pub const DEFAULT_DOMAIN: &str = "https://open.feishu.cn";

/// One Lark app.
#[derive(Clone)]
pub struct App {
    pub name: String,
    pub verification_token: Option<String>,
    /// Webhook apps: when set, events whose app_id differs are refused. Websocket apps: always
    /// set (the credentials' id), and pinned the same way.
    pub app_id: Option<String>,
    pub transport: Transport,
}

/// How events of an app reach the gateway.
#[derive(Clone)]
pub enum Transport {
    Webhook(WebhookApp),
    LongConnection(LongConnApp),
}

/// A webhook app's own settings.
#[derive(Clone)]
pub struct WebhookApp {
    pub path: String,
    /// The Encrypt Key: signs requests (spec §3) and keys the cipher.
    pub encrypt_key: Option<String>,
    /// Built once from `encrypt_key`.
    pub cipher: Option<Cipher>,
    /// When set, signed requests whose timestamp is further than this from now are refused.
    pub max_clock_skew: Option<Duration>,
}

/// A websocket app's own settings.
#[derive(Clone, PartialEq, Eq)]
pub struct LongConnApp {
    pub app_id: String,
    pub app_secret: String,
    /// The Open Platform base URL, without a trailing `/`.
    pub domain: String,
}

impl App {
    pub fn webhook(&self) -> Option<&WebhookApp> {
        match &self.transport {
            Transport::Webhook(w) => Some(w),
            Transport::LongConnection(_) => None,
        }
    }

    pub fn long_connection(&self) -> Option<&LongConnApp> {
        match &self.transport {
            Transport::LongConnection(l) => Some(l),
            Transport::Webhook(_) => None,
        }
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        let mut d = f.debug_struct("App");
        d.field("name", &self.name)
            .field("verification_token", &redacted(&self.verification_token))
            .field("app_id", &self.app_id);
        match &self.transport {
            Transport::Webhook(w) => d
                .field("path", &w.path)
                .field("encrypt_key", &redacted(&w.encrypt_key))
                .field("max_clock_skew", &w.max_clock_skew),
            Transport::LongConnection(l) => d
                .field("mode", &"websocket")
                .field("app_secret", &"<redacted>")
                .field("domain", &l.domain),
        };
        d.finish()
    }
}

impl std::fmt::Debug for LongConnApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LongConnApp")
            .field("app_id", &self.app_id)
            .field("app_secret", &"<redacted>")
            .field("domain", &self.domain)
            .finish()
    }
}

impl Validator<'_> {
    pub(super) fn app(&mut self, i: usize, a: &RawApp) -> App {
        let at = |k: &str| format!("apps[{i}].{k}");
        let name = self.expand(&at("name"), &a.name);
        self.name(&at("name"), &name);
        let secret = |v: &mut Self, key: &str, value: &Option<String>| -> Option<String> {
            let value = value.as_deref().map(|t| v.expand(&at(key), t))?;
            if value.is_empty() {
                v.problem(&at(key), "is empty (remove the key to disable it)");
                None
            } else if value.trim() != value {
                // Lark's values never do: every token or signature would then fail (401s).
                v.problem(
                    &at(key),
                    "begins or ends with whitespace (a space or a line break from the variable \
                     or the file, say), which Lark's value never has, so nothing would match: \
                     remove it",
                );
                None
            } else {
                Some(value)
            }
        };
        let verification_token = secret(self, "verification_token", &a.verification_token);
        let app_id = secret(self, "app_id", &a.app_id);
        let mode = a.mode.as_deref().map(|m| self.expand(&at("mode"), m));
        let transport = match mode.as_deref() {
            None | Some("webhook") => {
                for (key, set) in [
                    ("app_secret", a.app_secret.is_some()),
                    ("domain", a.domain.is_some()),
                ] {
                    if set {
                        self.problem(
                            &at(key),
                            "belongs to websocket apps only (set mode = \"websocket\" to receive \
                             events over the long connection)",
                        );
                    }
                }
                let path = match &a.path {
                    Some(p) => self.expand(&at("path"), p),
                    None => {
                        self.problem(&at("path"), "is required for a webhook app (e.g. \"/webhook/event\"), or set mode = \"websocket\"");
                        String::new()
                    }
                };
                if a.path.is_some() {
                    if let Err(e) = request_path(&path) {
                        self.problem(&at("path"), e);
                    }
                }
                let encrypt_key = secret(self, "encrypt_key", &a.encrypt_key);
                let max_clock_skew = a.max_clock_skew.as_deref().map(|t| {
                    self.duration_at_least(
                        &at("max_clock_skew"),
                        Some(t),
                        MIN_CLOCK_SKEW,
                        MIN_CLOCK_SKEW,
                        "must be at least 10s: Lark's timestamp is in whole seconds and a \
                             request takes time to arrive (a smaller window refuses genuine \
                             events, which Lark re-sends until it gives up on them)",
                    )
                });
                if max_clock_skew.is_some() && encrypt_key.is_none() {
                    // Only a signed request carries a timestamp, and only an app with an
                    // Encrypt Key is signed: the limit would never apply.
                    self.problem(
                        &at("max_clock_skew"),
                        "applies to signed requests only, and Lark signs only for an app with an \
                         Encrypt Key: set encrypt_key, or remove max_clock_skew",
                    );
                }
                Transport::Webhook(WebhookApp {
                    path,
                    cipher: encrypt_key.as_deref().map(Cipher::new),
                    encrypt_key,
                    max_clock_skew,
                })
            }
            Some("websocket") => {
                for (key, set) in [
                    ("path", a.path.is_some()),
                    ("encrypt_key", a.encrypt_key.is_some()),
                    ("max_clock_skew", a.max_clock_skew.is_some()),
                ] {
                    if set {
                        self.problem(
                            &at(key),
                            "belongs to webhook apps only (events on the long connection arrive \
                             unencrypted and unsigned; remove it)",
                        );
                    }
                }
                if app_id.is_none() && a.app_id.is_none() {
                    self.problem(&at("app_id"), "is required for a websocket app");
                }
                let app_secret = secret(self, "app_secret", &a.app_secret);
                if a.app_secret.is_none() {
                    self.problem(&at("app_secret"), "is required for a websocket app");
                }
                let domain = self.domain(&at("domain"), a.domain.as_deref());
                Transport::LongConnection(LongConnApp {
                    app_id: app_id.clone().unwrap_or_default(),
                    app_secret: app_secret.unwrap_or_default(),
                    domain,
                })
            }
            Some(other) => {
                self.problem(
                    &at("mode"),
                    format!("{other:?} is neither \"webhook\" nor \"websocket\""),
                );
                Transport::Webhook(WebhookApp {
                    path: String::new(),
                    encrypt_key: None,
                    cipher: None,
                    max_clock_skew: None,
                })
            }
        };
        App {
            name,
            verification_token,
            app_id,
            transport,
        }
    }

    /// An `http(s)://host[:port]` base URL. Plain `http` sends the app secret in clear, so it
    /// is only allowed to a loopback host (a local stand-in).
    /// Messages show the URL as [`shown_url`] does (no user info, no query).
    fn domain(&mut self, at: &str, text: Option<&str>) -> String {
        let text = self.expand(at, text.unwrap_or(DEFAULT_DOMAIN));
        let domain = text.trim_end_matches('/').to_owned();
        let text = shown_url(&text);
        // The host must be what it seems: user info (`http://localhost:1@elsewhere` goes to
        // elsewhere), a query or a fragment have no place in a base URL.
        let authority = domain
            .split_once("://")
            .map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""));
        if let Some(c) = domain
            .chars()
            .find(|c| c.is_whitespace() || c.is_control())
            .or_else(|| authority.chars().find(|c| *c == '@'))
            .or_else(|| domain.chars().find(|c| matches!(c, '?' | '#')))
        {
            self.problem(
                at,
                format!(
                    "{text:?}: {c:?} has no place in a base URL like \"{DEFAULT_DOMAIN}\" (no user \
                     info, query, fragment or spaces)"
                ),
            );
            return domain;
        }
        let host = |rest: &str| {
            let authority = rest.split('/').next().unwrap_or("");
            match authority.strip_prefix('[') {
                Some(v6) => v6.split(']').next().unwrap_or("").to_owned(),
                None => authority.split(':').next().unwrap_or("").to_owned(),
            }
        };
        if let Some(rest) = domain.strip_prefix("https://") {
            if host(rest).is_empty() {
                self.problem(at, format!("{text:?} has no host"));
            }
        } else if let Some(rest) = domain.strip_prefix("http://") {
            let h = host(rest);
            let loopback = h == "localhost"
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.to_canonical().is_loopback());
            if !loopback {
                self.problem(
                    at,
                    format!(
                        "{text:?}: plain http would send the app secret in clear; use https:// \
                         (http:// is allowed only to a loopback host)"
                    ),
                );
            }
        } else {
            self.problem(
                at,
                format!("{text:?} is not a URL like \"{DEFAULT_DOMAIN}\""),
            );
        }
        domain
    }
}

/// A webhook app's `path` as a request path can be: it starts with `/`, and has none of the
/// characters a request's path never holds (a query or fragment starts at `?` or `#`; spaces,
/// controls, `<`, `>` and `` ` `` are refused by the HTTP parser). Apps are looked up by the
/// request's path alone, so such a path would never match.
fn request_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} must start with `/`"));
    }
    match path
        .chars()
        .find(|c| c.is_ascii_control() || matches!(c, ' ' | '?' | '#' | '<' | '>' | '`'))
    {
        Some(c) => Err(format!(
            "{path:?}: a request path cannot hold {c:?} (no query, fragment, spaces or \
             control characters; percent-encode anything else the path needs), so no request \
             would ever match it"
        )),
        None => Ok(()),
    }
}

/// `url` for an error message: user info (`user:password@`) and a query or fragment are
/// replaced by `<redacted>`.
fn shown_url(url: &str) -> String {
    gateway_plugin::config::shown_url(url, "<redacted>")
}
