//! The payout ledger on the server's Unix socket (`ledger` naming the socket's folder, as a local
//! install over /run/postgresql does): the real gateway with the real `libpayout.so` records a
//! payout there, without TLS whatever the `sslmode` (libpq ignores it on a socket), and
//! `payout-report` reads it back by the same URL. `sslmode=require` beside a socket in a host
//! list, or towards a `hostaddr` beside a socket folder (TCP, with no name for TLS to check), is
//! refused at init, saying why, as the gateway's own `[store] url` is.

use std::path::Path;
use std::time::Duration;

use gateway_e2e::harness::{run_cli_with_env, wait_until, Lark};
use gateway_e2e::pgkit::PgCluster;

use super::lark_api::LarkApi;
use super::{config, gateway, report_list, ENCRYPT_KEY, T0, TOKEN};

/// `gateway check` with the ledger at `url`: (exit code, stdout, stderr).
fn check(dir: &Path, url: &str) -> (i32, String, String) {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, config("http://127.0.0.1:9", url)).expect("write gateway.toml");
    run_cli_with_env(&path, &["check"], &[("PAYOUT_APP_SECRET", "secret_test")])
}

#[test]
fn a_ledger_on_the_unix_socket_records_a_payout_whatever_the_sslmode() {
    let pg = PgCluster::start();
    pg.create_database("sock");
    let url = pg.socket_url("sock");
    let checks = tempfile::tempdir().expect("tempdir");

    // Init (here through `gateway check`) connects and migrates under every sslmode.
    for form in [
        url.clone(),
        format!("{url}?sslmode=disable"),
        format!("{url}?sslmode=require"),
    ] {
        let (code, out, err) = check(checks.path(), &form);
        assert_eq!(code, 0, "{form}:\n{out}{err}");
    }
    // A socket where no server listens, then the TCP host: `prefer` passes over the socket;
    // `require` is refused before anything is dialled, naming the socket.
    let gone = pg.socket_dir().join("gone");
    let gone = gone.to_str().expect("utf-8").replace('/', "%2F");
    let port = pg.port();
    let mixed = format!("postgres://gateway@{gone}:{port},127.0.0.1:{port}/sock");
    let (code, out, err) = check(checks.path(), &mixed);
    assert_eq!(code, 0, "{mixed}:\n{out}{err}");
    let (code, out, err) = check(checks.path(), &format!("{mixed}?sslmode=require"));
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("sslmode=require") && err.contains("/gone") && err.contains("socket"),
        "{err}"
    );
    // A hostaddr beside the socket folder is reached over TCP, with no name for TLS to check:
    // `require` is refused before anything is dialled, saying how to fix it.
    let dir = pg.socket_dir().to_str().expect("utf-8").to_owned();
    let nameless = format!(
        "postgres://gateway@/sock?host={dir}&hostaddr=127.0.0.1&port={port}&sslmode=require"
    );
    let (code, out, err) = check(checks.path(), &nameless);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("sslmode=require cannot be met at hostaddr 127.0.0.1")
            && err.contains("set host to the name on the server's certificate"),
        "{err}"
    );

    // `run`: an event makes one withdraw call, recorded in the ledger on the socket.
    let api = LarkApi::start();
    let account = "acct-socket";
    api.set_balance(account, 100, &[("CNY", "0.30")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = gateway(dir.path(), &api, &url);
    let lark = Lark::encrypted(TOKEN, ENCRYPT_KEY);
    let body = lark.assets_update(
        "ev-socket",
        account,
        100,
        r#"[{"currency_type":"CNY","amount":0.30}]"#,
        T0,
    );
    let answer = lark.send(&gw.url("/hook"), &body);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let recorded = || {
        pg.sql(
            "sock",
            "SELECT status, points FROM payout_ledger WHERE delivery_id LIKE 'ev-socket%'",
        )
    };
    assert!(
        wait_until(Duration::from_secs(20), || recorded() == "withdrawn|100"),
        "not recorded: {:?}\n{}",
        recorded(),
        gw.log()
    );
    assert_eq!(api.withdraw_calls().len(), 1, "one withdraw call");

    // The plugin's connection is on the socket, without TLS.
    let transport = pg.sql(
        "sock",
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE a.client_port = -1),
                COUNT(*) FILTER (WHERE s.ssl)
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
         WHERE a.application_name = 'gateway-payout'",
    );
    assert_eq!(transport, "1|1|0", "(connections, on the socket, with TLS)");

    // `payout-report` reads it by the socket URL, `require` ignored there too.
    let listed = report_list(&format!("{url}?sslmode=require"));
    assert!(listed.contains("withdrawals: 1\n"), "{listed}");
    assert!(listed.contains("total CNY: 0.30\n"), "{listed}");
}
