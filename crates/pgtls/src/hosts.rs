//! Which hosts of a PostgreSQL URL are Unix sockets, and what that does to its `sslmode`. It
//! only reads the parsed URL: it never dials, and never changes the config itself.
//!
//! A socket is named by its folder (`%2Frun%2Fpostgresql`, `?host=/run/postgresql`) and always
//! reached without TLS: PostgreSQL serves none there, and libpq ignores `sslmode` on a socket.
//! The driver takes one `sslmode` for the whole host list, so a URL of sockets only is to be
//! connected as with `disable`, and `require` with a socket among TCP hosts is refused.

use std::net::IpAddr;
use std::path::PathBuf;

use tokio_postgres::config::{Host, SslMode};

/// How a URL's hosts are reached: over TCP (with TLS as its `sslmode` says) or on a Unix socket
/// (never with TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hosts {
    /// The Unix-socket folders among the hosts, in the URL's order.
    pub sockets: Vec<PathBuf>,
    /// Whether some host is reached over TCP: a host name, or any `hostaddr` (with those,
    /// every host is reached at its address, over TCP, whatever it names).
    pub tcp: bool,
}

/// `sslmode=require` in a host list with a Unix socket and TCP hosts: the driver applies one
/// `sslmode` to the whole list, and a socket never offers TLS, so that host would never be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "sslmode=require cannot apply to the Unix-socket host {} in a list with TCP hosts: \
     PostgreSQL serves no TLS on a socket, and the driver takes one sslmode for every host, so \
     that host would never be used; list the socket alone (its sslmode is then ignored, as libpq \
     does) or only TCP hosts",
    socket.display()
)]
pub struct RequireBesideSocket {
    /// The first socket folder of the list.
    pub socket: PathBuf,
}

impl Hosts {
    /// The hosts of a parsed URL, from its `get_hosts()` and `get_hostaddrs()` (the same on
    /// `tokio_postgres::Config` and the blocking `postgres::Config`).
    pub fn of(hosts: &[Host], hostaddrs: &[IpAddr]) -> Hosts {
        if !hostaddrs.is_empty() {
            return Hosts {
                sockets: Vec::new(),
                tcp: true,
            };
        }
        let mut out = Hosts {
            sockets: Vec::new(),
            tcp: false,
        };
        for host in hosts {
            match host {
                Host::Tcp(_) => out.tcp = true,
                #[cfg(unix)]
                Host::Unix(dir) => out.sockets.push(dir.clone()),
            }
        }
        out
    }

    /// Every host is a Unix socket: `sslmode` does not apply, and the URL is to be connected as
    /// with `disable` (under `require` the driver would ask the server for TLS and give up on its
    /// "no").
    pub fn sockets_only(&self) -> bool {
        !self.sockets.is_empty() && !self.tcp
    }

    /// Why `sslmode` `mode` cannot be kept for these hosts, if it cannot: `require` with a
    /// socket among TCP hosts.
    pub fn refusal(&self, mode: SslMode) -> Option<RequireBesideSocket> {
        let socket = self.sockets.first()?;
        (self.tcp && mode == SslMode::Require).then(|| RequireBesideSocket {
            socket: socket.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which hosts of a URL are sockets, and when `sslmode` is refused for them.
    #[test]
    fn the_hosts_of_a_url() {
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
            let hosts = Hosts::of(config.get_hosts(), config.get_hostaddrs());
            let want: Vec<PathBuf> = sockets.iter().map(Into::into).collect();
            assert_eq!((&hosts.sockets, hosts.tcp), (&want, tcp), "{url}");
            assert_eq!(hosts.sockets_only(), !sockets.is_empty() && !tcp, "{url}");
            let mixed = !sockets.is_empty() && tcp;
            assert_eq!(hosts.refusal(SslMode::Require).is_some(), mixed, "{url}");
            assert!(hosts.refusal(SslMode::Prefer).is_none(), "{url}");
            assert!(hosts.refusal(SslMode::Disable).is_none(), "{url}");
        }
    }

    #[test]
    fn the_refusal_names_the_socket_and_the_way_out() {
        let config: tokio_postgres::Config = "postgres://gw@%2Frun%2Fpostgresql,db/gw"
            .parse()
            .expect("a URL");
        let why = Hosts::of(config.get_hosts(), config.get_hostaddrs())
            .refusal(SslMode::Require)
            .expect("refused")
            .to_string();
        assert!(
            why.starts_with("sslmode=require cannot apply to the Unix-socket host /run/postgresql")
                && why.contains("list the socket alone"),
            "{why}"
        );
    }
}
