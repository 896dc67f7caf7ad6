//! The orphan rule racing a reload: a plugin instance is removed, its backlog's grace runs
//! out, and the rule's write (every pending delivery of the name becomes a dead letter) is on
//! its way to the store when a reload configures the name again. The write then commits, but
//! the rule looks again once it is in, finds the name back, and queues those deliveries again:
//! the reload's instance delivers the backlog (it used to stay dead, and the operator had to
//! replay it). A delivery whose call of the removed instance still runs then is put back only
//! once that call returned without success (never beside it).
//!
//! The race is made deterministic on PostgreSQL: another session holds the backlog's rows
//! locked (`FOR UPDATE`), so the rule's `UPDATE` waits on them; the reload happens while it
//! waits (seen in `pg_stat_activity`), then the lock goes.

use std::time::Duration;

use gateway_e2e::harness::{base_config, binaries, wait_until, TestGateway};
use gateway_e2e::pgkit::PgCluster;

const TOKEN: &str = "tok";
const WAIT: Duration = Duration::from_secs(30);

/// The config, with instance `gone` (testkit settings `gone`) or without it.
fn config(gone: Option<&str>) -> String {
    let lib = binaries().testkit.display();
    let mut cfg = base_config().replace(
        "[store]\npath = \"data/gateway.db\"",
        "[store]\nurl = \"${PG_URL}\"\nlease = \"30s\"",
    );
    cfg.push_str(&format!(
        "
[delivery]
initial_backoff = \"30s\"
max_backoff = \"30s\"
removed_plugin_grace = \"1s\"
timeout = \"20s\"

[[apps]]
name = \"hire\"
path = \"/hook\"
verification_token = \"{TOKEN}\"

[[plugins]]
name = \"stay\"
library = \"{lib}\"
config = {{ mode = \"ok\", record = \"data/stay.jsonl\" }}

[[routes]]
events = [\"test.stay\"]
plugins = [\"stay\"]
"
    ));
    if let Some(kit) = gone {
        cfg.push_str(&format!(
            "
[[plugins]]
name = \"gone\"
library = \"{lib}\"
config = {{ {kit}, record = \"data/gone.jsonl\" }}

[[routes]]
events = [\"test.gone\", \"test.held\"]
plugins = [\"gone\"]
"
        ));
    }
    cfg
}

fn reloads(gw: &TestGateway) -> usize {
    gw.log().matches("config reloaded").count()
}

/// Waits until `check` holds for the answer of `sql` in `db`.
fn until_sql(pg: &PgCluster, db: &str, sql: &str, check: impl Fn(&str) -> bool) -> bool {
    wait_until(WAIT, || check(&pg.sql(db, sql)))
}

#[test]
fn a_reload_that_brings_a_name_back_during_the_orphan_write_keeps_its_backlog() {
    let pg = PgCluster::start();
    let url = pg.create_database("orphans");
    let dir = tempfile::tempdir().expect("tempdir");
    // Retries every 30 s while first configured (and holds `test.held` until the gate opens,
    // then retries); the reload that brings it back answers `ok`.
    let first = config(Some(
        "mode = \"retry_always\", retry_after_ms = 30000, modes = { \"test.held\" = \"gate\" }, \
         gate = \"open\", gate_then = \"retry\"",
    ));
    let gw = TestGateway::spawn_with_env(dir.path(), &first, &[("PG_URL", &url)]);
    gw.send_plain(TOKEN, "orphan-1", "test.gone");
    assert!(
        wait_until(WAIT, || gw.calls("gone").len() == 1),
        "the first call never came"
    );
    gw.send_plain(TOKEN, "held-1", "test.held");
    assert!(
        until_sql(
            &pg,
            "orphans",
            "SELECT started FROM deliveries WHERE event_id = 'held-1'",
            |s| s == "1"
        ),
        "the held call never started"
    );

    std::thread::scope(|s| {
        // Another session holds the backlog's row for 7 s (the gateway gives an operation 10).
        let lock = s.spawn(|| {
            pg.sql(
                "orphans",
                "BEGIN; SELECT 1 FROM deliveries WHERE plugin = 'gone' FOR UPDATE; \
                 SELECT pg_sleep(7); COMMIT;",
            )
        });
        assert!(until_sql(
            &pg,
            "orphans",
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(7)%'",
            |n| n == "1"
        ));
        // Removed: after its 1 s grace, the orphan rule's write waits on the lock.
        std::fs::write(dir.path().join("gateway.toml"), config(None)).expect("write");
        gw.signal("HUP");
        assert!(wait_until(WAIT, || reloads(&gw) == 1), "{}", gw.log());
        assert!(
            until_sql(
                &pg,
                "orphans",
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND query LIKE 'UPDATE deliveries SET state = ''dead''%'",
                |n| n == "1"
            ),
            "the orphan rule's write never waited on the lock: {}",
            gw.log()
        );
        // Back (now answering `ok`) while the write waits; then the lock goes.
        let back = config(Some("mode = \"ok\""));
        std::fs::write(dir.path().join("gateway.toml"), back).expect("write");
        gw.signal("HUP");
        assert!(wait_until(WAIT, || reloads(&gw) == 2), "{}", gw.log());
        lock.join().expect("the lock holder");
    });

    assert!(
        wait_until(WAIT, || gw.delivery("orphan-1", "gone")["state"] == "done"),
        "the backlog of the instance configured again was left: {}\n{}",
        gw.delivery("orphan-1", "gone"),
        gw.log()
    );
    // The held call still runs: its dead letter waits for it (shown running), not replayed.
    let held = gw.delivery("held-1", "gone");
    assert_eq!(held["state"], "dead", "{held}");
    assert_eq!(held["running"], true, "{held}");
    // It returns a retry: not recorded over the dead letter; the delivery is put back then.
    std::fs::write(dir.path().join("open"), "").expect("open the gate");
    assert!(
        wait_until(WAIT, || gw.delivery("held-1", "gone")["state"] == "done"),
        "the held delivery was left dead after its call returned: {}\n{}",
        gw.delivery("held-1", "gone"),
        gw.log()
    );
    let calls: Vec<(String, String)> = gw
        .calls("gone")
        .iter()
        .map(|c| (c["event_id"].to_string(), c["outcome"].to_string()))
        .collect();
    assert_eq!(calls.len(), 4, "{calls:?}");
}
