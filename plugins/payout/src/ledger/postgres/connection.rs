//! The ledger's one connection per process: made (with TLS per host), numbered, found dead and
//! replaced (a call on an old connection that finds it dead runs once more on a new one), and
//! the driver's errors described with the URL's password scrubbed out.

use std::sync::atomic::Ordering;
use std::sync::MutexGuard;

use postgres::Client;

use super::{Failure, PgLedger};
use crate::ledger::location::scrub;
use crate::ledger::LedgerError;

/// The server's TCP keepalives on this session's socket: a claim (a session advisory lock)
/// lapses with its session, and a session whose client vanished without a word (a cut
/// network, a host powered off) ends only when the server notices; with the operating
/// system's defaults that is after about two hours, during which every replica finds the
/// delivery busy. With these, within about two minutes (60 s idle, then 6 probes 10 s apart).
/// Ignored by the server on a Unix socket.
const SERVER_KEEPALIVES: &str =
    "SET tcp_keepalives_idle = 60; SET tcp_keepalives_interval = 10; SET tcp_keepalives_count = 6";

/// The connection and which one it is (a claim is released only on the session that took it).
pub(super) struct Session {
    pub(super) client: Client,
    pub(super) generation: u64,
}

impl PgLedger {
    pub(super) fn lock(&self) -> MutexGuard<'_, Option<Session>> {
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn connect(&self) -> Result<Session, LedgerError> {
        let mut client = self
            .config
            .connect(self.tls.clone())
            .map_err(|e| self.fail("cannot connect", Failure::Db(e)))?;
        if self.read_only {
            client
                .batch_execute("SET default_transaction_read_only = on")
                .map_err(|e| self.fail("cannot connect", Failure::Db(e)))?;
        }
        // A server that does not know these (a PostgreSQL-compatible one) keeps its own: the
        // session works all the same; the plugin says so at start.
        if let Err(e) = client.batch_execute(SERVER_KEEPALIVES) {
            if is_dead(&client, &e) {
                return Err(self.fail("cannot connect", Failure::Db(e)));
            }
            let refused = scrub(&describe(&e), &self.url);
            *self
                .keepalives_refused
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(refused);
        }
        Ok(Session {
            client,
            generation: self.generations.fetch_add(1, Ordering::Relaxed) + 1,
        })
    }

    pub(super) fn fail(&self, what: &'static str, failure: Failure) -> LedgerError {
        let message = match failure {
            Failure::Ledger(e) => return e,
            Failure::Refused(m) => m,
            Failure::Db(e) => describe(&e),
        };
        LedgerError::Postgres {
            url: self.shown.clone(),
            what,
            message: scrub(&message, &self.url),
        }
    }

    /// Runs `f` on the connection, connecting first when there is none. A connection that turns
    /// out dead is dropped; if it was an old one, `f` runs once more on a new one. Each call
    /// below is safe to repeat: a second run finds what a commit whose answer was lost did and
    /// keeps it (at worst an attempt counter counts one more; a withdraw call known to have made
    /// nothing is recorded by its number, `n - 1` to `n`, so never twice).
    pub(super) fn call<T>(
        &self,
        what: &'static str,
        mut f: impl FnMut(&mut Client, u64) -> Result<T, Failure>,
    ) -> Result<T, LedgerError> {
        let mut slot = self.lock();
        let mut old = true;
        loop {
            let session = match slot.take() {
                Some(s) if !s.client.is_closed() => slot.insert(s),
                _ => {
                    old = false;
                    slot.insert(self.connect()?)
                }
            };
            let result = f(&mut session.client, session.generation);
            match result {
                Ok(v) => return Ok(v),
                Err(Failure::Db(e)) if is_dead(&session.client, &e) => {
                    *slot = None;
                    if !old {
                        return Err(self.fail(what, Failure::Db(e)));
                    }
                    old = false;
                }
                Err(failure) => return Err(self.fail(what, failure)),
            }
        }
    }
}

/// Whether the connection is gone (closed, reset, or ended by the server: shutdown, idle
/// timeout): it is replaced on the next call.
pub(super) fn is_dead(client: &Client, e: &postgres::Error) -> bool {
    let code = e.code().map(|c| c.code());
    client.is_closed()
        || e.is_closed()
        || code.is_some_and(|c| c.starts_with("08") || c.starts_with("57P"))
        || code.is_none() && e.as_db_error().is_none() && is_io(e)
}

fn is_io(e: &postgres::Error) -> bool {
    use std::error::Error as _;
    e.source()
        .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some())
}

/// The driver's message with its causes, on one line.
fn describe(e: &postgres::Error) -> String {
    use std::error::Error as _;
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.replace('\n', "; ")
}

/// rustls with the public web roots, plus the PEM certificates of `$PGSSLROOTCERT` (libpq's
/// variable for a private CA) when set, towards the TCP hosts; no TLS on a Unix socket.
pub(super) fn tls() -> Result<gateway_pgtls::Connector, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = std::env::var_os("PGSSLROOTCERT") {
        let shown = std::path::Path::new(&path).display().to_string();
        let certs = CertificateDer::pem_file_iter(&path)
            .map_err(|e| format!("PGSSLROOTCERT {shown}: {e}"))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("PGSSLROOTCERT {shown}: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("PGSSLROOTCERT {shown}: {e}"))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(gateway_pgtls::Connector::new(config))
}
