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

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rustls::crypto::ring;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;
use crate::ops::timefmt::rfc3339;
use crate::reload::file_stamp;

/// How long a client gets from connect to a finished handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the certificate files' identity (inode, size, mtime; symlinks followed) is
/// compared with the pair being served.
pub const POLL_EVERY: Duration = Duration::from_secs(2);

/// `gateway check` warns when the certificate expires within this.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// Why a certificate pair cannot be served. Each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path} holds no PEM certificate: expected `-----BEGIN CERTIFICATE-----` blocks, the \
         leaf first, then the intermediates (certbot's fullchain.pem)"
    )]
    NoCertificate { path: String },
    #[error("{path}: certificate {index} is not valid PEM/DER: {message}")]
    BadCertificate {
        path: String,
        index: usize,
        message: String,
    },
    #[error(
        "{path} holds no PEM private key: expected `-----BEGIN PRIVATE KEY-----` (PKCS#8), \
         `RSA PRIVATE KEY` (PKCS#1) or `EC PRIVATE KEY` (SEC1) (certbot's privkey.pem)"
    )]
    NoKey { path: String },
    #[error("{path}: the private key cannot be used: {message}")]
    BadKey { path: String, message: String },
    #[error(
        "the private key {key} does not belong to the certificate {cert} (a key of another, \
         perhaps older, certificate?)"
    )]
    Mismatch { cert: String, key: String },
    #[error("the certificate {path} expired at {at}: renew it")]
    Expired { path: String, at: String },
}

/// What the leaf certificate says about itself: for log lines, `gateway check` and the expiry
/// metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject as RFC 4514 text (`CN=example.com`).
    pub subject: String,
    /// The serial number, lowercase hex: what a client sees, to tell a renewal happened.
    pub serial: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// Certificates in the file (leaf and intermediates).
    pub chain_len: usize,
}

impl CertInfo {
    /// `2026-12-02T14:00:00Z`.
    pub fn not_after_text(&self) -> String {
        rfc3339(self.not_after.saturating_mul(1000)).replace(".000Z", "Z")
    }

    /// Seconds left at `now` (negative once expired).
    pub fn seconds_left(&self, now: i64) -> i64 {
        self.not_after - now
    }
}

/// A checked pair, ready to serve.
#[derive(Debug, Clone)]
pub struct Pair {
    key: Arc<CertifiedKey>,
    pub info: CertInfo,
}

/// Reads and checks a pair: both files readable, the PEM parses, the leaf's notAfter can be
/// read, the key is one rustls can sign with and it matches the leaf. Expiry is not judged
/// here (see [`Pair::refuse_expired`]): `check` shows an expired pair's details.
pub fn load(files: &TlsFiles) -> Result<Pair, TlsError> {
    let cert_path = files.cert.display().to_string();
    let key_path = files.key.display().to_string();
    let cert_pem = std::fs::read(&files.cert).map_err(|source| TlsError::Read {
        what: "certificate",
        path: cert_path.clone(),
        source,
    })?;
    let key_pem = std::fs::read(&files.key).map_err(|source| TlsError::Read {
        what: "private key",
        path: key_path.clone(),
        source,
    })?;
    let mut chain = Vec::new();
    for (index, c) in CertificateDer::pem_slice_iter(&cert_pem).enumerate() {
        chain.push(c.map_err(|e| TlsError::BadCertificate {
            path: cert_path.clone(),
            index: index + 1,
            message: pem_message(&e),
        })?);
    }
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate { path: cert_path });
    };
    let info = cert_info(leaf, chain.len()).map_err(|message| TlsError::BadCertificate {
        path: cert_path.clone(),
        index: 1,
        message,
    })?;
    let key_der = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(k) => k,
        Err(pem::Error::NoItemsFound) => return Err(TlsError::NoKey { path: key_path }),
        Err(e) => {
            return Err(TlsError::BadKey {
                path: key_path,
                message: pem_message(&e),
            })
        }
    };
    let signing = ring::default_provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| TlsError::BadKey {
            path: key_path.clone(),
            message: e.to_string(),
        })?;
    let key = CertifiedKey::new(chain, signing);
    match key.keys_match() {
        // `Unknown`: the key type cannot tell its public key; the handshake will show it.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(TlsError::Mismatch {
                cert: cert_path,
                key: key_path,
            })
        }
    }
    Ok(Pair {
        key: Arc::new(key),
        info,
    })
}

impl Pair {
    /// The pair, unless its leaf expired at `now` (Unix seconds): what `run` and a reload
    /// refuse.
    pub fn refuse_expired(self, files: &TlsFiles, now: i64) -> Result<Pair, TlsError> {
        if self.info.seconds_left(now) <= 0 {
            return Err(TlsError::Expired {
                path: files.cert.display().to_string(),
                at: self.info.not_after_text(),
            });
        }
        Ok(self)
    }
}

fn pem_message(e: &pem::Error) -> String {
    match e {
        pem::Error::Io(e) => e.to_string(),
        other => format!("{other:?}"),
    }
}

/// Subject, serial and validity of a DER certificate (x509-cert, already in the dependency
/// tree for the PostgreSQL TLS client).
fn cert_info(der: &CertificateDer<'_>, chain_len: usize) -> Result<CertInfo, String> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(der.as_ref()).map_err(|e| e.to_string())?;
    let tbs = &cert.tbs_certificate;
    let secs = |t: &x509_cert::time::Time| t.to_unix_duration().as_secs() as i64;
    Ok(CertInfo {
        subject: tbs.subject.to_string(),
        serial: serial_hex(tbs.serial_number.as_bytes()),
        not_before: secs(&tbs.validity.not_before),
        not_after: secs(&tbs.validity.not_after),
        chain_len,
    })
}

/// A serial number as lowercase hex without DER's sign-padding zero bytes (`0xa1` is encoded
/// `00 a1`): as `openssl x509 -serial` and browsers show it.
fn serial_hex(bytes: &[u8]) -> String {
    let first = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    hex::encode(&bytes[first..])
}

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

/// Why a connection never became a TLS stream (the metric's `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The client spoke plain HTTP (answered 400).
    PlaintextHttp,
    /// The first byte was not a TLS handshake record.
    NotTls,
    /// No finished handshake within [`HANDSHAKE_TIMEOUT`].
    Timeout,
    /// rustls refused the handshake (no common version or cipher, bad record, alert, ...).
    Handshake,
    /// The connection failed under the handshake.
    Io,
}

impl HandshakeFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::PlaintextHttp => "plaintext_http",
            HandshakeFailure::NotTls => "not_tls",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Handshake => "handshake",
            HandshakeFailure::Io => "io",
        }
    }
}

/// The answer to plain HTTP on the TLS port.
const PLAINTEXT_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Length: 46\r\n\
Connection: close\r\n\r\n\
this port speaks HTTPS: use https:// instead\r\n";

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

    /// The TLS side of one accepted connection, within [`HANDSHAKE_TIMEOUT`]. `None` when it
    /// did not become a TLS stream (counted, logged at debug; the connection is closed).
    pub async fn accept(
        &self,
        stream: TcpStream,
        peer: std::net::SocketAddr,
    ) -> Option<TlsStream<TcpStream>> {
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        let failed = |why: HandshakeFailure, detail: &dyn std::fmt::Display| {
            tracing::debug!(%peer, reason = why.as_str(), "TLS handshake failed: {detail}");
            crate::metrics::get()
                .tls_handshake_failures
                .get_or_create(&crate::metrics::ReasonLabels {
                    reason: why.as_str().to_owned(),
                })
                .inc();
            None
        };
        let mut first = [0u8; 1];
        match tokio::time::timeout_at(deadline.into(), stream.peek(&mut first)).await {
            Err(_) => return failed(HandshakeFailure::Timeout, &"no bytes"),
            Ok(Err(e)) => return failed(HandshakeFailure::Io, &e),
            // Connected and closed (a port check): nothing to count.
            Ok(Ok(0)) => return None,
            Ok(Ok(_)) => {}
        }
        // 0x16: a TLS handshake record (the ClientHello).
        if first[0] != 0x16 {
            if first[0].is_ascii_uppercase() {
                answer_plaintext(stream).await;
                return failed(
                    HandshakeFailure::PlaintextHttp,
                    &"plain HTTP on the TLS port",
                );
            }
            return failed(
                HandshakeFailure::NotTls,
                &format!("first byte {:#04x}", first[0]),
            );
        }
        match tokio::time::timeout_at(deadline.into(), self.acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                failed(HandshakeFailure::Handshake, &e)
            }
            Ok(Err(e)) => failed(HandshakeFailure::Io, &e),
            Err(_) => failed(HandshakeFailure::Timeout, &"handshake not finished"),
        }
    }
}

/// Reads what the client sent (briefly, so closing does not reset the connection before it
/// reads the answer), answers 400 and closes.
async fn answer_plaintext(mut stream: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    let _ = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        stream.write_all(PLAINTEXT_ANSWER).await?;
        stream.shutdown().await
    })
    .await;
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
