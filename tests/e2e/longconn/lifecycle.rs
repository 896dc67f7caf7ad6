//! The long-connection client's life cycle around shutdown and reload: cancellation while it
//! connects, the connected gauge across a replacement, new settings tried before the old
//! connection goes. Part of `longconn.rs`.

use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use super::*;

/// A bootstrap endpoint that accepts connections and never answers (a hung Lark or proxy).
struct HungEndpoint {
    addr: std::net::SocketAddr,
    /// Accepted connections, held open so the client waits for an answer.
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl HungEndpoint {
    fn start() -> HungEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let held = Arc::new(Mutex::new(Vec::new()));
        let sink = held.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(stream);
            }
        });
        HungEndpoint { addr, held }
    }

    fn domain(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn accepted(&self) -> usize {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// SIGTERM while the bootstrap waits for an answer (up to its 10 s timeout, then a 15 s dial)
/// ends the client at once: the connect was not raced against the cancel token, so it ate
/// the whole shared `shutdown_grace`.
#[test]
fn sigterm_while_the_bootstrap_hangs_exits_promptly() {
    let hung = HungEndpoint::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config_at(&hung.domain(), "", "")
        .replace("shutdown_grace = \"5s\"", "shutdown_grace = \"10s\"");
    let mut gw = spawn(dir.path(), &cfg);
    assert!(
        wait_until(WAIT, || hung.accepted() >= 1),
        "no bootstrap\n{}",
        gw.log()
    );
    let asked = Instant::now();
    gw.signal("TERM");
    let status = gw.wait(Duration::from_secs(20)).expect("the gateway exits");
    let took = asked.elapsed();
    assert!(status.success(), "{status:?}\n{}", gw.log());
    assert!(
        took < Duration::from_secs(3),
        "took {took:?} to stop with a bootstrap pending (grace 10 s)\n{}",
        gw.log()
    );
}
