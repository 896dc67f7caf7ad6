//! TLS for the store's connections: the `[store]` settings' rustls config (the public web roots
//! plus `ca_file`) in a [`gateway_pgtls::Connector`], which hands out rustls towards a TCP host
//! (the certificate checked against its name) and none on a Unix socket, whatever the `sslmode`
//! (that crate's docs say why). A URL of sockets only is connected with `sslmode` `disable`
//! (`connect.rs`), as libpq ignores `sslmode` on a socket. Nothing here reads the URL.

use std::sync::Arc;

pub use gateway_pgtls::Connector;

use crate::config::PgSettings;
use crate::store::StoreError;

/// The connector of `settings`' connections: rustls with the public web roots plus `ca_file`'s
/// certificates, for the TCP hosts.
pub fn connector(settings: &PgSettings) -> Result<Connector, StoreError> {
    Ok(Connector::new(rustls_config(settings)?))
}

/// rustls with the public web roots plus `ca_file`'s certificates.
fn rustls_config(settings: &PgSettings) -> Result<rustls::ClientConfig, StoreError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &settings.ca_file {
        use rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| StoreError(format!("store.ca_file {}: {e}", path.display())))?;
        let mut added = 0;
        for cert in certs {
            let cert =
                cert.map_err(|e| StoreError(format!("store.ca_file {}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| StoreError(format!("store.ca_file {}: {e}", path.display())))?;
            added += 1;
        }
        // A file of something else would only show as a failed handshake, naming no file.
        if added == 0 {
            return Err(StoreError(format!(
                "store.ca_file {}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            )));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `ca_file` holding no certificate passed `check` and showed, at best, as a failed
    /// handshake naming no file.
    #[test]
    fn a_ca_file_without_a_certificate_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "junk\n").expect("write");
        let settings = PgSettings {
            url: "postgres://gw@127.0.0.1/gw".into(),
            lease: std::time::Duration::from_secs(60),
            pool_size: 1,
            ca_file: Some(path),
        };
        let Err(e) = connector(&settings) else {
            panic!("a ca_file without a certificate was taken");
        };
        assert!(
            e.0.contains("store.ca_file") && e.0.contains("holds no PEM certificate"),
            "{e}"
        );
    }
}
