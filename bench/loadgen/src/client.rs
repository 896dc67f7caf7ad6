//! The HTTP/1.1 client side: parsing a target URL, opening keep-alive connections with hyper 1
//! (`client::conn::http1` over a `tokio::net::TcpStream`), sending one request and reading the
//! whole answer, and naming every transport failure with a short, groupable label.

use std::time::Duration;

use anyhow::Context as _;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Where requests go: `http://host:port/path?query`.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port` to connect to.
    pub authority: String,
    /// The `Host` header.
    pub host: HeaderValue,
    /// Origin-form request target (`/path?query`).
    pub path: Uri,
    /// The URL as given, for reports.
    pub url: String,
}

impl Target {
    /// Accepts `http://` URLs only (no TLS in a loopback load generator).
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
        anyhow::ensure!(
            uri.scheme_str() == Some("http"),
            "only http:// URLs are supported: {url:?}"
        );
        let host = uri
            .host()
            .with_context(|| format!("no host in {url:?}"))?
            .to_owned();
        let port = uri.port_u16().unwrap_or(80);
        let authority = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let path = uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .parse::<Uri>()
            .with_context(|| format!("bad path in {url:?}"))?;
        let host_header = uri
            .authority()
            .map(|a| a.as_str())
            .unwrap_or(&authority)
            .to_owned();
        Ok(Self {
            host: HeaderValue::from_str(&host_header)?,
            authority,
            path,
            url: url.to_owned(),
        })
    }
}

/// One keep-alive HTTP/1.1 connection. The connection task runs on the tokio runtime.
#[derive(Debug)]
pub struct Conn<B> {
    sender: SendRequest<B>,
}

/// Opens a connection to `target` (TCP_NODELAY, like the gateway's side).
pub async fn connect<B>(target: &Target) -> Result<Conn<B>, String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(&target.authority)
        .await
        .map_err(|e| format!("connect: {:?}", e.kind()))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {}", classify(&e)))?;
    tokio::spawn(async move {
        // Errors surface on the sender side too; nothing to add here.
        let _ = conn.await;
    });
    Ok(Conn { sender })
}

impl<B> Conn<B>
where
    B: hyper::body::Body + Send + 'static,
{
    /// Sends `req` and reads the whole response body. `Err` is a transport failure label; the
    /// connection must then be dropped.
    pub async fn send(&mut self, req: Request<B>, timeout: Duration) -> Result<StatusCode, String> {
        let exchange = async {
            self.sender
                .ready()
                .await
                .map_err(|e| format!("not ready: {}", classify(&e)))?;
            let resp = self
                .sender
                .send_request(req)
                .await
                .map_err(|e| classify(&e))?;
            let status = resp.status();
            resp.into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {}", classify(&e)))?;
            Ok(status)
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| Err("timeout".to_owned()))
    }
}

/// A short label for a hyper error, stable enough to group on.
fn classify(e: &hyper::Error) -> String {
    if e.is_closed() {
        "connection closed".to_owned()
    } else if e.is_incomplete_message() {
        "incomplete message".to_owned()
    } else if e.is_canceled() {
        "canceled".to_owned()
    } else if e.is_timeout() {
        "timeout".to_owned()
    } else if e.is_parse() {
        "parse error".to_owned()
    } else {
        let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                return format!("io: {:?}", io.kind());
            }
            source = s.source();
        }
        e.to_string()
    }
}

/// A signed webhook POST with the Lark headers.
pub fn lark_post(
    target: &Target,
    ts: HeaderValue,
    nonce: HeaderValue,
    sig: HeaderValue,
    body: Bytes,
) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = target.path.clone();
    let h = req.headers_mut();
    h.insert(HOST, target.host.clone());
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert("x-lark-request-timestamp", ts);
    h.insert("x-lark-request-nonce", nonce);
    h.insert("x-lark-signature", sig);
    req
}

/// One-shot GET of a text page (a fresh connection each time); non-200 is an error.
pub async fn get_text(target: &Target, timeout: Duration) -> anyhow::Result<String> {
    let fetch = async {
        let stream = TcpStream::connect(&target.authority)
            .await
            .with_context(|| format!("cannot connect to {}", target.url))?;
        let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::new(Empty::new());
        *req.uri_mut() = target.path.clone();
        req.headers_mut().insert(HOST, target.host.clone());
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::ensure!(status == StatusCode::OK, "{} answered {status}", target.url);
        Ok(String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .with_context(|| format!("{} did not answer within {timeout:?}", target.url))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        let t = Target::parse("http://127.0.0.1:7801/webhook/event?x=1").expect("parse");
        assert_eq!(t.authority, "127.0.0.1:7801");
        assert_eq!(t.host, "127.0.0.1:7801");
        assert_eq!(t.path, "/webhook/event?x=1");
        let t = Target::parse("http://localhost").expect("parse");
        assert_eq!(t.authority, "localhost:80");
        assert_eq!(t.path, "/");
        assert!(Target::parse("https://127.0.0.1/").is_err());
        assert!(Target::parse("127.0.0.1:80/x").is_err());
    }
}
