//! `gateway run`: wires config, store, plugins, delivery engine, ingress and admin listeners,
//! and owns the process lifecycle (signals, graceful shutdown).
//!
//! Shutdown (SIGTERM/SIGINT): `/readyz` turns 503, the listener stops accepting, in-flight
//! requests finish, running plugin calls get up to `shutdown_grace`, the rest stays pending in
//! the store, plugin instances are shut down, the store writer drains and the process exits 0.
//! A second signal exits at once: everything acknowledged is already durable. So does a second
//! signal while the gateway starts (`signals`); the first then stops it once started.

mod admin_listener;
pub(crate) mod fd_limit;
pub(crate) mod peers;
mod signals;
mod stall;

use admin_listener::serve_admin;
use signals::Signals;
use stall::WriteStall;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;

use crate::admin::Admin;
use crate::config::Config;
use crate::delivery::Engine;
use crate::ingress::Ingress;
use crate::intake::{Intake, Routes};
use crate::longconn::LongConns;
use crate::plugins;
use crate::reload::{file_stamp, Live};
use crate::store::sqlite::now_ms;
use crate::tls::Tls;

/// The largest request head (start line and header fields) the webhook listener reads.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// A connection of the webhook listener whose client reads nothing of an answer for this long
/// is closed ([`WriteStall`]; Lark reads its answers at once). The admin listener's limits are
/// in `admin_listener.rs`.
const WEBHOOK_WRITE_STALL: Duration = Duration::from_secs(30);

/// How often old finished events are purged.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// The config file's identity when it was read ([`crate::reload::file_stamp`]).
pub type Stamp = Option<(u64, u64, i64, i64)>;

/// Runs the gateway until a shutdown signal. With `watch` (the config file's stamp taken just
/// before it was read), the file is polled and reloaded when it changes (as on SIGHUP),
/// an edit made while the gateway started included.
pub async fn run(config: Config, watch: Option<Stamp>) -> anyhow::Result<()> {
    // Handlers first: a SIGHUP (or SIGTERM) that arrives while starting must not take the
    // default action, which is to end the process.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut signals = Signals::new()?;
    let start_up = signals::watch_start_up();
    // Before any file is opened or plugin process started (they inherit it), and before the
    // listeners say they are ready.
    fd_limit::check(config.max_connections);
    for w in crate::ops::config_warnings(&config) {
        tracing::warn!("config: {w}");
    }
    crate::metrics::declare(config.plugins.iter().map(|p| p.name.as_str()));
    let dyn_store = crate::store::open(&config.store, false)
        .await
        .with_context(|| format!("opening store {}", config.store.describe()))?;
    let store = dyn_store.clone();
    // Deliveries whose call was running when the process last died: count the crash first
    // (a shared store finds none yet: it judges claims only a lease after the start, and its
    // sweeper counts them then; see `store/postgres/reach.rs`).
    let d = config.delivery;
    match dyn_store
        .recover_crashed(d.max_attempts, d.max_crashes, Vec::new())
        .await
    {
        Ok(r) if r.found == 0 => {}
        Ok(r) => {
            r.count_dead_letters();
            tracing::warn!(
                deliveries = r.found,
                max_crashes = d.max_crashes,
                "the gateway died during plugin calls last time: counted as failed attempts (a delivery is dead-lettered after max_crashes)"
            )
        }
        Err(e) => return Err(anyhow::anyhow!("recovering crashed deliveries: {e}")),
    }
    let admin = Admin::new(
        dyn_store.clone(),
        config.admin_token.clone(),
        config.admin_tls.is_some(),
        config
            .admin_listen
            .is_none_or(|a| a.ip().to_canonical().is_loopback()),
    );
    // On the blocking pool: opening libraries and starting plugins (a child process each, for
    // isolated ones) may take seconds, which must not stall the runtime's tasks.
    let starting = config.clone();
    let plugins = tokio::task::spawn_blocking(move || plugins::start(&starting))
        .await
        .map_err(|e| anyhow::anyhow!("plugins failed to start: {e}"))?
        .map_err(|p| anyhow::anyhow!("plugins failed to start:\n  - {}", p.join("\n  - ")))?;
    // The certificate pairs are checked, then the ports bound, before the engine starts: a
    // start that fails here has made no plugin call (one cut off by the exit would leave its
    // start mark, counted as a crash at the next start), and a broken pair is never served.
    let tls = match &config.tls {
        Some(files) => Some(start_tls(files, "webhook").context("[server] tls")?),
        None => None,
    };
    let admin_tls = match &config.admin_tls {
        Some(files) => Some(start_tls(files, "admin").context("[admin] tls")?),
        None => None,
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let admin_listener = match config.admin_listen {
        Some(admin_addr) => {
            let l = TcpListener::bind(admin_addr)
                .await
                .with_context(|| format!("binding admin listener {admin_addr}"))?;
            let bound = l.local_addr()?;
            Some((l, bound))
        }
        None => None,
    };
    admin.plugins_ready.store(true, Ordering::SeqCst);
    let engine = Engine::start(dyn_store.clone(), plugins.clone(), config.delivery);
    let intake = Arc::new(Intake::new(
        Routes::from_config(&config),
        dyn_store.clone(),
        engine.clone(),
    ));
    let ingress = Arc::new(Ingress {
        intake: intake.clone(),
        refusals: Default::default(),
        failures: Default::default(),
        challenges: Default::default(),
    });

    if let Some((admin_listener, bound)) = admin_listener {
        let scheme = if admin_tls.is_some() { "https" } else { "http" };
        // Target `gateway::ready` is always logged, whatever the level: scripts wait for it.
        tracing::info!(target: "gateway::ready", "admin listening on {scheme}://{bound} (/healthz, /readyz, /metrics; console at /, API at /api/v1)");
        tokio::spawn(serve_admin(
            admin_listener,
            admin.clone(),
            admin_tls.clone(),
        ));
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(target: "gateway::ready", "gateway listening on {scheme}://{addr}");
    for app in &config.apps {
        match (app.webhook(), app.long_connection()) {
            (Some(w), _) => {
                tracing::info!(app = %app.name, path = %w.path, encrypted = w.encrypt_key.is_some(), "serving webhook app")
            }
            (_, Some(l)) => {
                tracing::info!(app = %app.name, domain = %l.domain, "receiving over the long connection")
            }
            _ => {}
        }
    }
    if let Ok(mut slot) = admin.engine.lock() {
        *slot = Some(engine.clone());
    }
    let long_conns = LongConns::start(&config, intake.clone());
    if let Ok(mut slot) = admin.long_conns.lock() {
        *slot = Some(long_conns.clone());
    }
    tracing::info!(%addr, store = %dyn_store.describe(), "gateway ready");

    let live = Arc::new(Live::new(
        config.clone(),
        plugins,
        intake.clone(),
        engine.clone(),
        long_conns.clone(),
        crate::reload::Certs {
            webhook: tls.clone(),
            admin: admin_tls,
        },
        Arc::downgrade(&admin),
    ));
    if let Ok(mut slot) = admin.live.lock() {
        *slot = Some(live.clone());
    }

    // The retentions are read from the running config at each purge: a reload changes them.
    let purge_store = dyn_store.clone();
    let purge_live = Arc::downgrade(&live);
    tokio::spawn(async move {
        while let Some((retention, dead_retention)) =
            purge_live.upgrade().and_then(|l| l.retentions())
        {
            let cutoff = now_ms() - retention.as_millis() as i64;
            let dead_cutoff = now_ms() - dead_retention.as_millis() as i64;
            let mut removed = 0;
            // Step by step (each examines a bounded number of events), yielding between them:
            // ingest and outcomes interleave.
            let mut after = None;
            loop {
                match purge_store
                    .purge_step(cutoff, dead_cutoff, after.take())
                    .await
                {
                    Ok(step) => {
                        removed += step.removed;
                        let Some(next) = step.next else {
                            break;
                        };
                        after = Some(next);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "purge failed");
                        break;
                    }
                }
            }
            if removed > 0 {
                tracing::info!(removed, "purged events past retention");
            }
            tokio::time::sleep(PURGE_EVERY).await;
        }
    });

    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel::<&'static str>(4);
    let hup_tx = reload_tx.clone();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let _ = hup_tx.send("SIGHUP").await;
        }
    });
    if let Some(read) = watch {
        tokio::spawn(watch_config(live.file().to_path_buf(), read, reload_tx));
    }

    let graceful = GracefulShutdown::new();
    // Bounded connections: past the limit a new connection is closed at once (the client retries)
    // instead of exhausting file descriptors. Fixed until restart, like the listen address.
    let connections = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
    let per_client = config.max_connections_per_client.map(peers::Peers::new);
    // A peer holding the slots and connecting in a loop made thousands of these a second.
    let full = crate::ingress::log_limit::RefusalLog::default();
    let client_full = crate::ingress::log_limit::RefusalLog::default();
    // Started: the main loop's signals take over (a signal kept during start-up ends it at once).
    if let Some(watcher) = start_up {
        watcher.abort();
    }
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning or dying.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let client_slot = match &per_client {
                    None => None,
                    Some(per_client) => match per_client.take(peer.ip()) {
                        Some(slot) => Some(slot),
                        None => {
                            if let Some(skipped) = client_full.admit(std::time::Instant::now()) {
                                tracing::warn!(%peer, skipped, limit = per_client.limit(), "connections of one client at their limit ([server] max_connections_per_client): closing its new connection");
                            }
                            drop(stream);
                            continue;
                        }
                    },
                };
                let Ok(slot) = connections.clone().try_acquire_owned() else {
                    if let Some(skipped) = full.admit(std::time::Instant::now()) {
                        tracing::warn!(%peer, skipped, "connection limit reached ([server] max_connections): closing a new connection");
                    }
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let ingress = ingress.clone();
                // Taken now: shutdown waits for a connection still in its TLS handshake too.
                let watcher = graceful.watcher();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => {
                            let io = TokioIo::new(WriteStall::new(stream, WEBHOOK_WRITE_STALL));
                            serve_webhook(io, ingress, peer, watcher).await
                        }
                        Some(tls) => {
                            if let Some(stream) = tls.accept(stream, peer).await {
                                let io = TokioIo::new(WriteStall::new(stream, WEBHOOK_WRITE_STALL));
                                serve_webhook(io, ingress, peer, watcher).await
                            }
                        }
                    }
                    drop((slot, client_slot));
                });
            }
            Some(why) = reload_rx.recv() => {
                // Off the accept loop: plugin init may take a while; `Live` serialises reloads.
                // The admin API's `POST /api/v1/reload` runs the same `reload::apply` (the
                // config, then the TLS certificate).
                let live = live.clone();
                tokio::spawn(async move {
                    let _ = crate::reload::apply(live, why).await;
                });
            }
            _ = signals.next() => break,
        }
    }

    tracing::info!("shutting down: no new connections; finishing in-flight requests");
    admin.shutting_down.store(true, Ordering::SeqCst);
    live.stop();
    // No call starts from here: events still arriving during the drain wait for the next start.
    engine.stop_calls();
    drop(listener);
    // One deadline for the whole stop: the long connections' acks, the webhook requests and the
    // plugin calls (with their outcomes) share `shutdown_grace`, so a stop ends within it.
    let deadline = tokio::time::Instant::now() + live.shutdown_grace();
    let left = move || deadline.saturating_duration_since(tokio::time::Instant::now());
    // Watched for the whole stop, to the store's close.
    tokio::spawn(async move {
        signals.next().await;
        tracing::warn!("second signal: exiting now (acknowledged events are safely stored)");
        gateway_plugin::host::exit_process(1);
    });
    long_conns.shutdown(left()).await;
    if tokio::time::timeout(left(), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open after the grace period");
    }
    // Isolated plugins' processes are told to leave as soon as no new call starts:
    // their `shutdown` runs once their own calls returned, not after every plugin's.
    if !engine
        .shutdown_then(left(), crate::isolation::parent::retire_all)
        .await
    {
        tracing::warn!(running = engine.running(), "plugin calls still running, or their outcomes not yet recorded (a store refusing writes), after the grace period; their deliveries stay pending and the next start counts them as crashed attempts");
    }
    // Calls hung past their timeout still run until the process exits: they keep their claims.
    let running = engine.running_keys();
    // A reload still running (its instances' `init`) installs nothing now; its instances are
    // dropped, shut down, when it returns: waited for within the grace.
    let reloading = live.clone();
    let within = left();
    let _ = tokio::task::spawn_blocking(move || reloading.wait_for_reload(within)).await;
    // The admin listener's state holds the engine, the running config and the long
    // connections (it serves until the process ends): let them go, so that the drops below
    // are the plugin instances' last users.
    if let Ok(mut slot) = admin.engine.lock() {
        slot.take();
    }
    if let Ok(mut slot) = admin.live.lock() {
        slot.take();
    }
    if let Ok(mut slot) = admin.long_conns.lock() {
        slot.take();
    }
    drop(ingress);
    drop(intake);
    drop(long_conns);
    // An in-process instance's `shutdown` (native code: it may flush, commit, or block) runs
    // on the blocking pool once its last user drops it: here, once the engine's own tasks saw
    // the stop, waited for within what is left of the grace (an instance a hung call still
    // uses is shut down by that call, if it ever returns).
    engine.background_ended(left()).await;
    drop(live);
    drop(engine);
    if crate::plugins::shutdowns_ended(left()).await {
        tracing::info!("plugin instances shut down");
    } else {
        tracing::warn!("a plugin instance's shutdown was still running after the grace period");
    }
    // Isolated plugins' processes, told to leave, finish their calls and their instances'
    // shutdown within what is left of the grace; the rest are killed, said.
    crate::isolation::parent::retire_all();
    crate::isolation::parent::wait_for_retired(left()).await;
    // Within what is left of the grace too (a hung database would hold it for its own 10 s).
    match tokio::time::timeout(left(), store.release_claims(running)).await {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => tracing::info!(deliveries = n, "claims released to the other replicas"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not release claims: other replicas take them after the lease")
        }
        Err(_) => tracing::warn!(
            "claims not released within the grace: other replicas take them after the lease"
        ),
    }
    tokio::task::spawn_blocking(move || store.close())
        .await
        .ok();
    tracing::info!("stopped");
    Ok(())
}

/// Serves one webhook connection (plain TCP or a finished TLS stream) with hyper: HTTP/1.1,
/// keep-alive, bounded request heads, under the graceful shutdown's `watcher`.
async fn serve_webhook<I>(io: I, ingress: Arc<Ingress>, peer: SocketAddr, watcher: Watcher)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let conn = http1::Builder::new()
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        // Request heads are bounded (Lark's are a few hundred bytes): more than
        // 16 KiB of head, or more than hyper's 100 header fields, gets 431.
        .max_header_size(MAX_HEADER_BYTES)
        .serve_connection(io, service_fn(move |req| ingress.clone().serve(req, peer)));
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Loads a listener's certificate pair (refusing a broken or expired one), logs what it
/// serves, and watches its files for renewals.
fn start_tls(files: &crate::config::TlsFiles, listener: &'static str) -> anyhow::Result<Arc<Tls>> {
    let tls = Tls::start(files, listener)?;
    if let Some(info) = tls.info() {
        tracing::info!(
            listener,
            cert = %files.cert.display(),
            subject = %info.subject,
            serial = %info.serial,
            expires = %info.not_after_text(),
            "TLS certificate loaded"
        );
    }
    tokio::spawn(tls.clone().watch());
    Ok(tls)
}

/// Polls the config file (every 500 ms) and asks for a reload when it changes; an editor's or
/// git's replace-by-rename changes the inode, an in-place write the size or mtime.
async fn watch_config(
    path: std::path::PathBuf,
    read: Stamp,
    reload: tokio::sync::mpsc::Sender<&'static str>,
) {
    let mut last = read;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = file_stamp(&path);
        if now.is_some() && now != last {
            // Let a writer finish before reading.
            tokio::time::sleep(Duration::from_millis(200)).await;
            last = file_stamp(&path);
            if reload.send("config file changed").await.is_err() {
                return;
            }
        }
    }
}
