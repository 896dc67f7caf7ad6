//! Connections to PostgreSQL: a `deadpool` pool over `tokio-postgres`, with TLS by rustls to a
//! TCP host when the URL's `sslmode` asks for it (`prefer`, the default, falls back to plain
//! text when the server offers no TLS; `require` refuses to) and none on a Unix socket, whatever
//! the `sslmode` (see [`super::tls`]). A connection the server closed is replaced on
//! the next checkout, so the gateway recovers from a database restart on its own; after an
//! operation timed out, the idle connections are closed too (`discard_idle`): a server that
//! stopped answering on open connections is left for fresh ones.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

use super::tls::{self, Connector};
use crate::config::PgSettings;
use crate::store::StoreError;

/// How long opening a connection may take before the operation fails (and ingest answers 503).
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long sent data may go unacknowledged before the kernel drops the connection.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the server lets a session of the gateway sit inside a transaction between two
/// statements before it ends the session (rolling the transaction back). The gateway sends a
/// transaction's statements back to back: a session idle that long belongs to a replica that
/// died, froze or lost its network mid-transaction, whose row locks (a batch's event ids,
/// deliveries) would otherwise hold every other replica's inserts of those ids until the
/// server's TCP keepalive gave the connection up (over two hours by default).
const IDLE_IN_TRANSACTION: &str = "15s";

/// Builds the pool (no connection is made yet).
pub fn pool(settings: &PgSettings) -> Result<Pool, StoreError> {
    let config = session_config(settings)?;
    let tls = tls::connector(settings)?;
    let manager = Manager::from_config(
        config,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(settings.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| StoreError(format!("database pool: {e}")))
}

/// The URL's connection settings, with the gateway's own added (each only where the URL does
/// not set it).
fn session_config(settings: &PgSettings) -> Result<tokio_postgres::Config, StoreError> {
    let mut config: tokio_postgres::Config = settings
        .url
        .parse()
        .map_err(|e| StoreError(format!("store.url: {e}")))?;
    config.connect_timeout(CONNECT_TIMEOUT);
    config.application_name("lark-gateway");
    // A server gone silent (a failover's old primary, a network black hole) with a statement
    // sent is given up by the kernel after this, unless the URL sets its own.
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    // Plan each statement for its arguments. A prepared statement's generic plan is chosen
    // once per connection, often while the tables are young: a hash join over a sequential
    // scan of `deliveries` chosen then stays for the connection's life and costs O(table) per
    // outcome (measured: 1.2-1.5 ms per batched UPDATE at 30k rows, 0.13-0.18 ms with this).
    let mut options = config.get_options().unwrap_or_default().to_owned();
    for (name, value) in [
        ("plan_cache_mode", "force_custom_plan"),
        ("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION),
    ] {
        if !options.contains(name) {
            if !options.is_empty() {
                options.push(' ');
            }
            options.push_str(&format!("-c {name}={value}"));
        }
    }
    config.options(&options);
    // A URL of Unix sockets only: `sslmode` does not apply there (libpq ignores it; PostgreSQL
    // serves no TLS on a socket), so not even the request for TLS is sent, and `require` does
    // not give up on the server's "no". A socket in a list with TCP hosts takes the list's
    // `sslmode` (`require` is refused by the config), answered "no" by the server.
    if gateway_pgtls::Hosts::of(config.get_hosts(), config.get_hostaddrs()).sockets_only() {
        config.ssl_mode(tokio_postgres::config::SslMode::Disable);
    }
    Ok(config)
}

/// Asks the server, on a connection of its own, to cancel the query `token` names: an operation
/// the gateway gave up on must not keep running there (holding its locks) after the gateway
/// has moved on. Best effort, in the background, bounded like a connection's opening. It dials
/// the connection's own host the same way (TCP with TLS as the pool's, or the Unix socket).
pub fn cancel_in_background(token: tokio_postgres::CancelToken, tls: Connector) {
    tokio::spawn(cancel(token, tls));
}

/// [`cancel_in_background`], waited for (at most [`CONNECT_TIMEOUT`]): for a caller that may
/// end as soon as it has its answer (a command's runtime dropped with a spawned cancel never
/// sent it, and the server went on with the statement).
pub async fn cancel(token: tokio_postgres::CancelToken, tls: Connector) {
    let _ = tokio::time::timeout(CONNECT_TIMEOUT, token.cancel_query(tls)).await;
}

/// Closes every idle connection of `pool`, after an operation gave up waiting for the database:
/// the connection it used is back in the pool by then, open but maybe answering no more (a
/// server that hangs, a black-holed route), and the pool would hand it (and its like) out again
/// for ever. The next checkouts connect afresh.
pub fn discard_idle(pool: &Pool) {
    pool.retain(|_, _| false);
}

/// A checked-out connection, or the reason there is none.
pub async fn client(pool: &Pool) -> Result<deadpool_postgres::Client, StoreError> {
    pool.get()
        .await
        .map_err(|e| StoreError(format!("database unreachable: {}", describe(&e))))
}

fn describe(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(pg) => error_text(pg),
        other => other.to_string(),
    }
}

/// A driver error as one line: a database error's message, else the error and its cause
/// (`Display` alone says only "db error" or "error connecting to server").
pub fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        // The SQLSTATE too: `retryable` goes by it (the message is in the server's
        // `lc_messages` language), and so can an operator.
        Some(db) => format!("database: {} (SQLSTATE {})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(url: &str) -> String {
        let settings = PgSettings {
            url: url.to_owned(),
            lease: Duration::from_secs(60),
            pool_size: 1,
            ca_file: None,
        };
        session_config(&settings)
            .expect("config")
            .get_options()
            .unwrap_or_default()
            .to_owned()
    }

    /// Regression: a replica that died mid-transaction left its session "idle in transaction"
    /// on the server, holding its batch's event ids against every other replica's inserts for
    /// hours. Every session now has the server end such a transaction after 15 s.
    #[test]
    fn every_session_has_the_server_end_a_transaction_left_idle() {
        assert_eq!(
            options("postgres://gw@db/gw"),
            "-c plan_cache_mode=force_custom_plan -c idle_in_transaction_session_timeout=15s"
        );
        // The URL's own settings are kept, and win.
        assert_eq!(
            options("postgres://gw@db/gw?options=-c%20idle_in_transaction_session_timeout%3D1min"),
            "-c idle_in_transaction_session_timeout=1min -c plan_cache_mode=force_custom_plan"
        );
    }
}
