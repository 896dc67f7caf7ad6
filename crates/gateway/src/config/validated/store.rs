//! `[store]`: the embedded SQLite file (`path`, the default) or a PostgreSQL database shared by
//! several replicas (`url`, with `lease` and `pool_size`), plus the retention keys every
//! backend honours.

use std::path::PathBuf;
use std::time::Duration;

use gateway_pgtls::Hosts;

use super::Validator;
use crate::config::raw::RawStore;

/// The embedded store's default file, relative to the config's folder.
pub const DEFAULT_STORE_PATH: &str = "data/gateway.db";
/// How long a replica's claim on a delivery holds without being renewed, unless set: this or
/// twice `[delivery] timeout`, whichever is longer.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// Connections to PostgreSQL per gateway process.
pub const DEFAULT_POOL_SIZE: usize = 8;
/// The most connections `pool_size` may ask for.
pub const MAX_POOL_SIZE: usize = 1024;

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

impl StoreConfig {
    /// Whether a reload may go from `self` (running) to `new` with `[delivery] timeout`
    /// `new_timeout`: the store itself changes only on restart, and so does a PostgreSQL lease
    /// (derived from the timeout when not set), which must still outlive the new timeout. A
    /// lease-only change is kept for the next start: `Ok(Some(note))`.
    pub fn reload_to(
        &self,
        new: &StoreConfig,
        new_timeout: Duration,
    ) -> Result<Option<String>, String> {
        let (StoreConfig::Postgres(old), StoreConfig::Postgres(next)) = (self, new) else {
            return if self == new {
                Ok(None)
            } else {
                Err(format!(
                    "[store] changed ({} → {}): moving the store needs a restart",
                    self.describe(),
                    new.describe()
                ))
            };
        };
        if (&old.url, old.pool_size, &old.ca_file) != (&next.url, next.pool_size, &next.ca_file) {
            return Err(format!(
                "[store] changed (its url, pool_size or ca_file; {} → {}): a restart applies it",
                self.describe(),
                new.describe()
            ));
        }
        if new_timeout >= old.lease {
            return Err(format!(
                "[delivery] timeout {}s is not shorter than the running store's lease ({}s): a \
                 claim must outlive the call it covers, and the lease changes only on restart",
                new_timeout.as_secs_f64(),
                old.lease.as_secs_f64()
            ));
        }
        Ok((old.lease != next.lease).then(|| {
            format!(
                "the store's lease stays {}s until a restart (the config now gives {}s)",
                old.lease.as_secs_f64(),
                next.lease.as_secs_f64()
            )
        }))
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
            // Not quoted: a value in another form (libpq's `host=.. password=..`, a slash
            // missing after the scheme) hides its password where `redact_url` does not look.
            self.problem(
                "store.url",
                "does not start with postgres:// or postgresql:// (the form is \
                 postgres://user:password@host:port/database; libpq's key=value form is not taken)",
            );
        } else {
            match url.parse::<tokio_postgres::Config>() {
                Err(e) => self.problem("store.url", format!("{}: {e}", redact_url(&url))),
                Ok(parsed) => {
                    let hosts = Hosts::of(parsed.get_hosts(), parsed.get_hostaddrs());
                    if let Some(why) = hosts.refusal(parsed.get_ssl_mode()) {
                        self.problem("store.url", format!("{}: {why}", redact_url(&url)));
                    }
                }
            }
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
            // The pool reserves its slots up front (4294967295 aborted `check` and `run`), and
            // a server allows 100 connections by default.
            Some(n) if n as usize > MAX_POOL_SIZE => {
                self.problem(
                    "store.pool_size",
                    format!("{n} is more than {MAX_POOL_SIZE} connections"),
                );
                DEFAULT_POOL_SIZE
            }
            Some(n) => n as usize,
            None => DEFAULT_POOL_SIZE,
        };
        let ca_file = raw.ca_file.as_deref().map(|p| {
            let path = self.path("store.ca_file", p);
            // Opened, not only looked at: a file without read permission is found here, under
            // its own key (the store's connection would report it under `store.url`).
            if !path.is_file() || std::fs::File::open(&path).is_err() {
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
    use super::*;

    #[test]
    fn a_reload_keeps_the_running_lease_while_it_outlives_the_new_timeout() {
        let pg = |lease: u64, pool_size| {
            StoreConfig::Postgres(PgSettings {
                url: "postgres://gw:pw@db/gw".into(),
                lease: Duration::from_secs(lease),
                pool_size,
                ca_file: None,
            })
        };
        let secs = Duration::from_secs;
        assert_eq!(pg(60, 8).reload_to(&pg(60, 8), secs(30)), Ok(None));
        // A timeout of 45 s derives a lease of 90 s: the running 60 s still covers it.
        let kept = pg(60, 8).reload_to(&pg(90, 8), secs(45));
        assert!(kept.expect("accepted").is_some_and(|n| n.contains("60s")));
        let err = pg(60, 8)
            .reload_to(&pg(140, 8), secs(70))
            .expect_err("too long");
        assert!(err.contains("timeout 70s") && err.contains("60s"), "{err}");
        let err = pg(60, 8).reload_to(&pg(60, 4), secs(30)).expect_err("pool");
        assert!(err.contains("restart") && !err.contains("pw"), "{err}");
        let sqlite = |p: &str| StoreConfig::Sqlite { path: p.into() };
        assert_eq!(
            sqlite("a.db").reload_to(&sqlite("a.db"), secs(999)),
            Ok(None)
        );
        assert!(sqlite("a.db").reload_to(&sqlite("b.db"), secs(1)).is_err());
        assert!(sqlite("a.db").reload_to(&pg(60, 8), secs(1)).is_err());
    }

    /// Regression: a value that is not a PostgreSQL URL was quoted, its password with it
    /// (`redact_url` looks for one after `://` and in the query only).
    #[test]
    fn a_url_in_another_form_is_refused_without_quoting_it() {
        for url in [
            "host=db user=gw password=${PGPASS}",
            "postgres:/gw:${PGPASS}@db/gw",
        ] {
            let text = format!("[store]\nurl = \"{url}\"\n");
            let problems = match super::super::tests::load(&text, &[("PGPASS", "S3cretPw")]) {
                Err(crate::config::ConfigError::Invalid { problems, .. }) => problems,
                other => panic!("{url}: {other:?}"),
            };
            let all = problems.join("\n");
            assert!(
                all.contains("store.url: does not start with postgres://"),
                "{all}"
            );
            assert!(!all.contains("S3cretPw"), "{all}");
        }
    }

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
