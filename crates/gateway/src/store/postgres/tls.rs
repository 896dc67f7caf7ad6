//! TLS for the store's connections, per host: rustls towards a TCP host (the certificate checked
//! against the public web roots plus `[store] ca_file`, and the host's name), none on a Unix
//! socket. It never offers a TLS session without a name to check the certificate against.
//!
//! The driver asks [`Connector`] for a handshake before each connection (and each cancel
//! request), naming the host; a Unix-socket host has no name, and is asked for as `""`. rustls
//! alone fails there ("invalid dns name") before a byte is sent, whatever the `sslmode`, which
//! made every socket URL unusable. For a nameless host [`Handshake::Plain`] is handed out
//! instead: the driver then connects in plain text when `sslmode` lets it (`disable`; `prefer`
//! once the server answers that it has no TLS, which PostgreSQL always answers on a socket) and
//! refuses otherwise (a server that does offer TLS to a nameless host: the driver's "no hostname
//! provided for TLS handshake"). A URL of sockets only is connected with `sslmode` `disable`
//! (`connect.rs`), as libpq ignores `sslmode` on a socket.

use std::future::{ready, Ready};
use std::io;
use std::sync::Arc;

use futures_util::future::Either;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::Socket;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::PgSettings;
use crate::store::StoreError;

/// rustls' handshake towards one named host (a type of the adapter's it does not name).
type RustlsHandshake = <MakeRustlsConnect as MakeTlsConnect<Socket>>::TlsConnect;
/// A TLS session by rustls.
type RustlsStream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;

/// The store's TLS connector: what the pool connects with, and what a query's cancel request
/// dials with.
#[derive(Clone)]
pub struct Connector {
    rustls: MakeRustlsConnect,
}

/// The handshake for one connection.
pub enum Handshake {
    /// A TCP host, by its name.
    Rustls(RustlsHandshake),
    /// A host without a name (a Unix socket): no TLS session. The driver never starts one
    /// without a name (see the module docs); should it, the handshake fails.
    Plain,
}

/// The connector of `settings`' connections: rustls with the public web roots plus `ca_file`'s
/// certificates, for the TCP hosts.
pub fn connector(settings: &PgSettings) -> Result<Connector, StoreError> {
    Ok(Connector {
        rustls: MakeRustlsConnect::new(rustls_config(settings)?),
    })
}

impl MakeTlsConnect<Socket> for Connector {
    type Stream = RustlsStream;
    type TlsConnect = Handshake;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, host: &str) -> Result<Handshake, Self::Error> {
        if host.is_empty() {
            return Ok(Handshake::Plain);
        }
        MakeTlsConnect::<Socket>::make_tls_connect(&mut self.rustls, host).map(Handshake::Rustls)
    }
}

impl TlsConnect<Socket> for Handshake {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future =
        Either<<RustlsHandshake as TlsConnect<Socket>>::Future, Ready<io::Result<RustlsStream>>>;

    fn connect(self, stream: Socket) -> Self::Future {
        match self {
            Handshake::Rustls(handshake) => Either::Left(handshake.connect(stream)),
            Handshake::Plain => Either::Right(ready(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no TLS towards a host without a name (a Unix socket)",
            )))),
        }
    }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::PgHosts;

    fn settings() -> PgSettings {
        PgSettings {
            url: "postgres://gw@db/gw".into(),
            lease: Duration::from_secs(60),
            pool_size: 1,
            ca_file: None,
        }
    }

    /// A socket's empty host name gets no TLS; a TCP host's name gets rustls, and a name
    /// rustls cannot take is still an error (as before, never plain text instead).
    #[test]
    fn a_nameless_host_gets_no_tls_and_a_named_one_rustls() {
        let mut tls = connector(&settings()).expect("connector");
        let handshake =
            |tls: &mut Connector, host| MakeTlsConnect::<Socket>::make_tls_connect(tls, host);
        assert!(matches!(handshake(&mut tls, ""), Ok(Handshake::Plain)));
        for host in ["db.internal", "localhost", "127.0.0.1", "::1"] {
            assert!(
                matches!(handshake(&mut tls, host), Ok(Handshake::Rustls(_))),
                "{host}"
            );
        }
        assert!(handshake(&mut tls, "not a name").is_err());
    }

    /// Which hosts of a URL are sockets, and when `sslmode` is refused for them.
    #[test]
    fn the_hosts_of_a_url() {
        use tokio_postgres::config::SslMode;
        let cases: [(&str, &[&str], bool); 8] = [
            ("postgres://gw@db/gw", &[], true),
            (
                "postgres://gw@%2Frun%2Fpostgresql/gw",
                &["/run/postgresql"],
                false,
            ),
            (
                "postgres://gw@%2Frun%2Fpostgresql:5433/gw",
                &["/run/postgresql"],
                false,
            ),
            (
                "postgres://gw@/gw?host=/run/postgresql",
                &["/run/postgresql"],
                false,
            ),
            ("postgres://gw@/gw?host=%2Ftmp&port=5433", &["/tmp"], false),
            (
                "postgres://gw@%2Frun%2Fpostgresql,db:5432/gw",
                &["/run/postgresql"],
                true,
            ),
            ("postgres://gw@db1,db2/gw", &[], true),
            // With a hostaddr every host is reached at its address, over TCP.
            (
                "postgres://gw@/gw?host=/run/postgresql&hostaddr=127.0.0.1",
                &[],
                true,
            ),
        ];
        for (url, sockets, tcp) in cases {
            let config: tokio_postgres::Config = url.parse().expect(url);
            let hosts = PgHosts::of(&config);
            let want: Vec<std::path::PathBuf> = sockets.iter().map(Into::into).collect();
            assert_eq!((&hosts.sockets, hosts.tcp), (&want, tcp), "{url}");
            assert_eq!(hosts.sockets_only(), !sockets.is_empty() && !tcp, "{url}");
            let mixed = !sockets.is_empty() && tcp;
            assert_eq!(hosts.refusal(SslMode::Require).is_some(), mixed, "{url}");
            assert!(hosts.refusal(SslMode::Prefer).is_none(), "{url}");
            assert!(hosts.refusal(SslMode::Disable).is_none(), "{url}");
        }
    }
}
