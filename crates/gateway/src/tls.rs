//! Native TLS on the webhook listener (`[server] tls = { cert, key }`) and the admin listener
//! (`[admin] tls`, the same form): rustls with the ring provider and its safe defaults (TLS 1.2 and 1.3), ALPN `http/1.1`, no client certificates.
//!
//! The certificate pair is read, parsed and checked here ([`load`]: the PEM parses, the key
//! matches the leaf, the leaf has not expired) and served through a [`Resolver`] whose pair is
//! swapped under a lock, so a renewal takes effect for the next handshake without a restart:
//! on SIGHUP / `--watch` ([`Tls::reload`], called by `server.rs`) and when either file changes
//! on disk ([`Tls::watch`] polls their identity every [`POLL_EVERY`]; certbot's and other ACME
//! clients' renewals work as they are). A new pair that fails any check is refused with one
//! log line and the previous pair keeps being served: a half-written renewal never takes the
//! listener down.
//!
//! Handshakes ([`Tls::accept`]) are bounded in time; a client speaking plain HTTP to the TLS
//! port gets a `400` telling it to use `https://` and is closed. Failures are counted
//! (`gateway_tls_handshake_failures_total{reason}`), logged at debug only (scanners).
//!
//! Never logs or prints key material; nothing here decides anything about requests.

mod handshake;
mod pair;

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::crypto::ring;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;
use crate::reload::file_stamp;
pub use pair::{load, CertInfo, TlsError};

/// How long a client gets from connect to a finished handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the certificate files' identity (inode, size, mtime; symlinks followed) is
/// compared with the pair being served.
pub const POLL_EVERY: Duration = Duration::from_secs(2);

/// `gateway check` warns when the certificate expires within this.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// Unix seconds now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Hands rustls the pair being served; swapped whole on reload (readers clone an `Arc`).
#[derive(Debug)]
pub struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|k| k.clone())
    }
}

/// The identity of both files as last read (so a change, even back to an earlier content, is
/// noticed once).
type Stamps = [Option<(u64, u64, i64, i64)>; 2];

fn stamps(files: &TlsFiles) -> Stamps {
    [file_stamp(&files.cert), file_stamp(&files.key)]
}

/// What is being served and from where.
#[derive(Debug)]
struct State {
    files: TlsFiles,
    /// The files' identity when they were last read, whether that pair was taken or refused.
    stamps: Stamps,
    info: CertInfo,
}

/// One listener's TLS (the webhook's or the admin's): the acceptor, the swappable pair and
/// its bookkeeping.
pub struct Tls {
    /// `webhook` or `admin`: in log lines and the expiry metric's `listener` label.
    listener: &'static str,
    acceptor: TlsAcceptor,
    resolver: Arc<Resolver>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("state", &self.state).finish()
    }
}

impl Tls {
    /// Loads the pair (refusing an expired one) and builds the acceptor. `run` refuses to
    /// start on an error.
    pub fn start(files: &TlsFiles, listener: &'static str) -> Result<Arc<Tls>, TlsError> {
        let before = stamps(files);
        let pair = load(files)?.refuse_expired(files, now_secs())?;
        let resolver = Arc::new(Resolver {
            current: RwLock::new(pair.key.clone()),
        });
        let config = server_config(resolver.clone());
        // The reload counter's series exist from the start, at 0: an alert watching
        // `increase(...{result="refused"})` sees the first refusal (a series first seen at 1
        // shows no increase).
        for result in ["ok", "refused"] {
            drop(
                crate::metrics::get()
                    .tls_reloads
                    .get_or_create(&crate::metrics::ResultLabels {
                        result: result.to_owned(),
                    }),
            );
        }
        record_expiry(&pair.info, listener);
        warn_if_expiring(&pair.info, listener);
        Ok(Arc::new(Tls {
            listener,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            resolver,
            state: Mutex::new(State {
                files: files.clone(),
                stamps: before,
                info: pair.info,
            }),
        }))
    }

    /// The pair being served.
    pub fn info(&self) -> Option<CertInfo> {
        self.state.lock().ok().map(|s| s.info.clone())
    }

    /// Reads the pair again (from `files` when given: the paths of a reloaded config) and
    /// serves it if it passes every check; otherwise logs why and keeps the current one.
    /// Returns whether the new pair is served. Blocking (file reads): small, but call it off
    /// the accept loop.
    pub fn reload(&self, trigger: &str, files: Option<&TlsFiles>) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        let files = files.cloned().unwrap_or_else(|| state.files.clone());
        let now_stamps = stamps(&files);
        let m = crate::metrics::get();
        match load(&files).and_then(|p| p.refuse_expired(&files, now_secs())) {
            Ok(pair) => {
                let same = self
                    .resolver
                    .current
                    .read()
                    .map(|k| k.cert == pair.key.cert)
                    .unwrap_or(false);
                if let Ok(mut current) = self.resolver.current.write() {
                    *current = pair.key.clone();
                }
                if same && files == state.files {
                    tracing::debug!(trigger, listener = self.listener, serial = %pair.info.serial, "TLS certificate unchanged");
                } else {
                    tracing::info!(
                        trigger,
                        listener = self.listener,
                        cert = %files.cert.display(),
                        subject = %pair.info.subject,
                        serial = %pair.info.serial,
                        expires = %pair.info.not_after_text(),
                        previous_serial = %state.info.serial,
                        "TLS certificate reloaded"
                    );
                    m.tls_reloads
                        .get_or_create(&crate::metrics::ResultLabels {
                            result: "ok".to_owned(),
                        })
                        .inc();
                    warn_if_expiring(&pair.info, self.listener);
                }
                record_expiry(&pair.info, self.listener);
                state.files = files;
                state.stamps = now_stamps;
                state.info = pair.info;
                true
            }
            Err(e) => {
                tracing::error!(
                    trigger,
                    listener = self.listener,
                    serial = %state.info.serial,
                    expires = %state.info.not_after_text(),
                    "TLS certificate reload refused, still serving the previous certificate: {e}"
                );
                m.tls_reloads
                    .get_or_create(&crate::metrics::ResultLabels {
                        result: "refused".to_owned(),
                    })
                    .inc();
                // Same files: not tried again until they change again. Other files (a config
                // reload): the current files stay watched.
                if files == state.files {
                    state.stamps = now_stamps;
                }
                false
            }
        }
    }

    /// Polls the certificate files every [`POLL_EVERY`] and reloads when either changed
    /// (written in place, replaced, or a symlink pointed elsewhere). Runs until the runtime
    /// stops.
    pub async fn watch(self: Arc<Self>) {
        loop {
            tokio::time::sleep(POLL_EVERY).await;
            let Some((files, last)) = self.state.lock().ok().map(|s| (s.files.clone(), s.stamps))
            else {
                return;
            };
            if stamps(&files) == last {
                continue;
            }
            // Let a writer (certbot writes the chain, then the key) finish both files.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let tls = self.clone();
            let _ =
                tokio::task::spawn_blocking(move || tls.reload("certificate files changed", None))
                    .await;
        }
    }
}

/// rustls' safe defaults (TLS 1.2 and 1.3, ring's cipher suites), HTTP/1.1, the pair from
/// `resolver`.
fn server_config(resolver: Arc<Resolver>) -> rustls::ServerConfig {
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

fn record_expiry(info: &CertInfo, listener: &str) {
    crate::metrics::get()
        .tls_cert_expiry
        .get_or_create(&crate::metrics::ListenerLabels {
            listener: listener.to_owned(),
        })
        .set(info.not_after as f64);
}

fn warn_if_expiring(info: &CertInfo, listener: &str) {
    let left = info.seconds_left(now_secs());
    if left < EXPIRY_WARNING.as_secs() as i64 {
        tracing::warn!(
            listener,
            serial = %info.serial,
            expires = %info.not_after_text(),
            days_left = left / 86_400,
            "the TLS certificate expires soon: renew it (the new files are picked up without a restart)"
        );
    }
}

#[cfg(test)]
mod tests;
