//! The admin listener's limits against the real binary: open connections, request heads and
//! slow clients bounded; without a token, only requests addressed to a loopback name (DNS
//! rebinding) and `next` kept on this site; the token replaced by a reload (and a token no
//! header can carry refused by it).

use std::time::Duration;

use gateway_e2e::harness::{connect_from, wait_until, TestGateway};
use serde_json::json;

#[path = "admin_client.rs"]
mod admin_client;
use admin_client::*;

/// Sends `head` (maybe an unfinished request head) on a new connection to the admin listener and
/// reads until the server closes it or `wait` passes: what arrived, whether it closed (EOF or
/// reset), and when.
fn raw_exchange(
    admin: std::net::SocketAddr,
    head: &[u8],
    wait: Duration,
) -> (String, bool, Duration) {
    use std::io::Write;
    let started = std::time::Instant::now();
    let mut s = std::net::TcpStream::connect(admin).expect("connect");
    // A server that closes before reading everything may reset the connection: not an error.
    let _ = s.write_all(head);
    read_until_closed(&mut s, started, wait)
}

fn read_until_closed(
    s: &mut std::net::TcpStream,
    started: std::time::Instant,
    wait: Duration,
) -> (String, bool, Duration) {
    use std::io::Read;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = wait.saturating_sub(started.elapsed());
        if left.is_zero() {
            return (
                String::from_utf8_lossy(&got).into_owned(),
                false,
                started.elapsed(),
            );
        }
        s.set_read_timeout(Some(left)).expect("read timeout");
        match s.read(&mut buf) {
            Ok(0) => {
                return (
                    String::from_utf8_lossy(&got).into_owned(),
                    true,
                    started.elapsed(),
                )
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (
                    String::from_utf8_lossy(&got).into_owned(),
                    false,
                    started.elapsed(),
                )
            }
            // A reset: the server closed it.
            Err(_) => {
                return (
                    String::from_utf8_lossy(&got).into_owned(),
                    true,
                    started.elapsed(),
                )
            }
        }
    }
}

#[test]
fn the_admin_listener_bounds_heads_open_connections_and_slow_clients() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config(""));
    let admin = gw.admin.expect("admin");

    // A request head over the limit is refused (431, or closed), never served.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40 * 1024)
    );
    let (answer, _, _) = raw_exchange(admin, big.as_bytes(), Duration::from_secs(5));
    assert!(
        !answer.starts_with("HTTP/1.1 200"),
        "a 40 KiB head was served: {answer}"
    );

    // At most 64 connections: they are all taken by clients that never finish their head, and
    // one that never finishes its body...
    let partial: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    let slow_body: &[u8] = b"POST /api/v1/replay HTTP/1.1\r\nHost: 127.0.0.1\r\n\
        Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"dead";
    let started = std::time::Instant::now();
    // (From four clients: one holds at most 16, below.)
    let mut idle: Vec<std::net::TcpStream> = (0..64)
        .map(|i| {
            let mut s = connect_from([127, 0, 0, 1 + (i % 4) as u8], admin);
            s.write_all(if i == 0 { slow_body } else { partial })
                .expect("write");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // ... so the next one is closed at once, unanswered.
    let full = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let (answer, closed, took) = raw_exchange(admin, full, Duration::from_secs(5));
    assert!(
        closed && !answer.contains("200 OK"),
        "past the connection limit: {answer:?} (closed: {closed}, after {took:?})"
    );
    // The unfinished body gets 408 and the unfinished heads are closed, within their timeouts
    // (10 s each).
    for (i, s) in idle.iter_mut().enumerate() {
        let (answer, closed, _) = read_until_closed(s, started, Duration::from_secs(14));
        assert!(
            closed,
            "connection {i} still open after {:?}: {answer:?}",
            started.elapsed()
        );
        if i == 0 {
            assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(14),
        "{:?}",
        started.elapsed()
    );
    drop(idle);
    // Their slots are free again.
    assert!(wait_until(Duration::from_secs(5), || {
        raw_exchange(admin, full, Duration::from_secs(2))
            .0
            .starts_with("HTTP/1.1 200")
    }));
}

#[test]
fn without_a_token_only_requests_addressed_to_a_loopback_name_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config(""));
    // A page of a rebinding domain (its name now resolving to 127.0.0.1) sends its own name.
    for host in [
        "evil.example",
        "evil.example:9464",
        "localhost.evil.example",
        "127.0.0.1.evil.example",
        "10.0.0.1:9464",
    ] {
        for path in [
            "/api/v1/events",
            "/status",
            "/",
            "/events",
            "/login?next=%2F",
        ] {
            let r = call("GET", &gw.admin_url(path), &[("Host", host)], None);
            assert_eq!(r.status, 403, "{host} {path}: {}", r.body);
            assert!(
                r.body.contains("not a loopback"),
                "{host} {path}: {}",
                r.body
            );
        }
        // Same-origin for the browser (Origin == Host) is not enough.
        let origin = format!("http://{host}");
        let r = call(
            "POST",
            &gw.admin_url("/api/v1/replay"),
            &[
                ("Host", host),
                ("Origin", origin.as_str()),
                ("Content-Type", "application/json"),
            ],
            Some(&json!({"dead_letters": true}).to_string()),
        );
        assert_eq!(r.status, 403, "{host}: {}", r.body);
        // Probes stay open.
        for path in ["/healthz", "/readyz", "/metrics"] {
            let r = call("GET", &gw.admin_url(path), &[("Host", host)], None);
            assert_eq!(r.status, 200, "{host} {path}: {}", r.body);
        }
    }
    for host in [
        "localhost",
        "LocalHost:9464",
        "127.0.0.1",
        "127.0.0.1:9464",
        "127.1.2.3:80",
        "[::1]",
        "[::1]:9464",
    ] {
        let r = call(
            "GET",
            &gw.admin_url("/api/v1/events"),
            &[("Host", host)],
            None,
        );
        assert_eq!(r.status, 200, "{host}: {}", r.body);
    }

    // `next` after the login (open here: at once) stays on this site.
    for (next, to) in [
        ("%2Fevents%3Fstate%3Ddead", "/events?state=dead"),
        ("%2F%5Cevil.example%2Fx", "/"),
        ("%2F%09%2Fevil.example", "/"),
        ("%2F%2Fevil.example", "/"),
        ("%5C%5Cevil.example", "/"),
        ("https%3A%2F%2Fevil.example", "/"),
        ("%2Fa%5Cb", "/"),
    ] {
        let r = get(&gw, &format!("/login?next={next}"));
        assert_eq!(r.status, 303, "{next}");
        assert_eq!(r.header("location"), Some(to), "{next}");
    }
}

const TOKEN_A: &str = "rotated-admin-token-aaaaaaaaaaaa";
const TOKEN_B: &str = "rotated-admin-token-bbbbbbbbbbbb";
/// Long enough, but with a letter no `Authorization` header carries as text (at byte 9).
const TOKEN_NON_ASCII: &str = "rotated-ädmin-token-0123456789";

#[test]
fn a_reload_changes_the_admin_token_and_ends_the_sessions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    let with_token = |t: &str| config(&format!("token = \"{t}\""));
    let gw = TestGateway::spawn(dir.path(), &with_token(TOKEN_A));
    let bearer = |t: &str| format!("Bearer {t}");
    let events = |auth: &str, host: Option<&str>| {
        let mut h = vec![("Authorization", auth)];
        if let Some(host) = host {
            h.push(("Host", host));
        }
        call("GET", &gw.admin_url("/api/v1/events"), &h, None).status
    };
    assert_eq!(events(&bearer(TOKEN_A), None), 200);
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let r = call(
        "POST",
        &gw.admin_url("/login?next=%2F%5Cevil.example%2Fx"),
        &form,
        Some(&format!("token={TOKEN_A}")),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("/"), "next stays on this site");
    let session = r
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("a cookie")
        .to_owned();
    let with_cookie = [("Cookie", session.as_str())];
    assert_eq!(
        call("GET", &gw.admin_url("/api/v1/events"), &with_cookie, None).status,
        200
    );

    // Rotate: the old token and the sessions made with it stop working, the new one works.
    std::fs::write(&path, with_token(TOKEN_B)).expect("write");
    let r = call(
        "POST",
        &gw.admin_url("/api/v1/reload"),
        &[
            ("Authorization", &bearer(TOKEN_A)),
            ("Content-Type", "application/json"),
        ],
        Some("{}"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(events(&bearer(TOKEN_A), None), 401);
    assert_eq!(events(&bearer(TOKEN_B), None), 200);
    assert_eq!(
        call("GET", &gw.admin_url("/api/v1/events"), &with_cookie, None).status,
        401,
        "sessions end with the token they were made with"
    );
    // With a token, the Host is not checked.
    assert_eq!(events(&bearer(TOKEN_B), Some("gateway.internal")), 200);

    // A token no `Authorization` header can carry is refused by a reload as by `check`, and
    // never shown: the one in use stays.
    std::fs::write(&path, with_token(TOKEN_NON_ASCII)).expect("write");
    let r = call(
        "POST",
        &gw.admin_url("/api/v1/reload"),
        &[
            ("Authorization", &bearer(TOKEN_B)),
            ("Content-Type", "application/json"),
        ],
        Some("{}"),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body
            .contains("admin.token: holds a character that is not printable ASCII (byte 9 "),
        "{}",
        r.body
    );
    assert!(!r.body.contains("0123456789"), "{}", r.body);
    assert_eq!(events(&bearer(TOKEN_B), None), 200);

    // Removed (a loopback listener): open again, to loopback names only.
    std::fs::write(&path, config("")).expect("write");
    gw.signal("HUP");
    assert!(wait_until(Duration::from_secs(10), || get(
        &gw,
        "/api/v1/events"
    )
    .status
        == 200));
    assert_eq!(events("", Some("gateway.internal")), 403);

    // Set again, by the API's reload (open until it answers).
    std::fs::write(&path, with_token(TOKEN_A)).expect("write");
    let r = post_json(&gw, "/api/v1/reload", json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(get(&gw, "/api/v1/events").status, 401);
    assert_eq!(events(&bearer(TOKEN_A), None), 200);
    let log = gw.log();
    for t in [TOKEN_A, TOKEN_B, TOKEN_NON_ASCII] {
        assert!(!log.contains(t), "a token in the log");
    }
}

/// `/readyz` is unauthenticated: however often it is probed, it adds at most one store write a
/// second (a write that succeeded within the last second answers for the store). It used to
/// make one per probe.
#[test]
fn readiness_probes_add_at_most_one_store_write_a_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config(""));
    let commits = || {
        let text = gateway_e2e::harness::get(&gw.admin_url("/metrics"))
            .expect("metrics")
            .body;
        gateway_e2e::harness::metric(&text, "gateway_store_commit_batch_size_count")
    };
    let before = commits();
    let started = std::time::Instant::now();
    for _ in 0..40 {
        let r = gateway_e2e::harness::get(&gw.admin_url("/readyz")).expect("readyz");
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let seconds = started.elapsed().as_secs_f64().ceil();
    let added = commits() - before;
    assert!(
        added <= seconds + 1.0,
        "{added} store commits for 40 probes in {seconds} s"
    );
}

/// One client holds at most 16 of the 64 admin connections: opening 64 idle ones (what used to
/// take every slot) leaves it 16, its next is closed at once, and another client (a load
/// balancer probing `/readyz`) is still answered.
#[test]
fn one_client_cannot_take_every_admin_connection() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config(""));
    let admin = gw.admin.expect("admin");
    let partial: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    let idle: Vec<std::net::TcpStream> = (0..64)
        .map(|_| {
            let mut s = connect_from([127, 0, 0, 7], admin);
            // Past its 16, the server may have closed it already.
            let _ = s.write_all(partial);
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let probe = b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let started = std::time::Instant::now();
    let mut seventeenth = connect_from([127, 0, 0, 7], admin);
    let _ = seventeenth.write_all(probe);
    let (answer, closed, _) = read_until_closed(&mut seventeenth, started, Duration::from_secs(5));
    assert!(
        closed && !answer.contains("200"),
        "a 17th connection of one client: {answer:?} (closed: {closed})"
    );
    let started = std::time::Instant::now();
    let mut other = connect_from([127, 0, 0, 8], admin);
    other.write_all(probe).expect("write");
    let (answer, _, _) = read_until_closed(&mut other, started, Duration::from_secs(5));
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "another client: {answer:?}"
    );
    drop(idle);
}

/// A token given as `${file:...}` is read again by each reload: rotating a secret means writing
/// the file and reloading (a `${VAR}` keeps the value the process started with).
#[test]
fn a_reload_reads_a_token_file_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("admin_token");
    std::fs::write(&secret, format!("{TOKEN_A}\n")).expect("write");
    let gw = TestGateway::spawn(
        dir.path(),
        &config(&format!("token = \"${{file:{}}}\"", secret.display())),
    );
    let events = |t: &str| {
        let auth = format!("Bearer {t}");
        call(
            "GET",
            &gw.admin_url("/api/v1/events"),
            &[("Authorization", auth.as_str())],
            None,
        )
        .status
    };
    assert_eq!(events(TOKEN_A), 200);
    std::fs::write(&secret, format!("{TOKEN_B}\n")).expect("rotate");
    gw.signal("HUP");
    // Waited for without a token: each wrong one counts toward the login throttle.
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .log()
            .contains("config reloaded")),
        "{}",
        gw.log()
    );
    assert_eq!(events(TOKEN_B), 200);
    assert_eq!(events(TOKEN_A), 401);
}

/// Regression: clients that pipeline requests and read none of the answers held their
/// connections for good (nothing bounded a response write), so four of them took all 64
/// slots and `/readyz` went unanswered for as long as they liked. A connection whose client
/// reads nothing for 10 s is closed now: a probe from another client is answered soon after.
#[test]
fn clients_that_never_read_their_answers_cannot_keep_readiness_unanswered() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config(""));
    let admin = gw.admin.expect("admin");
    // Far more answers than the socket buffers hold (each `/metrics` is kilobytes).
    let requests = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".repeat(5_000);
    let stuck: Vec<std::net::TcpStream> = (1..=4u8)
        .flat_map(|client| (0..16).map(move |_| client))
        .map(|client| {
            use socket2::{Domain, Socket, Type};
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
            s.set_recv_buffer_size(4096)
                .expect("a small receive buffer");
            // A small segment size too: Linux sizes the server's send buffer from it (some 20
            // segments), so tens of kilobytes of answers fill it, not the ~3 MB of loopback's
            // 64 KiB segments: rendering that much `/metrics` for all 64 connections took a
            // loaded machine longer than the wait below on top of the 10 s stall limit.
            s.set_tcp_mss(536).expect("a small segment size");
            s.bind(&std::net::SocketAddr::from(([127, 0, 0, client], 0)).into())
                .expect("bind a loopback source address");
            s.connect(&admin.into()).expect("connect");
            let mut s: std::net::TcpStream = s.into();
            // What fits now: the server reads the rest as it answers (it cannot).
            s.set_nonblocking(true).expect("nonblocking");
            let _ = s.write(requests.as_bytes());
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let probe = b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let started = std::time::Instant::now();
    let answered = wait_until(Duration::from_secs(25), || {
        let mut s = connect_from([127, 0, 0, 9], admin);
        let _ = s.write_all(probe);
        let (answer, _, _) =
            read_until_closed(&mut s, std::time::Instant::now(), Duration::from_secs(2));
        answer.starts_with("HTTP/1.1 200")
    });
    assert!(
        answered,
        "/readyz unanswered for {:?} while 64 connections read nothing\n{}",
        started.elapsed(),
        gw.log()
    );
    drop(stuck);
}
