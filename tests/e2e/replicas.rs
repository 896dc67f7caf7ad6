//! Several gateway replicas on one PostgreSQL store (a throwaway cluster started by
//! [`gateway_e2e::pgkit`]): dedup and the delivery queue are shared, a killed replica's claims
//! are finished by the others once its lease runs out, a database restart costs 503s but no
//! event, replicas starting together on an empty database migrate it once, and a schema a
//! newer gateway migrated is refused by this one's commands and restarts.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gateway_e2e::harness::{attempts, read_jsonl, wait_until, Lark, TestGateway};
use gateway_e2e::pgkit::PgCluster;

#[path = "replicas_kit.rs"]
mod kit;
use kit::{calls, events, replica_config, replicas, send, spawn};

#[test]
fn three_replicas_deliver_each_event_once_whichever_got_it() {
    let pg = PgCluster::start();
    let url = pg.create_database("three");
    let config = replica_config("30s", r#"mode = "ok""#);
    let (dirs, gws, urls) = replicas(3, &config, &url);

    // Each event to one replica, then again to the next one (Lark's retry behind a balancer).
    let bodies = events("three", 3_000);
    let refused = send(&bodies, urls, |i| vec![i % 3, (i + 1) % 3]);
    assert_eq!(refused, 0, "no 503 while the database is up");

    let paths: Vec<&Path> = dirs.iter().map(|d| d.path()).collect();
    assert!(
        wait_until(Duration::from_secs(60), || calls(&paths).len() == 3_000),
        "only {} of 3000 events delivered",
        calls(&paths).len()
    );
    std::thread::sleep(Duration::from_millis(1_500)); // a late duplicate would show by now
    let counts = calls(&paths);
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    // Each replica ran what it accepted first: the work is spread.
    for d in &paths {
        let mine = read_jsonl(&d.join("data/audit.jsonl")).len();
        assert!(mine > 500, "a replica delivered only {mine}");
    }

    // The operator commands see the shared store from any replica.
    let (code, out, err) = gws[2].cli(&["events", "show", "three-00000"]);
    assert_eq!(code, 0, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(shown["deliveries"][0]["state"], "done");
    assert!(!out.contains("\"tok\""), "the token is redacted: {out}");
    let (code, out, err) = gws[1].cli(&["deliveries", "list", "--state", "pending"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("0 deliver(ies)"), "{out}");
    let (code, out, err) = gws[0].cli(&["store", "check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("is sound"), "{out}");
    let dest = dirs[0].path().join("copy.db");
    let (code, out, err) = gws[0].cli(&["store", "backup", dest.to_str().expect("utf-8")]);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("pg_dump") && !dest.exists(), "{err}");
    assert_eq!(
        pg.sql("three", "SELECT COUNT(*) FROM events"),
        "3000",
        "one row per event"
    );
    let (code, out, err) = gws[0].cli(&["dead-letters"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("0 dead letter(s)"), "{out}");

    // A replay made through one replica's CLI runs once, on whichever replica takes it.
    let (code, out, err) = gws[1].cli(&["replay", "--force", "three-00042"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        wait_until(Duration::from_secs(20), || calls(&paths)
            .get("three-00042")
            .copied()
            == Some(2)),
        "the replay ran"
    );
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(calls(&paths).get("three-00042").copied(), Some(2), "once");
    // Its history, read back through another replica: both generations' successes.
    let (code, out, err) = gws[2].cli(&["events", "show", "three-00042"]);
    assert_eq!(code, 0, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let history = attempts(&shown["deliveries"][0]);
    assert_eq!(history, [(0, 1, "ok".into()), (1, 1, "ok".into())], "{out}");

    // More dead letters than a page (1,000), most dying in the same millisecond as others: the
    // commands read them a page at a time, each once, newest first (then by event id). Made
    // dead by hand: only the listing is under test here.
    pg.sql(
        "three",
        "UPDATE deliveries SET state = 'dead', last_error = 'paged', \
         updated_at = (extract(epoch FROM clock_timestamp()) * 1000)::bigint - key % 7",
    );
    let (code, out, err) = gws[0].cli(&["dead-letters", "--json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<(i64, String)> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .map(|r| {
            let at = r["updated_at_ms"].as_i64().unwrap_or_default();
            (at, r["event_id"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    assert_eq!(rows.len(), 3_000);
    let ids: HashSet<&str> = rows.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids.len(), 3_000, "each once");
    assert!(
        rows.windows(2).all(|w| w[0] > w[1]),
        "newest first, then by id"
    );
    let (code, out, err) = gws[1].cli(&["replay", "--dead-letters", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.ends_with("3000 deliveries would be queued again (dry run)\n"),
        "{out}"
    );
}

#[test]
fn a_killed_replicas_claims_are_finished_by_the_others_after_its_lease() {
    let pg = PgCluster::start();
    let url = pg.create_database("kill");
    // Slow calls, so the first replica still holds most of its events when it dies.
    let config = replica_config("3s", r#"mode = "slow", sleep_ms = 20"#);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tmp")).collect();
    let mut gws: Vec<TestGateway> = dirs
        .iter()
        .map(|d| spawn(d.path(), &config, &url))
        .collect();
    let urls = Arc::new(vec![gws[0].url("/hook")]);
    let bodies = events("kill", 600);
    send(&bodies, urls, |_| vec![0]);
    let paths: Vec<&Path> = dirs.iter().map(|d| d.path()).collect();
    assert!(
        wait_until(Duration::from_secs(10), || calls(&paths).len() >= 20),
        "only {} delivered before the kill",
        calls(&paths).len()
    );
    let dead_pid = gws[0].pid();
    gws[0].kill9();
    let at_kill = calls(&paths).len();
    assert!(
        at_kill < 500,
        "the kill came too late to test anything ({at_kill})"
    );
    // What the survivors must take over after the lease: deliveries the dead replica claimed
    // (its name is `host:pid:random`).
    let held = pg.sql(
        "kill",
        &format!(
            "SELECT COUNT(*) FROM deliveries WHERE state = 'pending' \
             AND claimed_by LIKE '%:{dead_pid}:%'"
        ),
    );
    assert_ne!(
        held, "0",
        "the killed replica held no claim: the test shows nothing"
    );

    assert!(
        wait_until(Duration::from_secs(60), || calls(&paths).len() == 600),
        "only {} of 600 delivered after the kill",
        calls(&paths).len()
    );
    let counts = calls(&paths);
    let by_others: usize = paths[1..]
        .iter()
        .map(|d| read_jsonl(&d.join("data/audit.jsonl")).len())
        .sum();
    assert!(
        by_others >= 600 - at_kill,
        "the survivors took over ({by_others})"
    );
    // A repeat needs a call the dead replica made and never recorded: at most its
    // max_concurrency (2) calls of max_batch (8) deliveries.
    let repeats: usize = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "delivered at the kill: {at_kill}; by the survivors: {by_others}; repeats: {repeats}"
    );
    assert!(repeats <= 2 * 8, "{repeats} repeats");
    assert!(
        wait_until(Duration::from_secs(20), || {
            let (code, out, _) = gws[1].cli(&["deliveries", "list", "--state", "pending"]);
            code == 0 && out.contains("0 deliver(ies)")
        }),
        "nothing stays pending"
    );
    // The history tells the same story: every delivery's success is recorded, and each crash
    // the survivors counted has its `crashed` row.
    assert_eq!(
        pg.sql(
            "kill",
            "SELECT COUNT(*) FROM deliveries d WHERE NOT EXISTS (SELECT 1 FROM attempts a
             WHERE a.delivery_key = d.key AND a.outcome = 'ok')"
        ),
        "0"
    );
    let crashed = pg.sql(
        "kill",
        "SELECT COUNT(*) FROM attempts WHERE outcome = 'crashed'",
    );
    eprintln!("crashed attempts recorded: {crashed}");
    assert_eq!(
        pg.sql("kill", "SELECT COALESCE(SUM(crashes), 0) FROM deliveries"),
        crashed
    );
}

#[test]
fn a_database_restart_costs_503s_and_loses_nothing() {
    let pg = PgCluster::start();
    let url = pg.create_database("restart");
    let config = replica_config("30s", r#"mode = "ok""#);
    let (dirs, gws, urls) = replicas(2, &config, &url);
    let bodies = events("restart", 1_000);

    let sender = {
        let (bodies, urls) = (bodies.clone(), urls.clone());
        std::thread::spawn(move || send(&bodies, urls, |i| vec![i % 2]))
    };
    let paths: Vec<&Path> = dirs.iter().map(|d| d.path()).collect();
    wait_until(Duration::from_secs(30), || calls(&paths).len() >= 100);
    pg.stop();
    std::thread::sleep(Duration::from_secs(2));
    // While it is down: ingest refuses with 503, readiness says so.
    let lark = Lark::encrypted("tok", "key");
    let probe = lark.send(
        &gws[0].url("/hook"),
        &lark.event_v2("probe-down", "x.y_v1", serde_json::json!({})),
    );
    assert_eq!(probe.status, 503, "{}", probe.body);
    // `store backup` says how a PostgreSQL store is backed up even with the database away.
    let dest = dirs[0].path().join("copy.db");
    let (code, out, err) = gws[0].cli(&["store", "backup", dest.to_str().expect("utf-8")]);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("pg_dump") && !dest.exists(), "{err}");
    pg.start_again();
    let refused = sender.join().expect("sender");
    assert!(refused > 0, "some requests met the database down");

    assert!(
        wait_until(Duration::from_secs(60), || calls(&paths).len() == 1_000),
        "only {} of 1000 delivered after the restart",
        calls(&paths).len()
    );
    let twice: Vec<_> = calls(&paths).into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
}

#[test]
fn replicas_starting_together_on_an_empty_database_migrate_it_once() {
    let pg = PgCluster::start();
    let url = pg.create_database("race");
    let config = replica_config("30s", r#"mode = "ok""#);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tmp")).collect();
    let gws: Vec<TestGateway> = std::thread::scope(|s| {
        let handles: Vec<_> = dirs
            .iter()
            .map(|d| {
                let (config, url) = (&config, &url);
                s.spawn(move || spawn(d.path(), config, url))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("spawn"))
            .collect()
    });
    let migrated = gws
        .iter()
        .filter(|g| g.log().contains("database schema migrated"))
        .count();
    assert_eq!(migrated, 1, "exactly one replica applied the migration");
    assert_eq!(
        pg.sql("race", "SELECT COUNT(*) = MAX(version) FROM gateway_schema"),
        "t",
        "each migration recorded once"
    );
    let lark = Lark::encrypted("tok", "key");
    for (i, g) in gws.iter().enumerate() {
        let id = format!("race-{i}");
        let a = lark.send(
            &g.url("/hook"),
            &lark.event_v2(&id, "x.y_v1", serde_json::json!({})),
        );
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let paths: Vec<&Path> = dirs.iter().map(|d| d.path()).collect();
    assert!(wait_until(Duration::from_secs(20), || calls(&paths).len() == 3));
    let ids: HashSet<String> = calls(&paths).into_keys().collect();
    assert_eq!(ids.len(), 3);

    // Retention works on the shared store too: a replica that starts with the shortest
    // retention (1 min) purges the finished events (at start, then hourly), whoever accepted
    // them; they are made two minutes old first.
    pg.sql(
        "race",
        "UPDATE events SET received_at = received_at - 120000",
    );
    let short = config.replace(r#"lease = "30s""#, "lease = \"30s\"\nretention = \"1m\"");
    let purger_dir = tempfile::tempdir().expect("tmp");
    let _purger = spawn(purger_dir.path(), &short, &url);
    assert!(
        wait_until(Duration::from_secs(20), || pg
            .sql("race", "SELECT COUNT(*) FROM events")
            == "0"),
        "the finished events were purged"
    );
    assert_eq!(pg.sql("race", "SELECT COUNT(*) FROM deliveries"), "0");
}

/// A command against a database a newer gateway had migrated said "start the gateway of this
/// version once to migrate"; it says "upgrade the gateway", as `check` and `run` do. And every
/// replica but the first logged PostgreSQL's `NOTICE: relation "gateway_schema" already
/// exists, skipping` at start.
#[test]
fn a_schema_migrated_by_a_newer_gateway_is_refused_naming_the_upgrade() {
    let pg = PgCluster::start();
    let url = pg.create_database("newer");
    let config = replica_config("30s", r#"mode = "ok""#).replace("${PG_URL}", &url);
    let (a, b) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let _first = TestGateway::spawn(a.path(), &config);
    let mut old = TestGateway::spawn(b.path(), &config);
    assert!(!old.log().contains("already exists"), "{}", old.log());
    // A newer gateway (one migration more) starts on the shared database.
    pg.sql(
        "newer",
        "INSERT INTO gateway_schema (version) SELECT MAX(version) + 1 FROM gateway_schema",
    );
    // The older replica goes on serving...
    let lark = Lark::encrypted("tok", "key");
    let sent = lark.send(
        &old.url("/hook"),
        &lark.event_v2("after", "x.y_v1", serde_json::json!({})),
    );
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert!(wait_until(Duration::from_secs(20), || calls(&[
        a.path(),
        b.path()
    ])
    .contains_key("after")));
    // ...but its commands refuse the database...
    let (code, _, err) = old.cli(&["events", "list"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("upgrade the gateway") && !err.contains("once to migrate"),
        "{err}"
    );
    let (code, _, err) = old.cli(&["check"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("upgrade the gateway"), "{err}");
    // ...and, once stopped, it does not start again.
    old.kill9();
    let log = TestGateway::try_spawn(b.path(), &config).expect_err("refused");
    assert!(log.contains("upgrade the gateway"), "{log}");
}
