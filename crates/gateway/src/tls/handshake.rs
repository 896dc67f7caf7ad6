//! The TLS side of one accepted connection ([`Tls::accept`]): the handshake within its time, a
//! plain-HTTP client answered `400`, and why a connection never became a TLS stream
//! ([`HandshakeFailure`], the metric's label).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::{Tls, HANDSHAKE_TIMEOUT};

/// Why a connection never became a TLS stream (the metric's `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The client spoke plain HTTP (answered 400).
    PlaintextHttp,
    /// The first byte was not a TLS handshake record.
    NotTls,
    /// No finished handshake within [`HANDSHAKE_TIMEOUT`].
    Timeout,
    /// rustls refused the handshake (no common version or cipher, bad record, alert, ...).
    Handshake,
    /// The connection failed under the handshake.
    Io,
}

impl HandshakeFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::PlaintextHttp => "plaintext_http",
            HandshakeFailure::NotTls => "not_tls",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Handshake => "handshake",
            HandshakeFailure::Io => "io",
        }
    }
}

/// The answer to plain HTTP on the TLS port (the admin one too: `nosniff`, as every admin
/// answer says).
const PLAINTEXT_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
X-Content-Type-Options: nosniff\r\n\
Content-Length: 46\r\n\
Connection: close\r\n\r\n\
this port speaks HTTPS: use https:// instead\r\n";

impl Tls {
    /// The TLS side of one accepted connection, within [`HANDSHAKE_TIMEOUT`]. `None` when it
    /// did not become a TLS stream (counted, logged at debug; the connection is closed).
    pub async fn accept(
        &self,
        stream: TcpStream,
        peer: std::net::SocketAddr,
    ) -> Option<TlsStream<TcpStream>> {
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        let failed = |why: HandshakeFailure, detail: &dyn std::fmt::Display| {
            tracing::debug!(%peer, reason = why.as_str(), "TLS handshake failed: {detail}");
            crate::metrics::get()
                .tls_handshake_failures
                .get_or_create(&crate::metrics::ReasonLabels {
                    reason: why.as_str().to_owned(),
                })
                .inc();
            None
        };
        let mut first = [0u8; 1];
        match tokio::time::timeout_at(deadline.into(), stream.peek(&mut first)).await {
            Err(_) => return failed(HandshakeFailure::Timeout, &"no bytes"),
            Ok(Err(e)) => return failed(HandshakeFailure::Io, &e),
            // Connected and closed (a port check): nothing to count.
            Ok(Ok(0)) => return None,
            Ok(Ok(_)) => {}
        }
        // 0x16: a TLS handshake record (the ClientHello).
        if first[0] != 0x16 {
            if first[0].is_ascii_uppercase() {
                answer_plaintext(stream).await;
                return failed(
                    HandshakeFailure::PlaintextHttp,
                    &"plain HTTP on the TLS port",
                );
            }
            return failed(
                HandshakeFailure::NotTls,
                &format!("first byte {:#04x}", first[0]),
            );
        }
        match tokio::time::timeout_at(deadline.into(), self.acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                failed(HandshakeFailure::Handshake, &e)
            }
            Ok(Err(e)) => failed(HandshakeFailure::Io, &e),
            Err(_) => failed(HandshakeFailure::Timeout, &"handshake not finished"),
        }
    }
}

/// Reads what the client sent (briefly, so closing does not reset the connection before it
/// reads the answer), answers 400 and closes.
async fn answer_plaintext(mut stream: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    let _ = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        stream.write_all(PLAINTEXT_ANSWER).await?;
        stream.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::PLAINTEXT_ANSWER;

    #[test]
    fn the_plaintext_answer_says_nosniff_and_its_length() {
        let text = std::str::from_utf8(PLAINTEXT_ANSWER).expect("ASCII");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
        assert!(
            head.lines().any(|l| l == "X-Content-Type-Options: nosniff"),
            "{head}"
        );
        assert!(
            head.lines()
                .any(|l| l == format!("Content-Length: {}", body.len())),
            "{head}"
        );
    }
}
