//! The stand-in's bootstrap endpoint: `POST /callback/ws/endpoint` over a minimal HTTP/1.1
//! reader (Content-Length and chunked bodies). Part of `lark_ws.rs`.

use super::*;

pub(super) struct HttpRequest {
    method: String,
    path: String,
    body: Vec<u8>,
    /// The body was over [`MAX_BODY`] and was not read.
    too_large: bool,
}

pub(super) fn serve_bootstrap(mut stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
    let Some(req) = read_request(&mut stream) else {
        return;
    };
    let path = req.path.split('?').next().unwrap_or("");
    let (status, body) = if req.too_large {
        (413, error_body(413, "body too large"))
    } else if req.method == "POST" && path == bootstrap::ENDPOINT_PATH {
        (200, bootstrap_answer(&shared, &req.body))
    } else {
        (404, error_body(404, "not found"))
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Payload Too Large",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Write);
}

fn error_body(code: i64, msg: &str) -> String {
    serde_json::json!({ "code": code, "msg": msg }).to_string()
}

/// Records the bootstrap and picks its answer: a queued code, else 1000040344 for wrong
/// credentials, else the endpoint.
fn bootstrap_answer(shared: &Shared, body: &[u8]) -> String {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    let credentials_ok = json.get("AppID").and_then(|v| v.as_str()) == Some(LarkWs::APP_ID)
        && json.get("AppSecret").and_then(|v| v.as_str()) == Some(LarkWs::APP_SECRET);
    let mut s = shared.lock();
    s.bootstraps.push((Instant::now(), json));
    shared.changed.notify_all();
    let released = |s: &State| !s.hold_bootstraps || shared.stop.load(Ordering::SeqCst);
    if !released(&s) {
        drop(s);
        shared.wait_until(HOLD_LIMIT, released);
        s = shared.lock();
    }
    let code = match s.bootstrap_codes.pop_front() {
        Some(code) => code,
        None if credentials_ok => 0,
        None => CODE_BAD_CREDENTIALS,
    };
    if code != 0 {
        return error_body(code, &format!("stand-in code {code}"));
    }
    let [access_key, ticket] = LarkWs::URL_SECRETS;
    let url = format!(
        "ws://{}/ws?device_id=d-1&service_id={}&access_key={access_key}&ticket={ticket}",
        shared.ws_addr,
        LarkWs::SERVICE_ID
    );
    serde_json::json!({
        "code": 0,
        "msg": "ok",
        "data": { "URL": url, "ClientConfig": s.client_config.clone() }
    })
    .to_string()
}

/// Reads one HTTP/1.1 request: request line, headers, then a `Content-Length` or chunked body
/// (answering `Expect: 100-continue`). `None` when the connection breaks or is malformed.
/// Also for other stand-ins of the bootstrap endpoint ([`super::read_http_request`]).
pub(super) fn read_request(stream: &mut TcpStream) -> Option<HttpRequest> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (k, v) = header.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").ok()?;
    }
    let chunked =
        header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        read_chunked(&mut reader)
    } else {
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if len > MAX_BODY {
            None
        } else {
            let mut body = vec![0; len];
            reader.read_exact(&mut body).ok()?;
            Some(body)
        }
    };
    Some(HttpRequest {
        method,
        path,
        too_large: body.is_none(),
        body: body.unwrap_or_default(),
    })
}

/// A chunked body; `None` when it is over [`MAX_BODY`] or broken.
fn read_chunked(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).ok()?;
        let size = size.trim().split(';').next()?;
        let size = usize::from_str_radix(size, 16).ok()?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let mut trailer = String::new();
                if reader.read_line(&mut trailer).ok()? == 0 || trailer.trim().is_empty() {
                    return Some(body);
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return None;
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).ok()?;
        let mut crlf = String::new();
        reader.read_line(&mut crlf).ok()?;
    }
}
