//! Two payout entries on one PostgreSQL ledger reached by two URLs (TCP and the Unix socket):
//! the second used to pass `check`, then skip every snapshot the first took as stale (its
//! withdrawals silently never made). The ledger is known by what it is once open (its
//! database, table and creation time), so `check` refuses the second, naming the first.

use gateway_e2e::harness::{base_config, binaries, run_cli_with_env};
use gateway_e2e::pgkit::PgCluster;

fn entry(name: &str, withdraw: &str, url: &str) -> String {
    format!(
        "[[plugins]]\nname = \"{name}\"\nlibrary = \"{}\"\nconfig = {{ base_url = \"http://127.0.0.1:9\", app_id = \"cli_test\", app_secret = \"${{PAYOUT_APP_SECRET}}\", ledger = \"{url}\", withdraw = [\"{withdraw}\"] }}\n",
        binaries().payout.display()
    )
}

#[test]
fn two_entries_on_one_database_by_two_urls_are_refused() {
    let pg = PgCluster::start();
    let tcp = pg.create_database("owners");
    let socket = pg.socket_url("owners");
    let other = pg.create_database("owners_other");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    let check = |second: &str| {
        let cfg = format!(
            "{}\n[[apps]]\nname = \"hire\"\npath = \"/hook\"\n\n{}\n{}",
            base_config(),
            entry("points", "points", &tcp),
            entry("cash", "cash", second)
        );
        std::fs::write(&path, cfg).expect("write");
        let (code, out, err) =
            run_cli_with_env(&path, &["check"], &[("PAYOUT_APP_SECRET", "secret_test")]);
        (code, format!("{out}{err}"))
    };
    // The Unix socket; and a session in another time zone (a role's setting, or `options`:
    // the identity once followed the session's rendering of a time).
    for second in [
        socket,
        format!("{tcp}?options=-c%20TimeZone%3DAsia%2FTokyo"),
    ] {
        let (code, out) = check(&second);
        assert_ne!(code, 0, "{second}: {out}");
        assert!(
            out.contains("the ledger is already used by the [[plugins]] entry `points`"),
            "{second}: {out}"
        );
    }
    // Another database is another ledger.
    let (code, out) = check(&other);
    assert_eq!(code, 0, "{out}");
}
