//! The admin listener (separate from the public webhook port; loopback by default):
//! `/healthz` (the process answers), `/readyz` (store writable, plugins initialised, not
//! shutting down, every websocket app's long connection up; the body lists each websocket app's
//! state), `/status` (JSON: per-plugin health — last success, consecutive failures, last error,
//! pending, calls running — and each websocket app's state; for humans and dashboards) and
//! `/metrics` (Prometheus text).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};

use crate::delivery::Engine;
use crate::longconn::{LongConns, State};
use crate::metrics;
use crate::store::{sqlite::now_ms, Store};

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
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    res
}

impl Admin {
    pub async fn serve(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let plain = "text/plain; charset=utf-8";
        Ok(match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n".into(), plain),
            "/readyz" => {
                let (mut ok, why) = self.ready().await;
                let mut body = format!("{why}\n");
                let conns = self.long_conns.lock().ok().and_then(|c| c.clone());
                for (app, state) in conns.map(|c| c.states()).unwrap_or_default() {
                    ok &= state == State::Connected;
                    body.push_str(&format!("websocket app {app}: {state}\n"));
                }
                let status = if ok {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                text(status, body, plain)
            }
            "/status" => {
                let status = self.status().await;
                text(
                    StatusCode::OK,
                    format!("{status:#}\n"),
                    "application/json; charset=utf-8",
                )
            }
            "/metrics" => {
                self.refresh_gauges().await;
                text(
                    StatusCode::OK,
                    metrics::get().encode(),
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n".into(), plain),
        })
    }

    async fn ready(&self) -> (bool, &'static str) {
        if self.shutting_down.load(Ordering::SeqCst) {
            return (false, "shutting down");
        }
        if !self.plugins_ready.load(Ordering::SeqCst) {
            return (false, "plugins not initialised");
        }
        // A no-op write through the writer proves the store accepts and commits writes.
        match self.store.purge(i64::MIN, i64::MIN).await {
            Ok(_) => (true, "ready"),
            Err(_) => (false, "store not writable"),
        }
    }

    /// `/status`: readiness and, per plugin, its health, pending deliveries and calls running;
    /// per websocket app, its connection state. For humans and dashboards; load balancers use
    /// `/readyz`.
    async fn status(&self) -> serde_json::Value {
        let (ready, reason) = self.ready().await;
        let pending: std::collections::HashMap<String, u64> = self
            .store
            .backlog()
            .await
            .map(|b| b.pending_by_plugin.into_iter().collect())
            .unwrap_or_default();
        let engine = self.engine.lock().ok().and_then(|e| e.clone());
        let mut plugins = serde_json::Map::new();
        for (name, health, running, limit, queued) in
            engine.map(|e| e.plugin_status()).unwrap_or_default()
        {
            plugins.insert(
                name.clone(),
                serde_json::json!({
                    "last_success_ms": health.last_success_ms,
                    "consecutive_failures": health.consecutive_failures,
                    "last_failure_ms": health.last_failure_ms,
                    "last_error": health.last_error,
                    "pending": pending.get(&name).copied().unwrap_or(0),
                    "calls_running": running,
                    "max_concurrency": limit,
                    "queued": queued,
                }),
            );
        }
        let conns = self.long_conns.lock().ok().and_then(|c| c.clone());
        let apps: serde_json::Map<String, serde_json::Value> = conns
            .map(|c| c.states())
            .unwrap_or_default()
            .into_iter()
            .map(|(app, state)| (app, state.to_string().into()))
            .collect();
        serde_json::json!({
            "ready": ready,
            "reason": reason,
            "version": env!("CARGO_PKG_VERSION"),
            "plugins": plugins,
            "websocket_apps": apps,
        })
    }

    async fn refresh_gauges(&self) {
        if let Ok(b) = self.store.backlog().await {
            let m = metrics::get();
            m.pending.set(b.pending as i64);
            let age = b
                .oldest_pending_ms
                .map_or(0.0, |t| ((now_ms() - t).max(0) as f64) / 1000.0);
            m.oldest_pending_age.set(age);
            m.dead_letters_now.set(b.dead as i64);
            let engine = self.engine.lock().ok().and_then(|e| e.clone());
            m.queue_depth.clear();
            for (plugin, _, _, _, queued) in engine.map(|e| e.plugin_status()).unwrap_or_default() {
                m.queue_depth
                    .get_or_create(&metrics::plugin(&plugin))
                    .set(queued as i64);
            }
            // Plugins that have none pending now must read 0, not their last value.
            m.pending_by_plugin.clear();
            for (plugin, n) in b.pending_by_plugin {
                m.pending_by_plugin
                    .get_or_create(&metrics::plugin(&plugin))
                    .set(n as i64);
            }
        }
    }
}
