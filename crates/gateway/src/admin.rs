//! The admin listener (separate from the public webhook port; loopback by default):
//! `/healthz` (the process answers), `/readyz` (store writable: [`readiness`]; plugins initialised, not
//! shutting down, every websocket app's long connection up; the body lists each websocket app's
//! state), `/status` (JSON: per-plugin health — last success, consecutive failures, last error,
//! pending, calls running — and each websocket app's state; for humans and dashboards),
//! `/metrics` (Prometheus text), the JSON API under `/api/v1` ([`api`]) and the web console at `/`
//! ([`console`]).
//!
//! `/healthz`, `/readyz` and `/metrics` are always open (load balancers and Prometheus); with an
//! `[admin] token` everything else needs it ([`auth`]); without one, everything else answers only
//! requests addressed to a loopback name ([`auth::loopback_host`]: a page whose own host name
//! was rebound to 127.0.0.1 sends that name) and that no browser says another site made
//! (`Sec-Fetch-Site`: a page the operator visits cannot make it run the API's queries). The token
//! follows reloads ([`Admin::reload_token`]). Request bodies are bounded ([`api::MAX_BODY`],
//! [`BODY_TIMEOUT`]); connections, heads and their read time by the listener (`server.rs`). A
//! NUL byte in an id or name is refused before any store query (PostgreSQL could not run it).
//! Every answer says `X-Content-Type-Options: nosniff` ([`Admin::serve`]). Never: serves a page
//! or answer that holds a verification token or the admin token, lets a cross-site request
//! change anything (or, without a token, read anything), or redirects to another site.

mod api;
mod auth;
mod backlog;
mod console;
mod form;
mod history;
mod http;
mod readiness;
mod redact;
mod reports;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE, SET_COOKIE};
use hyper::{Method, Request, StatusCode};

use crate::config::AdminToken;
use crate::delivery::Engine;
use crate::longconn::{LongConns, State};
use crate::metrics;
use crate::reload::Live;
use crate::store::{sqlite::now_ms, Store};
use api::ApiError;
use auth::{Denied, Principal};
use http::{api_error, json_reply, local_path, read_body, redirect, refused_without_token, text};
pub use http::{Reply, BODY_TIMEOUT};

/// How often the console's per-minute history samples the counters.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// State the admin endpoints read.
pub struct Admin {
    pub store: Arc<dyn Store>,
    /// Set when shutdown begins: `/readyz` turns 503 so load balancers stop sending.
    pub shutting_down: AtomicBool,
    /// Set once every plugin instance is initialised.
    pub plugins_ready: AtomicBool,
    /// The long-connection clients, once started.
    pub long_conns: Mutex<Option<Arc<LongConns>>>,
    /// The delivery engine, once started (for `/status`).
    pub engine: Mutex<Option<Arc<Engine>>>,
    /// The running config, once started: reloads, replay's name checks, the plugins page.
    pub live: Mutex<Option<Arc<Live>>>,
    /// The token, sessions and failed-login counts.
    auth: auth::Auth,
    /// The admin listener is on a loopback address (or off): only then may a reload remove the
    /// token.
    loopback: bool,
    /// The console's last hour, per minute.
    history: history::History,
    /// The store's part of readiness: one probe write a second at most, each answer within a
    /// bound ([`readiness`]).
    store_probe: readiness::StoreProbe,
    /// The backlog's one read for many callers ([`backlog`]).
    backlog: backlog::BacklogReads,
    /// Held while a scrape refreshes the gauges and encodes them ([`Admin::scrape`]).
    scraping: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

/// Samples the counters into the history until the admin state is gone.
async fn sample(admin: Weak<Admin>) {
    loop {
        let Some(a) = admin.upgrade() else { return };
        let totals = history::Totals::from_metrics(&metrics::get().encode());
        a.history.sample(now_ms().div_euclid(60_000), totals);
        drop(a);
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

impl Admin {
    /// The admin state; starts the console's history sampler (call inside the runtime).
    /// `https`: the listener serves TLS (the session cookie is then `Secure`).
    /// `loopback`: the admin listener is on a loopback address (or off).
    pub fn new(
        store: Arc<dyn Store>,
        token: Option<AdminToken>,
        https: bool,
        loopback: bool,
    ) -> Arc<Admin> {
        let admin = Arc::new(Admin {
            store,
            shutting_down: Default::default(),
            plugins_ready: Default::default(),
            long_conns: Default::default(),
            engine: Default::default(),
            live: Default::default(),
            auth: auth::Auth::new(token, https),
            loopback,
            history: Default::default(),
            store_probe: Default::default(),
            backlog: Default::default(),
            scraping: Default::default(),
        });
        tokio::spawn(sample(Arc::downgrade(&admin)));
        admin
    }

    /// A reload's `[admin] token`: a changed token replaces the old one at once and ends every
    /// session. Removing it is refused while the listener is not on a loopback address: the old
    /// one stays, and the note saying so is returned (the reload reports it as not applied).
    pub fn reload_token(&self, token: Option<AdminToken>) -> Option<String> {
        let had = self.auth.required();
        if had && token.is_none() && !self.loopback {
            return Some("[admin] token removed, but the admin listener is not on a loopback address: it keeps asking for the old token until a restart".into());
        }
        let has = token.is_some();
        if !self.auth.set_token(token) {
            return None;
        }
        match (had, has) {
            (true, true) => tracing::info!("[admin] token changed: the API and console take the new one; every console session ended"),
            (false, true) => tracing::info!("[admin] token set: the API and console now ask for it"),
            _ => tracing::warn!("[admin] token removed: every console session ended; the API and console are open to requests addressed to a loopback name"),
        }
        None
    }

    fn live(&self) -> Option<Arc<Live>> {
        self.live.lock().ok().and_then(|l| l.clone())
    }

    /// The running config; while the gateway is still starting (the listeners come up a moment
    /// before it is wired), waits for it up to a few seconds; none once the stop let it go.
    async fn live_ready(&self) -> Option<Arc<Live>> {
        for _ in 0..250 {
            if let Some(live) = self.live() {
                return Some(live);
            }
            if self.shutting_down.load(Ordering::SeqCst) {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Why a call that needs the running config cannot have it: the gateway is still starting,
    /// or (late in a stop, which lets the config go) stopping.
    pub(crate) fn unready(&self) -> api::ApiError {
        api::ApiError::Unavailable(if self.shutting_down.load(Ordering::SeqCst) {
            "the gateway is stopping".into()
        } else {
            "the gateway is still starting".into()
        })
    }

    /// Answers one request to the admin listener. Every answer, whatever made it, says
    /// `X-Content-Type-Options: nosniff`: a browser never reads a JSON error, an event's text
    /// or a plain-text probe as HTML or script.
    pub async fn serve(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Reply, Infallible> {
        let mut res = self.answer(req, peer).await;
        res.headers_mut().insert(
            hyper::header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        Ok(res)
    }

    async fn answer(&self, req: Request<Incoming>, peer: SocketAddr) -> Reply {
        let plain = "text/plain; charset=utf-8";
        let path = req.uri().path().to_owned();
        let probe = matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics");
        if !probe && !self.auth.required() {
            // No token: only this machine's own names, and no request a browser says another
            // site made ([`http::refused_without_token`]).
            if let Some(refused) = refused_without_token(&req, peer) {
                return refused;
            }
        }
        match path.as_str() {
            "/healthz" => text(StatusCode::OK, "ok\n".into(), plain),
            "/readyz" => {
                let (ok, why) = self.ready().await;
                let mut body = format!("{why}\n");
                for (app, state) in self.websocket_states() {
                    body.push_str(&format!("websocket app {app}: {state}\n"));
                }
                let status = if ok {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                text(status, body, plain)
            }
            "/metrics" => text(
                StatusCode::OK,
                self.scrape().await,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
            "/assets/console.css" | "/assets/console.js" => console::asset(&path),
            "/login" => self.login(req, peer.ip()).await,
            _ => self.guarded(req, peer.ip()).await,
        }
    }

    /// `GET /login` shows the form; `POST /login` checks the token and sets the session cookie.
    async fn login(&self, req: Request<Incoming>, peer: std::net::IpAddr) -> Reply {
        let query = form::pairs(req.uri().query().unwrap_or(""));
        let next = form::get(&query, "next")
            .filter(|n| local_path(n))
            .unwrap_or("/")
            .to_owned();
        if !self.auth.required() {
            return redirect(&next);
        }
        if req.method() == Method::GET || req.method() == Method::HEAD {
            return console::login_page(&next, None, StatusCode::OK);
        }
        if req.method() != Method::POST {
            return api_error(&ApiError::MethodNotAllowed("GET, POST"));
        }
        let headers = req.headers().clone();
        if !auth::csrf_ok(&Principal::Open, &headers, None) {
            return console::login_page(
                &next,
                Some("refused: cross-site login"),
                StatusCode::FORBIDDEN,
            );
        }
        let body = match read_body(req.into_body(), http::MAX_LOGIN_BODY).await {
            Ok(b) => b,
            Err(e) => return api_error(&e),
        };
        let fields = form::pairs(&String::from_utf8_lossy(&body));
        let given = form::get(&fields, "token").unwrap_or("");
        match self.auth.login(given, peer) {
            Ok(id) => {
                let mut res = redirect(&next);
                res.headers_mut()
                    .insert(SET_COOKIE, self.auth.session_cookie(&id));
                res
            }
            Err(Denied::Throttled(left)) => {
                let mut res = console::login_page(
                    &next,
                    Some(&format!(
                        "too many failed logins; try again in {} s",
                        left.as_secs() + 1
                    )),
                    StatusCode::TOO_MANY_REQUESTS,
                );
                if let Ok(v) = HeaderValue::from_str(&(left.as_secs() + 1).to_string()) {
                    res.headers_mut().insert(hyper::header::RETRY_AFTER, v);
                }
                res
            }
            Err(_) => console::login_page(&next, Some("wrong token"), StatusCode::UNAUTHORIZED),
        }
    }

    /// Everything behind the token: `/status`, `/api/v1/...`, `/logout` and the console pages.
    async fn guarded(&self, req: Request<Incoming>, peer: std::net::IpAddr) -> Reply {
        let path = req.uri().path().to_owned();
        let is_api = path.starts_with("/api/");
        let who = match self.auth.check(req.headers(), peer) {
            Ok(who) => who,
            Err(Denied::Throttled(left)) => {
                return api_error(&ApiError::TooManyRequests(left.as_secs() + 1))
            }
            Err(_) if is_api || path == "/status" => return api_error(&ApiError::Unauthorized),
            Err(_) => {
                let target = match req.uri().query() {
                    Some(q) => format!("{path}?{q}"),
                    None => path.clone(),
                };
                return redirect(&format!("/login?next={}", form::encode(&target)));
            }
        };
        let method = req.method().clone();
        let headers = req.headers().clone();
        let query = form::query(req.uri().query().unwrap_or("")).map_err(|what| {
            ApiError::BadRequest(format!("{what} is not valid percent-encoded UTF-8"))
        });
        let body = if method == Method::POST {
            // State-changing calls: JSON only for the API (a cross-site form cannot send it
            // without a preflight), and the CSRF rules for every kind of credential.
            let json = headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json"));
            if is_api && !json {
                return api_error(&ApiError::UnsupportedMediaType);
            }
            let body = match read_body(req.into_body(), api::MAX_BODY).await {
                Ok(b) => b,
                Err(e) => return api_error(&e),
            };
            let form_csrf = (!json)
                .then(|| form::pairs(&String::from_utf8_lossy(&body)))
                .and_then(|f| form::get(&f, "csrf").map(str::to_owned));
            if !auth::csrf_ok(&who, &headers, form_csrf.as_deref()) {
                tracing::warn!(client = %peer, path, "admin: POST refused (CSRF)");
                return api_error(&if matches!(who, auth::Principal::Open) {
                    ApiError::CrossSite
                } else {
                    ApiError::Csrf
                });
            }
            body
        } else {
            Bytes::new()
        };
        if path == "/status" {
            if method != Method::GET && method != Method::HEAD {
                return api_error(&ApiError::MethodNotAllowed("GET"));
            }
            return json_reply(StatusCode::OK, &self.status().await);
        }
        if path == "/logout" {
            if method != Method::POST {
                return api_error(&ApiError::MethodNotAllowed("POST"));
            }
            self.auth.logout(&headers);
            let mut res = redirect("/login");
            res.headers_mut()
                .insert(SET_COOKIE, self.auth.clear_cookie());
            return res;
        }
        if let Some(rest) = path.strip_prefix("/api/v1/") {
            let query = match query {
                Ok(q) => q,
                Err(e) => return api_error(&e),
            };
            return match api::route(self, &method, rest, &query, &body).await {
                Ok(v) => json_reply(StatusCode::OK, &v),
                Err(e) => api_error(&e),
            };
        }
        if is_api {
            return api_error(&ApiError::NotFound(format!("no API endpoint {path}")));
        }
        let csrf = match &who {
            Principal::Session { csrf } => Some(csrf.as_str()),
            _ => None,
        };
        let page = console::Page {
            csrf,
            login: self.auth.required(),
        };
        match query {
            Ok(query) => console::route(self, &page, &method, &path, &query).await,
            Err(e) => console::error_page(&page, &e),
        }
    }

    /// Ready, or why not: the one answer of `/readyz`, `/status` and the API's overview (a
    /// websocket app not connected is not ready: Lark cannot deliver its events).
    async fn ready(&self) -> (bool, std::borrow::Cow<'static, str>) {
        let (ok, why) = self.store_and_plugins_ready().await;
        if !ok {
            return (ok, why.into());
        }
        let down: Vec<String> = self
            .websocket_states()
            .into_iter()
            .filter(|(_, state)| *state != State::Connected)
            .map(|(app, _)| app)
            .collect();
        if down.is_empty() {
            (true, why.into())
        } else {
            (
                false,
                format!("websocket app not connected: {}", down.join(", ")).into(),
            )
        }
    }

    /// Each websocket app's connection state, by app name.
    fn websocket_states(&self) -> Vec<(String, State)> {
        let conns = self.long_conns.lock().ok().and_then(|c| c.clone());
        conns.map(|c| c.states()).unwrap_or_default()
    }

    async fn store_and_plugins_ready(&self) -> (bool, &'static str) {
        if self.shutting_down.load(Ordering::SeqCst) {
            return (false, "shutting down");
        }
        if !self.plugins_ready.load(Ordering::SeqCst) {
            return (false, "plugins not initialised");
        }
        if self.store_probe.writable(|| self.store.probe()).await {
            (true, "ready")
        } else {
            (false, "store not writable")
        }
    }
}
