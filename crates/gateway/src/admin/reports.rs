//! What `/status` and `/metrics` report: readiness with each plugin's health, pending
//! deliveries and calls running, and each websocket app's state; the metrics text with the
//! backlog gauges refreshed. Both take the store's backlog from one shared read, waited for at
//! most [`BACKLOG_WAIT`].

use std::time::Duration;

#[cfg(doc)]
use super::backlog;
use super::Admin;
use crate::metrics;
use crate::store::sqlite::now_ms;

/// How long `/metrics` and `/status` wait for the store's backlog (as `/readyz` for its probe).
const BACKLOG_WAIT: Duration = Duration::from_secs(2);

impl Admin {
    /// `/status`: readiness and, per plugin, its health, pending deliveries and calls running;
    /// per websocket app, its connection state. For humans and dashboards; load balancers use
    /// `/readyz`.
    pub(super) async fn status(&self) -> serde_json::Value {
        // Side by side: each waits at most 2 s for a store that stopped answering.
        let ((ready, reason), backlog) = tokio::join!(self.ready(), self.backlog());
        // A backlog read that failed (or took over `BACKLOG_WAIT`) leaves `pending` null,
        // said in `backlog_error`: never a 0 that reads as "nothing pending".
        let (pending, backlog_error) = match backlog {
            Ok(b) => (
                Some(
                    b.pending_by_plugin
                        .into_iter()
                        .collect::<std::collections::HashMap<String, u64>>(),
                ),
                None,
            ),
            Err(e) => (None, Some(e.to_string())),
        };
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
                    "pending": pending.as_ref().map(|p| p.get(&name).copied().unwrap_or(0)),
                    "calls_running": running,
                    "max_concurrency": limit,
                    "queued": queued,
                }),
            );
        }
        let apps: serde_json::Map<String, serde_json::Value> = self
            .websocket_states()
            .into_iter()
            .map(|(app, state)| (app, state.to_string().into()))
            .collect();
        let mut status = serde_json::json!({
            "ready": ready,
            "reason": reason,
            "version": env!("CARGO_PKG_VERSION"),
            "plugins": plugins,
            "websocket_apps": apps,
        });
        if let Some(e) = backlog_error {
            status["backlog_error"] = e.into();
        }
        status
    }

    /// The store's backlog, one read for many callers ([`backlog`]), waited for at most
    /// [`BACKLOG_WAIT`]: a store that stopped answering (a hung database: each read can take
    /// its 10 s limit) must not hold `/metrics` past a scraper's timeout, nor `/status`. The
    /// read goes on; the next caller may take its answer.
    pub(super) async fn backlog(&self) -> Result<crate::store::Backlog, crate::store::StoreError> {
        let store = self.store.clone();
        let read = self
            .backlog
            .get(move || async move { store.backlog().await });
        match tokio::time::timeout(BACKLOG_WAIT, read).await {
            Ok(answer) => answer,
            Err(_) => Err(crate::store::StoreError(format!(
                "the store did not answer the backlog read within {BACKLOG_WAIT:?}"
            ))),
        }
    }

    /// The metrics text, the backlog gauges refreshed first. The per-plugin gauges are cleared
    /// and filled again, then encoded, under one lock: a scrape beside another one could
    /// otherwise encode them between the other's clearing and filling, without their rows.
    pub(super) async fn scrape(&self) -> String {
        let backlog = self.backlog().await;
        let _one_at_a_time = self
            .scraping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let m = metrics::get();
        // In memory: refreshed whatever the store answers.
        let engine = self.engine.lock().ok().and_then(|e| e.clone());
        m.queue_depth.clear();
        for (plugin, _, _, _, queued) in engine.map(|e| e.plugin_status()).unwrap_or_default() {
            m.queue_depth
                .get_or_create(&metrics::plugin(&plugin))
                .set(queued as i64);
        }
        m.backlog_current.set(i64::from(backlog.is_ok()));
        if let Ok(b) = backlog {
            m.pending.set(b.pending as i64);
            let age = b
                .oldest_pending_ms
                .map_or(0.0, |t| ((now_ms() - t).max(0) as f64) / 1000.0);
            m.oldest_pending_age.set(age);
            m.dead_letters_now.set(b.dead as i64);
            // Plugins that have none pending now must read 0, not their last value.
            m.pending_by_plugin.clear();
            for (plugin, n) in b.pending_by_plugin {
                m.pending_by_plugin
                    .get_or_create(&metrics::plugin(&plugin))
                    .set(n as i64);
            }
        }
        metrics::get().encode()
    }
}
