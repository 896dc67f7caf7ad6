//! A stand-in of Lark's long-connection (WebSocket) server (spec §11) for end-to-end tests.
//!
//! Two listeners on loopback (`127.0.0.1:0`), each connection served on its own std thread:
//!
//! - an HTTP/1.1 one for the bootstrap, `POST /callback/ws/endpoint` with `{"AppID","AppSecret"}`
//!   (anything else is a 404); point the gateway's `domain` at [`LarkWs::domain`]. It answers
//!   `{"code":0,"msg":"ok","data":{"URL":"ws://127.0.0.1:<wsport>/ws?device_id=d-1&service_id=42&
//!   access_key=AK_SECRET_123&ticket=TICKET_SECRET_456","ClientConfig":{...}}}` with
//!   `Connection: close`;
//! - a WebSocket one (tungstenite, messages up to 64 MiB) that checks the URL's query, answers
//!   pings (`method = 0`, `type = ping`) with pongs and records every data frame the client sends
//!   as an ack.
//!
//! Frames sent by the stand-in are encoded by hand here (proto2, every required field written),
//! independently of `lark_longconn`'s derive, and decoded with [`Frame::decode_bytes`]: a wrong tag
//! on either side shows up in the tests.
//!
//! Knobs: bootstrap — [`LarkWs::set_client_config`], [`LarkWs::queue_bootstrap_codes`] (wrong
//! credentials get code 1000040344 unless a queued code applies first),
//! [`LarkWs::hold_bootstraps`] (answers wait until released); handshake —
//! [`LarkWs::refuse_handshakes`] (a query without `service_id=42`, `access_key` and `ticket` is
//! always refused with 403); pushing — [`LarkWs::push_event`], [`LarkWs::push_fragments`],
//! [`LarkWs::push_card`], [`LarkWs::drop_connection`] (all act on the most recently accepted,
//! still open connection), [`LarkWs::close_accepted`]; pongs — [`LarkWs::pong_config_once`], [`LarkWs::set_silent`].
//! Observations: [`LarkWs::bootstraps`], [`LarkWs::handshakes`], [`LarkWs::acks`],
//! [`LarkWs::pings`], [`LarkWs::open_connections`] and the `wait_*` helpers.
//!
//! Self-contained (std + serde_json + tungstenite + lark_longconn): include it with
//! `#[path = "../standins/lark_ws.rs"] mod lark_ws;`. Tests only: it trusts its clients.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lark_longconn::bootstrap::{self, query_param};
use lark_longconn::frame::headers as h;
use lark_longconn::{Frame, MessageType, Method};
use tungstenite::handshake::server::{ErrorResponse, Request as WsRequest, Response as WsResponse};
use tungstenite::http::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH};
use tungstenite::http::StatusCode;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

/// How long a connection thread blocks in a read before it looks at its queue of frames to send.
const POLL: Duration = Duration::from_millis(10);
/// A bootstrap request or a WebSocket handshake that stalls this long is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Bootstrap bodies larger than this are refused (413).
const MAX_BODY: usize = 1024 * 1024;
/// The largest WebSocket message (and frame) the stand-in accepts.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// The fatal code answered to wrong credentials.
const CODE_BAD_CREDENTIALS: i64 = 1_000_040_344;
/// A held bootstrap answer is sent anyway after this long (the gateway gave up after 10 s).
const HOLD_LIMIT: Duration = Duration::from_secs(30);

/// One ack the client sent: any data frame (`method = 1`) received by the stand-in.
#[derive(Debug, Clone)]
pub struct Ack {
    /// The `message_id` header (empty when absent).
    pub message_id: String,
    /// The payload's `code` ([`Frame::ack_code`]): 200 handled, 500 failed.
    pub code: Option<i64>,
    /// The `biz_rt` header (handling time in ms) as sent.
    pub biz_rt: Option<String>,
    /// When the stand-in received it.
    pub at: Instant,
    /// The whole frame as decoded.
    pub frame: Frame,
}

/// What a connection thread is asked to do.
enum Cmd {
    /// Send these bytes as one binary message.
    Send(Vec<u8>),
    /// Send a WebSocket close, drop the TCP stream, then signal.
    Close(mpsc::Sender<()>),
}

/// An open (handshaken) WebSocket connection.
struct Conn {
    id: u64,
    tx: mpsc::Sender<Cmd>,
    /// A clone of the socket, to shut it down from outside the connection thread.
    stream: TcpStream,
}

struct State {
    client_config: serde_json::Value,
    bootstrap_codes: VecDeque<i64>,
    bootstraps: Vec<(Instant, serde_json::Value)>,
    /// Bootstrap answers wait while this is set (see [`LarkWs::hold_bootstraps`]).
    hold_bootstraps: bool,
    /// Handshakes still to refuse, and with which headers.
    refusals: usize,
    refusal_status: HeaderValue,
    refusal_auth_code: Option<HeaderValue>,
    handshakes: Vec<(Instant, bool)>,
    /// Open connections in accept order (the last is the push target).
    conns: Vec<Conn>,
    /// Connections accepted since start.
    accepted: usize,
    next_conn_id: u64,
    next_seq_id: u64,
    acks: Vec<Ack>,
    pings: Vec<(Instant, i32)>,
    pong_once: Option<serde_json::Value>,
    silent: bool,
    /// Connections still to close right after their handshake (see [`LarkWs::close_accepted`]).
    close_at_once: usize,
}

struct Shared {
    state: Mutex<State>,
    /// Notified whenever something is recorded or a connection opens or closes.
    changed: Condvar,
    stop: AtomicBool,
    ws_addr: SocketAddr,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `done` holds on the state; false on timeout.
    fn wait_until(&self, timeout: Duration, mut done: impl FnMut(&State) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        loop {
            if done(&s) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// The running stand-in; stops accepting and closes its connections when dropped.
pub struct LarkWs {
    shared: Arc<Shared>,
    http_addr: SocketAddr,
    ws_addr: SocketAddr,
    threads: Vec<JoinHandle<()>>,
}

impl LarkWs {
    /// App id the bootstrap accepts.
    pub const APP_ID: &'static str = "cli_ws_test";
    /// App secret the bootstrap accepts.
    pub const APP_SECRET: &'static str = "ws_secret";
    /// The `service_id` put in the URL's query; pings must carry it.
    pub const SERVICE_ID: i32 = 42;
    /// The secrets put in the URL's query (`access_key`, `ticket`), so tests can assert they never
    /// appear in logs.
    pub const URL_SECRETS: [&'static str; 2] = ["AK_SECRET_123", "TICKET_SECRET_456"];

    /// Starts both listeners on `127.0.0.1:0`: an HTTP/1.1 one for the bootstrap and a WebSocket
    /// one.
    pub fn start() -> LarkWs {
        let http = TcpListener::bind("127.0.0.1:0").expect("bind loopback (bootstrap)");
        let ws = TcpListener::bind("127.0.0.1:0").expect("bind loopback (websocket)");
        let http_addr = http.local_addr().expect("local addr");
        let ws_addr = ws.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                client_config: serde_json::json!({
                    "ReconnectCount": -1, "ReconnectInterval": 1, "ReconnectNonce": 1,
                    "PingInterval": 30
                }),
                bootstrap_codes: VecDeque::new(),
                bootstraps: Vec::new(),
                hold_bootstraps: false,
                refusals: 0,
                refusal_status: HeaderValue::from_static("500"),
                refusal_auth_code: None,
                handshakes: Vec::new(),
                conns: Vec::new(),
                accepted: 0,
                next_conn_id: 1,
                next_seq_id: 1,
                acks: Vec::new(),
                pings: Vec::new(),
                pong_once: None,
                silent: false,
                close_at_once: 0,
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            ws_addr,
        });
        let threads = vec![
            spawn_accept_loop(http, shared.clone(), serve_bootstrap),
            spawn_accept_loop(ws, shared.clone(), serve_ws),
        ];
        LarkWs {
            shared,
            http_addr,
            ws_addr,
            threads,
        }
    }

    /// `http://127.0.0.1:PORT`: what the gateway config's `domain` is set to.
    pub fn domain(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    // --- bootstrap knobs ---

    /// The `ClientConfig` JSON object returned with each successful bootstrap (default
    /// `{"ReconnectCount":-1,"ReconnectInterval":1,"ReconnectNonce":1,"PingInterval":30}`).
    pub fn set_client_config(&self, config: serde_json::Value) {
        self.shared.lock().client_config = config;
    }

    /// Queues answer codes for the next bootstraps (one per bootstrap, FIFO); when the queue is
    /// empty the answer is code 0. A non-zero code answers `{"code":N,"msg":"stand-in code N"}`
    /// with HTTP 200 and no data. A queued code applies even to wrong credentials.
    pub fn queue_bootstrap_codes(&self, codes: &[i64]) {
        self.shared.lock().bootstrap_codes.extend(codes);
    }

    /// While `hold` is true, each bootstrap request is recorded (see [`LarkWs::bootstraps`]) and
    /// then waits for its answer until `hold_bootstraps(false)` (or the stand-in is dropped, or
    /// 30 s): a Lark slow to answer, at a moment the test chooses.
    pub fn hold_bootstraps(&self, hold: bool) {
        self.shared.lock().hold_bootstraps = hold;
        self.shared.changed.notify_all();
    }

    /// Every bootstrap request received: when, and its JSON body (`Null` when unreadable). Wrong
    /// `AppID`/`AppSecret` get code 1000040344 (fatal) unless a queued code applies first.
    pub fn bootstraps(&self) -> Vec<(Instant, serde_json::Value)> {
        self.shared.lock().bootstraps.clone()
    }

    // --- handshake knobs ---

    /// Refuses the next `n` WebSocket handshakes (replacing any earlier count) with HTTP 400 and
    /// the headers `handshake-status: <status>`, `handshake-msg: stand-in refusal` and, when
    /// `auth_err_code` is `Some`, `handshake-autherrcode: <code>`.
    pub fn refuse_handshakes(&self, n: usize, status: &str, auth_err_code: Option<&str>) {
        let status = HeaderValue::from_str(status).expect("status is a valid header value");
        let code = auth_err_code
            .map(|c| HeaderValue::from_str(c).expect("auth_err_code is a valid header value"));
        let mut s = self.shared.lock();
        s.refusals = n;
        s.refusal_status = status;
        s.refusal_auth_code = code;
    }

    /// Every handshake attempt, accepted or refused: when, and whether it was accepted. A
    /// handshake whose query lacks `service_id=42`, `access_key=AK_SECRET_123` or
    /// `ticket=TICKET_SECRET_456` is refused with HTTP 403 and `handshake-status: 403` (before
    /// the [`LarkWs::refuse_handshakes`] knob is consulted).
    pub fn handshakes(&self) -> Vec<(Instant, bool)> {
        self.shared.lock().handshakes.clone()
    }

    /// Number of currently open WebSocket connections.
    pub fn open_connections(&self) -> usize {
        self.shared.lock().conns.len()
    }

    /// Waits until at least `n` connections have been accepted in total (since start); false on
    /// timeout. An accepted connection is already the push target when this returns.
    pub fn wait_connections(&self, n: usize, timeout: Duration) -> bool {
        self.shared.wait_until(timeout, |s| s.accepted >= n)
    }

    // --- pushing messages (to the most recently accepted, still open connection) ---

    /// Sends one data frame: `method = 1`, `service = SERVICE_ID`, headers `type=event`,
    /// `message_id`, `sum=1`, `seq=0`, `trace_id=trace-<message_id>`, payload `payload`. Returns
    /// false if there is no open connection.
    pub fn push_event(&self, message_id: &str, payload: &[u8]) -> bool {
        self.push(|s| vec![data_frame(s, "event", message_id, 1, 0, payload, &[])])
    }

    /// [`LarkWs::push_event`] with some of its headers replaced (`(key, value)`: a `sum` that is
    /// no number, say). Returns false if there is no open connection.
    pub fn push_event_with(
        &self,
        message_id: &str,
        payload: &[u8],
        headers: &[(&str, &str)],
    ) -> bool {
        self.push(|s| vec![data_frame(s, "event", message_id, 1, 0, payload, headers)])
    }

    /// Splits `payload` into `sum` nearly equal parts and sends the fragments in the given
    /// `order` of seq indices (e.g. `[2, 0, 1]`), each a data frame with `type=event`,
    /// `message_id`, `sum` and `seq`. `order` may omit indices (a missing fragment) or repeat
    /// them. Returns false if there is no open connection. Panics on an index `>= sum`.
    pub fn push_fragments(
        &self,
        message_id: &str,
        payload: &[u8],
        sum: u32,
        order: &[u32],
    ) -> bool {
        assert!(sum > 0, "sum must be at least 1");
        assert!(
            order.iter().all(|&i| i < sum),
            "order {order:?} has an index >= sum {sum}"
        );
        let len = payload.len();
        let part = |i: u32| {
            let (i, n) = (i as usize, sum as usize);
            &payload[i * len / n..(i + 1) * len / n]
        };
        self.push(|s| {
            order
                .iter()
                .map(|&i| data_frame(s, "event", message_id, sum, i, part(i), &[]))
                .collect()
        })
    }

    /// Sends a data frame with `type=card` (the gateway must not ack it). Returns false if there
    /// is no open connection.
    pub fn push_card(&self, message_id: &str, payload: &[u8]) -> bool {
        self.push(|s| vec![data_frame(s, "card", message_id, 1, 0, payload, &[])])
    }

    /// Closes the current (most recently accepted, still open) connection from the server side: a
    /// WebSocket close, then the TCP stream is shut down and dropped. It stops counting as open at
    /// once; returns when the connection thread is done (at most ~2 s).
    pub fn drop_connection(&self) {
        let conn = {
            let mut s = self.shared.lock();
            let conn = s.conns.pop();
            self.shared.changed.notify_all();
            conn
        };
        let Some(conn) = conn else {
            return;
        };
        let (done_tx, done_rx) = mpsc::channel();
        if conn.tx.send(Cmd::Close(done_tx)).is_ok() {
            let _ = done_rx.recv_timeout(Duration::from_secs(2));
        }
        let _ = conn.stream.shutdown(Shutdown::Both);
    }

    // --- what the client sent ---

    /// Every ack received: its `message_id` header, the payload's code, its `biz_rt` header and
    /// when.
    pub fn acks(&self) -> Vec<Ack> {
        self.shared.lock().acks.clone()
    }

    /// Waits until an ack for `message_id` arrived; returns the first one, or `None` on timeout.
    pub fn wait_ack(&self, message_id: &str, timeout: Duration) -> Option<Ack> {
        let mut found = None;
        self.shared.wait_until(timeout, |s| {
            found = s.acks.iter().find(|a| a.message_id == message_id).cloned();
            found.is_some()
        });
        found
    }

    /// The next `n` connections are closed by the server (a WebSocket close) right after their
    /// handshake succeeds, before any frame: a peer that drops every connection at once.
    pub fn close_accepted(&self, n: usize) {
        self.shared.lock().close_at_once = n;
    }

    /// Every ping received: when, and the frame's `service` field.
    pub fn pings(&self) -> Vec<(Instant, i32)> {
        self.shared.lock().pings.clone()
    }

    // --- pong knobs ---

    /// The payload of the next pong only: a ClientConfig JSON (e.g. `{"PingInterval":1}`); later
    /// pongs have no payload again.
    pub fn pong_config_once(&self, config: serde_json::Value) {
        self.shared.lock().pong_once = Some(config);
    }

    /// When true, pings are recorded but not answered (a dead connection).
    pub fn set_silent(&self, silent: bool) {
        self.shared.lock().silent = silent;
    }

    /// Builds frames under the lock and queues them on the push target; false without one.
    fn push(&self, build: impl FnOnce(&mut State) -> Vec<Vec<u8>>) -> bool {
        let mut s = self.shared.lock();
        let frames = build(&mut s);
        let Some(conn) = s.conns.last() else {
            return false;
        };
        frames
            .into_iter()
            .all(|bytes| conn.tx.send(Cmd::Send(bytes)).is_ok())
    }
}

impl Drop for LarkWs {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Held bootstrap answers see the flag.
        self.shared.changed.notify_all();
        // Unblock both accept loops so they see the flag.
        let _ = TcpStream::connect(self.http_addr);
        let _ = TcpStream::connect(self.ws_addr);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let conns = std::mem::take(&mut self.shared.lock().conns);
        let waits: Vec<_> = conns
            .iter()
            .filter_map(|c| {
                let (tx, rx) = mpsc::channel();
                c.tx.send(Cmd::Close(tx)).ok().map(|()| rx)
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(1);
        for rx in waits {
            let _ = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        }
        for c in conns {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
    }
}

fn spawn_accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    serve: fn(TcpStream, Arc<Shared>),
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if shared.stop.load(Ordering::SeqCst) {
                break;
            }
            if let Ok(stream) = conn {
                let shared = shared.clone();
                std::thread::spawn(move || serve(stream, shared));
            }
        }
    })
}

#[path = "lark_ws_frames.rs"]
mod frames;
use frames::data_frame;
pub use frames::encode;

#[path = "lark_ws_socket.rs"]
mod socket;
use socket::serve_ws;

#[path = "lark_ws_bootstrap.rs"]
mod endpoint;
use endpoint::serve_bootstrap;

/// Reads one HTTP/1.1 request from `stream` (the bootstrap endpoint's reader), for a test's own
/// stand-in of the endpoint; whether one was read whole.
pub fn read_http_request(stream: &mut TcpStream) -> bool {
    endpoint::read_request(stream).is_some()
}
