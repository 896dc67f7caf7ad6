//! Which hosts of a PostgreSQL URL are Unix sockets, which are reached over TCP without a name,
//! and what that does to its `sslmode`. It only reads the parsed URL: it never dials, and never
//! changes the config itself.
//!
//! A socket is named by its folder (`%2Frun%2Fpostgresql`, `?host=/run/postgresql`) and always
//! reached without TLS: PostgreSQL serves none there, and libpq ignores `sslmode` on a socket.
//! The driver takes one `sslmode` for the whole host list, so a URL of sockets only is to be
//! connected as with `disable`, and `require` with a socket among TCP hosts is refused.
//!
//! A `hostaddr` makes its host a TCP one, reached at that address whatever `host` names (libpq
//! does the same: "TCP/IP communication is always used when a nonempty string is specified for
//! this parameter"); `host` then only gives the name TLS checks the server's certificate
//! against. A `hostaddr` given for a socket folder (`?host=/run/postgresql&hostaddr=127.0.0.1`)
//! or for no host at all has no such name: the folder is set aside, and TLS, which the gateway
//! never runs without checking the name (its `require` is libpq's `verify-full`), cannot be had
//! there. So `require` is refused for such a host (it could never connect); `prefer` connects
//! only to a server that offers no TLS (the driver gives up on one that does); `disable`
//! connects in plain text. A URL with as many `hostaddr`s as hosts pairs them in order; one with
//! other counts of both is refused (the driver never connects with it, nor does libpq).

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
    /// The hosts reached over TCP with no name to check a certificate against (a `hostaddr`
    /// for a socket folder or for no host), in the URL's order.
    pub nameless: Vec<Nameless>,
    /// `(hosts, hostaddrs)` when both are given in different numbers (nothing can connect).
    pub mismatch: Option<(usize, usize)>,
}

/// A host reached over TCP at its `hostaddr`, with no name for TLS to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nameless {
    /// The address connected to.
    pub addr: IpAddr,
    /// The socket folder given as its `host`, set aside (`None`: no host, or an empty one).
    pub folder: Option<PathBuf>,
}

impl std::fmt::Display for Nameless {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.folder {
            Some(dir) => write!(
                f,
                "hostaddr {} (given for the Unix-socket folder {})",
                self.addr,
                dir.display()
            ),
            None => write!(f, "hostaddr {} (given without a host name)", self.addr),
        }
    }
}

/// A URL whose hosts cannot all be connected to as written: the gateway refuses it rather than
/// retry a connection that can never be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `sslmode=require` in a host list with a Unix socket and TCP hosts: the driver applies one
    /// `sslmode` to the whole list, and a socket never offers TLS, so that host would never be
    /// used.
    #[error(
        "sslmode=require cannot apply to the Unix-socket host {} in a list with TCP hosts: \
         PostgreSQL serves no TLS on a socket, and the driver takes one sslmode for every host, \
         so that host would never be used; list the socket alone (its sslmode is then ignored, \
         as libpq does) or only TCP hosts",
        socket.display()
    )]
    RequireBesideSocket {
        /// The first socket folder of the list.
        socket: PathBuf,
    },
    /// `sslmode=require` towards a host reached over TCP with no name: TLS is only run with
    /// the server's certificate checked against the host's name, so it could never connect.
    #[error(
        "sslmode=require cannot be met at {host}: a hostaddr is connected to over TCP (a socket \
         folder beside it is not used), and TLS there needs a host name to check the server's \
         certificate against, which this host does not give; set host to the name on the \
         server's certificate (hostaddr still gives the address), or drop hostaddr to use the \
         socket (no TLS there: sslmode does not apply, as with libpq), or set sslmode=disable \
         for plain text to that address"
    )]
    RequireWithoutName {
        /// The first such host of the list.
        host: Nameless,
    },
    /// `host` and `hostaddr` both given, in different numbers: the driver refuses to connect.
    #[error(
        "{hosts} host(s) and {hostaddrs} hostaddr(s): each host needs its own hostaddr, in the \
         same order (or give no hostaddr)"
    )]
    HostaddrCount {
        /// How many hosts.
        hosts: usize,
        /// How many `hostaddr`s.
        hostaddrs: usize,
    },
}

impl Hosts {
    /// The hosts of a parsed URL, from its `get_hosts()` and `get_hostaddrs()` (the same on
    /// `tokio_postgres::Config` and the blocking `postgres::Config`).
    pub fn of(hosts: &[Host], hostaddrs: &[IpAddr]) -> Hosts {
        let mut out = Hosts {
            sockets: Vec::new(),
            tcp: false,
            nameless: Vec::new(),
            mismatch: None,
        };
        if !hostaddrs.is_empty() {
            out.tcp = true;
            if !hosts.is_empty() && hosts.len() != hostaddrs.len() {
                out.mismatch = Some((hosts.len(), hostaddrs.len()));
                return out;
            }
            for (i, addr) in hostaddrs.iter().enumerate() {
                let folder = match hosts.get(i) {
                    Some(Host::Tcp(name)) if !name.is_empty() => continue,
                    Some(Host::Tcp(_)) | None => None,
                    #[cfg(unix)]
                    Some(Host::Unix(dir)) => Some(dir.clone()),
                };
                out.nameless.push(Nameless {
                    addr: *addr,
                    folder,
                });
            }
            return out;
        }
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

    /// Why these hosts cannot be connected to under `sslmode` `mode`, if they cannot: a
    /// `hostaddr` count that does not match the hosts'; `require` with a socket among TCP hosts;
    /// `require` towards a host reached over TCP with no name.
    pub fn refusal(&self, mode: SslMode) -> Option<Refusal> {
        if let Some((hosts, hostaddrs)) = self.mismatch {
            return Some(Refusal::HostaddrCount { hosts, hostaddrs });
        }
        if mode != SslMode::Require {
            return None;
        }
        if let Some(socket) = self.sockets.first().filter(|_| self.tcp) {
            return Some(Refusal::RequireBesideSocket {
                socket: socket.clone(),
            });
        }
        self.nameless
            .first()
            .map(|host| Refusal::RequireWithoutName { host: host.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(url: &str) -> Hosts {
        let config: tokio_postgres::Config = url.parse().expect(url);
        Hosts::of(config.get_hosts(), config.get_hostaddrs())
    }

    /// Which hosts of a URL are sockets, and when `sslmode` is refused for them.
    #[test]
    fn the_hosts_of_a_url() {
        let cases: [(&str, &[&str], bool); 7] = [
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
        ];
        for (url, sockets, tcp) in cases {
            let hosts = hosts(url);
            let want: Vec<PathBuf> = sockets.iter().map(Into::into).collect();
            assert_eq!((&hosts.sockets, hosts.tcp), (&want, tcp), "{url}");
            assert!(
                hosts.nameless.is_empty() && hosts.mismatch.is_none(),
                "{url}"
            );
            assert_eq!(hosts.sockets_only(), !sockets.is_empty() && !tcp, "{url}");
            let mixed = !sockets.is_empty() && tcp;
            assert_eq!(hosts.refusal(SslMode::Require).is_some(), mixed, "{url}");
            assert!(hosts.refusal(SslMode::Prefer).is_none(), "{url}");
            assert!(hosts.refusal(SslMode::Disable).is_none(), "{url}");
        }
    }

    #[test]
    fn the_refusal_names_the_socket_and_the_way_out() {
        let why = hosts("postgres://gw@%2Frun%2Fpostgresql,db/gw")
            .refusal(SslMode::Require)
            .expect("refused")
            .to_string();
        assert!(
            why.starts_with("sslmode=require cannot apply to the Unix-socket host /run/postgresql")
                && why.contains("list the socket alone"),
            "{why}"
        );
    }

    /// A `hostaddr` is reached over TCP whatever its host names, as libpq does: a socket folder
    /// (or no host) beside it gives no name for TLS to check, so `require` can never connect
    /// there and is refused, in every spelling; `prefer` and `disable` are not (they connect to
    /// a server without TLS, or in plain text). A host name beside its `hostaddr` is the name
    /// checked: `require` is kept.
    #[test]
    fn require_is_refused_for_a_hostaddr_without_a_host_name() {
        let local = IpAddr::from([127, 0, 0, 1]);
        let other = IpAddr::from([10, 0, 0, 2]);
        let folder = |addr, dir: &str| Nameless {
            addr,
            folder: Some(dir.into()),
        };
        let bare = |addr| Nameless { addr, folder: None };
        let cases: Vec<(&str, Vec<Nameless>)> = vec![
            (
                "postgres://u@/db?host=/var/run/postgresql&hostaddr=127.0.0.1",
                vec![folder(local, "/var/run/postgresql")],
            ),
            (
                "postgres://u@/db?host=%2Fvar%2Frun%2Fpostgresql&hostaddr=127.0.0.1",
                vec![folder(local, "/var/run/postgresql")],
            ),
            (
                "postgres://u@%2Fvar%2Frun%2Fpostgresql/db?hostaddr=127.0.0.1",
                vec![folder(local, "/var/run/postgresql")],
            ),
            (
                "postgresql://u@%2Fvar%2Frun%2Fpostgresql:5433/db?hostaddr=127.0.0.1",
                vec![folder(local, "/var/run/postgresql")],
            ),
            ("postgres://u@/db?hostaddr=127.0.0.1", vec![bare(local)]),
            (
                "postgres://u@:5433/db?hostaddr=127.0.0.1",
                vec![bare(local)],
            ),
            (
                "postgres://u@/db?host=&hostaddr=127.0.0.1",
                vec![bare(local)],
            ),
            (
                "postgres://u@/db?hostaddr=127.0.0.1,10.0.0.2",
                vec![bare(local), bare(other)],
            ),
            (
                "postgres://u@db.internal,%2Frun%2Fpg/db?hostaddr=127.0.0.1,10.0.0.2",
                vec![folder(other, "/run/pg")],
            ),
            (
                "host=/var/run/postgresql hostaddr=127.0.0.1",
                vec![folder(local, "/var/run/postgresql")],
            ),
            ("hostaddr=127.0.0.1", vec![bare(local)]),
            ("postgres://u@db.internal/db?hostaddr=127.0.0.1", vec![]),
            ("postgres://u@127.0.0.1/db?hostaddr=127.0.0.1", vec![]),
            (
                "postgres://u@db1,db2/db?hostaddr=127.0.0.1,10.0.0.2",
                vec![],
            ),
        ];
        for (url, nameless) in cases {
            let hosts = hosts(url);
            assert_eq!(hosts.nameless, nameless, "{url}");
            assert!(hosts.sockets.is_empty() && hosts.tcp, "{url}: over TCP");
            assert!(!hosts.sockets_only(), "{url}");
            assert!(hosts.mismatch.is_none(), "{url}");
            let refused = hosts.refusal(SslMode::Require);
            match nameless.first() {
                Some(first) => assert_eq!(
                    refused,
                    Some(Refusal::RequireWithoutName {
                        host: first.clone()
                    }),
                    "{url}"
                ),
                None => assert_eq!(refused, None, "{url}"),
            }
            assert_eq!(hosts.refusal(SslMode::Prefer), None, "{url}");
            assert_eq!(hosts.refusal(SslMode::Disable), None, "{url}");
        }
    }

    #[test]
    fn the_nameless_refusal_says_where_and_how_to_fix_it() {
        let why = hosts("postgres://u@/db?host=/var/run/postgresql&hostaddr=127.0.0.1")
            .refusal(SslMode::Require)
            .expect("refused")
            .to_string();
        assert!(
            why.starts_with(
                "sslmode=require cannot be met at hostaddr 127.0.0.1 (given for the Unix-socket \
                 folder /var/run/postgresql)"
            ) && why.contains("set host to the name on the server's certificate")
                && why.contains("drop hostaddr to use the socket")
                && why.contains("sslmode=disable"),
            "{why}"
        );
        let why = hosts("postgres://u@/db?hostaddr=127.0.0.1")
            .refusal(SslMode::Require)
            .expect("refused")
            .to_string();
        assert!(
            why.starts_with(
                "sslmode=require cannot be met at hostaddr 127.0.0.1 (given without a host name)"
            ),
            "{why}"
        );
    }

    /// Hosts and `hostaddr`s in different numbers: refused whatever the `sslmode` (the driver
    /// never connects with them).
    #[test]
    fn hostaddrs_must_match_the_hosts_one_for_one() {
        for (url, hosts_n, addrs_n) in [
            ("postgres://u@db1,db2/db?hostaddr=127.0.0.1", 2, 1),
            ("postgres://u@db/db?hostaddr=127.0.0.1,10.0.0.2", 1, 2),
            (
                "postgres://u@/db?host=/run/pg&hostaddr=127.0.0.1,10.0.0.2",
                1,
                2,
            ),
        ] {
            let hosts = hosts(url);
            for mode in [SslMode::Disable, SslMode::Prefer, SslMode::Require] {
                assert_eq!(
                    hosts.refusal(mode),
                    Some(Refusal::HostaddrCount {
                        hosts: hosts_n,
                        hostaddrs: addrs_n
                    }),
                    "{url}"
                );
            }
        }
    }
}
