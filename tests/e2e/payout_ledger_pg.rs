//! The `payout` plugin's PostgreSQL ledger (issue 14: several gateway replicas on one database),
//! against a throwaway server ([`PgCluster`]): two `Ledger`s opened on one database URL stand for
//! two replicas.
//!
//! Covered: one balance snapshot admitted concurrently from both replicas under different
//! delivery ids → exactly one withdrawal intent, the others skipped as stale; one delivery id
//! admitted concurrently from both → one row, and only one replica holds its claim at a time;
//! results recorded on one replica are read exactly (integer points, exact decimal cash) on the
//! other and by a read-only report ledger; the ledger answers an error while the server is down
//! and works again once it is back, without being reopened; ledgers opening an empty database
//! at once apply the schema once; an unreachable database is an init error that names the URL
//! with its password hidden (also through the real `gateway check`); and the real thing: two
//! gateway processes with the real `libpayout.so` on one database, handed the same snapshot as
//! two events at once, make one withdraw call to the Lark stand-in, and `payout-report` lists it
//! from the database URL. `socket.rs`: the same plugin with its ledger on the Unix socket;
//! `clock.rs`: a row's time is read under its account's lock; `covered.rs`: the covered check's
//! listing and skip, and the migrations to schema versions 2 and 3; `keepalive.rs`: the server notices a ledger client that vanished within minutes.

#[path = "payout_ledger_pg/clock.rs"]
mod clock;
#[path = "payout_ledger_pg/covered.rs"]
mod covered;
#[path = "payout_ledger_pg/keepalive.rs"]
mod keepalive;
#[path = "../standins/lark_api.rs"]
mod lark_api;
#[path = "payout_ledger_pg/owners.rs"]
mod owners;
#[path = "payout_ledger_pg/socket.rs"]
mod socket;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use gateway_e2e::harness::{
    base_config, binaries, run_cli_with_env, wait_until, Lark, TestGateway,
};
use gateway_e2e::pgkit::PgCluster;
use gateway_e2e::{cargo_build, Profile};
use lark_api::LarkApi;
use lark_core::{AssetsUpdateV1, CashBonus, Money};
use payout::api::Withdrawal;
use payout::ledger::{Ledger, LedgerError, Plan, SkipReason, Status};

const T0: u64 = 1_700_000_000_000;

fn snapshot(account: &str, modify_time_ms: u64) -> AssetsUpdateV1 {
    AssetsUpdateV1 {
        account_id: account.to_owned(),
        points: 100,
        cash: Vec::new(),
        modify_time_ms,
    }
}

fn connect(url: &str) -> Ledger {
    Ledger::connect(url).unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

fn money(text: &str) -> Money {
    Money::from_json_literal(text).unwrap_or_else(|e| panic!("{text}: {e:?}"))
}

/// Admits `(ledger index, delivery id)` pairs all at once (one thread each, released together);
/// returns each result in the same order.
fn admit_at_once(
    replicas: &Arc<[Ledger; 2]>,
    jobs: &[(usize, String)],
    event: &AssetsUpdateV1,
) -> Vec<Result<payout::ledger::PayoutRow, LedgerError>> {
    let barrier = Arc::new(Barrier::new(jobs.len()));
    let handles: Vec<_> = jobs
        .iter()
        .cloned()
        .map(|(replica, delivery_id)| {
            let (replicas, barrier, event) =
                (Arc::clone(replicas), Arc::clone(&barrier), event.clone());
            thread::spawn(move || {
                let order_id = payout::external_order_id(&delivery_id);
                barrier.wait();
                replicas[replica].admit(
                    &delivery_id,
                    &order_id,
                    &event,
                    &Plan::Withdraw(vec![1, 2]),
                    || T0 + 5,
                )
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("admitting thread"))
        .collect()
}

#[test]
fn one_snapshot_from_two_replicas_admits_exactly_one_withdrawal() {
    let pg = PgCluster::start();
    let url = pg.create_database("snapshot");
    let replicas = Arc::new([connect(&url), connect(&url)]);
    const ROUNDS: usize = 12;
    const PER_REPLICA: usize = 4;
    for round in 0..ROUNDS {
        let account = format!("acct-{round}");
        // Odd rounds: the account already has an older snapshot, so the admissions race on its
        // existing row (even rounds race to create it).
        if round % 2 == 1 {
            let base = replicas[0]
                .admit(
                    &format!("ev-{round}-base:payout"),
                    &format!("gw-{round}-base"),
                    &snapshot(&account, T0 - 1),
                    &Plan::Withdraw(vec![1]),
                    || T0,
                )
                .expect("older snapshot");
            assert_eq!(base.status, Status::Pending);
        }
        let jobs: Vec<(usize, String)> = (0..2 * PER_REPLICA)
            .map(|i| (i % 2, format!("ev-{round}-{i}:payout")))
            .collect();
        let rows = admit_at_once(&replicas, &jobs, &snapshot(&account, T0));
        let rows: Vec<_> = rows
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| panic!("round {round}: {e}")))
            .collect();
        let pending: Vec<_> = rows
            .iter()
            .filter(|r| r.status == Status::Pending)
            .collect();
        assert_eq!(pending.len(), 1, "round {round}: {rows:#?}");
        assert_eq!(pending[0].requested_types, [1, 2]);
        for r in rows.iter().filter(|r| r.status != Status::Pending) {
            assert_eq!(r.status, Status::Skipped, "round {round}: {r:?}");
            assert_eq!(r.skip_reason.as_deref(), Some(SkipReason::Stale.as_str()));
        }
        // The account's newest snapshot names the one admitted delivery.
        let newest = pg.sql(
            "snapshot",
            &format!(
                "SELECT newest_delivery_id FROM payout_accounts WHERE account_id = '{account}'"
            ),
        );
        assert_eq!(newest, pending[0].delivery_id, "round {round}");
    }
    assert_eq!(
        pg.sql(
            "snapshot",
            "SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FROM payout_ledger"
        ),
        format!(
            "{}|{}",
            ROUNDS + ROUNDS / 2,
            ROUNDS / 2 + ROUNDS * 2 * PER_REPLICA
        )
    );
    // A newer snapshot is admitted on either replica; the older one after it is stale.
    let newer = replicas[1]
        .admit(
            "ev-newer:payout",
            "gw-newer",
            &snapshot("acct-0", T0 + 1),
            &Plan::Withdraw(vec![1]),
            || T0 + 6,
        )
        .expect("newer");
    assert_eq!(newer.status, Status::Pending);
    let older = replicas[0]
        .admit(
            "ev-older:payout",
            "gw-older",
            &snapshot("acct-0", T0),
            &Plan::Withdraw(vec![1]),
            || T0 + 7,
        )
        .expect("older");
    assert_eq!(older.skip_reason.as_deref(), Some("stale"));
}

#[test]
fn one_delivery_on_two_replicas_is_one_row_and_one_claim() {
    let pg = PgCluster::start();
    let url = pg.create_database("delivery");
    let replicas = Arc::new([connect(&url), connect(&url)]);
    let id = "ev-dup:payout";
    let jobs: Vec<(usize, String)> = (0..8).map(|i| (i % 2, id.to_owned())).collect();
    let rows: Vec<_> = admit_at_once(&replicas, &jobs, &snapshot("acct-dup", T0))
        .into_iter()
        .map(|r| r.expect("admit"))
        .collect();
    assert_eq!(rows[0].status, Status::Pending);
    assert!(rows.iter().all(|r| *r == rows[0]), "{rows:#?}");
    assert_eq!(
        pg.sql("delivery", "SELECT count(*) FROM payout_ledger"),
        "1"
    );

    // While one replica runs an attempt, the other is told to wait; afterwards it may go on.
    let claim = replicas[0]
        .claim(id)
        .expect("claim")
        .expect("first claim is granted");
    assert!(replicas[1].claim(id).expect("claim").is_none());
    assert!(replicas[1]
        .claim("ev-other:payout")
        .expect("claim")
        .is_some());
    drop(claim);
    assert!(replicas[1].claim(id).expect("claim").is_some());

    // The result recorded on one replica is what the other reads, exactly.
    let w = Withdrawal {
        external_order_id: Some(rows[0].external_order_id.clone()),
        trans_time: Some((T0 + 9).to_string()),
        points: 100,
        cash: vec![
            CashBonus {
                currency: "USD".into(),
                amount: money("1.05"),
            },
            CashBonus {
                currency: "CNY".into(),
                amount: money("0.30"),
            },
        ],
        log_id: Some("log-1".into()),
    };
    let done = replicas[1]
        .record_withdrawn(id, &w, true, T0 + 10)
        .expect("record");
    assert_eq!(done.status, Status::Withdrawn);
    // A late result of a concurrent attempt changes nothing.
    let late = Withdrawal {
        points: 1,
        cash: Vec::new(),
        ..w.clone()
    };
    assert_eq!(
        replicas[0]
            .record_withdrawn(id, &late, true, T0 + 11)
            .expect("late"),
        done
    );
    let read = replicas[0].get(id).expect("get").expect("row");
    assert_eq!(read, done);
    assert_eq!(read.points, 100);
    let cash: Vec<String> = read
        .cash
        .iter()
        .map(|c| format!("{} {}", c.currency, c.amount))
        .collect();
    assert_eq!(cash, ["USD 1.05", "CNY 0.30"]);
    replicas[0]
        .record_forward(id, Ok(200), T0 + 12)
        .expect("forward");
    assert_eq!(
        replicas[1]
            .get(id)
            .expect("get")
            .map(|r| r.forward_attempts),
        Some(1)
    );

    // A read-only report ledger sees it; it cannot write.
    let report = Ledger::connect_read_only(&url).expect("read-only");
    let totals = payout::report::totals(&report, None, None).expect("totals");
    assert_eq!((totals.withdrawals, totals.points), (1, 100));
    assert_eq!(
        totals.cash.get("CNY").map(ToString::to_string).as_deref(),
        Some("0.30")
    );
    let refused = report.count_withdraw_attempt(id).expect_err("read-only");
    assert!(refused.to_string().contains("read-only"), "{refused}");

    // No money column is a float: integers and exact decimal text only.
    let types = pg.sql(
        "delivery",
        "SELECT string_agg(DISTINCT data_type, ',' ORDER BY data_type) FROM information_schema.columns
         WHERE table_name LIKE 'payout\\_%'",
    );
    assert_eq!(types, "bigint,integer,text,timestamp with time zone");
}

#[test]
fn ledger_errs_while_the_server_is_down_and_works_again_after() {
    let pg = PgCluster::start();
    let url = pg.create_database("restart");
    let ledger = connect(&url);
    let admit = |id: &str, t: u64| {
        ledger.admit(
            id,
            &payout::external_order_id(id),
            &snapshot("acct-r", t),
            &Plan::Withdraw(vec![1]),
            || t,
        )
    };
    assert_eq!(
        admit("ev-r1:payout", T0).expect("before").status,
        Status::Pending
    );

    pg.stop();
    let down = admit("ev-r2:payout", T0 + 1).expect_err("server is down");
    let text = down.to_string();
    assert!(matches!(down, LedgerError::Postgres { .. }), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{}", pg.port())), "{text}");
    assert!(ledger.get("ev-r1:payout").is_err());

    pg.start_again();
    let row = admit("ev-r2:payout", T0 + 1).expect("works again without reopening");
    assert_eq!(row.status, Status::Pending);
    assert!(ledger.get("ev-r1:payout").expect("get").is_some());

    // A restart while idle costs no failed call: a dead old connection is replaced at once.
    pg.stop();
    pg.start_again();
    assert!(ledger
        .get("ev-r2:payout")
        .expect("after an idle restart")
        .is_some());
    assert!(ledger.claim("ev-r3:payout").expect("claim").is_some());
}

#[test]
fn ledgers_opening_an_empty_database_at_once_migrate_it_once() {
    let pg = PgCluster::start();
    let url = pg.create_database("migrate");
    let refused = Ledger::connect_read_only(&url).expect_err("nothing to read yet");
    assert!(
        refused.to_string().contains("no payout ledger"),
        "{refused}"
    );

    let barrier = Arc::new(Barrier::new(6));
    let opened: Vec<_> = (0..6)
        .map(|_| {
            let (url, barrier) = (url.clone(), Arc::clone(&barrier));
            thread::spawn(move || {
                barrier.wait();
                Ledger::connect(&url).map(|_| ())
            })
        })
        .collect();
    for h in opened {
        h.join().expect("thread").expect("every ledger opens");
    }
    assert_eq!(
        pg.sql(
            "migrate",
            "SELECT count(*), max(version) FROM payout_schema"
        ),
        "3|3"
    );
    assert_eq!(
        pg.sql("migrate", "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'"),
        "payout_accounts,payout_cash,payout_ledger,payout_schema"
    );
    // Reopening migrates nothing; a schema from a newer plugin is refused, not written to.
    connect(&url);
    pg.sql("migrate", "INSERT INTO payout_schema (version) VALUES (4)");
    let newer = Ledger::connect(&url).expect_err("newer schema");
    assert!(
        newer.to_string().contains("upgrade the payout plugin"),
        "{newer}"
    );
}

#[test]
fn unreachable_database_is_an_init_error_without_the_password() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let err = Ledger::connect(&format!(
        "postgres://payout:pg-s3cret@127.0.0.1:{port}/gw?connect_timeout=5"
    ))
    .expect_err("nothing listens");
    let text = err.to_string();
    assert!(
        text.contains(&format!("postgres://payout:***@127.0.0.1:{port}/gw")),
        "{text}"
    );
    assert!(text.contains("cannot connect"), "{text}");
    assert!(!text.contains("pg-s3cret"), "{text}");

    // The same through the real `gateway check`, the password coming from the environment.
    let dir = tempfile::tempdir().expect("tempdir");
    let url =
        format!("postgres://payout:${{PAYOUT_PG_PASSWORD}}@127.0.0.1:{port}/gw?connect_timeout=5");
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config("http://127.0.0.1:9", &url)).expect("write config");
    let (code, out, err) = run_cli_with_env(
        &path,
        &["check"],
        &[
            ("PAYOUT_PG_PASSWORD", "pg-s3cret"),
            ("PAYOUT_APP_SECRET", "secret_test"),
        ],
    );
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains(&format!("postgres://payout:***@127.0.0.1:{port}/gw")),
        "{err}"
    );
    assert!(
        !out.contains("pg-s3cret") && !err.contains("pg-s3cret"),
        "{out}{err}"
    );
}

const TOKEN: &str = "payout-pg-token";
const ENCRYPT_KEY: &str = "payout-pg-encrypt-key";

/// A gateway config with one `payout` instance on the Lark stand-in at `base_url` and the
/// ledger `url`; the app secret comes from `$PAYOUT_APP_SECRET`.
fn config(base_url: &str, url: &str) -> String {
    format!(
        r#"{base}
[[apps]]
name = "hire"
path = "/hook"
verification_token = "{TOKEN}"
encrypt_key = "{ENCRYPT_KEY}"

[delivery]
max_attempts = 6
initial_backoff = "50ms"
max_backoff = "200ms"
timeout = "15s"

[[plugins]]
name = "payout"
library = "{library}"
config = {{ base_url = "{base_url}", app_id = "cli_test", app_secret = "${{PAYOUT_APP_SECRET}}", ledger = "{url}", timeout = "5s" }}

[[routes]]
events = ["hire.referral_account.assets_update_v1"]
plugins = ["payout"]
"#,
        base = base_config(),
        library = binaries().payout.display(),
    )
}

fn gateway(dir: &Path, api: &LarkApi, url: &str) -> TestGateway {
    let config = config(&api.base_url(), url);
    TestGateway::spawn_with_env(dir, &config, &[("PAYOUT_APP_SECRET", "secret_test")])
}

#[test]
fn two_gateways_on_one_database_withdraw_one_snapshot_once() {
    let pg = PgCluster::start();
    let url = pg.create_database("replicas");
    let api = LarkApi::start();
    let account = "acct-replicas";
    api.set_balance(account, 100, &[("CNY", "0.30")]);
    let dirs = [
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    ];
    let gateways = [
        gateway(dirs[0].path(), &api, &url),
        gateway(dirs[1].path(), &api, &url),
    ];

    // Lark pushes the same snapshot twice (two event ids); each replica gets one, at once.
    let lark = Lark::encrypted(TOKEN, ENCRYPT_KEY);
    let barrier = Barrier::new(2);
    thread::scope(|s| {
        for (gw, event_id) in gateways.iter().zip(["ev-a", "ev-b"]) {
            let (lark, barrier) = (&lark, &barrier);
            s.spawn(move || {
                let body = lark.assets_update(
                    event_id,
                    account,
                    100,
                    r#"[{"currency_type":"CNY","amount":0.30}]"#,
                    T0,
                );
                barrier.wait();
                let answer = lark.send(&gw.url("/hook"), &body);
                assert_eq!(answer.status, 200, "{event_id}: {}", answer.body);
            });
        }
    });
    let settled = wait_until(Duration::from_secs(20), || {
        pg.sql(
            "replicas",
            "SELECT count(*) FROM payout_ledger WHERE status IN ('withdrawn', 'skipped')",
        ) == "2"
    });
    assert!(
        settled,
        "{}\n{}\n{}",
        pg.sql(
            "replicas",
            "SELECT delivery_id, status, last_error FROM payout_ledger"
        ),
        gateways[0].log(),
        gateways[1].log()
    );
    assert_eq!(
        api.withdraw_calls().len(),
        1,
        "one withdraw call for one snapshot"
    );
    assert_eq!(
        pg.sql(
            "replicas",
            "SELECT status, skip_reason FROM payout_ledger ORDER BY status"
        ),
        "skipped|stale\nwithdrawn|"
    );
    for gw in &gateways {
        assert!(!gw.log().contains("secret_test"), "the app secret leaked");
    }

    // `payout-report` reads the shared ledger by URL.
    let listed = report_list(&url);
    assert!(listed.contains("withdrawals: 1\n"), "{listed}");
    assert!(listed.contains("total points: 100\n"), "{listed}");
    assert!(listed.contains("total CNY: 0.30\n"), "{listed}");
    // And lists what is unfinished: nothing, then a withdrawal made to wait for forwarding.
    let unfinished = |extra: &[&str]| {
        let out = Command::new(payout_report())
            .args(["unfinished", "--ledger", &url])
            .args(extra)
            .output()
            .expect("run payout-report");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.code(), text)
    };
    assert_eq!(unfinished(&[]).0, Some(0));
    pg.sql(
        "replicas",
        "UPDATE payout_ledger SET forward_status = 'pending', forward_error = 'HTTP 503'
         WHERE status = 'withdrawn'",
    );
    let (code, text) = unfinished(&[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("forward") && text.contains("HTTP 503"),
        "{text}"
    );
    assert!(text.contains("unfinished: 1\n"), "{text}");
    assert_eq!(unfinished(&["--older-than", "1h"]).0, Some(0));
}

/// `payout-report list --ledger <ledger>`'s output (it must succeed).
fn report_list(ledger: &str) -> String {
    let out = Command::new(payout_report())
        .args(["list", "--ledger", ledger])
        .output()
        .expect("run payout-report");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `payout-report` executable, built with the same package set as [`binaries`] (so the
/// `.so` files the gateways load are not rebuilt under them).
fn payout_report() -> PathBuf {
    binaries();
    cargo_build(
        &["gateway", "logger", "testkit", "notifier", "payout"],
        Profile::Debug,
    )
    .unwrap_or_else(|e| panic!("building payout-report failed:\n{e}"))
    .iter()
    .find(|a| a.name == "payout-report" && a.kinds.iter().any(|k| k == "bin"))
    .and_then(|a| a.executable.clone())
    .expect("cargo built no payout-report executable")
}
