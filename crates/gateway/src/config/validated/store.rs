//! `[store]`: the embedded SQLite file (`path`, the default) or a PostgreSQL database shared by
//! several replicas (`url`, with `lease` and `pool_size`), plus the retention keys every
//! backend honours.

use std::path::PathBuf;
use std::time::Duration;

use super::Validator;
use crate::config::raw::RawStore;

/// The embedded store's default file, relative to the config's folder.
pub const DEFAULT_STORE_PATH: &str = "data/gateway.db";
/// How long a replica's claim on a delivery holds without being renewed, unless set: this or
/// twice `[delivery] timeout`, whichever is longer.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// Connections to PostgreSQL per gateway process.
pub const DEFAULT_POOL_SIZE: usize = 8;

/// Where events and deliveries are kept.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// The embedded SQLite file (one gateway process).
    Sqlite { path: PathBuf },
    /// A PostgreSQL database (any number of gateway processes).
    Postgres(PgSettings),
}

/// A PostgreSQL store.
#[derive(Clone, PartialEq, Eq)]
pub struct PgSettings {
    /// `postgres://user:password@host:port/db?sslmode=...`, `${VAR}`s expanded (secret).
    pub url: String,
    /// How long a claim on a delivery holds: another replica takes it over only once it expired.
    /// Longer than `[delivery] timeout`; a live replica renews the claims of the deliveries it
    /// runs every third of it (`delivery/renew.rs`), however long a call or its outcome write
    /// takes.
    pub lease: Duration,
    pub pool_size: usize,
    /// Extra PEM root certificates for TLS to the database (besides the public web roots).
    pub ca_file: Option<PathBuf>,
}

impl StoreConfig {
    /// Where the store is, for logs and the CLI (the database password masked).
    pub fn describe(&self) -> String {
        match self {
            StoreConfig::Sqlite { path } => path.display().to_string(),
            StoreConfig::Postgres(pg) => redact_url(&pg.url),
        }
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("url", &redact_url(&self.url))
            .field("lease", &self.lease)
            .field("pool_size", &self.pool_size)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`; also masks a
/// `password=` query parameter. The userinfo runs to the last `@` of the URL, not to the first
/// `/` or `?`: the PostgreSQL client takes a password with those in it (base64 has `/`), so
/// the mask errs on the side of hiding more.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        if let Some(at) = out[rest_start..].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest_start + colon + 1..rest_start + at, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let masked: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect();
        out = format!("{head}{}", masked.join("&"));
    }
    out
}

impl Validator<'_> {
    /// Reads `[store]`'s location keys. `timeout` is `[delivery] timeout` (the lease must be
    /// longer).
    pub(super) fn store(&mut self, raw: &RawStore, timeout: Duration) -> StoreConfig {
        let Some(url) = raw.url.as_deref() else {
            for (key, set) in [
                ("lease", raw.lease.is_some()),
                ("pool_size", raw.pool_size.is_some()),
                ("ca_file", raw.ca_file.is_some()),
            ] {
                if set {
                    self.problem(
                        &format!("store.{key}"),
                        "only applies to a PostgreSQL store (set store.url)",
                    );
                }
            }
            let path = self.path(
                "store.path",
                raw.path.as_deref().unwrap_or(DEFAULT_STORE_PATH),
            );
            return StoreConfig::Sqlite { path };
        };
        if raw.path.is_some() {
            self.problem(
                "store.path",
                "set either store.path (embedded SQLite) or store.url (PostgreSQL), not both",
            );
        }
        let url = self.expand("store.url", url);
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            self.problem(
                "store.url",
                format!(
                    "{:?} is not a PostgreSQL URL (postgres://user:password@host:port/database)",
                    redact_url(&url)
                ),
            );
        } else if let Err(e) = url.parse::<tokio_postgres::Config>() {
            self.problem("store.url", format!("{}: {e}", redact_url(&url)));
        }
        let lease = self.duration(
            "store.lease",
            raw.lease.as_deref(),
            DEFAULT_LEASE.max(timeout * 2),
        );
        if lease <= timeout {
            self.problem(
                "store.lease",
                format!(
                    "{}s must be longer than delivery.timeout ({}s): a claim must outlive the \
                     call it covers",
                    lease.as_secs_f64(),
                    timeout.as_secs_f64()
                ),
            );
        }
        let pool_size = match raw.pool_size {
            Some(0) => {
                self.problem("store.pool_size", "must be at least 1");
                DEFAULT_POOL_SIZE
            }
            Some(n) => n as usize,
            None => DEFAULT_POOL_SIZE,
        };
        let ca_file = raw.ca_file.as_deref().map(|p| {
            let path = self.path("store.ca_file", p);
            if !path.is_file() {
                self.problem(
                    "store.ca_file",
                    format!("{} is not a readable file", path.display()),
                );
            }
            path
        });
        StoreConfig::Postgres(PgSettings {
            url,
            lease,
            pool_size,
            ca_file,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            redact_url("postgres://gw:s3cret@db:5432/gateway?sslmode=require"),
            "postgres://gw:***@db:5432/gateway?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://gw@db/gateway?password=s3cret&sslmode=require"),
            "postgres://gw@db/gateway?password=***&sslmode=require"
        );
        assert_eq!(redact_url("postgres://db/gateway"), "postgres://db/gateway");
        assert_eq!(
            redact_url("postgresql://a:b:c@h/d"),
            "postgresql://a:***@h/d"
        );
        // A password with `/`, `?` or `@` in it (the client takes it whole).
        for (url, shown) in [
            ("postgres://gw:ab/cd+e=@db/gw", "postgres://gw:***@db/gw"),
            (
                "postgres://gw:a?b@db:5432/gw",
                "postgres://gw:***@db:5432/gw",
            ),
            ("postgres://gw:a@b@db/gw", "postgres://gw:***@db/gw"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
