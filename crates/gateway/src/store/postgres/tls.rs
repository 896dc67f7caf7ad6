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
        for cert in certs {
            let cert =
                cert.map_err(|e| StoreError(format!("store.ca_file {}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| StoreError(format!("store.ca_file {}: {e}", path.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
