//! `loadgen baseline`: the bare receiver the gateway is compared with. A minimal hyper 1
//! HTTP/1.1 server on ONE thread (a current-thread tokio runtime) doing only the protocol work
//! every webhook receiver must do per POST: read the body (at most 1 MiB), check the signature
//! (spec §3), decrypt (spec §2), parse the event and check its verification token (spec §4), then
//! answer `200 {"msg":"success"}`. No store, no delivery, no routing by path: the ceiling.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use lark_core::{crypto, Cipher, Envelope};
use tokio::net::TcpListener;

/// Largest body read (like the gateway's default limit).
const MAX_BODY: usize = 1 << 20;

/// The app's secrets, prepared once.
#[derive(Debug)]
struct App {
    key: String,
    token: String,
    cipher: Cipher,
}

/// Serves on `listen` until Ctrl-C / SIGTERM.
pub fn serve(listen: SocketAddr, key: &str, token: &str) -> anyhow::Result<()> {
    let app = Arc::new(App {
        key: key.to_owned(),
        token: token.to_owned(),
        cipher: Cipher::new(key),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(accept_loop(listen, app))
}

async fn accept_loop(listen: SocketAddr, app: Arc<App>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    eprintln!("baseline receiver listening on http://{listen} (1 thread)");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        eprintln!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let app = app.clone();
                        async move { Ok::<_, Infallible>(handle(&app, req).await) }
                    });
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    eprintln!("baseline receiver stopped");
    Ok(())
}

fn answer(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "msg": msg }).to_string();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn handle(app: &App, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::POST {
        return answer(StatusCode::METHOD_NOT_ALLOWED, "only POST");
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body too large or unreadable",
            )
        }
    };
    check(app, &parts.headers, &body)
}

/// The per-request protocol work, on a fully read body.
fn check(app: &App, headers: &HeaderMap, body: &[u8]) -> Response<Full<Bytes>> {
    let (Some(ts), Some(nonce), Some(sig)) = (
        header(headers, "x-lark-request-timestamp"),
        header(headers, "x-lark-request-nonce"),
        header(headers, "x-lark-signature"),
    ) else {
        return answer(StatusCode::UNAUTHORIZED, "missing signature headers");
    };
    if !crypto::verify_signature(ts, nonce, &app.key, body, sig) {
        return answer(StatusCode::UNAUTHORIZED, "bad signature");
    }
    let encrypt = match Envelope::parse(body) {
        Ok(Envelope::Encrypted { encrypt }) => encrypt,
        Ok(_) => return answer(StatusCode::BAD_REQUEST, "body must be encrypted"),
        Err(e) => return answer(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let plain = match app.cipher.decrypt(&encrypt) {
        Ok(plain) => plain,
        Err(e) => return answer(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let event = match Envelope::parse(&plain) {
        Ok(Envelope::Event(event)) => event,
        Ok(_) => return answer(StatusCode::BAD_REQUEST, "not an event"),
        Err(e) => return answer(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    match event.token {
        Some(given) if crypto::tokens_match(&app.token, &given) => {
            answer(StatusCode::OK, "success")
        }
        _ => answer(StatusCode::UNAUTHORIZED, "bad verification token"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Generator;

    fn app() -> App {
        App {
            key: "k".into(),
            token: "t".into(),
            cipher: Cipher::new("k"),
        }
    }

    fn headers(ts: &str, nonce: &str, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("x-lark-request-timestamp", ts),
            ("x-lark-request-nonce", nonce),
            ("x-lark-signature", sig),
        ] {
            h.insert(name, HeaderValue::from_str(value).expect("header"));
        }
        h
    }

    #[test]
    fn accepts_good_deliveries_and_refuses_bad_ones() {
        let d = Generator::new("k", "t", 1_700_000_000, "b".into()).delivery(3);
        let good = headers(&d.ts, &d.nonce, &d.sig);
        assert_eq!(check(&app(), &good, d.body.as_bytes()).status(), 200);
        let forged = headers(&d.ts, "other", &d.sig);
        assert_eq!(check(&app(), &forged, d.body.as_bytes()).status(), 401);
        assert_eq!(
            check(&app(), &HeaderMap::new(), d.body.as_bytes()).status(),
            401
        );
        let wrong_token = Generator::new("k", "x", 1_700_000_000, "b".into()).delivery(3);
        let h = headers(&wrong_token.ts, &wrong_token.nonce, &wrong_token.sig);
        assert_eq!(check(&app(), &h, wrong_token.body.as_bytes()).status(), 401);
        let plain = br#"{"schema":"2.0"}"#;
        let sig = crypto::sign("1", "2", "k", plain);
        assert_eq!(check(&app(), &headers("1", "2", &sig), plain).status(), 400);
    }
}
