//! A certificate pair: read from its two files and checked ([`load`]), what its leaf says about
//! itself ([`CertInfo`]), and why a pair cannot be served ([`TlsError`]).

use std::sync::Arc;

use rustls::crypto::ring;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::config::TlsFiles;
use crate::ops::timefmt::rfc3339;

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
    pub(super) key: Arc<CertifiedKey>,
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
pub(super) fn cert_info(der: &CertificateDer<'_>, chain_len: usize) -> Result<CertInfo, String> {
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
pub(super) fn serial_hex(bytes: &[u8]) -> String {
    let first = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    hex::encode(&bytes[first..])
}
