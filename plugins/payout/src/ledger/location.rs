//! Where the ledger lives, as the `ledger` key (or `payout-report --ledger`) names it: a path to
//! the plugin's own SQLite file, or a `postgres://` / `postgresql://` URL of a database shared by
//! several gateway replicas.
//!
//! A URL's hosts may be Unix sockets (`%2Frun%2Fpostgresql`, `?host=/run/postgresql`), reached
//! without TLS whatever the `sslmode`, as libpq does; `sslmode=require` with a socket among TCP
//! hosts is refused, and so is `sslmode=require` towards a `hostaddr` given without a host name
//! (for a socket folder, or alone: reached over TCP, with no name to check a certificate
//! against), as are hosts and `hostaddr`s in different numbers ([`gateway_pgtls::Hosts`], the
//! gateway's own rules for its `[store] url`).
//!
//! A URL may hold a password; it must never be shown. [`LedgerLocation`]'s `Display` and `Debug`
//! and [`redact_url`] replace it with `***`, and [`scrub`] removes it from any message text.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// The environment variable read for the password when the URL has none (as libpq does; the
/// Rust driver does not read it by itself).
pub const PASSWORD_VAR: &str = "PGPASSWORD";

/// Applied when the URL sets no `connect_timeout`: an unreachable server fails a call (and
/// `gateway check`) in bounded time.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Applied when the URL sets no `tcp_user_timeout`: a server gone silent mid-call is given up
/// on instead of holding the connection (and every call waiting for it) forever.
const DEFAULT_TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the ledger lives.
#[derive(Clone, PartialEq, Eq)]
pub enum LedgerLocation {
    /// An SQLite file (relative paths are resolved by the caller).
    File(PathBuf),
    /// A PostgreSQL URL, as written (it may hold a password: never print it as is).
    Postgres(String),
}

impl LedgerLocation {
    /// Reads `ledger`: a `postgres://` or `postgresql://` URL, else a path. Any other `scheme://`
    /// is refused (it is a mistake, not a folder name), and so is an empty value.
    pub fn parse(text: &str) -> Result<LedgerLocation, String> {
        if text.is_empty() {
            return Err("`ledger` is empty".to_owned());
        }
        if is_postgres_url(text) {
            let mut config = postgres::Config::from_str(text).map_err(|e| {
                format!(
                    "`ledger` is not a valid PostgreSQL URL ({}): {}",
                    redact_url(text),
                    scrub(&e.to_string(), text)
                )
            })?;
            sockets_without_tls(&mut config)
                .map_err(|why| format!("`ledger` ({}): {why}", redact_url(text)))?;
            return Ok(LedgerLocation::Postgres(text.to_owned()));
        }
        if let Some((scheme, _)) = text.split_once("://") {
            if !scheme.is_empty() && !scheme.contains(['/', '\\']) {
                return Err(format!(
                    "`ledger` must be a file path or a postgres:// URL, got a {scheme}:// URL"
                ));
            }
        }
        // libpq's `key=value` form (`host=db dbname=payout ...`) would otherwise be a file of
        // that name: replicas meant to share a database would each get a private ledger.
        let conninfo = text.split_whitespace().any(|word| {
            word.split_once('=').is_some_and(|(key, _)| {
                matches!(
                    key,
                    "host" | "hostaddr" | "port" | "dbname" | "user" | "password"
                )
            })
        });
        if conninfo {
            return Err(
                "`ledger` looks like a PostgreSQL `key=value` connection string: write it as a \
                 postgres://user@host/dbname URL (a file path holding `host=` and the like is \
                 refused)"
                    .to_owned(),
            );
        }
        Ok(LedgerLocation::File(PathBuf::from(text)))
    }
}

impl fmt::Display for LedgerLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerLocation::File(path) => write!(f, "{}", path.display()),
            LedgerLocation::Postgres(url) => f.write_str(&redact_url(url)),
        }
    }
}

impl fmt::Debug for LedgerLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerLocation::File(path) => f.debug_tuple("File").field(path).finish(),
            LedgerLocation::Postgres(url) => {
                f.debug_tuple("Postgres").field(&redact_url(url)).finish()
            }
        }
    }
}

/// Whether `text` is a PostgreSQL URL (the two schemes the driver accepts).
pub fn is_postgres_url(text: &str) -> bool {
    text.starts_with("postgres://") || text.starts_with("postgresql://")
}

/// `url` with its password replaced by `***`: `postgres://user:secret@host/db` →
/// `postgres://user:***@host/db`, and a `password=` query parameter likewise. Errs on the side
/// of hiding: everything between the user name and the *last* `@` is hidden (a password with an
/// unencoded `@` stays hidden).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let rest = match rest.rsplit_once('@') {
        Some((userinfo, tail)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{tail}"),
            None => rest.to_owned(),
        },
        None => rest.to_owned(),
    };
    let rest = match rest.split_once('?') {
        Some((head, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                        format!("{key}=***")
                    }
                    _ => p.to_owned(),
                })
                .collect();
            format!("{head}?{}", params.join("&"))
        }
        None => rest,
    };
    format!("{scheme}://{rest}")
}

/// `message` with every occurrence of the password of `url` (as written, percent-decoded, or
/// taken from `$PGPASSWORD`) replaced by `***`: for driver messages, which should never hold it,
/// but are not ours to trust.
pub fn scrub(message: &str, url: &str) -> String {
    let mut secrets: Vec<String> = Vec::new();
    if let Some((_, rest)) = url.split_once("://") {
        for userinfo in [rest.split_once('@'), rest.rsplit_once('@')]
            .into_iter()
            .flatten()
            .map(|(userinfo, _)| userinfo)
        {
            if let Some((_, raw)) = userinfo.split_once(':') {
                secrets.push(raw.to_owned());
            }
        }
    }
    if let Ok(config) = postgres::Config::from_str(url) {
        if let Some(password) = config.get_password() {
            secrets.push(String::from_utf8_lossy(password).into_owned());
        }
    }
    if let Ok(var) = std::env::var(PASSWORD_VAR) {
        secrets.push(var);
    }
    // Longest first, so a password containing another one is hidden whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = message.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret.as_str(), "***");
    }
    out
}

/// The driver's config for `url`: its password, else `$PGPASSWORD`; a `connect_timeout` and a
/// `tcp_user_timeout` when the URL sets none; `application_name = gateway-payout` when unset.
/// TLS follows the URL's `sslmode` (rustls; see `ledger/postgres/connection.rs`) towards TCP
/// hosts; a URL of Unix sockets only gets `sslmode=disable` (see [`sockets_without_tls`]).
pub fn pg_config(url: &str) -> Result<postgres::Config, String> {
    let mut config = postgres::Config::from_str(url)
        .map_err(|e| format!("not a valid PostgreSQL URL: {}", scrub(&e.to_string(), url)))?;
    if config.get_user().is_none() {
        return Err("the URL names no user (postgres://USER@HOST/DB)".to_owned());
    }
    sockets_without_tls(&mut config).map_err(|why| why.to_string())?;
    if config.get_password().is_none() {
        if let Ok(password) = std::env::var(PASSWORD_VAR) {
            config.password(password);
        }
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(DEFAULT_TCP_USER_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("gateway-payout");
    }
    Ok(config)
}

/// The Unix-socket hosts' rule, as the gateway's `[store] url` has it: a URL of sockets only is
/// connected with `sslmode=disable` (libpq ignores `sslmode` on a socket, and PostgreSQL serves
/// no TLS there: under `require` the driver would ask for it and give up on the server's "no");
/// `require` with a socket among TCP hosts is refused (the driver takes one `sslmode` for the
/// whole list, so the socket could never be used), and so is `require` towards a `hostaddr`
/// without a host name (TLS is never run without a name to check) and a `hostaddr` count other
/// than the hosts'. A socket in a list under `prefer` is answered "no TLS" by the server and
/// used in plain text.
fn sockets_without_tls(config: &mut postgres::Config) -> Result<(), gateway_pgtls::Refusal> {
    let hosts = gateway_pgtls::Hosts::of(config.get_hosts(), config.get_hostaddrs());
    if let Some(refused) = hosts.refusal(config.get_ssl_mode()) {
        return Err(refused);
    }
    if hosts.sockets_only() {
        config.ssl_mode(postgres::config::SslMode::Disable);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_real_scheme_makes_a_url() {
        assert!(LedgerLocation::parse("s3://bucket/payout.db").is_err());
        for path in ["://odd.db", "dir/a://b.db", "c:\\x://y.db"] {
            assert_eq!(
                LedgerLocation::parse(path),
                Ok(LedgerLocation::File(path.into())),
                "{path}"
            );
        }
    }

    #[test]
    fn a_location_shows_as_its_path_or_its_url_without_the_password() {
        assert_eq!(
            LedgerLocation::File("data/payout.db".into()).to_string(),
            "data/payout.db"
        );
        let shown = LedgerLocation::Postgres("postgres://pay:pw-s3cret@127.0.0.1/ledger".into())
            .to_string();
        assert!(
            shown.starts_with("postgres://pay:") && shown.ends_with("@127.0.0.1/ledger"),
            "{shown}"
        );
        assert!(!shown.contains("pw-s3cret"), "{shown}");
    }

    #[test]
    fn paths_and_urls() {
        assert_eq!(
            LedgerLocation::parse("data/payout.db"),
            Ok(LedgerLocation::File("data/payout.db".into()))
        );
        assert_eq!(
            LedgerLocation::parse("/abs/x.db"),
            Ok(LedgerLocation::File("/abs/x.db".into()))
        );
        for url in [
            "postgres://gw@db/gateway",
            "postgresql://gw:pw@127.0.0.1:5432/gateway?connect_timeout=3",
        ] {
            assert_eq!(
                LedgerLocation::parse(url),
                Ok(LedgerLocation::Postgres(url.to_owned()))
            );
        }
        for bad in ["", "mysql://x/y", "sqlite:///x.db"] {
            assert!(LedgerLocation::parse(bad).is_err(), "{bad}");
        }
        // libpq's key=value form is not a file name (it was: a private SQLite ledger each).
        for conninfo in ["host=db dbname=payout user=gw", "dbname=payout"] {
            let err = LedgerLocation::parse(conninfo).expect_err(conninfo);
            assert!(err.contains("postgres://"), "{err}");
        }
        assert_eq!(
            LedgerLocation::parse("data/run=1/payout.db"),
            Ok(LedgerLocation::File("data/run=1/payout.db".into())),
            "an `=` alone in a path is fine"
        );
        let err = LedgerLocation::parse("postgres://gw:s3cret@db:notaport/x").expect_err("port");
        assert!(!err.contains("s3cret"), "{err}");
        assert!(err.contains("gw:***@"), "{err}");
    }

    #[test]
    fn redaction_hides_every_password() {
        for (url, shown) in [
            (
                "postgres://user:secret@host/db",
                "postgres://user:***@host/db",
            ),
            (
                "postgresql://user:p@ss:w@rd@host:5432/db",
                "postgresql://user:***@host:5432/db",
            ),
            ("postgres://user@host/db", "postgres://user@host/db"),
            ("postgres://host/db", "postgres://host/db"),
            (
                "postgres://u@host/db?sslmode=disable&password=secret",
                "postgres://u@host/db?sslmode=disable&password=***",
            ),
            ("data/payout.db", "data/payout.db"),
        ] {
            assert_eq!(redact_url(url), shown);
        }
        let location = LedgerLocation::parse("postgres://user:secret@host/db").expect("valid URL");
        assert!(!location.to_string().contains("secret"));
        assert!(!format!("{location:?}").contains("secret"));
    }

    #[test]
    fn scrub_removes_decoded_passwords() {
        let url = "postgres://u:a%40b@host/db";
        assert_eq!(
            scrub("failed for a@b and a%40b", url),
            "failed for *** and ***"
        );
    }

    #[test]
    fn config_defaults_and_refusals() {
        let c = pg_config("postgres://u:pw@127.0.0.1:5/db").expect("valid");
        assert_eq!(c.get_connect_timeout(), Some(&DEFAULT_CONNECT_TIMEOUT));
        assert_eq!(c.get_password(), Some(&b"pw"[..]));
        let c = pg_config("postgres://u@h/db?connect_timeout=3").expect("valid");
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(3)));
        assert!(pg_config("postgres://u@h/db?sslmode=require").is_ok());
        assert!(pg_config("postgres://h/db").is_err());
    }

    /// A URL of sockets only connects without asking for TLS, whatever its `sslmode`; a host
    /// list keeps its `sslmode`, and `require` beside a socket is refused, by `ledger` (the
    /// plugin's config, `payout-report --ledger`) as by a direct connect.
    #[test]
    fn unix_sockets_get_no_tls_and_require_beside_one_is_refused() {
        use postgres::config::SslMode;
        for (url, mode) in [
            ("postgres://u@%2Frun%2Fpostgresql/db", SslMode::Disable),
            (
                "postgres://u@%2Frun%2Fpostgresql:5433/db?sslmode=require",
                SslMode::Disable,
            ),
            (
                "postgres://u@/db?host=/run/postgresql&sslmode=prefer",
                SslMode::Disable,
            ),
            ("postgres://u@%2Frun%2Fpostgresql,db/db", SslMode::Prefer),
            ("postgres://u@db/db?sslmode=require", SslMode::Require),
            // A hostaddr is reached over TCP: its sslmode is kept.
            (
                "postgres://u@/db?host=/run/postgresql&hostaddr=127.0.0.1",
                SslMode::Prefer,
            ),
            (
                "postgres://u@db.internal/db?hostaddr=127.0.0.1&sslmode=require",
                SslMode::Require,
            ),
        ] {
            let config = pg_config(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(config.get_ssl_mode(), mode, "{url}");
            assert!(LedgerLocation::parse(url).is_ok(), "{url}");
        }
        let mixed = "postgres://u:s3cret@%2Frun%2Fpostgresql,db.internal/db?sslmode=require";
        let err = LedgerLocation::parse(mixed).expect_err("require beside a socket");
        assert!(
            err.starts_with("`ledger` (postgres://u:***@%2Frun%2Fpostgresql,db.internal/db")
                && err.contains(
                    "sslmode=require cannot apply to the Unix-socket host /run/postgresql"
                ),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
        let err = pg_config(mixed).expect_err("require beside a socket");
        assert!(err.contains("sslmode=require"), "{err}");
    }

    /// `require` towards a `hostaddr` given for a socket folder (or with no host) can never
    /// connect (TLS there has no name to check the certificate against): refused by `ledger` and
    /// by a direct connect, in each spelling, saying where and how to fix it.
    #[test]
    fn require_towards_a_hostaddr_without_a_host_name_is_refused() {
        for url in [
            "postgres://u:s3cret@/db?host=/var/run/postgresql&hostaddr=127.0.0.1&sslmode=require",
            "postgres://u:s3cret@%2Fvar%2Frun%2Fpostgresql/db?hostaddr=127.0.0.1&sslmode=require",
            "postgres://u:s3cret@/db?hostaddr=127.0.0.1&sslmode=require",
        ] {
            let err = LedgerLocation::parse(url).expect_err(url);
            assert!(
                err.starts_with("`ledger` (postgres://u:***@")
                    && err.contains("sslmode=require cannot be met at hostaddr 127.0.0.1")
                    && err.contains("set host to the name on the server's certificate"),
                "{err}"
            );
            assert!(!err.contains("s3cret"), "{err}");
            let err = pg_config(url).expect_err(url);
            assert!(err.contains("hostaddr 127.0.0.1"), "{err}");
        }
        let err = LedgerLocation::parse("postgres://u@db1,db2/db?hostaddr=127.0.0.1")
            .expect_err("one hostaddr for two hosts");
        assert!(err.contains("2 host(s) and 1 hostaddr(s)"), "{err}");
    }
}
