//! The one ingest path every transport feeds once it has a plaintext event: the webhook listener
//! ([`crate::ingress`]: after path, size, signature and decryption) and the long connection
//! ([`crate::longconn`]: after frame reassembly).
//!
//! Steps, in order: verification token (constant time) → app_id pin → the event id joins the
//! current span → routes looked up in the config current *now* (not when the transport began:
//! a reload meanwhile must not route to a removed plugin) → dedup + durable store → fresh
//! deliveries handed to the engine → metrics.
//!
//! Invariants: `Ok` only once the store confirmed the event durable (or already held it); a
//! store failure is [`Rejection::StoreUnavailable`], so the transport answers "not taken" and
//! Lark re-sends; no secret or body is logged.

mod rejection;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use lark_core::{crypto, Envelope, Event};

pub use rejection::Rejection;

use crate::config::{App, Config};
use crate::delivery::{Engine, Job};
use crate::metrics;
use crate::router::Router;
use crate::store::{sqlite::now_ms, Accepted, NewEvent, Store};

/// What the transports need from the current config; swapped whole on reload.
#[derive(Debug)]
pub struct Routes {
    /// Webhook apps by request path.
    pub by_path: HashMap<String, Arc<App>>,
    /// Every app by name.
    pub by_name: HashMap<String, Arc<App>>,
    pub router: Router,
    /// The largest event body accepted, on either transport.
    pub max_body_bytes: usize,
    /// How long a client may take to send its body once the headers are in (slow-body
    /// protection; hyper already bounds the headers).
    pub body_timeout: std::time::Duration,
    /// Peers whose `X-Forwarded-For` names the client in logs.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

impl Routes {
    pub fn from_config(config: &Config) -> Routes {
        let apps: Vec<Arc<App>> = config.apps.iter().cloned().map(Arc::new).collect();
        Routes {
            by_path: apps
                .iter()
                .filter_map(|a| Some((a.webhook()?.path.clone(), a.clone())))
                .collect(),
            by_name: apps.iter().map(|a| (a.name.clone(), a.clone())).collect(),
            router: Router::new(config.routes.clone()),
            max_body_bytes: config.max_body_bytes,
            body_timeout: config.body_timeout,
            trusted_proxies: config.trusted_proxies.clone(),
        }
    }
}

/// What an accepted event turned into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    New,
    Duplicate,
}

/// The shared ingest state.
pub struct Intake {
    routes: RwLock<Arc<Routes>>,
    store: Arc<dyn Store>,
    engine: Arc<Engine>,
    /// Limits the "store failed" log lines (a full disk fails every event while Lark sends).
    store_failures: crate::ingress::log_limit::RefusalLog,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake").finish_non_exhaustive()
    }
}

impl Intake {
    pub fn new(routes: Routes, store: Arc<dyn Store>, engine: Arc<Engine>) -> Intake {
        Intake {
            routes: RwLock::new(Arc::new(routes)),
            store,
            engine,
            store_failures: Default::default(),
        }
    }

    /// The current routes; `None` only if a writer panicked mid-swap.
    pub fn routes(&self) -> Option<Arc<Routes>> {
        self.routes.read().ok().map(|r| r.clone())
    }

    /// Switches every transport to `routes` at once.
    pub fn swap_routes(&self, routes: Routes) {
        if let Ok(mut current) = self.routes.write() {
            *current = Arc::new(routes);
        }
    }

    /// A plaintext payload from the long connection of app `app_name`: must be a schema 2.0 or
    /// 1.0 event (no challenge, no encryption on this transport).
    pub async fn payload(&self, app_name: &str, payload: &[u8]) -> Result<Stored, Rejection> {
        let routes = self.routes().ok_or(Rejection::StoreUnavailable)?;
        let app = routes
            .by_name
            .get(app_name)
            .filter(|a| a.long_connection().is_some())
            .cloned()
            .ok_or(Rejection::NotFound)?;
        if payload.len() > routes.max_body_bytes {
            return Err(Rejection::TooLarge {
                limit: routes.max_body_bytes,
            });
        }
        match Envelope::parse(payload).map_err(|e| Rejection::Malformed(e.to_string()))? {
            Envelope::Event(event) => self.event(&app, &routes, event).await,
            Envelope::Challenge { .. } => Err(Rejection::Malformed(
                "a url_verification challenge is not expected on the long connection".into(),
            )),
            Envelope::Encrypted { .. } => Err(Rejection::Malformed(
                "an encrypted payload on the long connection: events arrive in plaintext here; \
                 the Encrypt Key applies to webhook delivery only"
                    .into(),
            )),
        }
    }

    /// An opened event of `app`: token, pin, dedup, durable store, hand-off.
    pub async fn event(
        &self,
        app: &App,
        routes: &Routes,
        event: Event,
    ) -> Result<Stored, Rejection> {
        check_token(app, event.token.as_deref())?;
        // A pin refuses another app's events, and a 2.0 event that names none (Lark's 2.0
        // header always carries it); a 1.0 event is checked when it names its app.
        if let Some(pinned) = &app.app_id {
            match &event.app_id {
                Some(got) if got != pinned => return Err(Rejection::AppIdMismatch),
                None if event.schema == lark_core::envelope::Schema::V2 => {
                    return Err(Rejection::AppIdMissing)
                }
                _ => {}
            }
        }
        // Only authenticated ids reach the logs, and never more than 128 characters of one.
        let shown = match event.id.char_indices().nth(128) {
            Some((cut, _)) => &event.id[..cut],
            None => event.id.as_str(),
        };
        tracing::Span::current().record("event_id", shown);

        let plugins = routes.router.plugins_for(&app.name, &event.event_type);
        let received_at_ms = now_ms();
        let body: Arc<str> = Arc::from(event.raw);
        let new = NewEvent {
            id: event.id.clone(),
            app: app.name.clone(),
            event_type: event.event_type.clone(),
            schema: event.schema.as_str(),
            received_at_ms,
            body: body.clone(),
            plugins,
        };
        let m = metrics::get();
        match self.store.accept(new).await {
            Ok(Accepted::Duplicate) => {
                m.duplicates.get_or_create(&metrics::app(&app.name)).inc();
                tracing::debug!(event_type = %event.event_type, "duplicate event: already stored");
                Ok(Stored::Duplicate)
            }
            Ok(Accepted::New { deliveries }) => {
                m.events_stored
                    .get_or_create(&metrics::app(&app.name))
                    .inc();
                if deliveries.is_empty() {
                    m.unrouted.get_or_create(&metrics::app(&app.name)).inc();
                }
                tracing::debug!(event_type = %event.event_type, deliveries = deliveries.len(), "event stored");
                for (key, plugin) in deliveries {
                    self.engine.handoff(Job {
                        key,
                        event_id: event.id.clone(),
                        plugin,
                        attempts: 0,
                        generation: 0,
                        crashes: 0,
                        app: app.name.clone(),
                        event_type: event.event_type.clone(),
                        received_at_ms,
                        // `Envelope::parse` read all of it: JSON.
                        body: crate::store::Body::parsed(body.clone()),
                    });
                }
                Ok(Stored::New)
            }
            Err(e) => {
                if let Some(skipped) = self.store_failures.admit(std::time::Instant::now()) {
                    tracing::error!(error = %e, skipped, "store failed: refusing the event so Lark re-sends it");
                }
                Err(Rejection::StoreUnavailable)
            }
        }
    }
}

/// The verification token rule (spec §4), for events and the challenge alike.
pub fn check_token(app: &App, given: Option<&str>) -> Result<(), Rejection> {
    match (&app.verification_token, given) {
        (None, _) => Ok(()),
        (Some(_), None) => Err(Rejection::MissingToken),
        (Some(expected), Some(given)) => {
            if crypto::tokens_match(expected, given) {
                Ok(())
            } else {
                Err(Rejection::BadToken)
            }
        }
    }
}

#[cfg(test)]
mod tests;
