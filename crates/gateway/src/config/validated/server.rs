//! `[server]` and `[admin]`: the two listeners, their TLS, the admin token and the request
//! limits.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::Validator;
use crate::config::raw::{RawAdmin, RawServer, RawTls};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7777";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9464";
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// The largest `[server] max_body_bytes` (256 MiB).
const MAX_BODY_LIMIT: u64 = 256 << 20;

/// `[server] workers` when not set: one per CPU but one, which the store's writer thread (on
/// every accept) and plugin calls need; at least 1.
pub fn default_workers() -> usize {
    workers_for(std::thread::available_parallelism().ok().map(|n| n.get()))
}

/// [`default_workers`] on a machine with `cpus` CPUs (`None`: not known).
pub(super) fn workers_for(cpus: Option<usize>) -> usize {
    cpus.map_or(1, |n| n.saturating_sub(1)).max(1)
}

/// The shortest `[admin] token` accepted: it guards replays and reloads.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// The bytes an `[admin] token` may hold: printable ASCII without the space (0x21-0x7E), what an
/// `Authorization: Bearer` header carries as text.
const TOKEN_BYTES: std::ops::RangeInclusive<u8> = 0x21..=0x7E;

/// `[admin] token`, expanded. Never printed: `Debug` shows `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(pub String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// `[server] tls` or `[admin] tls`, paths absolute. Only resolved here: the files are read, parsed and matched
/// by `tls.rs` (at start, on reload, when they change on disk) and by `gateway check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// The PEM private key of the leaf.
    pub key: PathBuf,
}

/// What [`super::Config`] holds of `[server]` and `[admin]`, validated.
pub(super) struct Listeners {
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    pub admin_token: Option<AdminToken>,
    pub admin_tls: Option<TlsFiles>,
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_client: Option<usize>,
    pub workers: usize,
    pub trusted_proxies: Vec<IpAddr>,
    pub tls: Option<TlsFiles>,
    pub shutdown_grace: Duration,
}

impl Validator<'_> {
    /// `[server]` then `[admin]`, problems in the order of their keys.
    pub(super) fn listeners(&mut self, server: &RawServer, admin: &RawAdmin) -> Listeners {
        let parsed_listen = self.addr(
            "server.listen",
            server.listen.as_deref().unwrap_or(DEFAULT_LISTEN),
        );
        let listen = parsed_listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7777)));
        // `"off"` is compared after `${VAR}` expansion, as every value is read.
        let admin_listen = match admin
            .listen
            .as_deref()
            .map(|l| self.expand("admin.listen", l))
        {
            Some(l) if l == "off" => None,
            Some(l) => self.parse_addr("admin.listen", &l),
            None => self.parse_addr("admin.listen", DEFAULT_ADMIN_LISTEN),
        };
        let clash = parsed_listen
            .zip(admin_listen)
            .filter(|(s, a)| overlap(*s, *a));
        if let Some((listen, addr)) = clash {
            self.problem(
                "admin.listen",
                format!(
                    "{addr} collides with server.listen ({listen}): the two listeners need \
                     different ports or addresses (a wildcard address takes the port on every \
                     address: 0.0.0.0 on IPv4 ones, [::] on both families)"
                ),
            );
        }
        let admin_token = admin.token.as_deref().and_then(|t| {
            let t = self.expand("admin.token", t);
            if t.trim() != t {
                // The API compares the bearer token it is given trimmed: it could never match.
                self.problem(
                    "admin.token",
                    "begins or ends with whitespace (a space or newline from the variable, say), \
                     which an `Authorization: Bearer` header cannot carry: remove it",
                );
                return None;
            }
            if let Some(at) = t.bytes().position(|b| !TOKEN_BYTES.contains(&b)) {
                // An `Authorization` header's value is read as ASCII text (a token outside it
                // could never be sent), and a space or control character would be cut or
                // mangled by shells and copy-paste. Which character: by position, never shown.
                self.problem(
                    "admin.token",
                    format!(
                        "holds a character that is not printable ASCII (byte {} of the value; a \
                         space, a control character or a non-ASCII letter, say): an \
                         `Authorization: Bearer` header cannot carry it, so the token could \
                         never be given; use only the characters ! to ~ (0x21-0x7E), e.g. \
                         `openssl rand -hex 32`",
                        at + 1
                    ),
                );
                return None;
            }
            if t.len() < MIN_ADMIN_TOKEN_LEN {
                self.problem(
                    "admin.token",
                    format!("must be at least {MIN_ADMIN_TOKEN_LEN} characters (use a random one: `openssl rand -hex 32`)"),
                );
                return None;
            }
            Some(AdminToken(t))
        });
        if let Some(addr) = admin_listen {
            // `[::ffff:127.0.0.1]` is loopback too (as everywhere else here).
            if !addr.ip().to_canonical().is_loopback()
                && admin_token.is_none()
                && admin.token.is_none()
            {
                self.problem(
                    "admin.listen",
                    format!("{addr} is not a loopback address: set [admin] token (e.g. token = \"${{GATEWAY_ADMIN_TOKEN}}\") so the API and console ask for it, or listen on 127.0.0.1"),
                );
            }
        }
        let max_body_bytes = match server.max_body_bytes {
            None => DEFAULT_MAX_BODY,
            Some(0) => {
                self.problem("server.max_body_bytes", "must be greater than 0");
                DEFAULT_MAX_BODY
            }
            // An event is stored whole (SQLite holds at most 1e9 bytes in a value) and handed to
            // an isolated plugin in one frame (at most 1 GiB with its delivery's wrapping): a
            // larger limit would accept events that could never be stored or delivered.
            Some(n) if n > MAX_BODY_LIMIT => {
                self.problem(
                    "server.max_body_bytes",
                    format!(
                        "{n} is over {MAX_BODY_LIMIT} (256 MiB): an event that large could not \
                         be stored or handed to an isolated plugin"
                    ),
                );
                DEFAULT_MAX_BODY
            }
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let body_timeout = self.duration_at_least(
            "server.body_timeout",
            server.body_timeout.as_deref(),
            Duration::from_secs(30),
            Duration::from_millis(1),
            "must be greater than 0 (every request would get 408)",
        );
        let max_connections = match server.max_connections {
            Some(0) => {
                self.problem("server.max_connections", "must be at least 1");
                1
            }
            Some(n) => n as usize,
            None => 1024,
        };
        let max_connections_per_client = match server.max_connections_per_client {
            Some(0) => {
                self.problem("server.max_connections_per_client", "must be at least 1");
                None
            }
            Some(n) => Some(n as usize),
            None => None,
        };
        let workers = match server.workers {
            Some(0) => {
                self.problem("server.workers", "must be at least 1");
                1
            }
            Some(n) if n > 1024 => {
                self.problem("server.workers", "must be at most 1024");
                1
            }
            Some(n) => n as usize,
            None => default_workers(),
        };
        let mut trusted_proxies = Vec::new();
        for (i, p) in server.trusted_proxies.iter().flatten().enumerate() {
            let at = format!("server.trusted_proxies[{i}]");
            let text = self.expand(&at, p);
            match text.parse() {
                Ok(ip) => trusted_proxies.push(ip),
                Err(_) => self.problem(&at, format!("{text:?} is not an IP address")),
            }
        }
        let tls = server.tls.as_ref().map(|t| self.tls("server.tls", t));
        let admin_tls = admin.tls.as_ref().map(|t| self.tls("admin.tls", t));
        if admin_tls.is_some() && admin_listen.is_none() {
            self.problem("admin.tls", "the admin listener is off (listen = \"off\")");
        }
        if admin_token.is_some() && admin_listen.is_none() {
            self.problem(
                "admin.token",
                "the admin listener is off (listen = \"off\"): nothing would ask for it",
            );
        }
        let shutdown_grace = self.duration(
            "server.shutdown_grace",
            server.shutdown_grace.as_deref(),
            Duration::from_secs(10),
        );
        Listeners {
            listen,
            admin_listen,
            admin_token,
            admin_tls,
            max_body_bytes,
            body_timeout,
            max_connections,
            max_connections_per_client,
            workers,
            trusted_proxies,
            tls,
            shutdown_grace,
        }
    }
}

/// Whether two listen addresses collide: the same port (not 0, which is a fresh port each
/// time) on the same address, or on a wildcard address that covers the other: `0.0.0.0` covers
/// IPv4, and `[::]` covers IPv6 and, where Linux binds it dual-stack (`bindv6only` = 0, the
/// default), IPv4 too. An IPv4-mapped address (`[::ffff:127.0.0.1]`) is the IPv4 one.
fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    overlap_on(a, b, dual_stack())
}

fn overlap_on(a: SocketAddr, b: SocketAddr, dual_stack: bool) -> bool {
    let (x, y) = (a.ip().to_canonical(), b.ip().to_canonical());
    let covers = |w: IpAddr, o: IpAddr| {
        w.is_unspecified()
            && if w.is_ipv6() {
                dual_stack || o.is_ipv6()
            } else {
                o.is_ipv4()
            }
    };
    a.port() == b.port() && a.port() != 0 && (x == y || covers(x, y) || covers(y, x))
}

/// Whether a socket bound to `[::]` takes IPv4 too: the host's `net.ipv6.bindv6only` is 0
/// (or cannot be read: Linux's default, and the side that refuses rather than misses a clash).
fn dual_stack() -> bool {
    dual_stack_from(std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only"))
}

/// [`dual_stack`] from what reading `bindv6only` gave.
fn dual_stack_from(bindv6only: std::io::Result<String>) -> bool {
    bindv6only.map_or(true, |v| v.trim() != "1")
}

impl Validator<'_> {
    /// A `{ cert, key }` table at `at` (`server.tls`, `admin.tls`).
    fn tls(&mut self, at: &str, t: &RawTls) -> TlsFiles {
        TlsFiles {
            cert: self.pem_file(&format!("{at}.cert"), &t.cert),
            key: self.pem_file(&format!("{at}.key"), &t.key),
        }
    }

    /// One file of a TLS pair: blank, as written or once its `${NAME}`s are expanded, is a
    /// problem (it would name the config's folder).
    fn pem_file(&mut self, at: &str, text: &str) -> PathBuf {
        let path = self.path(at, text);
        if !self.unexpanded.contains(at) && self.expand(at, text).trim().is_empty() {
            self.problem(at, "must name a PEM file");
        }
        path
    }
}

#[cfg(test)]
mod tests {
    use super::{dual_stack_from, overlap_on};

    #[test]
    fn the_ipv6_wildcard_is_dual_stack_unless_the_host_says_v6_only() {
        assert!(!dual_stack_from(Ok("1\n".into())));
        assert!(dual_stack_from(Ok("0\n".into())));
        let unreadable = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert!(dual_stack_from(Err(unreadable)));
    }

    fn clash(a: &str, b: &str, dual_stack: bool) -> bool {
        let (a, b) = (a.parse().expect("a"), b.parse().expect("b"));
        let one = overlap_on(a, b, dual_stack);
        assert_eq!(one, overlap_on(b, a, dual_stack), "{a} {b}: not symmetric");
        one
    }

    #[test]
    fn an_ipv4_mapped_address_is_its_ipv4_address() {
        for dual in [true, false] {
            assert!(clash("[::ffff:127.0.0.1]:7000", "127.0.0.1:7000", dual));
            assert!(clash("[::ffff:127.0.0.1]:7000", "0.0.0.0:7000", dual));
            assert!(!clash("[::ffff:127.0.0.1]:7000", "127.0.0.2:7000", dual));
        }
    }

    #[test]
    fn the_ipv6_wildcard_takes_ipv4_only_on_a_dual_stack_host() {
        assert!(clash("[::]:7000", "127.0.0.1:7000", true));
        assert!(clash("[::]:7000", "0.0.0.0:7000", true));
        assert!(!clash("[::]:7000", "127.0.0.1:7000", false));
        assert!(!clash("[::]:7000", "0.0.0.0:7000", false));
        for dual in [true, false] {
            assert!(clash("[::]:7000", "[::1]:7000", dual));
            assert!(!clash("0.0.0.0:7000", "[::1]:7000", dual));
            assert!(!clash("[::]:7000", "[::1]:7001", dual));
            assert!(!clash("[::]:0", "[::]:0", dual));
        }
    }
}
