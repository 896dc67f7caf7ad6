//! The bootstrap call (`POST {domain}/callback/ws/endpoint`) over HTTPS, with a timeout (Lark's
//! SDKs have none), on a blocking thread. The request body carries the app secret and the
//! answer's URL carries credentials: neither is ever logged.

use std::io::{self, Read};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
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
    // `timeout` alone leaves the connect phase to ureq's own 30 s default, and neither covers
    // the name's resolution: the resolver has the same deadline (ureq's connect deadline is taken
    // before it resolves, so the whole call stays within `TIMEOUT`).
    let agent = ureq::AgentBuilder::new()
        .timeout(TIMEOUT)
        .timeout_connect(TIMEOUT)
        .resolver(DeadlineResolver {
            deadline: TIMEOUT,
            lookup: system_lookup,
        })
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

/// Resolves names on a thread of its own and gives up after `deadline`: the C library's resolver
/// has no deadline of ours (a silent name server holds it for its own timeouts and retries). The
/// thread of a lookup given up on ends when the lookup does.
struct DeadlineResolver {
    deadline: Duration,
    lookup: fn(&str) -> io::Result<Vec<SocketAddr>>,
}

fn system_lookup(netloc: &str) -> io::Result<Vec<SocketAddr>> {
    netloc.to_socket_addrs().map(Iterator::collect)
}

impl ureq::Resolver for DeadlineResolver {
    fn resolve(&self, netloc: &str) -> io::Result<Vec<SocketAddr>> {
        let (tx, rx) = mpsc::sync_channel(1);
        let lookup = self.lookup;
        let owned = netloc.to_owned();
        std::thread::Builder::new()
            .name("gateway-resolve".into())
            .spawn(move || {
                // The receiver is gone once the deadline passed: nothing to tell.
                let _ = tx.send(lookup(&owned));
            })?;
        match rx.recv_timeout(self.deadline) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {} s", self.deadline.as_secs_f32()),
            )),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(io::Error::other("lookup thread failed"))
            }
        }
    }
}

/// [`bootstrap_blocking`] on the blocking pool.
pub async fn bootstrap(app: &LongConnApp) -> Result<Endpoint, ConnectError> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || bootstrap_blocking(&app))
        .await
        .map_err(|e| ConnectError::Retry(format!("bootstrap task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use ureq::Resolver;

    fn hanging_lookup(_: &str) -> io::Result<Vec<SocketAddr>> {
        std::thread::sleep(Duration::from_secs(30));
        Ok(Vec::new())
    }

    fn loopback_lookup(netloc: &str) -> io::Result<Vec<SocketAddr>> {
        assert_eq!(netloc, "open.example:443");
        Ok(vec![SocketAddr::from(([127, 0, 0, 1], 443))])
    }

    #[test]
    fn a_lookup_that_hangs_is_given_up_at_the_deadline() {
        let resolver = DeadlineResolver {
            deadline: Duration::from_millis(200),
            lookup: hanging_lookup,
        };
        let began = Instant::now();
        let err = resolver
            .resolve("open.example:443")
            .expect_err("a hanging lookup must fail");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("no answer within 0.2 s"), "{err}");
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "{:?}",
            began.elapsed()
        );
    }

    #[test]
    fn a_lookup_within_the_deadline_gives_its_addresses() {
        let resolver = DeadlineResolver {
            deadline: Duration::from_secs(10),
            lookup: loopback_lookup,
        };
        let addrs = resolver
            .resolve("open.example:443")
            .expect("the lookup answered in time");
        assert_eq!(addrs, vec![SocketAddr::from(([127, 0, 0, 1], 443))]);
    }
}
