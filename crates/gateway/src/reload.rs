//! Live reconfiguration (SIGHUP, or `run --watch`): the whole new config is parsed, validated and
//! its plugins opened and initialised *before* anything changes; on any problem the running
//! config stays and the reason is logged. On success, in this order: new and changed plugin
//! instances join the delivery engine, both transports switch to the new apps and routes in one
//! atomic swap, long connections of added, changed or removed websocket apps are started,
//! moved (a changed app's new settings connect before its old connection goes; refused ones
//! leave it running and are reported in the reload's answer) or stopped, removed instances stop taking work (shut down after their in-flight
//! calls), and the admin listener takes the new `[admin] token` (`Admin::reload_token`).
//! Requests never see a half-applied config.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::admin::Admin;
use crate::config::Config;
use crate::delivery::Engine;
use crate::intake::{Intake, Routes};
use crate::longconn::LongConns;
use crate::plugins::{self, Plugins};

/// The running configuration and what it drives.
pub struct Live {
    file: PathBuf,
    /// Held only to read or swap (the admin API reads it from async handlers): never while a
    /// reload opens libraries or starts plugin processes.
    current: Mutex<(Config, Plugins)>,
    /// Set when the stop begins: reloads are refused from then on ([`Live::stop`]).
    stopping: std::sync::atomic::AtomicBool,
    /// Serialises reloads, which build the new plugins outside `current`'s lock.
    reloading: Mutex<()>,
    intake: Arc<Intake>,
    engine: Arc<Engine>,
    long_conns: Arc<LongConns>,
    /// The listeners' certificates, when they serve TLS: re-read by every reload.
    certs: Certs,
    /// The admin state, whose token a reload replaces (weak: the admin state holds this).
    admin: Weak<Admin>,
}

/// The certificates the listeners serve (none: plain HTTP).
#[derive(Debug, Clone, Default)]
pub struct Certs {
    pub webhook: Option<Arc<crate::tls::Tls>>,
    pub admin: Option<Arc<crate::tls::Tls>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").field("file", &self.file).finish()
    }
}

impl Live {
    pub fn new(
        config: Config,
        plugins: Plugins,
        intake: Arc<Intake>,
        engine: Arc<Engine>,
        long_conns: Arc<LongConns>,
        certs: Certs,
        admin: Weak<Admin>,
    ) -> Live {
        crate::isolation::parent::set_retire_grace(config.shutdown_grace);
        Live {
            file: config.file.clone(),
            reloading: Mutex::new(()),
            current: Mutex::new((config, plugins)),
            stopping: std::sync::atomic::AtomicBool::new(false),
            intake,
            engine,
            long_conns,
            certs,
            admin,
        }
    }

    /// The stop began: reloads are refused from now on, and one running installs nothing.
    pub fn stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Waits (at most `within`) for a reload still running after [`Live::stop`], whose new
    /// instances must be dropped (shut down) before the process exits. Blocking.
    pub fn wait_for_reload(&self, within: Duration) {
        let until = std::time::Instant::now() + within;
        loop {
            match self.reloading.try_lock() {
                Ok(_) | Err(std::sync::TryLockError::Poisoned(_)) => return,
                Err(std::sync::TryLockError::WouldBlock) if std::time::Instant::now() >= until => {
                    tracing::warn!("a reload was still running when the stop's grace ran out");
                    return;
                }
                Err(std::sync::TryLockError::WouldBlock) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
            }
        }
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The grace period of the current config.
    pub fn shutdown_grace(&self) -> Duration {
        self.current
            .lock()
            .map(|c| c.0.shutdown_grace)
            .unwrap_or(Duration::from_secs(10))
    }

    /// The running config and plugin instances (for the admin console's plugins page).
    pub fn current(&self) -> Option<(Config, Plugins)> {
        self.current.lock().ok().map(|c| c.clone())
    }

    /// `[store] retention` and `dead_letter_retention` of the current config (after a reload:
    /// the new one's), read by the purge before each run.
    pub fn retentions(&self) -> Option<(std::time::Duration, std::time::Duration)> {
        self.current
            .lock()
            .ok()
            .map(|c| (c.0.retention, c.0.dead_letter_retention))
    }

    /// `[server] tls` and `[admin] tls` of the current config (after a reload: the new one's).
    pub fn tls_files(
        &self,
    ) -> (
        Option<crate::config::TlsFiles>,
        Option<crate::config::TlsFiles>,
    ) {
        self.current
            .lock()
            .map(|c| (c.0.tls.clone(), c.0.admin_tls.clone()))
            .unwrap_or_default()
    }

    /// Reads the config file again and applies it, or explains why not. Blocking (opens
    /// libraries, initialises plugins): call it from a blocking thread. `Ok` holds what the
    /// new config asks that waits for a restart (each also logged as a warning).
    pub fn reload(&self) -> Result<Vec<String>, String> {
        let _one_at_a_time = self
            .reloading
            .lock()
            .map_err(|_| "reload state poisoned".to_owned())?;
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(STOPPING.into());
        }
        let mut new = Config::load(&self.file).map_err(|e| e.to_string())?;
        let running = self
            .current()
            .ok_or_else(|| "reload state poisoned".to_owned())?;
        let (old, old_plugins) = &running;
        let lease_note = old.store.reload_to(&new.store, new.delivery.timeout)?;
        // The store runs as it was opened (a changed lease waits for the restart): what the next
        // reload checks against is the running one.
        new.store = old.store.clone();
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(STOPPING.into());
        }
        // Library loads and `init`s are native code that may kill the process: not while a
        // delivery with a crash behind it runs alone (it would be charged with the crash).
        let plugins = plugins::reload(old_plugins, &new, || self.engine.beside_calls_blocking())
            .map_err(|p| format!("plugins:\n  - {}", p.join("\n  - ")))?;
        // A stop that began meanwhile: nothing is installed (the new instances are shut down
        // as they drop here; the stop waits for this).
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(STOPPING.into());
        }
        // An in-process instance this reload lets go runs its `shutdown` (native code that may
        // kill the process) when its last user drops it, here or after its last call: not
        // while a delivery with a crash behind it runs alone, as for `init` above.
        let beside_calls = old_plugins
            .lets_go_in_process(&plugins)
            .then(|| self.engine.beside_calls_blocking());
        // That wait may have lasted a lone delivery's timeout: a stop that began meanwhile
        // still gets nothing installed.
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(STOPPING.into());
        }
        plugins.installed();
        self.engine.add_plugins(&plugins, new.delivery);
        self.intake.swap_routes(Routes::from_config(&new));
        self.engine.retain_plugins(&plugins);
        let mut notes = Vec::new();
        if let Some(admin) = self.admin.upgrade() {
            if let Some(kept) = admin.reload_token(new.admin_token.clone()) {
                // The running token stays: the config kept from here on says so too.
                new.admin_token = old.admin_token.clone();
                notes.push(kept);
            }
        }
        if new.listen != old.listen || new.admin_listen != old.admin_listen {
            notes.push("listen addresses change only on restart; still on the old ones".into());
        }
        if new.workers != old.workers {
            notes.push(format!(
                "[server] workers changes only on restart (running {}, configured {})",
                old.workers, new.workers
            ));
        }
        notes.extend(lease_note);
        if new.max_connections != old.max_connections {
            notes.push(format!(
                "[server] max_connections changes only on restart (running {}, configured {})",
                old.max_connections, new.max_connections
            ));
        }
        if new.max_connections_per_client != old.max_connections_per_client {
            let shown = |v: Option<usize>| v.map_or_else(|| "none".to_owned(), |n| n.to_string());
            notes.push(format!(
                "[server] max_connections_per_client changes only on restart (running {}, configured {})",
                shown(old.max_connections_per_client),
                shown(new.max_connections_per_client)
            ));
        }
        if new.log_level != old.log_level {
            notes.push("[log] level changes only on restart".into());
        }
        // What `check` warns about in the config, said again as it applies (logged only: the
        // notes are what was not applied).
        for w in crate::ops::config_warnings(&new) {
            tracing::warn!("config: {w}");
        }
        for note in &notes {
            tracing::warn!("{note}");
        }
        // What waits for a restart keeps its running value in the config kept from here on,
        // so the next reload compares against what runs, not against this file.
        new.listen = old.listen;
        new.admin_listen = old.admin_listen;
        new.workers = old.workers;
        new.max_connections = old.max_connections;
        new.max_connections_per_client = old.max_connections_per_client;
        new.log_level = old.log_level.clone();
        if (new.retention, new.dead_letter_retention) != (old.retention, old.dead_letter_retention)
        {
            tracing::info!(
                retention = ?new.retention,
                dead_letter_retention = ?new.dead_letter_retention,
                "[store] retentions apply from the next purge (hourly)"
            );
        }
        crate::metrics::declare(new.plugins.iter().map(|p| p.name.as_str()));
        let (apps, plugin_count, routes) = (new.apps.len(), new.plugins.len(), new.routes.len());
        let settle = new.clone();
        let replaced = {
            let mut current = self
                .current
                .lock()
                .map_err(|_| "reload state poisoned".to_owned())?;
            crate::isolation::parent::set_retire_grace(new.shutdown_grace);
            std::mem::replace(&mut *current, (new, plugins))
        };
        // Outside the lock (a `shutdown` may take long), under the gate's share when taken:
        // the instances let go whose last user this is shut down here, and waited for (at most
        // a call's timeout) before the share goes.
        let within = settle.delivery.timeout;
        if !crate::plugins::dropping_and_waiting(within, move || drop((replaced, running))) {
            tracing::warn!(
                "a let-go plugin instance's shutdown was still running after [delivery] timeout: the reload goes on"
            );
        }
        drop(beside_calls);
        // Last, once everything else switched together: long connections whose app settings
        // changed are tried with the new ones (a bootstrap and a dial, up to 25 s: this is a
        // blocking thread), each app settled as its own trial ends; a refused trial leaves
        // that app's running connection as it was (logged at error where it was refused).
        notes.extend(self.long_conns.reconcile(&settle));
        tracing::info!(apps, plugins = plugin_count, routes, "config reloaded");
        Ok(notes)
    }
}

/// What a reload asked for once the stop began answers.
const STOPPING: &str = "the gateway is stopping";

/// Runs [`Live::reload`] on the blocking pool and records its result (log line, the
/// `gateway_reloads_total` counter, the last-reload time): what SIGHUP, `--watch` and the admin
/// API's `POST /api/v1/reload` all do. `trigger` says which, for the log. `Ok` holds what was
/// not applied (it waits for a restart, or a certificate pair was refused). On a task of its
/// own: a caller that goes away (an API client that hung up) does not cut it short, so its
/// result is always logged and counted, and the certificates read again.
pub async fn apply(live: Arc<Live>, trigger: &str) -> Result<Vec<String>, String> {
    let trigger = trigger.to_owned();
    tokio::spawn(async move { apply_to_its_end(live, &trigger).await })
        .await
        .unwrap_or_else(|e| Err(format!("reload failed: {e}")))
}

async fn apply_to_its_end(live: Arc<Live>, trigger: &str) -> Result<Vec<String>, String> {
    tracing::info!(trigger, "reloading config");
    let m = crate::metrics::get();
    let reloading = live.clone();
    let outcome = match tokio::task::spawn_blocking(move || reloading.reload()).await {
        Ok(Ok(notes)) => {
            m.last_reload
                .set(crate::store::sqlite::now_ms() as f64 / 1000.0);
            Ok(notes)
        }
        Ok(Err(e)) => {
            tracing::error!("reload refused, keeping the running config: {e}");
            Err(e)
        }
        Err(e) => {
            tracing::error!("reload failed: {e}");
            Err(format!("reload failed: {e}"))
        }
    };
    let result = if outcome.is_ok() { "ok" } else { "refused" };
    m.reloads
        .get_or_create(&crate::metrics::ResultLabels {
            result: result.to_owned(),
        })
        .inc();
    let tls_notes = reload_tls(&live, trigger).await;
    outcome.map(|mut notes| {
        notes.extend(tls_notes);
        notes
    })
}

/// After a config reload (SIGHUP, `--watch`, the admin API): each listener's certificate pair
/// is read again, from the paths of the config now running (a refused config keeps the old
/// paths). A renewed pair is picked up by the file watcher anyway; this makes `systemctl
/// reload` (certbot's deploy hook) take effect at once. Turning TLS on or off needs a restart,
/// like the listen addresses. Returns what was not applied (also logged).
async fn reload_tls(live: &Arc<Live>, trigger: &str) -> Vec<String> {
    let mut notes = Vec::new();
    let (webhook, admin) = live.tls_files();
    for (section, tls, files) in [
        ("[server] tls", live.certs.webhook.clone(), webhook),
        ("[admin] tls", live.certs.admin.clone(), admin),
    ] {
        match (tls, files) {
            (Some(tls), Some(files)) => {
                let trigger = trigger.to_owned();
                let loaded =
                    tokio::task::spawn_blocking(move || tls.reload(&trigger, Some(&files))).await;
                if !loaded.unwrap_or(false) {
                    // `reload` logged why.
                    notes.push(format!(
                        "{section}: the certificate pair was refused; the previous one stays"
                    ));
                }
            }
            (Some(_), None) => {
                let note = format!(
                    "{section} was removed: the listener keeps serving HTTPS until a restart"
                );
                tracing::warn!("{note}");
                notes.push(note);
            }
            (None, Some(_)) => {
                let note = format!(
                    "{section} was added: the listener keeps serving plain HTTP until a restart"
                );
                tracing::warn!("{note}");
                notes.push(note);
            }
            (None, None) => {}
        }
    }
    notes
}

/// Identity of the config file as last seen: changes when an editor or git replaces it.
pub fn file_stamp(path: &Path) -> Option<(u64, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}
