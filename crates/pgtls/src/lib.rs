//! TLS per PostgreSQL host, for `tokio-postgres` (and the blocking `postgres` client over it):
//! rustls towards a TCP host, checked against the host's name; none on a Unix socket, whatever
//! the `sslmode`, as libpq does (PostgreSQL serves no TLS on a socket, and nothing leaves the
//! machine). Shared by the gateway's store and the payout plugin's ledger, which must not depend
//! on each other.
//!
//! Two parts: [`Connector`], what the driver connects with (it hands out rustls for a named
//! host and no TLS for a nameless one, a socket); and [`Hosts`], which hosts of a URL are
//! sockets or reached over TCP without a name (a `hostaddr` for a socket folder or for no
//! host), whether its `sslmode` must be set aside (a URL of sockets only) or refused
//! (`require` beside a socket, or towards a host without a name). The rustls settings (roots,
//! a private CA) are the caller's: this crate never reads a file or the environment, and never
//! offers a TLS session without a name to check the certificate against.

mod connector;
mod hosts;

pub use connector::{Connector, Handshake};
pub use hosts::{Hosts, Nameless, Refusal};
