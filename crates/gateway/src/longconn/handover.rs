//! New connection settings of a running app (a reload changed its `app_secret` or `domain`; an
//! `app_id` change is another app, replaced outright) are tried before the running client is let go: a client with the new settings
//! bootstraps and dials first; only once it is connected does it replace the running one,
//! which then stops after acking what is in flight (the two connections overlap briefly:
//! Lark sends each event to one of them). If Lark refuses the new settings, or cannot be
//! reached with them, the running client stays on the previous ones (connected, or retrying
//! as before), the refusal is logged at error and counted
//! (`gateway_longconn_settings_refused_total{app}`), and the reload reports it; the next
//! reload tries again.
//!
//! When a reload changes several apps, their trials run at once and each app is settled as soon
//! as its own trial ends: handed over once connected, or kept on its running client once
//! refused, whatever the other apps' trials still wait for (one unreachable domain, up to 25 s,
//! holds up no other app). The reload returns once every trial has ended, with every refusal.
//! The replaced client is kept among the supervisor's retired tasks until it has acked what it
//! had in flight, so that a shutdown waits for it.
//!
//! Must never: cancel a running client before its successor is connected, or let a trial
//! outlive a shutdown (each trial's token is a child of the supervisor's root token).

use lark_longconn::ClientConfig;

use super::{session, Ctx, LongConns};
use crate::config::LongConnApp;
use crate::metrics;

/// The longest a trial may take (a bootstrap and a dial, 10 s + 15 s): past it, the settings
/// are not applied, whatever a DNS lookup or a silent route still does on its thread.
const TRIAL_LIMIT: std::time::Duration = std::time::Duration::from_secs(25);

/// An app whose settings changed.
pub(super) struct Trial {
    pub name: String,
    /// The new settings.
    pub app: LongConnApp,
    /// The id of the running client the new one is to replace.
    pub replaces: u64,
}

/// Why a trial ended early when the gateway stops.
const STOPPING: &str = "the gateway is stopping";

/// What a trial gave: the new client's context and config, and its connection or why not.
type Tried = (Trial, Ctx, ClientConfig, Result<session::Conn, String>);

/// Tries every trial at once and settles each app as soon as its own trial ends (blocking
/// until every trial is connected or refused). Returns one line per app whose new settings were
/// not applied.
pub(super) fn apply(conns: &LongConns, trials: Vec<Trial>) -> Vec<String> {
    if trials.is_empty() {
        return Vec::new();
    }
    let (tx, rx) = std::sync::mpsc::channel::<Tried>();
    for trial in trials {
        let ctx = conns.new_ctx(&trial.name, &trial.app);
        let tx = tx.clone();
        let span = tracing::info_span!("longconn", app = %trial.name, settings = "new");
        conns.runtime.spawn(tracing::Instrument::instrument(
            async move {
                tracing::info!(
                    "connecting with the new settings before the running connection is let go"
                );
                let mut cc = ClientConfig::default();
                let connect = tokio::time::timeout(TRIAL_LIMIT, session::connect(&ctx, &mut cc));
                let outcome = match ctx.unless_cancelled(connect).await {
                    Some(Ok(Ok(conn))) => Ok(conn),
                    Some(Ok(Err(e))) => Err(e.to_string()),
                    Some(Err(_)) => {
                        Err(format!("no connection within {} s", TRIAL_LIMIT.as_secs()))
                    }
                    None => Err(STOPPING.to_owned()),
                };
                let _ = tx.send((trial, ctx, cc, outcome));
            },
            span,
        ));
    }
    drop(tx);
    // In the order the trials end; each ends within TRIAL_LIMIT, or at once on shutdown.
    rx.iter().filter_map(|tried| settle(conns, tried)).collect()
}

/// Hands the app of one ended trial over, or keeps its running client; the line to report
/// when its new settings were refused.
fn settle(conns: &LongConns, (trial, ctx, cc, outcome): Tried) -> Option<String> {
    let name = trial.name;
    match outcome {
        Ok(conn) => {
            hand_over(conns, &name, trial.replaces, ctx, cc, conn);
            None
        }
        // Not refused: the gateway is stopping (nothing to count or report).
        Err(_) if conns.root.is_cancelled() => None,
        Err(why) => {
            tracing::error!(app = %name, error = %why, "the app's new long-connection settings were not applied: the running connection keeps the previous settings (fix them and reload)");
            metrics::get()
                .longconn_settings_refused
                .get_or_create(&metrics::app(&name))
                .inc();
            Some(format!(
                "app {name}: the new long-connection settings (app_id, app_secret, domain) \
                 were not applied: {why}; the running connection keeps the previous settings"
            ))
        }
    }
}

/// Replaces the running client `replaces` of `name` by a client running `conn`; when that
/// client is gone (a shutdown), the new connection just closes.
fn hand_over(
    conns: &LongConns,
    name: &str,
    replaces: u64,
    ctx: Ctx,
    cc: ClientConfig,
    conn: session::Conn,
) {
    let Ok(mut clients) = conns.clients.lock() else {
        ctx.cancel.cancel();
        return;
    };
    let running = clients.get(name).filter(|c| c.id == replaces);
    let Some(old) = running.filter(|_| !conns.root.is_cancelled()) else {
        // Stopped or replaced meanwhile (a shutdown): the new connection just closes.
        ctx.cancel.cancel();
        return;
    };
    tracing::info!(app = %name, "connected with the new settings; the previous connection stops once its in-flight messages are acked");
    {
        // Under the state's lock: see `Ctx::set`. Before the successor starts.
        let _state = old.state.lock();
        old.cancel.cancel();
    }
    let successor = conns.launch(ctx, cc, Some(conn));
    if let Some(old) = clients.insert(name.to_owned(), successor) {
        conns.retire(old.task);
    }
}
