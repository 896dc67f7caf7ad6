//! A PostgreSQL store on the server's Unix socket (`[store] url` naming the socket's folder, as
//! a local install with peer or trust auth over /run/postgresql does): no TLS is tried there,
//! whatever the `sslmode` (libpq ignores it for a socket too), and `check`, `run`, the readiness
//! probe, the operator commands and the cancel request of a commit given up on all connect. A host list mixing a socket and a TCP host keeps
//! TLS for the TCP host; `sslmode=require` in such a list is refused (the driver takes one
//! `sslmode` for every host, and the socket could never meet it), and so is `sslmode=require`
//! towards a `hostaddr` beside a socket folder (reached over TCP, as libpq does, with no name
//! for TLS to check the certificate against).

use std::path::Path;
use std::time::Duration;

use gateway_e2e::harness::{get, run_cli_with_env, wait_until, Lark};
use gateway_e2e::pgkit::PgCluster;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

#[path = "replicas_kit.rs"]
mod kit;
use kit::{calls, events, replica_config, replicas, send, spawn};

/// How the gateway's own connections reach the server, as `pg_stat_activity` and `pg_stat_ssl`
/// see them: `(connections, over the socket, with TLS)`.
fn transports(pg: &PgCluster, db: &str) -> (usize, usize, usize) {
    let row = pg.sql(
        db,
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE a.client_port = -1),
                COUNT(*) FILTER (WHERE s.ssl)
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
         WHERE a.application_name = 'lark-gateway'",
    );
    let n: Vec<usize> = row
        .split('|')
        .map(|v| v.parse().unwrap_or_else(|e| panic!("{row:?}: {e}")))
        .collect();
    (n[0], n[1], n[2])
}

/// `gateway check` on `config` with `${PG_URL}` = `url`: (exit code, stdout, stderr).
fn check(dir: &Path, config: &str, url: &str) -> (i32, String, String) {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, config).expect("write gateway.toml");
    run_cli_with_env(&path, &["check"], &[("PG_URL", url)])
}

#[test]
fn a_store_on_the_unix_socket_stores_delivers_and_serves_the_cli() {
    let pg = PgCluster::start();
    pg.create_database("sock");
    let url = pg.socket_url("sock");
    let checks = tempfile::tempdir().expect("tmp");
    let config = replica_config("30s", r#"mode = "ok""#);

    // Every spelling of a socket host, every sslmode: `check` connects (and changes nothing).
    let encoded_dir = url
        .trim_start_matches("postgres://gateway@")
        .split(':')
        .next()
        .expect("host");
    let forms = [
        url.clone(),
        format!("{url}?sslmode=disable"),
        format!("{url}?sslmode=require"),
        format!(
            "postgres://gateway@/sock?host={encoded_dir}&port={}&sslmode=require",
            pg.port()
        ),
    ];
    for form in &forms {
        let (code, out, err) = check(checks.path(), &config, form);
        assert_eq!(code, 0, "{form}:\n{out}{err}");
        assert!(out.contains("database reachable; empty"), "{form}:\n{out}");
    }

    // A hostaddr beside the socket folder is reached over TCP (the folder set aside, as libpq
    // does), with no host name: `require` could never connect there (TLS needs a name to check
    // the certificate against) and is refused at `store.url`, in each spelling, with the fix.
    let port = pg.port();
    let dir = pg.socket_dir().to_str().expect("utf-8").to_owned();
    for form in [
        format!(
            "postgres://gateway@/sock?host={dir}&hostaddr=127.0.0.1&port={port}&sslmode=require"
        ),
        format!("postgres://gateway@{encoded_dir}:{port}/sock?hostaddr=127.0.0.1&sslmode=require"),
        format!("postgres://gateway@:{port}/sock?hostaddr=127.0.0.1&sslmode=require"),
    ] {
        let (code, out, err) = check(checks.path(), &config, &form);
        assert_eq!(code, 2, "{form}:\n{out}{err}");
        assert!(
            err.contains("store.url")
                && err.contains("sslmode=require cannot be met at hostaddr 127.0.0.1")
                && err.contains("set host to the name on the server's certificate"),
            "{form}:\n{err}"
        );
    }
    // Under `prefer` (the default) it connects, over TCP, in plain text to this server (which
    // offers no TLS), and `check` says so.
    let (code, out, err) = check(
        checks.path(),
        &config,
        &format!("postgres://gateway@/sock?host={dir}&hostaddr=127.0.0.1&port={port}"),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("hostaddr 127.0.0.1 (given for the Unix-socket folder")
            && out.contains("over TCP, without a host name")
            && out.contains("database reachable; empty")
            && !out.contains("Unix socket"),
        "{out}"
    );

    // `run` on it: events are stored, delivered, and seen by the operator commands.
    let (dirs, gws, urls) = replicas(1, &config, &url);
    let (dir, gw) = (dirs[0].path(), &gws[0]);
    let refused = send(&events("sock", 3), urls, |_| vec![0]);
    assert_eq!(refused, 0, "no 503 while the database is up");
    assert!(
        wait_until(Duration::from_secs(20), || calls(&[dir]).len() == 3),
        "not delivered: {:?}\n{}",
        calls(&[dir]),
        gw.log()
    );
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .delivery("sock-00000", "audit")["state"]
            == "done"),
        "the delivery was not recorded done: {}",
        gw.delivery("sock-00000", "audit")
    );
    let (code, out, err) = gw.cli(&["events", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sock-00002"), "{out}");
    let (code, out, err) = gw.cli(&["store", "check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("is sound"), "{out}");
    // The readiness probe writes through the same pool.
    let ready = get(&gw.admin_url("/readyz")).expect("GET /readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);

    // Each of the gateway's connections is on the socket, none with TLS.
    let (all, socket, tls) = transports(&pg, "sock");
    assert!(all > 0, "no connection of the gateway's is open");
    assert_eq!((socket, tls), (all, 0), "connections over TCP or with TLS");

    // A commit given up on (503 after its 2.5 s) is cancelled on the server, the cancel request
    // dialled on the socket too: the insert stops waiting for the lock the test holds.
    let mut holder = postgres::Client::connect(
        &format!("host=127.0.0.1 port={} user=gateway dbname=sock", pg.port()),
        postgres::NoTls,
    )
    .expect("the test's connection");
    holder
        .batch_execute("BEGIN; LOCK TABLE events IN SHARE MODE")
        .expect("lock events");
    let lark = Lark::encrypted("tok", "key");
    let (id, plaintext) = &events("held", 1)[0];
    let answer = lark.send(&gw.url("/hook"), plaintext);
    assert_eq!(answer.status, 503, "{id}: {}", answer.body);
    let waiting = || {
        pg.sql(
            "sock",
            "SELECT COUNT(*) FROM pg_stat_activity
             WHERE application_name = 'lark-gateway' AND wait_event_type = 'Lock'",
        )
    };
    assert!(
        wait_until(Duration::from_secs(10), || waiting() == "0"),
        "the gateway's insert still waits for the lock: {} waiting\n{}",
        waiting(),
        gw.log()
    );
    holder.batch_execute("ROLLBACK").expect("unlock events");
    let answer = lark.send(&gw.url("/hook"), plaintext);
    assert_eq!(answer.status, 200, "{id}: {}", answer.body);
}

#[test]
fn a_host_list_keeps_tls_for_its_tcp_host_and_refuses_require_beside_a_socket() {
    let pg = PgCluster::start();
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "gateway e2e PostgreSQL CA");
    let ca = ca.self_signed(&ca_key).expect("CA cert");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).expect("leaf params");
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf = leaf.signed_by(&leaf_key, &ca, &ca_key).expect("sign leaf");
    pg.enable_tls(&leaf.pem(), &leaf_key.serialize_pem());
    pg.create_database("mixed");

    let checks = tempfile::tempdir().expect("tmp");
    let ca_file = checks.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write ca.pem");
    let config = replica_config("30s", r#"mode = "ok""#).replace(
        "[store]\n",
        &format!(
            "[store]\nca_file = {:?}\n",
            ca_file.to_str().expect("utf-8")
        ),
    );
    let port = pg.port();
    // A socket folder where no server listens, then the TCP host.
    let gone = pg.socket_dir().join("gone");
    let gone = gone.to_str().expect("utf-8").replace('/', "%2F");
    let mixed = format!("postgres://gateway@{gone}:{port},localhost:{port}/mixed");

    // `require` beside a socket is refused, saying where and why.
    let (code, out, err) = check(checks.path(), &config, &format!("{mixed}?sslmode=require"));
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("store.url") && err.contains("sslmode=require") && err.contains("socket"),
        "{err}"
    );
    // `require` to the TCP host alone checks the certificate against `ca_file` and the name.
    let tcp = format!("postgres://gateway@localhost:{port}/mixed?sslmode=require");
    let (code, out, err) = check(checks.path(), &config, &tcp);
    assert_eq!(code, 0, "{out}{err}");
    // A socket alone on this TLS server: `require` is ignored there, as libpq does.
    let socket = format!("{}?sslmode=require", pg.socket_url("mixed"));
    let (code, out, err) = check(checks.path(), &config, &socket);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("no TLS"), "{out}");
    // A hostaddr with the name on the certificate as its host: TLS, checked against that name.
    let named =
        format!("postgres://gateway@localhost:{port}/mixed?hostaddr=127.0.0.1&sslmode=require");
    let (code, out, err) = check(checks.path(), &config, &named);
    assert_eq!(code, 0, "{out}{err}");
    // A hostaddr beside a socket folder has no name: under `prefer` this server's offer of TLS
    // is given up on (there is nothing to check its certificate against), so `check` fails
    // connecting; `disable` connects in plain text.
    let dir = pg.socket_dir().to_str().expect("utf-8").to_owned();
    let nameless = format!("postgres://gateway@/mixed?host={dir}&hostaddr=127.0.0.1&port={port}");
    let (code, out, err) = check(checks.path(), &config, &nameless);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("store.url") && err.contains("no hostname provided for TLS handshake"),
        "{err}"
    );
    let (code, out, err) = check(
        checks.path(),
        &config,
        &format!("{nameless}&sslmode=disable"),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("plain text (sslmode=disable)"), "{out}");

    // The mixed list (default `prefer`): the dead socket is passed over and the TCP host is
    // reached with TLS.
    let (dirs, gws, urls) = replicas(1, &config, &mixed);
    let dir = dirs[0].path();
    assert_eq!(send(&events("mixed", 3), urls, |_| vec![0]), 0, "503s");
    assert!(
        wait_until(Duration::from_secs(20), || calls(&[dir]).len() == 3),
        "not delivered: {:?}\n{}",
        calls(&[dir]),
        gws[0].log()
    );
    // (A `check` above may still be leaving: wait for its backend to go.)
    assert!(
        wait_until(Duration::from_secs(10), || {
            let (all, socket, tls) = transports(&pg, "mixed");
            all > 0 && socket == 0 && tls == all
        }),
        "not every connection is TCP with TLS: {:?}",
        transports(&pg, "mixed")
    );
    drop(gws);
    // For contrast: with the live socket first, the same server is reached there, in plain.
    let live = pg.socket_url("mixed");
    let (live_host, _) = live.rsplit_once('/').expect("a database");
    let gw = spawn(dir, &config, &format!("{live_host},localhost:{port}/mixed"));
    assert!(
        wait_until(Duration::from_secs(10), || {
            let (all, socket, tls) = transports(&pg, "mixed");
            all > 0 && socket == all && tls == 0
        }),
        "the socket host was not used: {:?}\n{}",
        transports(&pg, "mixed"),
        gw.log()
    );
}
