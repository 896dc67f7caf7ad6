//! A tiny HTTP/1.1 stand-in for a Feishu/Lark custom bot webhook (spec §10), or for any JSON
//! endpoint, for tests on loopback. It binds `127.0.0.1:0`, serves each connection on its own
//! thread (one request per connection, answered with `Connection: close`), records every request
//! (method, path, headers, body, arrival time) and answers from a scripted queue of [`Reply`]s with
//! fault knobs (status, body, `Retry-After`, extra headers, delay). When the queue is empty it
//! answers the default reply, `200 {"code":0,"msg":"success","data":{}}`.
//!
//! Self-contained (std + serde_json only) so any test crate can include it:
//! `#[path = "../../../tests/standins/bot.rs"] mod bot;` (adjust the relative path). It must never
//! be used outside tests: it has no limits worth the name and trusts its clients.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Requests larger than this are refused with 413 (keeps a broken client from eating memory).
const MAX_BODY: usize = 4 * 1024 * 1024;
/// A connection that sends nothing for this long is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One request as the stand-in received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The request target as sent, e.g. `/open-apis/bot/v2/hook/abc`.
    pub path: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the whole request had been read.
    pub at: Instant,
}

impl Recorded {
    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON (`Value::Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    /// Sent as the `Retry-After` header when set.
    pub retry_after: Option<String>,
    pub headers: Vec<(String, String)>,
    /// Waited after reading the request and before answering (to provoke client timeouts).
    pub delay: Duration,
}

impl Default for Reply {
    fn default() -> Reply {
        Reply::ok()
    }
}

impl Reply {
    /// `200 {"code":0,"msg":"success","data":{}}`: the bot's success answer.
    pub fn ok() -> Reply {
        Reply::json(
            200,
            &serde_json::json!({"code": 0, "msg": "success", "data": {}}),
        )
    }

    /// A status with an empty JSON object body.
    pub fn status(status: u16) -> Reply {
        Reply::json(status, &serde_json::json!({}))
    }

    pub fn json(status: u16, body: &serde_json::Value) -> Reply {
        Reply {
            status,
            body: body.to_string(),
            retry_after: None,
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    /// HTTP 200 carrying a bot error code, the way the real bot reports errors.
    pub fn bot_error(code: i64, msg: &str) -> Reply {
        Reply::json(
            200,
            &serde_json::json!({"code": code, "msg": msg, "data": {}}),
        )
    }

    pub fn with_body(mut self, body: impl Into<String>) -> Reply {
        self.body = body.into();
        self
    }

    pub fn with_retry_after(mut self, value: impl ToString) -> Reply {
        self.retry_after = Some(value.to_string());
        self
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn with_delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

#[derive(Default)]
struct State {
    requests: Mutex<Vec<Recorded>>,
    script: Mutex<VecDeque<Reply>>,
    fallback: Mutex<Reply>,
    stop: AtomicBool,
}

/// The running stand-in; stops accepting when dropped (threads still answering finish alone).
pub struct BotStandin {
    addr: SocketAddr,
    state: Arc<State>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for BotStandin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotStandin")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl BotStandin {
    /// Binds `127.0.0.1:0` and starts serving.
    pub fn start() -> BotStandin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let conn_state = Arc::clone(&shared);
                std::thread::spawn(move || serve(stream, &conn_state));
            }
        });
        BotStandin {
            addr,
            state,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Queues a reply for the next request that has no earlier scripted reply.
    pub fn push(&self, reply: Reply) {
        lock(&self.state.script).push_back(reply);
    }

    /// Replaces the answer given when the script is empty.
    pub fn set_default(&self, reply: Reply) {
        *lock(&self.state.fallback) = reply;
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.requests).clone()
    }

    /// Waits until at least `n` requests arrived (or `timeout` passed) and returns them all.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.requests();
            if got.len() >= n || Instant::now() >= deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for BotStandin {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(handle) = self.accept.take() {
            let _ = handle.join();
        }
    }
}

fn serve(stream: TcpStream, state: &State) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let reply = match read_request(&mut reader) {
        Ok(Some(request)) => {
            lock(&state.requests).push(request);
            lock(&state.script)
                .pop_front()
                .unwrap_or_else(|| lock(&state.fallback).clone())
        }
        Ok(None) => return, // closed without a request (e.g. the stop wake-up)
        Err(status) => Reply::status(status),
    };
    if !reply.delay.is_zero() {
        std::thread::sleep(reply.delay);
    }
    let _ = write_reply(write_half, &reply);
}

/// `Ok(None)`: the peer closed before sending anything. `Err(status)`: a malformed request.
fn read_request(reader: &mut BufReader<TcpStream>) -> Result<Option<Recorded>, u16> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(_) => return Ok(None),
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path), Some(_version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(400);
    };
    let (method, path) = (method.to_owned(), path.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).map_err(|_| 400u16)? == 0 {
            return Err(400);
        }
        let header = header.trim_end_matches(['\r', '\n']);
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').ok_or(400u16)?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    if find("transfer-encoding").is_some() {
        return Err(501); // chunked bodies are not supported by this stand-in
    }
    let length = match find("content-length") {
        Some(v) => v.parse::<usize>().map_err(|_| 400u16)?,
        None => 0,
    };
    if length > MAX_BODY {
        return Err(413);
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).map_err(|_| 400u16)?;
    Ok(Some(Recorded {
        method,
        path,
        headers,
        body,
        at: Instant::now(),
    }))
}

fn write_reply(mut stream: TcpStream, reply: &Reply) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reason_phrase(reply.status),
        reply.body.len()
    );
    if let Some(value) = &reply.retry_after {
        head.push_str(&format!("Retry-After: {value}\r\n"));
    }
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(reply.body.as_bytes())?;
    stream.flush()
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
