//! A PostgreSQL store's outages with every replica alive: the database stopped for longer than
//! the lease, and a database whose backends stop answering on open connections while it still
//! accepts new ones (a failover's old primary, a black-holed route); and a deadlock reported in
//! a language other than English.

use std::path::Path;
use std::time::{Duration, Instant};

use gateway_e2e::harness::{wait_until, Lark, TestGateway};
use gateway_e2e::pgkit::PgCluster;

#[path = "replicas_kit.rs"]
mod kit;

#[path = "pg_races_kit.rs"]
#[allow(dead_code, unused_imports)]
mod races;
use kit::{calls, events, replica_config, replicas, send, spawn};

/// A database outage longer than the lease, with every replica alive: each lease ran out on
/// the database's clock while no one could renew it. No replica may count the others' (or its
/// own) calls as crashed when the database is back: it waits a whole lease, in which the live
/// holders renew, and never counts a call it runs itself. Every event is called once, and no
/// attempt is recorded as crashed.
#[test]
fn an_outage_longer_than_the_lease_runs_no_call_twice() {
    outage("outage", Outage::Stop);
}

/// The whole database frozen (every process of the cluster stopped: a VM paused, its storage
/// frozen) for longer than the lease, then resumed: statements sent meanwhile run at once when
/// it resumes, with every lease run out on its clock. A crash count queued then must count
/// nothing (the holders could not renew), and no replica may take the others' lapsed claims
/// before it has seen the database answer in time for a lease. Every event is called once, and
/// no attempt is recorded as crashed.
#[test]
fn a_database_frozen_past_the_lease_runs_no_call_twice() {
    outage("frozen", Outage::Freeze);
}

/// A replica started just as the database comes back from an outage longer than the lease (a
/// deploy, a unit that failed to start while the database was down) finds every lease run out
/// while the other replicas live: it counts none of their calls as crashed before it has
/// seen the database for a lease (they renew within a third of one).
#[test]
fn a_replica_started_as_the_database_returns_counts_no_live_call_as_crashed() {
    outage("rejoin", Outage::Rejoin);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outage {
    /// Stopped (`pg_ctl stop`), then started again.
    Stop,
    /// The same, and a third replica tries to start all through it.
    Rejoin,
    /// Every process of the cluster stopped (SIGSTOP), then resumed.
    Freeze,
}

/// Two replicas under load (300 calls of 100 ms on four permits: some in flight at the stop),
/// the database stopped (or frozen) for 5 s against a 3 s lease, then started again (resumed);
/// with `Rejoin`, a third replica tries to start all through the outage, as a restarting unit
/// does. Every event is called once and no attempt is recorded as crashed.
fn outage(db: &str, how: Outage) {
    let rejoin = how == Outage::Rejoin;
    let pg = PgCluster::start();
    let url = pg.create_database(db);
    let config = replica_config("3s", r#"mode = "slow", sleep_ms = 100"#);
    let (dirs, gws, urls) = replicas(2, &config, &url);
    let bodies = events(db, 300);
    let sender = {
        let (bodies, urls) = (bodies.clone(), urls.clone());
        std::thread::spawn(move || send(&bodies, urls, |i| vec![i % 2]))
    };
    let late = tempfile::tempdir().expect("tmp");
    let mut paths: Vec<&Path> = dirs.iter().map(|d| d.path()).collect();
    wait_until(Duration::from_secs(30), || calls(&paths).len() >= 30);
    let frozen = (how == Outage::Freeze).then(|| Frozen::all(&pg));
    if frozen.is_none() {
        pg.stop();
    }
    let starter = rejoin.then(|| {
        let (dir, config) = (late.path().to_path_buf(), config.replace("${PG_URL}", &url));
        std::thread::spawn(move || loop {
            if let Ok(g) = TestGateway::try_spawn(&dir, &config) {
                return g;
            }
            std::thread::sleep(Duration::from_millis(20));
        })
    });
    std::thread::sleep(Duration::from_secs(5));
    match frozen {
        Some(frozen) => drop(frozen),
        None => pg.start_again(),
    }
    let _third = starter.map(|s| s.join().expect("starter"));
    sender.join().expect("sender");
    paths.push(late.path());
    assert!(
        wait_until(Duration::from_secs(60), || calls(&paths).len() == 300),
        "only {} of 300 delivered after the outage",
        calls(&paths).len()
    );
    // Long enough for a sweeper that would wrongly count a crash to have done so, and for its
    // second call to be recorded.
    std::thread::sleep(Duration::from_secs(5));
    let twice: Vec<_> = calls(&paths).into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(twice.is_empty(), "called more than once: {twice:?}");
    assert_eq!(
        pg.sql(
            db,
            "SELECT COUNT(*) FROM attempts WHERE outcome = 'crashed'"
        ),
        "0",
        "an attempt of a live replica was counted as crashed"
    );
    // Each replica ran calls through the outage (its backlog is seconds of calls) and could not
    // renew their claims: it said so, once per run of failures, and said when renewals worked
    // again (a warning every second, or none, would hide the one that matters).
    for gw in &gws {
        let log = gw.log();
        let failing = log.matches("could not renew the claims").count();
        let again = log.matches("claims renewed again").count();
        assert!(
            failing >= 1 && (failing == again || failing == again + 1),
            "{failing} renewal warnings, {again} recoveries:\n{log}"
        );
    }
}

/// Sends `signal` to every backend serving the gateway (not to the postmaster: new connections
/// are still accepted), returning their pids.
fn signal_backends(pg: &PgCluster, db: &str, signal: &str, pids: Option<&[String]>) -> Vec<String> {
    let pids: Vec<String> = match pids {
        Some(p) => p.to_vec(),
        None => pg
            .sql(
                db,
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'lark-gateway'",
            )
            .lines()
            .map(str::to_owned)
            .collect(),
    };
    for pid in &pids {
        let _ = std::process::Command::new("kill")
            .args([signal, pid])
            .status();
    }
    pids
}

/// Every process of the cluster (the postmaster and its children), stopped with SIGSTOP while
/// this lives; resumed (SIGCONT) when dropped, however the test ends.
struct Frozen(Vec<String>);

impl Frozen {
    fn all(pg: &PgCluster) -> Frozen {
        let postmaster = pg.postmaster_pid().to_string();
        let mut pids = vec![postmaster.clone()];
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let pid = entry.file_name().to_string_lossy().into_owned();
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state ppid ...`: the comm may hold spaces, never a `)` after it.
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1));
            if parent == Some(postmaster.as_str()) {
                pids.push(pid);
            }
        }
        for pid in &pids {
            let _ = std::process::Command::new("kill")
                .args(["-STOP", pid])
                .status();
        }
        Frozen(pids)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-CONT", pid])
                .status();
        }
    }
}

/// Resumes stopped backends when the test ends, however it ends (the cluster must stop).
struct Resume<'a>(&'a PgCluster, Vec<String>);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        signal_backends(self.0, "hung", "-CONT", Some(&self.1));
    }
}

/// The gateway's connections stop answering (their backends are stopped) while the server still
/// takes new ones: an operation that timed out closes the pool's idle connections, so ingest and
/// delivery move to fresh connections instead of answering 503 for as long as the old ones hang.
#[test]
fn connections_that_stop_answering_are_replaced() {
    let pg = PgCluster::start();
    let url = pg.create_database("hung");
    let config = replica_config("30s", r#"mode = "ok""#);
    let dir = tempfile::tempdir().expect("tmp");
    let gw = spawn(dir.path(), &config, &url);
    let lark = Lark::encrypted("tok", "key");
    let send_one = |id: &str| {
        lark.send(
            &gw.url("/hook"),
            &lark.assets_update(
                id,
                "acc-1",
                1,
                r#"[{"currency_type":"CNY","amount":0.1}]"#,
                1,
            ),
        )
    };
    let first = send_one("hung-0");
    assert_eq!(first.status, 200, "{}", first.body);
    let paths = [dir.path()];
    assert!(wait_until(Duration::from_secs(20), || calls(&paths).len() == 1));
    let stopped = signal_backends(&pg, "hung", "-STOP", None);
    assert!(!stopped.is_empty(), "no backend of the gateway found");
    let _resume = Resume(&pg, stopped);

    // Re-sent as Lark does until taken: within a few operation timeouts, not never.
    let began = Instant::now();
    let mut answers = Vec::new();
    loop {
        let a = send_one("hung-1");
        answers.push(a.status);
        if a.status == 200 {
            break;
        }
        assert_eq!(a.status, 503, "{}", a.body);
        assert!(
            began.elapsed() < Duration::from_secs(45),
            "still refused after {:?} while the database takes new connections: {answers:?}",
            began.elapsed()
        );
    }
    assert!(
        wait_until(Duration::from_secs(45), || calls(&paths).len() == 2),
        "the event taken on a fresh connection was not delivered: {:?}",
        calls(&paths)
    );
}

/// An operation the gateway gives up on is cancelled on the server too: it must not keep
/// running there, waiting for a lock or holding its own, after the gateway moved on. Here the
/// sweeper's reads (10 s limit) wait for a `deliveries` another session locked, and an event's
/// ingest (2.5 s limit: answered 503) for a locked `events`.
#[test]
fn an_operation_given_up_on_is_cancelled_on_the_server() {
    let pg = PgCluster::start();
    let url = pg.create_database("cancel");
    let config = replica_config("30s", r#"mode = "ok""#);
    let (_dirs, gws, _urls) = replicas(1, &config, &url);
    let (stale, answer) = std::thread::scope(|s| {
        // The gateway's own reads may hold one table while they wait for the other: the lock
        // can meet them in a deadlock, so it is retried until both are held (CI once lost it).
        s.spawn(|| {
            pg.sql(
                "cancel",
                "BEGIN; DO $$ BEGIN LOOP BEGIN \
                 LOCK TABLE deliveries, events IN ACCESS EXCLUSIVE MODE; EXIT; \
                 EXCEPTION WHEN deadlock_detected THEN PERFORM pg_sleep(0.05); \
                 END; END LOOP; END $$; SELECT pg_sleep(16); COMMIT;",
            )
        });
        assert!(
            wait_until(Duration::from_secs(10), || pg.sql(
                "cancel",
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                 WHERE c.relname IN ('events', 'deliveries') \
                 AND l.mode = 'AccessExclusiveLock' AND l.granted",
            ) == "2"),
            "the tables were not locked"
        );
        let sent = s.spawn(|| {
            let lark = Lark::encrypted("tok", "key");
            let body = lark.assets_update(
                "cancel-1",
                "acc-1",
                1,
                r#"[{"currency_type":"CNY","amount":0.1}]"#,
                1,
            );
            lark.send(&gws[0].url("/hook"), &body).status
        });
        std::thread::sleep(Duration::from_millis(13_500));
        let stale = pg.sql(
            "cancel",
            "SELECT string_agg(left(query, 40), ' | ') FROM pg_stat_activity \
             WHERE application_name = 'lark-gateway' AND wait_event_type = 'Lock' \
             AND query_start < clock_timestamp() - interval '11 seconds'",
        );
        (stale, sent.join().expect("sender"))
    });
    assert_eq!(answer, 503, "the event met the locked table");
    assert_eq!(
        stale, "",
        "queries the gateway gave up on still wait on the server"
    );
}

/// A deadlock is tried again whatever language the server writes its messages in: the gateway
/// went by the English text ("deadlock detected"), so on a server with another `lc_messages`
/// an ingest batch that met a deadlock was answered 503 instead of tried again. Here the first
/// event insert fails once with SQLSTATE 40P01 and a German message (a sequence counts the
/// tries: it is not rolled back with the failed transaction).
#[test]
fn a_deadlock_reported_in_another_language_is_tried_again() {
    let pg = PgCluster::start();
    let url = pg.create_database("deadlock");
    let config = replica_config("3s", r#"mode = "ok""#);
    let (_dirs, gws, urls) = replicas(1, &config, &url);
    pg.sql(
        "deadlock",
        "CREATE SEQUENCE tries;
         CREATE FUNCTION fail_once() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF nextval('tries') = 1 THEN
             RAISE EXCEPTION 'Verklemmung (Deadlock) entdeckt' USING ERRCODE = '40P01';
           END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER fail_once BEFORE INSERT ON events
           FOR EACH ROW EXECUTE FUNCTION fail_once();",
    );
    let unavailable = send(&events("deadlock", 1), urls, |_| vec![0]);
    assert_eq!(
        (
            unavailable,
            pg.sql("deadlock", "SELECT last_value FROM tries")
        ),
        (0, "2".to_owned()),
        "tried again at once, not answered 503\n{}",
        gws[0].log()
    );
}

/// A forced replay of a delivery whose call still hangs on replica A (A keeps the claim and
/// renews it), then a database outage longer than the lease: when the database is back, A's
/// claim has lapsed on its clock while A lives and its call still runs. Replica B must not take
/// that claim (and call the replay beside the hung call) before it has seen the database for a
/// lease, within which A renews it; once the hung call returns, A runs the replay.
#[test]
fn a_live_replicas_lapsed_claim_is_not_taken_after_an_outage() {
    let pg = PgCluster::start();
    let url = races::replica_database(&pg, "lapsed");
    let cfg = races::config("3s", r#"mode = "gate", gate = "data/open""#).replace(
        "initial_backoff = \"100ms\"",
        "initial_backoff = \"100ms\"\nmax_attempts = 1",
    );
    let (a, _b, a_dir, b_dir) = races::hung_and_free(&cfg, &url);
    let dirs = [a_dir.path(), b_dir.path()];
    let sql = |q: &str| pg.sql("lapsed", q);
    races::hang_into_a_dead_letter(&a, "lapsed-1", sql);
    let (code, out, err) = a.cli(&["replay", "--dead-letters", "--force"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(sql("SELECT state FROM deliveries"), "pending", "replayed");
    std::thread::sleep(Duration::from_secs(1));
    pg.stop();
    std::thread::sleep(Duration::from_secs(5));
    pg.start_again();
    let back = Instant::now();
    while back.elapsed() < Duration::from_secs(6) {
        assert_eq!(
            races::calls(&dirs),
            0,
            "{:?} after the outage: another replica ran the replay beside the hung call",
            back.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    races::the_replay_runs_once_the_hang_ends(a_dir.path(), &dirs, sql);
}
