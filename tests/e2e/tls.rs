//! Native TLS on the webhook listener (`[server] tls`), end to end: a CA made here (rcgen) signs
//! the gateway's certificate; the client trusts only that CA. An encrypted, signed event is
//! stored and delivered over HTTPS (TLS 1.2 and 1.3); plain HTTP on the TLS port is refused
//! and the gateway keeps serving; a renewal written on disk is served without a restart, a
//! broken one is refused (the previous certificate stays, with a log line), SIGHUP reloads at
//! once; `gateway check` reports an expired, an expiring and a mismatched pair.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gateway_e2e::harness::{
    base_config, binaries, get, metric, post, read_jsonl, run_cli, wait_until, Lark, TestGateway,
};
use rcgen::{
    date_time_ymd, BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair,
    SerialNumber,
};
use rustls::pki_types::{CertificateDer, ServerName};

const TOKEN: &str = "tls-token";
const KEY: &str = "tls-encrypt-key";
const ASSETS: &str = "hire.referral_account.assets_update_v1";
const DAY: i64 = 86_400;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A test CA and the leaf certificates it signs.
struct Ca {
    cert: Certificate,
    key: KeyPair,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "gateway e2e test CA");
        Ca {
            cert: p.self_signed(&key).expect("CA cert"),
            key,
        }
    }

    /// A leaf for `localhost` and 127.0.0.1, valid from `from` to `until` seconds from now.
    fn leaf(&self, serial: u64, from: i64, until: i64) -> (Certificate, KeyPair) {
        let key = KeyPair::generate().expect("leaf key");
        let mut p = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("leaf params");
        p.distinguished_name.push(DnType::CommonName, "localhost");
        p.serial_number = Some(SerialNumber::from(serial));
        let at =
            |offset: i64| date_time_ymd(1970, 1, 1) + Duration::from_secs((now() + offset) as u64);
        p.not_before = at(from);
        p.not_after = at(until);
        let cert = p.signed_by(&key, &self.cert, &self.key).expect("sign leaf");
        (cert, key)
    }

    /// A client that trusts this CA only, with the given protocol versions.
    fn client(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).expect("add CA");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Arc::new(config)
    }
}

/// Writes the pair as certbot lays it out: `fullchain.pem` (leaf, then the CA) and
/// `privkey.pem`, each replaced by a rename (a reader never sees half a file).
fn install(dir: &Path, cert: &Certificate, key: &KeyPair, ca: &Ca) {
    write_atomic(
        &dir.join("fullchain.pem"),
        &format!("{}{}", cert.pem(), ca.cert.pem()),
    );
    write_atomic(&dir.join("privkey.pem"), &key.serialize_pem());
}

fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn config() -> String {
    format!(
        r#"{base}
[[apps]]
name = "hire"
path = "/hook"
verification_token = "{TOKEN}"
encrypt_key = "{KEY}"

[[plugins]]
name = "audit"
library = "{logger}"
config = {{ path = "data/audit.jsonl", fsync = "never" }}

[[routes]]
events = ["{ASSETS}"]
plugins = ["audit"]
"#,
        base = base_config().replace(
            "[server]\n",
            "[server]\ntls = { cert = \"fullchain.pem\", key = \"privkey.pem\" }\n",
        ),
        logger = binaries().logger.display(),
    )
}

/// An HTTPS client for `https://localhost:PORT` that reaches the gateway's address.
fn agent(client: Arc<rustls::ClientConfig>, addr: SocketAddr) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .tls_config(client)
        .resolver(move |_: &str| Ok(vec![addr]))
        .timeout(Duration::from_secs(10))
        .build()
}

/// POSTs an encrypted, signed assets_update over HTTPS; returns (status, body).
fn send_event(agent: &ureq::Agent, addr: SocketAddr, id: &str) -> (u16, String) {
    let lark = Lark::encrypted(TOKEN, KEY);
    let (body, headers) =
        lark.wrap(&lark.assets_update(id, "acct-1", 10, "\"12.50\"", 1_700_000_000_000));
    let mut req = agent.post(&format!("https://localhost:{}/hook", addr.port()));
    for (k, v) in &headers {
        req = req.set(k, v);
    }
    match req.send_string(&body) {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
        Err(e) => panic!("HTTPS POST: {e}"),
    }
}

/// The certificate the gateway presents now (a fresh handshake; the chain is verified against
/// the test CA), as DER.
fn served(client: &Arc<rustls::ClientConfig>, addr: SocketAddr) -> Result<Vec<u8>, String> {
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let mut conn =
        rustls::ClientConnection::new(client.clone(), name).map_err(|e| e.to_string())?;
    let mut sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
    }
    let chain = conn.peer_certificates().ok_or("no certificate")?;
    Ok(chain[0].as_ref().to_vec())
}

fn der(cert: &Certificate) -> Vec<u8> {
    let d: &CertificateDer<'static> = cert.der();
    d.as_ref().to_vec()
}

fn start(ca: &Ca) -> (tempfile::TempDir, TestGateway, Certificate) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = ca.leaf(0x1001, -DAY, 90 * DAY);
    install(dir.path(), &cert, &key, ca);
    let gw = TestGateway::spawn(dir.path(), &config());
    (dir, gw, cert)
}

#[test]
fn an_encrypted_event_is_stored_and_delivered_over_https() {
    let ca = Ca::new();
    let (dir, gw, cert) = start(&ca);
    assert!(
        gw.log().contains("gateway listening on https://"),
        "{}",
        gw.log()
    );
    for (n, versions) in [
        ("tls13", &[&rustls::version::TLS13][..]),
        ("tls12", &[&rustls::version::TLS12][..]),
    ] {
        let client = ca.client(versions);
        assert_eq!(served(&client, gw.addr).expect("handshake"), der(&cert));
        let agent = agent(client, gw.addr);
        let id = format!("over-{n}");
        let (status, body) = send_event(&agent, gw.addr, &id);
        assert_eq!((status, body.as_str()), (200, r#"{"msg":"success"}"#));
        // Lark's retry of the same event: 200, stored once.
        assert_eq!(send_event(&agent, gw.addr, &id).0, 200);
    }
    let audit = dir.path().join("data/audit.jsonl");
    assert!(
        wait_until(Duration::from_secs(10), || read_jsonl(&audit).len() == 2),
        "both events delivered once: {:?}\n{}",
        read_jsonl(&audit),
        gw.log()
    );
    let lines = read_jsonl(&audit);
    assert_eq!(lines[0]["event_id"], "over-tls13");
    assert_eq!(
        lines[0]["event"]["event"]["assets"]["confirmed_bonus"]["cash_bonus"],
        "12.50"
    );

    // The expiry metric says when the served certificate ends (notAfter, to the second).
    let text = get(&gw.admin_url("/metrics")).expect("metrics").body;
    let expiry = metric(
        &text,
        "gateway_tls_certificate_expiry_timestamp_seconds{listener=\"webhook\"}",
    );
    assert!(
        (expiry - (now() + 90 * DAY) as f64).abs() < 120.0,
        "expiry {expiry}\n{text}"
    );
}

/// A client speaking plain HTTP to the TLS port gets a 400 naming https:// (and binary noise is
/// closed); each is counted, and the gateway goes on serving HTTPS.
#[test]
fn plain_http_to_the_tls_port_is_refused_and_the_gateway_keeps_serving() {
    let ca = Ca::new();
    let (_dir, gw, _) = start(&ca);
    let lark = Lark::encrypted(TOKEN, KEY);
    let plaintext = lark.assets_update("plain-1", "acct", 1, "\"1.00\"", 1_700_000_000_000);
    let (body, headers) = lark.wrap(&plaintext);
    match post(&format!("http://{}/hook", gw.addr), &headers, &body) {
        Ok(a) => {
            assert_eq!(a.status, 400, "{}", a.body);
            assert!(a.body.contains("https://"), "{}", a.body);
        }
        // A reset before the answer was read is a refusal too.
        Err(e) => eprintln!("plain HTTP refused at the transport: {e}"),
    }
    // Not TLS, not HTTP: closed without an answer.
    let mut s = TcpStream::connect(gw.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = s.write_all(&[0x00, 0xff, 0x13, 0x37]);
    let mut buf = [0u8; 64];
    assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
    // A TLS client that gives up mid-handshake.
    let mut s = TcpStream::connect(gw.addr).expect("connect");
    let _ = s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0x01]);
    drop(s);

    let client = ca.client(rustls::DEFAULT_VERSIONS);
    let (status, _) = send_event(&agent(client, gw.addr), gw.addr, "after-plain");
    assert_eq!(status, 200, "still serving:\n{}", gw.log());
    let text = get(&gw.admin_url("/metrics")).expect("metrics").body;
    for reason in ["plaintext_http", "not_tls"] {
        let series = format!("gateway_tls_handshake_failures_total{{reason=\"{reason}\"}}");
        assert!(metric(&text, &series) >= 1.0, "{series}\n{text}");
    }
    assert!(get(&gw.admin_url("/healthz")).expect("healthz").status == 200);
}

/// certbot renews by writing new files: the gateway serves them within a few seconds, without a
/// restart. A broken renewal (garbage, or a key of another certificate) is refused with a log
/// line and the previous certificate stays; SIGHUP reloads at once.
#[test]
fn a_renewed_certificate_on_disk_is_served_and_a_broken_one_is_refused() {
    let ca = Ca::new();
    let (dir, mut gw, first) = start(&ca);
    let client = ca.client(rustls::DEFAULT_VERSIONS);
    assert_eq!(served(&client, gw.addr).expect("handshake"), der(&first));
    // Exported at 0 from the start: an alert on increase(...{result="refused"}) sees the
    // first refusal (a series first seen at 1 shows no increase).
    let text = get(&gw.admin_url("/metrics")).expect("metrics").body;
    for result in ["ok", "refused"] {
        let series = format!("gateway_tls_certificate_reloads_total{{result=\"{result}\"}} 0");
        assert!(text.lines().any(|l| l == series), "{series}:\n{text}");
    }

    let (second, second_key) = ca.leaf(0x1002, -DAY, 90 * DAY);
    install(dir.path(), &second, &second_key, &ca);
    assert!(
        wait_until(Duration::from_secs(15), || served(&client, gw.addr).ok()
            == Some(der(&second))),
        "the renewed certificate is served:\n{}",
        gw.log()
    );
    assert!(
        gw.log().contains("TLS certificate reloaded"),
        "{}",
        gw.log()
    );

    // A half-written renewal: refused, the second certificate stays.
    write_atomic(
        &dir.path().join("fullchain.pem"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n",
    );
    assert!(
        wait_until(Duration::from_secs(15), || gw.log().contains(
            "TLS certificate reload refused, still serving the previous certificate"
        )),
        "{}",
        gw.log()
    );
    assert_eq!(served(&client, gw.addr).expect("still TLS"), der(&second));
    assert_eq!(
        send_event(&agent(client.clone(), gw.addr), gw.addr, "during-broken").0,
        200
    );

    // A new certificate with the wrong key, then SIGHUP: refused at once, naming the mismatch.
    let (third, third_key) = ca.leaf(0x1003, -DAY, 90 * DAY);
    let (_, stray_key) = ca.leaf(0x1004, -DAY, 90 * DAY);
    install(dir.path(), &third, &stray_key, &ca);
    gw.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(15), || gw
            .log()
            .contains("does not belong to the certificate")),
        "{}",
        gw.log()
    );
    assert_eq!(served(&client, gw.addr).expect("still TLS"), der(&second));

    // The right key: served.
    write_atomic(&dir.path().join("privkey.pem"), &third_key.serialize_pem());
    gw.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(15), || served(&client, gw.addr).ok()
            == Some(der(&third))),
        "{}",
        gw.log()
    );
    // The admin API's reload is the same reload: it reads the pair again too (a mismatched
    // pair, so its refusal is logged whatever the file watcher did first).
    let (_, stray_again) = ca.leaf(0x1005, -DAY, 90 * DAY);
    write_atomic(
        &dir.path().join("privkey.pem"),
        &stray_again.serialize_pem(),
    );
    let answer = post(
        &gw.admin_url("/api/v1/reload"),
        &[("Content-Type".to_owned(), "application/json".to_owned())],
        "{}",
    )
    .expect("POST /api/v1/reload");
    assert_eq!(answer.status, 200, "{}", answer.body);
    // The answer says what was not applied.
    assert!(
        answer
            .body
            .contains("[server] tls: the certificate pair was refused; the previous one stays"),
        "{}",
        answer.body
    );
    assert!(
        wait_until(Duration::from_secs(15), || gw.log().lines().any(|l| l
            .contains("admin API")
            && l.contains("TLS certificate reload refused"))),
        "{}",
        gw.log()
    );
    let text = get(&gw.admin_url("/metrics")).expect("metrics").body;
    assert!(
        metric(
            &text,
            "gateway_tls_certificate_reloads_total{result=\"refused\"}"
        ) >= 2.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "gateway_tls_certificate_reloads_total{result=\"ok\"}"
        ) >= 2.0,
        "{text}"
    );
    gw.signal("TERM");
    assert_eq!(
        gw.wait(Duration::from_secs(20)).and_then(|s| s.code()),
        Some(0)
    );
}

/// `gateway check` shows the pair, reports an expired certificate and a mismatched key as
/// problems (exit 3) and one expiring within 14 days as a warning.
#[test]
fn check_reports_expired_expiring_and_mismatched_pairs() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config()).expect("write config");

    let (good, good_key) = ca.leaf(0xa1, -DAY, 60 * DAY);
    install(dir.path(), &good, &good_key, &ca);
    let (code, out, err) = run_cli(&path, &["check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("tls cert ") && out.contains("serial a1 "),
        "{out}"
    );
    assert!(
        out.contains("(in 59 days)") || out.contains("(in 60 days)"),
        "{out}"
    );
    assert!(out.contains("(https)"), "{out}");

    let (expired, expired_key) = ca.leaf(0xa2, -30 * DAY, -2 * DAY);
    install(dir.path(), &expired, &expired_key, &ca);
    let (code, out, err) = run_cli(&path, &["check"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("server.tls.cert:") && err.contains("expired at"),
        "{err}"
    );
    assert!(out.contains("days ago"), "{out}");

    let (soon, soon_key) = ca.leaf(0xa3, -80 * DAY, 5 * DAY);
    install(dir.path(), &soon, &soon_key, &ca);
    let (code, out, err) = run_cli(&path, &["check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("warning: server.tls.cert:"), "{out}");
    assert!(
        out.contains("expires in 4 days") || out.contains("expires in 5 days"),
        "{out}"
    );

    install(dir.path(), &good, &soon_key, &ca);
    let (code, out, err) = run_cli(&path, &["check"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains("does not belong to the certificate"), "{err}");

    std::fs::remove_file(dir.path().join("privkey.pem")).expect("rm");
    let (code, _, err) = run_cli(&path, &["check"]);
    assert_eq!(code, 3);
    assert!(err.contains("cannot read private key"), "{err}");
}

/// `[admin] tls`: the console, API and metrics over HTTPS (the login cookie is then `Secure`),
/// plain HTTP refused on that port too, the expiry metric per listener, `check` reports the pair.
#[test]
fn the_admin_listener_serves_https_with_its_own_pair() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = ca.leaf(0x2001, -DAY, 90 * DAY);
    install(dir.path(), &cert, &key, &ca);
    let admin_token = "admin-token-0123456789";
    let config = config().replace(
        "[admin]\n",
        &format!(
            "[admin]\ntoken = \"{admin_token}\"\ntls = {{ cert = \"fullchain.pem\", key = \"privkey.pem\" }}\n"
        ),
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, &config).expect("config");
    let (code, out, err) = run_cli(&path, &["check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("admin.tls cert ") && out.contains("serial 2001 "),
        "{out}"
    );
    let gw = TestGateway::spawn(dir.path(), &config);
    let admin = gw.admin.expect("admin listener");
    assert!(gw
        .log()
        .contains(&format!("admin listening on https://{admin}")));

    let https = ureq::AgentBuilder::new()
        .tls_config(ca.client(rustls::DEFAULT_VERSIONS))
        .resolver(move |_: &str| Ok(vec![admin]))
        .redirects(0)
        .timeout(Duration::from_secs(10))
        .build();
    let at = |p: &str| format!("https://localhost:{}{p}", admin.port());
    let health = https
        .get(&at("/healthz"))
        .call()
        .expect("healthz over https");
    assert_eq!(health.status(), 200);
    let metrics = https
        .get(&at("/metrics"))
        .call()
        .expect("metrics")
        .into_string()
        .expect("text");
    for listener in ["webhook", "admin"] {
        let series =
            format!("gateway_tls_certificate_expiry_timestamp_seconds{{listener=\"{listener}\"}}");
        assert!(
            metric(&metrics, &series) > now() as f64,
            "{series}\n{metrics}"
        );
    }
    // The API needs the token over HTTPS too; the login cookie is Secure.
    let refused = https.get(&at("/api/v1/events")).call();
    assert!(
        matches!(refused, Err(ureq::Error::Status(401, _))),
        "{refused:?}"
    );
    let login = match https
        .post(&at("/login"))
        .send_form(&[("token", admin_token), ("next", "/")])
    {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("login: {e}"),
    };
    assert_eq!(login.status(), 303);
    let cookie = login.header("set-cookie").unwrap_or_default().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.ends_with("; Secure"),
        "{cookie}"
    );
    // Plain HTTP to the admin port: 400 naming https://.
    match get(&format!("http://{admin}/healthz")) {
        Ok(a) => assert!(a.status == 400 && a.body.contains("https://"), "{}", a.body),
        Err(e) => eprintln!("plain HTTP refused at the transport: {e}"),
    }
}
