//! pg_races' set-up: a gateway config on a throwaway PostgreSQL database owned by a role that
//! is no superuser, replicas spawned on it, events sent, the calls the replicas made, and the
//! gate that holds chosen statements (see e2e/pg_races.rs).

pub(super) use std::path::Path;
pub(super) use std::time::{Duration, Instant};

pub(super) use gateway_e2e::harness::{binaries, read_jsonl, wait_until, Lark, TestGateway};
pub(super) use gateway_e2e::pgkit::PgCluster;

/// The advisory lock the gate waits on.
pub(super) const GATE_LOCK: i64 = 4242;

/// A gateway config on `${PG_URL}` with a `testkit` instance `audit` (`mode`) recording its
/// calls in `data/audit.jsonl`, every event routed to it.
pub(super) fn config(lease: &str, mode: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "5s"

[admin]
listen = "127.0.0.1:0"

[store]
url = "${{PG_URL}}"
lease = "{lease}"

[delivery]
timeout = "1s"
initial_backoff = "100ms"

[[apps]]
name = "hire"
path = "/hook"
verification_token = "tok"
encrypt_key = "key"

[[plugins]]
name = "audit"
library = "{testkit}"
config = {{ {mode}, record = "data/audit.jsonl" }}

[[routes]]
events = ["*"]
plugins = ["audit"]
"#,
        testkit = binaries().testkit.display(),
    )
}

/// Creates database `db` owned by the role `replica` (no superuser) and returns the URL the
/// gateways use.
pub(super) fn replica_database(pg: &PgCluster, db: &str) -> String {
    pg.sql(
        "postgres",
        &format!(
            "DO $$ BEGIN CREATE ROLE replica LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; \
             END $$; CREATE DATABASE {db} OWNER replica"
        ),
    );
    format!("postgres://replica@127.0.0.1:{}/{db}", pg.port())
}

pub(super) fn spawn(dir: &Path, config: &str, url: &str) -> TestGateway {
    TestGateway::spawn_with_env(dir, config, &[("PG_URL", url)])
}

/// Two replicas on `url` running `cfg` (a testkit `gate` instance): A's calls hang until its
/// `data/open` exists; B's gate is open from the start (its calls return at once).
pub(super) fn hung_and_free(
    cfg: &str,
    url: &str,
) -> (
    TestGateway,
    TestGateway,
    tempfile::TempDir,
    tempfile::TempDir,
) {
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let a = spawn(a_dir.path(), cfg, url);
    let b = spawn(b_dir.path(), cfg, url);
    std::fs::write(b_dir.path().join("data/open"), "").expect("B's calls return at once");
    (a, b, a_dir, b_dir)
}

/// Sends event `id` to `gw` and asserts it was accepted.
pub(super) fn send(gw: &TestGateway, id: &str) {
    let lark = Lark::encrypted("tok", "key");
    let a = lark.send(
        &gw.url("/hook"),
        &lark.event_v2(id, "x.y_v1", serde_json::json!({})),
    );
    assert_eq!(a.status, 200, "{}", a.body);
}

/// Sends event `id` to replica `a`, whose `gate` call hangs past its 1 s timeout on its only
/// attempt (`max_attempts = 1`), and waits until that timeout is recorded as a dead letter
/// (`sql` queries the test's database).
pub(super) fn hang_into_a_dead_letter(a: &TestGateway, id: &str, sql: impl Fn(&str) -> String) {
    send(a, id);
    assert!(
        wait_until(Duration::from_secs(20), || sql(
            "SELECT state || '|' || string_agg(outcome, ',') FROM deliveries, attempts
             GROUP BY state"
        ) == "dead|timeout"),
        "the timeout was recorded as a dead letter"
    );
}

/// Opens replica A's gate (its hung call returns) and checks the forced replay was then
/// delivered, once: two calls in all, across `dirs`.
pub(super) fn the_replay_runs_once_the_hang_ends(
    a_dir: &Path,
    dirs: &[&Path],
    sql: impl Fn(&str) -> String,
) {
    std::fs::write(a_dir.join("data/open"), "").expect("the hung call returns");
    assert!(
        wait_until(Duration::from_secs(20), || sql(
            "SELECT state || '|' || generation FROM deliveries"
        ) == "done|1"),
        "the replay was delivered after the hung call returned"
    );
    std::thread::sleep(Duration::from_millis(1_500)); // a third call would show by now
    assert_eq!(calls(dirs), 2, "the hung call and the replay, once each");
}

/// The calls `audit` recorded in these gateways' folders.
pub(super) fn calls(dirs: &[&Path]) -> usize {
    dirs.iter()
        .map(|d| read_jsonl(&d.join("data/audit.jsonl")).len())
        .sum()
}

/// The test's own connection to `db` (superuser), which holds the gate's lock.
pub(super) struct Gate {
    client: postgres::Client,
}

impl Gate {
    /// Installs the gate on `table` of database `db` (created by the gateway's migrations), not
    /// armed: every statement passes. It holds a statement while it reads the table's rows.
    pub(super) fn install(pg: &PgCluster, db: &str, table: &str) -> Gate {
        Gate::with_policy(pg, db, table, "USING (test_gate()) WITH CHECK (true)")
    }

    /// As [`Gate::install`], but the gate holds a statement when it inserts a row into `table`
    /// (after whatever it changed before in the same statement, whose row locks it keeps).
    pub(super) fn install_on_insert(pg: &PgCluster, db: &str, table: &str) -> Gate {
        Gate::with_policy(pg, db, table, "USING (true) WITH CHECK (test_gate())")
    }

    fn with_policy(pg: &PgCluster, db: &str, table: &str, policy: &str) -> Gate {
        let mut client = postgres::Client::connect(
            &format!("host=127.0.0.1 port={} user=gateway dbname={db}", pg.port()),
            postgres::NoTls,
        )
        .expect("the test's connection");
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS test_gate (pattern TEXT NOT NULL);
                 GRANT SELECT ON test_gate TO PUBLIC;
                 CREATE OR REPLACE FUNCTION test_gate() RETURNS boolean
                 LANGUAGE plpgsql VOLATILE AS $f$
                 BEGIN
                     IF EXISTS (SELECT 1 FROM test_gate WHERE current_query() LIKE pattern) THEN
                         PERFORM pg_advisory_lock_shared({GATE_LOCK});
                         PERFORM pg_advisory_unlock_shared({GATE_LOCK});
                     END IF;
                     RETURN true;
                 END $f$;
                 ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
                 ALTER TABLE {table} FORCE ROW LEVEL SECURITY;
                 CREATE POLICY test_gate ON {table} {policy};"
            ))
            .expect("install the gate");
        Gate { client }
    }

    /// From now on, statements whose text is `LIKE pattern` wait at the gate's table.
    pub(super) fn arm(&mut self, pattern: &str) {
        self.client
            .execute("SELECT pg_advisory_lock($1)", &[&GATE_LOCK])
            .expect("take the gate's lock");
        self.client
            .execute("INSERT INTO test_gate VALUES ($1)", &[&pattern])
            .expect("arm");
    }

    /// How many gateway statements wait at the gate now.
    pub(super) fn waiting(&mut self) -> i64 {
        self.client
            .query_one(
                "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
                   AND objid = $1",
                &[&(GATE_LOCK as u32)],
            )
            .expect("pg_locks")
            .get(0)
    }

    /// Waits until a statement waits at the gate.
    pub(super) fn wait_for_one(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.waiting() == 0 {
            assert!(Instant::now() < deadline, "no statement reached the gate");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// New statements pass; those waiting still wait (see [`Gate::open`]).
    pub(super) fn disarm(&mut self) {
        self.client
            .execute("DELETE FROM test_gate", &[])
            .expect("disarm");
    }

    /// Lets the waiting statements go on.
    pub(super) fn open(&mut self) {
        self.client
            .execute("SELECT pg_advisory_unlock($1)", &[&GATE_LOCK])
            .expect("release the gate's lock");
    }

    /// One row's columns as text, `|`-separated, a NULL as `NULL` (`None`: no row).
    pub(super) fn row(&mut self, sql: &str) -> Option<String> {
        self.client.query_opt(sql, &[]).expect(sql).map(|r| {
            (0..r.len())
                .map(|i| {
                    r.get::<_, Option<String>>(i)
                        .unwrap_or_else(|| "NULL".into())
                })
                .collect::<Vec<_>>()
                .join("|")
        })
    }
}
