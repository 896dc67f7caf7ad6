//! Dialling the URL a bootstrap handed out (TCP, TLS for `wss://`, the WebSocket handshake),
//! with a timeout and the frame bound derived from `[server] max_body_bytes`; a refused
//! handshake is classified (spec §11: retry or fatal). Also the one-off dial of `check
//! --connect`. The URL carries credentials: only its redacted form is ever shown.

use std::time::Duration;

use lark_longconn::bootstrap::{classify_handshake, headers as hs, redact_url};
use lark_longconn::HandshakeVerdict;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::bootstrap::ConnectError;

/// An open long connection's socket.
pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Dialling (TCP + TLS + WebSocket handshake) gives up after this long.
const DIAL_TIMEOUT: Duration = Duration::from_secs(15);
/// Room for a frame's headers around an event of `max_body_bytes`.
const FRAME_OVERHEAD: usize = 64 * 1024;
/// A WebSocket message is read if it is at most this many times `max_body_bytes` (plus
/// [`FRAME_OVERHEAD`]): an event somewhat over the limit is read and acked 500 (`too_large`);
/// only a larger message fails the connection (tungstenite cannot skip it). Fixed for the
/// connection's life: a new limit needs a new dial.
const FRAME_BOUND_FACTOR: usize = 4;

/// Dials `url` for events of at most `max_body` bytes.
pub async fn dial(url: &str, max_body: usize) -> Result<WsStream, ConnectError> {
    let max_message = max_body
        .saturating_mul(FRAME_BOUND_FACTOR)
        .saturating_add(FRAME_OVERHEAD);
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let dial = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
    let shown = redact_url(url);
    match tokio::time::timeout(DIAL_TIMEOUT, dial).await {
        Err(_) => Err(ConnectError::Retry(format!("dialling {shown} timed out"))),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(response))) => {
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            Err(
                match classify_handshake(
                    response.status().as_u16(),
                    header(hs::STATUS).as_deref(),
                    header(hs::AUTH_ERR_CODE).as_deref(),
                    header(hs::MSG).as_deref(),
                ) {
                    HandshakeVerdict::Fatal(why) => ConnectError::Fatal(why),
                    HandshakeVerdict::Retry(why) => ConnectError::Retry(why),
                },
            )
        }
        Ok(Err(e)) => Err(ConnectError::Retry(format!("dialling {shown}: {e}"))),
    }
}

/// `check --connect`: dials `url` once and closes the connection at once (blocking: it runs
/// its own single-threaded runtime; call it outside any runtime).
pub fn dial_and_close_blocking(url: &str, max_body: usize) -> Result<(), ConnectError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ConnectError::Retry(format!("cannot start a runtime to dial: {e}")))?;
    rt.block_on(async {
        let mut ws = dial(url, max_body).await?;
        let _ = ws.close(None).await;
        Ok(())
    })
}
