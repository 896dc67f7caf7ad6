//! Connections to PostgreSQL: a `deadpool` pool over `tokio-postgres`, with TLS by rustls when
//! the URL's `sslmode` asks for it (`prefer`, the default, falls back to plain text when the
//! server offers no TLS; `require` refuses to). A connection the server closed is replaced on
//! the next checkout, so the gateway recovers from a database restart on its own; after an
//! operation timed out, the idle connections are closed too (`discard_idle`): a server that
//! stopped answering on open connections is left for fresh ones.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

use crate::config::PgSettings;
use crate::store::StoreError;

/// How long opening a connection may take before the operation fails (and ingest answers 503).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long sent data may go unacknowledged before the kernel drops the connection.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the pool (no connection is made yet).
pub fn pool(settings: &PgSettings) -> Result<Pool, StoreError> {
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
    let options = match config.get_options() {
        Some(given) => format!("{given} -c plan_cache_mode=force_custom_plan"),
        None => "-c plan_cache_mode=force_custom_plan".to_owned(),
    };
    config.options(&options);
    let tls = tls(settings)?;
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

/// The TLS connector of `settings`' connections (also what a query's cancel request dials with).
pub fn tls(settings: &PgSettings) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(
        settings,
    )?))
}

/// Asks the server, on a connection of its own, to cancel the query `token` names: an operation
/// the gateway gave up on must not keep running there (holding its locks) after the gateway
/// has moved on. Best effort, in the background, bounded like a connection's opening.
pub fn cancel_in_background(
    token: tokio_postgres::CancelToken,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(CONNECT_TIMEOUT, token.cancel_query(tls)).await;
    });
}

/// rustls with the public web roots plus `ca_file`'s certificates.
fn tls_config(settings: &PgSettings) -> Result<rustls::ClientConfig, StoreError> {
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
        Some(db) => format!("database: {}", db.message()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}
