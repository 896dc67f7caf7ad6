//! The stand-in's WebSocket side: the handshake (with its refusal knobs), and one thread per
//! connection interleaving queued pushes with the client's frames (pongs, acks). Part of
//! `lark_ws.rs`.

use super::*;

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

// The `ErrorResponse` size is fixed by tungstenite's `Callback` signature.
#[allow(clippy::result_large_err)]
pub(super) fn serve_ws(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
    let Ok(control) = stream.try_clone() else {
        return;
    };
    let sh = shared.clone();
    let callback = move |req: &WsRequest, resp: WsResponse| -> Result<WsResponse, ErrorResponse> {
        on_handshake(&sh, req, resp)
    };
    // A refused or broken handshake ends here; it is already recorded by the callback.
    let Ok(mut ws) = tungstenite::accept_hdr_with_config(stream, callback, Some(ws_config()))
    else {
        return;
    };
    let close_at_once = {
        let mut s = shared.lock();
        let close = s.close_at_once > 0;
        s.close_at_once = s.close_at_once.saturating_sub(1);
        close
    };
    if close_at_once || shared.stop.load(Ordering::SeqCst) {
        let _ = ws.close(None);
        let _ = ws.flush();
        return;
    }
    let _ = ws.get_ref().set_read_timeout(Some(POLL));
    let (tx, rx) = mpsc::channel();
    let id = {
        let mut s = shared.lock();
        let id = s.next_conn_id;
        s.next_conn_id += 1;
        s.conns.push(Conn {
            id,
            tx,
            stream: control,
        });
        s.accepted += 1;
        shared.changed.notify_all();
        id
    };
    run_connection(&mut ws, &rx, &shared);
    let _ = ws.get_ref().shutdown(Shutdown::Both);
    let mut s = shared.lock();
    s.conns.retain(|c| c.id != id);
    shared.changed.notify_all();
}

/// Records the handshake and decides: 403 for a query without the expected credentials, 400
/// while the refusal knob is armed, else accept.
#[allow(clippy::result_large_err)]
fn on_handshake(
    shared: &Shared,
    req: &WsRequest,
    resp: WsResponse,
) -> Result<WsResponse, ErrorResponse> {
    let target = req.uri().to_string();
    let [access_key, ticket] = LarkWs::URL_SECRETS;
    let service_id = LarkWs::SERVICE_ID.to_string();
    let query_ok = query_param(&target, "service_id") == Some(service_id.as_str())
        && query_param(&target, "access_key") == Some(access_key)
        && query_param(&target, "ticket") == Some(ticket);
    let mut s = shared.lock();
    let refusal = if !query_ok {
        Some(refusal(
            StatusCode::FORBIDDEN,
            HeaderValue::from_static(bootstrap::HANDSHAKE_FORBIDDEN),
            None,
        ))
    } else if s.refusals > 0 {
        s.refusals -= 1;
        Some(refusal(
            StatusCode::BAD_REQUEST,
            s.refusal_status.clone(),
            s.refusal_auth_code.clone(),
        ))
    } else {
        None
    };
    s.handshakes.push((Instant::now(), refusal.is_none()));
    shared.changed.notify_all();
    match refusal {
        Some(r) => Err(r),
        None => Ok(resp),
    }
}

fn refusal(
    http: StatusCode,
    status: HeaderValue,
    auth_err_code: Option<HeaderValue>,
) -> ErrorResponse {
    const MSG: &str = "stand-in refusal";
    let mut r = ErrorResponse::new(Some(MSG.to_owned()));
    *r.status_mut() = http;
    let headers = r.headers_mut();
    headers.insert(HeaderName::from_static(bootstrap::headers::STATUS), status);
    headers.insert(
        HeaderName::from_static(bootstrap::headers::MSG),
        HeaderValue::from_static(MSG),
    );
    if let Some(code) = auth_err_code {
        headers.insert(
            HeaderName::from_static(bootstrap::headers::AUTH_ERR_CODE),
            code,
        );
    }
    headers.insert(CONTENT_LENGTH, HeaderValue::from(MSG.len()));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Interleaves sending queued frames with reading the client's (short read timeout) until the
/// connection breaks, the client closes, the stand-in is dropped or a `Cmd::Close` arrives.
fn run_connection(ws: &mut WebSocket<TcpStream>, rx: &mpsc::Receiver<Cmd>, shared: &Shared) {
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            let _ = ws.close(None);
            let _ = ws.flush();
            return;
        }
        loop {
            match rx.try_recv() {
                Ok(Cmd::Send(bytes)) => {
                    if ws.send(Message::Binary(bytes.into())).is_err() {
                        return;
                    }
                }
                Ok(Cmd::Close(done)) => {
                    let _ = ws.close(None);
                    let _ = ws.flush();
                    let _ = ws.get_ref().shutdown(Shutdown::Both);
                    let _ = done.send(());
                    return;
                }
                Err(mpsc::TryRecvError::Empty) => break,
                // Every sender is gone: the connection was dropped from the open list.
                Err(mpsc::TryRecvError::Disconnected) => return,
            }
        }
        match ws.read() {
            Ok(Message::Binary(bytes)) => {
                if let Some(reply) = on_client_frame(shared, &bytes) {
                    if ws.send(Message::Binary(reply.into())).is_err() {
                        return;
                    }
                }
            }
            Ok(Message::Close(_)) => {
                let _ = ws.flush();
                return;
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

/// Records a frame from the client; returns the pong to send, if any. Frames that do not decode,
/// and control frames other than pings, are ignored.
fn on_client_frame(shared: &Shared, bytes: &[u8]) -> Option<Vec<u8>> {
    let frame = Frame::decode_bytes(bytes).ok()?;
    let now = Instant::now();
    let mut s = shared.lock();
    let reply = match frame.method() {
        Method::Control if frame.message_type() == MessageType::Ping => {
            s.pings.push((now, frame.service));
            if s.silent {
                None
            } else {
                let mut pong = frame;
                pong.set_header(h::TYPE, "pong".to_owned());
                pong.payload = s.pong_once.take().map(|c| c.to_string().into_bytes());
                Some(encode(&pong))
            }
        }
        Method::Data => {
            s.acks.push(Ack {
                message_id: frame.header(h::MESSAGE_ID).unwrap_or("").to_owned(),
                code: frame.ack_code(),
                biz_rt: frame.header(h::BIZ_RT).map(str::to_owned),
                at: now,
                frame,
            });
            None
        }
        _ => None,
    };
    shared.changed.notify_all();
    reply
}
