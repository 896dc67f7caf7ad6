//! The bootstrap call (`POST {domain}/callback/ws/endpoint`) over HTTPS, with a timeout (Lark's
//! SDKs have none), on a blocking thread. The request body carries the app secret and the
//! answer's URL carries credentials: neither is ever logged.

use std::io::Read;
use std::time::Duration;

use lark_longconn::bootstrap::{self as proto, BootstrapError};
use lark_longconn::Endpoint;

use crate::config::LongConnApp;

/// The bootstrap call gives up after this long.
const TIMEOUT: Duration = Duration::from_secs(10);
/// An endpoint answer is a few hundred bytes; read no more than this.
const MAX_ANSWER: u64 = 64 * 1024;

/// Why a connection attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// Worth another attempt later.
    #[error("{0}")]
    Retry(String),
    /// Retrying cannot help: the app's settings must change.
    #[error("{0}")]
    Fatal(String),
}

impl ConnectError {
    pub fn is_fatal(&self) -> bool {
        matches!(self, ConnectError::Fatal(_))
    }
}

impl From<BootstrapError> for ConnectError {
    fn from(e: BootstrapError) -> Self {
        if e.is_fatal() {
            ConnectError::Fatal(e.to_string())
        } else {
            ConnectError::Retry(e.to_string())
        }
    }
}

/// One bootstrap call (blocking: run it off the async workers).
pub fn bootstrap_blocking(app: &LongConnApp) -> Result<Endpoint, ConnectError> {
    let url = format!("{}{}", app.domain, proto::ENDPOINT_PATH);
    // `timeout` alone leaves the connect phase to ureq's own 30 s default.
    let agent = ureq::AgentBuilder::new()
        .timeout(TIMEOUT)
        .timeout_connect(TIMEOUT)
        .build();
    let result = agent
        .post(&url)
        .set("Content-Type", "application/json")
        .set("locale", "zh")
        .send_bytes(&proto::request_body(&app.app_id, &app.app_secret));
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(t)) => {
            let detail = t.message().map(|m| format!(": {m}")).unwrap_or_default();
            return Err(ConnectError::Retry(format!(
                "cannot reach {url}: {}{detail}",
                t.kind()
            )));
        }
    };
    let status = response.status();
    let mut body = Vec::new();
    response
        .into_reader()
        .take(MAX_ANSWER)
        .read_to_end(&mut body)
        .map_err(|e| ConnectError::Retry(format!("reading the answer of {url}: {e}")))?;
    proto::parse_response(status, &body).map_err(ConnectError::from)
}

/// [`bootstrap_blocking`] on the blocking pool.
pub async fn bootstrap(app: &LongConnApp) -> Result<Endpoint, ConnectError> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || bootstrap_blocking(&app))
        .await
        .map_err(|e| ConnectError::Retry(format!("bootstrap task failed: {e}")))?
}
