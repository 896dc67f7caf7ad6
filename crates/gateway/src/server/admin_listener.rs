//! The admin listener's accept loop ([`serve_admin`]) and its limits: connections in all and
//! per client, request head size and read time, buffer size, and how long a client may leave an
//! answer unread.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::peers;
use super::stall::WriteStall;
use crate::admin::Admin;
use crate::tls::Tls;

/// Open admin connections at most; a new one past the limit is closed at once. Admin clients
/// are a few scripts, browsers and Prometheus: this bounds what a flood of idle or slow
/// connections can hold (file descriptors, read buffers).
const ADMIN_MAX_CONNECTIONS: usize = 64;
/// A request head not complete this long after the admin connection (or its previous request)
/// began closes the connection (an idle keep-alive connection too).
const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection of the admin listener whose client reads nothing of an answer for this long is
/// closed ([`WriteStall`]).
const ADMIN_WRITE_STALL: Duration = Duration::from_secs(10);
/// The largest request head the admin listener reads (a head over it gets 431), and the most it
/// buffers per connection: admin requests are small (bodies at most 64 KiB, read in pieces).
const ADMIN_MAX_HEADER_BYTES: usize = 32 * 1024;
const ADMIN_MAX_BUF_BYTES: usize = 64 * 1024;

/// The admin listener: at most [`ADMIN_MAX_CONNECTIONS`] connections, [`peers::PER_PEER`] of
/// them from one client (past either a new one is closed at once, as the webhook listener's
/// `max_connections`), request heads bounded in size
/// and read time, one buffer of at most [`ADMIN_MAX_BUF_BYTES`] each; bodies have their own
/// timeout (`admin::BODY_TIMEOUT`), a TLS handshake its own (`tls.rs`).
pub(super) async fn serve_admin(listener: TcpListener, admin: Arc<Admin>, tls: Option<Arc<Tls>>) {
    let connections = Arc::new(tokio::sync::Semaphore::new(ADMIN_MAX_CONNECTIONS));
    let per_peer = peers::Peers::new(peers::PER_PEER);
    // One warning a minute at most while a limit turns connections away.
    let mut warned: Option<std::time::Instant> = None;
    let mut warned_peer: Option<std::time::Instant> = None;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = connections.clone().try_acquire_owned() else {
            if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                warned = Some(std::time::Instant::now());
                tracing::warn!(
                    client = %peer,
                    limit = ADMIN_MAX_CONNECTIONS,
                    "admin connection limit reached: closing new connections"
                );
            }
            drop(stream);
            continue;
        };
        let Some(peer_slot) = per_peer.take(peer.ip()) else {
            if warned_peer.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                warned_peer = Some(std::time::Instant::now());
                tracing::warn!(
                    client = %peer,
                    limit = per_peer.limit(),
                    "admin connections of one client at their limit: closing its new connections"
                );
            }
            drop(stream);
            continue;
        };
        let admin = admin.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| admin.clone().serve(req, peer));
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(ADMIN_HEADER_TIMEOUT)
                .max_header_size(ADMIN_MAX_HEADER_BYTES)
                .max_buf_size(ADMIN_MAX_BUF_BYTES);
            let _ = match tls {
                None => {
                    let io = TokioIo::new(WriteStall::new(stream, ADMIN_WRITE_STALL));
                    builder.serve_connection(io, service).await
                }
                Some(tls) => match tls.accept(stream, peer).await {
                    Some(stream) => {
                        let io = TokioIo::new(WriteStall::new(stream, ADMIN_WRITE_STALL));
                        builder.serve_connection(io, service).await
                    }
                    None => Ok(()),
                },
            };
            drop((slot, peer_slot));
        });
    }
}
