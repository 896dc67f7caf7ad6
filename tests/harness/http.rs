//! The harness's plain HTTP client: one shared keep-alive agent, and requests that return any
//! status as a value ([`Answer`]); only transport errors are `Err`.

use std::sync::OnceLock;
use std::time::Duration;

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    /// The `msg` of a JSON error body.
    pub fn msg(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["msg"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// A shared keep-alive HTTP client.
pub fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(20))
            .max_idle_connections_per_host(64)
            .build()
    })
}

/// POSTs `body` with `headers`; any status is returned, transport errors are `Err`.
pub fn post(url: &str, headers: &[(String, String)], body: &str) -> Result<Answer, String> {
    request("POST", url, headers, body)
}

/// Any method.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: &str,
) -> Result<Answer, String> {
    let mut req = agent().request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let result = if body.is_empty() && method == "GET" {
        req.call()
    } else {
        req.send_string(body)
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(e.to_string()),
    };
    let status = resp.status();
    let body = resp.into_string().map_err(|e| e.to_string())?;
    Ok(Answer { status, body })
}

/// A TCP connection to `to` from the loopback address `from` (127.0.0.x: one client each, as
/// the gateway's limits per client count them).
pub fn connect_from(from: [u8; 4], to: std::net::SocketAddr) -> std::net::TcpStream {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let source = std::net::SocketAddr::from((from, 0));
    s.bind(&source.into())
        .expect("bind a loopback source address");
    s.connect(&to.into()).expect("connect");
    s.into()
}

/// GET.
pub fn get(url: &str) -> Result<Answer, String> {
    request("GET", url, &[], "")
}
