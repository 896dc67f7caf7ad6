//! The connector: rustls towards a named host, no TLS towards a nameless one (a Unix socket). It
//! never offers a TLS session without a name to check the certificate against.
//!
//! The driver asks [`Connector`] for a handshake before each connection (and each cancel
//! request), naming the host; a Unix-socket host has no name, and is asked for as `""` (as is a
//! TCP host given only by its `hostaddr`, or by one beside a socket folder). rustls
//! alone fails there ("invalid dns name") before a byte is sent, whatever the `sslmode`, which
//! made every socket URL unusable. For a nameless host [`Handshake::Plain`] is handed out
//! instead: the driver then connects in plain text when `sslmode` lets it (`disable`; `prefer`
//! once the server answers that it has no TLS, which PostgreSQL always answers on a socket) and
//! refuses otherwise (a server that does offer TLS to a nameless host: the driver's "no hostname
//! provided for TLS handshake"). A URL of sockets only should be connected with `sslmode`
//! `disable` ([`crate::Hosts::sockets_only`]), as libpq ignores `sslmode` on a socket; `require`
//! towards a nameless TCP host can never connect, and is refused ([`crate::Hosts::refusal`]).

use std::future::{ready, Ready};
use std::io;

use futures_util::future::Either;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::Socket;
use tokio_postgres_rustls::MakeRustlsConnect;

/// rustls' handshake towards one named host (a type of the adapter's it does not name).
type RustlsHandshake = <MakeRustlsConnect as MakeTlsConnect<Socket>>::TlsConnect;
/// A TLS session by rustls.
type RustlsStream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;

/// A TLS connector per host: what a pool or client connects with, and what a query's cancel
/// request dials with. Cheap to clone (the rustls settings are shared).
#[derive(Clone)]
pub struct Connector {
    rustls: MakeRustlsConnect,
}

impl Connector {
    /// Connects to TCP hosts with rustls under `config` (its roots decide which certificates
    /// are trusted); to sockets without TLS.
    pub fn new(config: rustls::ClientConfig) -> Connector {
        Connector {
            rustls: MakeRustlsConnect::new(config),
        }
    }
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector").finish_non_exhaustive()
    }
}

/// The handshake for one connection.
pub enum Handshake {
    /// A TCP host, by its name.
    Rustls(RustlsHandshake),
    /// A host without a name (a Unix socket): no TLS session. The driver never starts one
    /// without a name (see the module docs); should it, the handshake fails.
    Plain,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Handshake::Rustls(_) => "Handshake::Rustls",
            Handshake::Plain => "Handshake::Plain",
        })
    }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn connector() -> Connector {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the default protocol versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        Connector::new(config)
    }

    /// A socket's empty host name gets no TLS; a TCP host's name gets rustls, and a name
    /// rustls cannot take is still an error (as before, never plain text instead).
    #[test]
    fn a_nameless_host_gets_no_tls_and_a_named_one_rustls() {
        let mut tls = connector();
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
}
