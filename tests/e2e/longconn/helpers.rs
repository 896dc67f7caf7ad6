//! What the long-connection tests share: the gateway's config around the stand-in, events as
//! Lark pushes them, waiting for acks and connections, a bootstrap endpoint that never answers,
//! and the check that no secret reaches the log. Part of `longconn.rs`.

use std::io::Read;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway_e2e::harness::{base_config, binaries, get, read_jsonl, TestGateway};

use crate::lark_ws::LarkWs;

pub(crate) const TOKEN: &str = "ws-token";
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// A websocket app `hire` on `lark`, the logger as `audit` (for every `test.*` event) and a
/// testkit `sink` recording to `data/sink.jsonl` (for `test.sink`), plus `extra` TOML.
pub(crate) fn config(lark: &LarkWs, app_extra: &str, extra: &str) -> String {
    config_at(&lark.domain(), app_extra, extra)
}

/// [`config`] with the app's `domain` set to `domain`.
pub(crate) fn config_at(domain: &str, app_extra: &str, extra: &str) -> String {
    format!(
        r#"{base}
[[apps]]
name = "hire"
mode = "websocket"
app_id = "{app_id}"
app_secret = "${{WS_SECRET}}"
domain = "{domain}"
verification_token = "{TOKEN}"
{app_extra}

[delivery]
initial_backoff = "50ms"
max_backoff = "200ms"

[[plugins]]
name = "audit"
library = "{logger}"
config = {{ path = "data/audit.jsonl", fsync = "never" }}

[[plugins]]
name = "sink"
library = "{testkit}"
config = {{ mode = "ok", record = "data/sink.jsonl" }}

[[routes]]
events = ["test.*"]
plugins = ["audit"]

[[routes]]
events = ["test.sink"]
plugins = ["sink"]
{extra}
"#,
        base = base_config(),
        app_id = LarkWs::APP_ID,
        logger = binaries().logger.display(),
        testkit = binaries().testkit.display(),
    )
}

pub(crate) fn spawn(dir: &Path, cfg: &str) -> TestGateway {
    TestGateway::spawn_with_env(dir, cfg, &[("WS_SECRET", LarkWs::APP_SECRET)])
}

/// A schema 2.0 event as Lark pushes it for the stand-in's app (plaintext on this transport).
pub(crate) fn event(id: &str, event_type: &str) -> Vec<u8> {
    event_with(id, event_type, TOKEN)
}

pub(crate) fn event_with(id: &str, event_type: &str, token: &str) -> Vec<u8> {
    serde_json::json!({
        "schema": "2.0",
        "header": {
            "event_id": id,
            "event_type": event_type,
            "create_time": "1608725989000",
            "token": token,
            "app_id": LarkWs::APP_ID,
            "tenant_key": "2ca1d211f64f6438",
        },
        "event": {"n": id},
    })
    .to_string()
    .into_bytes()
}

pub(crate) fn lines(gw: &TestGateway, file: &str) -> Vec<serde_json::Value> {
    read_jsonl(&gw.dir.join("data").join(file))
}

pub(crate) fn ack_code(lark: &LarkWs, message_id: &str) -> Option<i64> {
    lark.wait_ack(message_id, WAIT)
        .unwrap_or_else(|| panic!("no ack for {message_id}"))
        .code
}

pub(crate) fn connected(lark: &LarkWs, n: usize) {
    assert!(
        lark.wait_connections(n, WAIT),
        "the gateway did not connect ({n})"
    );
}

/// The gateway's `/metrics` text.
pub(crate) fn scrape(gw: &TestGateway) -> String {
    get(&gw.admin_url("/metrics")).expect("metrics").body
}

pub(crate) fn assert_no_secrets(gw: &TestGateway) {
    let log = gw.log();
    for secret in LarkWs::URL_SECRETS.iter().chain([&LarkWs::APP_SECRET]) {
        assert!(!log.contains(secret), "{secret} appears in the log:\n{log}");
    }
}

/// A bootstrap endpoint that accepts connections and never answers (a hung Lark or proxy),
/// until [`HungEndpoint::release`].
pub(crate) struct HungEndpoint {
    addr: SocketAddr,
    /// Accepted connections, held open so the client waits for an answer.
    held: Arc<Mutex<Vec<TcpStream>>>,
    /// Held connections whose other end (the gateway) closed them, or that broke.
    closed: Arc<AtomicUsize>,
}

impl HungEndpoint {
    pub(crate) fn start() -> HungEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let held = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(AtomicUsize::new(0));
        let (sink, gone) = (held.clone(), closed.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                // Reads (and ignores) the request until the client closes the connection.
                if let Ok(mut reader) = stream.try_clone() {
                    let gone = gone.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 4096];
                        while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
                        gone.fetch_add(1, Ordering::SeqCst);
                    });
                }
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(stream);
            }
        });
        HungEndpoint { addr, held, closed }
    }

    pub(crate) fn domain(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn accepted(&self) -> usize {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Held connections closed since (by the client, until [`HungEndpoint::release`]).
    pub(crate) fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }

    /// Shuts every held connection down: each waiting bootstrap fails at once.
    pub(crate) fn release(&self) {
        for stream in self.held.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}
