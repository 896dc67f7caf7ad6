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
//!
//! The second test covers the put-back's own rule on PostgreSQL (the store's write, as the
//! embedded store's unit tests do for SQLite): a listed dead letter goes back only while it is
//! still the rule's own (same generation, same reason) and not running; the rows are changed
//! while the put-back waits on events another session holds locked.

use std::time::Duration;

use gateway_e2e::harness::{base_config, binaries, wait_until, TestGateway};
use gateway_e2e::pgkit::PgCluster;

#[path = "orphan_reload/late_calls.rs"]
mod late_calls;

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

/// `sql`, run once `condition` (an SQL boolean) holds, by a session that polls it every 20 ms
/// (failing after a minute, saying `what` it waited for); each poll sees the latest commits.
fn once(condition: &str, what: &str) -> String {
    format!(
        "DO $$ DECLARE t0 timestamptz := clock_timestamp(); BEGIN
           LOOP
             PERFORM pg_stat_clear_snapshot();
             EXIT WHEN ({condition});
             IF clock_timestamp() - t0 > interval '60 seconds' THEN
               RAISE EXCEPTION 'waited a minute for %', '{what}';
             END IF;
             PERFORM pg_sleep(0.02);
           END LOOP;
         END $$;"
    )
}

/// The deliveries of `gone` as `(event_id, state, generation, last_error, claimed_by, started)`
/// rows, `|`-separated, by event id.
fn gone_rows(pg: &PgCluster, db: &str) -> Vec<String> {
    pg.sql(
        db,
        "SELECT event_id, state, generation, COALESCE(last_error, '-'),
                COALESCE(claimed_by, '-'), started
         FROM deliveries WHERE plugin = 'gone' ORDER BY event_id",
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

/// The put-back of the orphan rule's dead letters (`ReplaySelector::Orphans`, when a reload
/// brought the name back during the rule's write) on PostgreSQL: each listed (key, generation)
/// goes back to the queue only while it is still the rule's own dead letter (dead, the same
/// generation, the rule's reason) and not running (no started mark, no live claim). The same
/// cases as the embedded store's unit tests (`running_tests.rs`), in one put-back: the test
/// holds the events locked, so the put-back waits at its first statement, and changes the
/// rows meanwhile as a replay, a late outcome or another replica would; then lets it go.
#[test]
fn the_orphan_put_back_takes_only_the_rules_own_idle_dead_letters() {
    const DB: &str = "putback";
    let pg = PgCluster::start();
    let url = pg.create_database(DB);
    pg.sql(DB, "CREATE TABLE test_gate (name text)");
    let dir = tempfile::tempdir().expect("tempdir");
    let first = config(Some("mode = \"retry_always\", retry_after_ms = 30000"));
    let gw = TestGateway::spawn_with_env(dir.path(), &first, &[("PG_URL", &url)]);
    let ids = [
        "o-back",
        "o-claimed",
        "o-done",
        "o-lapsed",
        "o-rejected",
        "o-replayed",
        "o-started",
    ];
    for id in ids {
        gw.send_plain(TOKEN, id, "test.gone");
    }
    // Each called once and waiting 30 s for its retry, idle.
    assert!(
        until_sql(
            &pg,
            DB,
            "SELECT count(*) FROM deliveries WHERE plugin = 'gone' AND state = 'pending'
               AND attempts = 1 AND started = 0",
            |n| n == "7"
        ),
        "the first calls were not recorded: {:?}\n{}",
        gone_rows(&pg, DB),
        gw.log()
    );

    let other = |pid_filter: &str| {
        format!(
            "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND {pid_filter}"
        )
    };
    std::thread::scope(|s| {
        // Holds the backlog's rows until told, so the orphan rule's write waits for them while
        // a reload brings the name back (as in the test above).
        let rows = s.spawn(|| {
            pg.sql(
                DB,
                &format!(
                    "BEGIN; SELECT 1 FROM deliveries WHERE plugin = 'gone' FOR UPDATE; {} COMMIT;",
                    once(
                        "EXISTS (SELECT 1 FROM test_gate WHERE name = 'rows')",
                        "the rows to go"
                    )
                ),
            )
        });
        // Holds the events, so the put-back waits at its first statement; then changes the
        // dead letters as others might have meanwhile, and lets it go.
        let events = s.spawn(|| {
            let now = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";
            pg.sql(
                DB,
                &format!(
                    "BEGIN; SELECT 1 FROM events WHERE id LIKE 'o-%' FOR UPDATE; {}
                     UPDATE deliveries SET claimed_by = 'another-replica', lease_until = {now} + 600000
                       WHERE event_id = 'o-claimed';
                     UPDATE deliveries SET claimed_by = 'another-replica', lease_until = {now} - 1000
                       WHERE event_id = 'o-lapsed';
                     UPDATE deliveries SET state = 'done', last_error = NULL
                       WHERE event_id = 'o-done';
                     UPDATE deliveries SET last_error = 'testkit: no such account'
                       WHERE event_id = 'o-rejected';
                     UPDATE deliveries SET generation = generation + 1
                       WHERE event_id = 'o-replayed';
                     UPDATE deliveries SET started = 1 WHERE event_id = 'o-started';
                     COMMIT;",
                    once(
                        "EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'
                           AND query LIKE 'SELECT e.id FROM events e JOIN deliveries d%')",
                        "the put-back to wait"
                    )
                ),
            )
        });
        assert!(
            until_sql(&pg, DB, &other("query LIKE '%the rows to go%'"), |n| n
                == "1")
                && until_sql(
                    &pg,
                    DB,
                    &other("query LIKE '%the put-back to wait%'"),
                    |n| n == "1"
                ),
            "the test's sessions did not take their locks"
        );
        // Removed: after its 1 s grace, the orphan rule's write waits on the rows.
        std::fs::write(dir.path().join("gateway.toml"), config(None)).expect("write");
        gw.signal("HUP");
        assert!(wait_until(WAIT, || reloads(&gw) == 1), "{}", gw.log());
        assert!(
            until_sql(
                &pg,
                DB,
                &other(
                    "wait_event_type = 'Lock' AND query LIKE 'UPDATE deliveries SET state = ''dead''%'"
                ),
                |n| n == "1"
            ),
            "the orphan rule's write never waited on the rows: {}",
            gw.log()
        );
        // Back (answering `ok`) while it waits; then the rows go: the write commits, finds the
        // name back and puts its dead letters back, waiting on the events.
        std::fs::write(
            dir.path().join("gateway.toml"),
            config(Some("mode = \"ok\"")),
        )
        .expect("write");
        gw.signal("HUP");
        assert!(wait_until(WAIT, || reloads(&gw) == 2), "{}", gw.log());
        pg.sql(DB, "INSERT INTO test_gate VALUES ('rows')");
        rows.join().expect("the rows' holder");
        events.join().expect("the events' holder");
    });

    // Put back: the untouched one, and the one whose claim (another replica's) had lapsed.
    let queued = |gw: &TestGateway| {
        gw.log()
            .lines()
            .filter(|l| l.contains("queued again") && l.contains("deliveries=2"))
            .count()
    };
    assert!(
        wait_until(WAIT, || queued(&gw) == 1),
        "the put-back did not put back two: {:?}\n{}",
        gone_rows(&pg, DB),
        gw.log()
    );
    for id in ["o-back", "o-lapsed"] {
        assert!(
            wait_until(WAIT, || gw.delivery(id, "gone")["state"] == "done"),
            "{id} was not delivered once put back: {:?}\n{}",
            gone_rows(&pg, DB),
            gw.log()
        );
    }
    // Left as they were: another generation (replayed meanwhile), another reason (the plugin's
    // own dead letter, or a success), a live claim (another replica runs it), a started mark.
    let rule = "plugin instance `gone` is no longer configured (removed from the config for more \
                than removed_plugin_grace 1s); replay once an instance of that name exists again";
    let rows = gone_rows(&pg, DB);
    let row = |id: &str| {
        rows.iter()
            .find(|r| r.starts_with(&format!("{id}|")))
            .cloned()
            .unwrap_or_default()
    };
    assert!(row("o-back").starts_with("o-back|done|1|"), "{rows:?}");
    assert_eq!(
        row("o-claimed"),
        format!("o-claimed|dead|0|{rule}|another-replica|0")
    );
    assert_eq!(row("o-done"), "o-done|done|0|-|-|0", "{rows:?}");
    assert!(row("o-lapsed").starts_with("o-lapsed|done|1|"), "{rows:?}");
    assert_eq!(
        row("o-rejected"),
        "o-rejected|dead|0|testkit: no such account|-|0",
        "{rows:?}"
    );
    assert_eq!(row("o-replayed"), format!("o-replayed|dead|1|{rule}|-|0"));
    assert_eq!(row("o-started"), format!("o-started|dead|0|{rule}|-|1"));
    // Each of those was called once, before the rule; the two put back once more.
    let mut called: Vec<String> = gw
        .calls("gone")
        .iter()
        .map(|c| c["event_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    called.sort();
    assert_eq!(
        called,
        [
            "o-back",
            "o-back",
            "o-claimed",
            "o-done",
            "o-lapsed",
            "o-lapsed",
            "o-rejected",
            "o-replayed",
            "o-started"
        ]
    );
}

/// The orphan rule now dead-letters a removed name's backlog in steps of 20,000 keys, each its
/// own transaction. When a later step fails (here: another session holds a row of the second
/// step locked past the gateway's 10 s operation limit), the steps before it have committed:
/// their deliveries are dead letters. A reload that brought the name back meanwhile must see
/// them put back (a replay of exactly those dead letters), as it does when the whole write
/// goes in; they must not be left dead because the rule's later step failed.
#[test]
fn a_step_that_fails_after_others_committed_still_puts_their_dead_letters_back() {
    const DB: &str = "orphansteps";
    let pg = PgCluster::start();
    let url = pg.create_database(DB);
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn_with_env(dir.path(), &config(None), &[("PG_URL", &url)]);
    // Two pending deliveries of `gone` (no instance), one in each of two steps of keys.
    let now = "(EXTRACT(EPOCH FROM now()) * 1000)::BIGINT";
    pg.sql(
        DB,
        &format!(
            "INSERT INTO events (id, app, event_type, schema, received_at, body, routed)
               VALUES ('step-1', 'hire', 'test.gone', '2.0', {now}, '{{}}', true),
                      ('step-2', 'hire', 'test.gone', '2.0', {now}, '{{}}', true);
             INSERT INTO deliveries (key, event_id, plugin, state, attempts, next_at, updated_at)
               OVERRIDING SYSTEM VALUE
               VALUES (100, 'step-1', 'gone', 'pending', 0, 0, 0),
                      (30100, 'step-2', 'gone', 'pending', 0, 0, 0);"
        ),
    );
    std::thread::scope(|s| {
        // Holds the second step's row for 14 s: that step is given up at 10 s.
        let lock = s.spawn(|| {
            pg.sql(
                DB,
                "BEGIN; SELECT 1 FROM deliveries WHERE key = 30100 FOR UPDATE; \
                 SELECT pg_sleep(14); COMMIT;",
            )
        });
        assert!(
            until_sql(
                &pg,
                DB,
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND query LIKE 'UPDATE deliveries SET state = ''dead''%'",
                |n| n == "1"
            ),
            "the orphan rule's second step never waited on the lock: {}",
            gw.log()
        );
        // The first step is in: its delivery is a dead letter.
        assert_eq!(
            pg.sql(DB, "SELECT state FROM deliveries WHERE key = 100"),
            "dead"
        );
        // Back (answering `ok`) while the second step waits; that step then fails.
        std::fs::write(
            dir.path().join("gateway.toml"),
            config(Some("mode = \"ok\"")),
        )
        .expect("write");
        gw.signal("HUP");
        assert!(wait_until(WAIT, || reloads(&gw) == 1), "{}", gw.log());
        lock.join().expect("the lock holder");
    });
    assert!(
        gw.log().contains("could not dead-letter"),
        "the second step did not fail: {}",
        gw.log()
    );
    // The second step's delivery was never dead-lettered: the instance delivers it.
    assert!(
        wait_until(WAIT, || gw.delivery("step-2", "gone")["state"] == "done"),
        "{}",
        gw.delivery("step-2", "gone")
    );
    // The first step's: put back and delivered too, not left dead.
    assert!(
        wait_until(WAIT, || gw.delivery("step-1", "gone")["state"] == "done"),
        "the first step's dead letter was left although the name is back: {}\n{}",
        gw.delivery("step-1", "gone"),
        gw.log()
    );
}
