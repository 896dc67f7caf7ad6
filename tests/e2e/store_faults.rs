//! The store refusing writes, end to end: `/readyz` (and `/status`'s `ready`) answer 503 while
//! the embedded store cannot write a byte (a full disk, simulated with `RLIMIT_FSIZE`), and
//! answer within their bound while a PostgreSQL server hangs. And a stored body damaged on disk:
//! its deliveries end as dead letters, with no plugin call.

use std::process::Command;
use std::time::{Duration, Instant};

use gateway_e2e::harness::{self, base_config, get, wait_until, Lark, TestGateway};
use gateway_e2e::pgkit::PgCluster;

const TOKEN: &str = "faults-token";

fn app() -> String {
    format!(
        r#"
[[apps]]
name = "faults"
path = "/hook"
verification_token = "{TOKEN}"
"#
    )
}

fn send(gw: &TestGateway, id: &str) -> u16 {
    let lark = Lark::plain(TOKEN);
    lark.send(
        &gw.url("/hook"),
        &lark.event_v2(id, "t.x", serde_json::json!({})),
    )
    .status
}

fn readyz(gw: &TestGateway) -> u16 {
    get(&gw.admin_url("/readyz")).map_or(0, |r| r.status)
}

/// `/status`'s `ready`, which must say what `/readyz` says.
fn status_ready(gw: &TestGateway) -> bool {
    let r = get(&gw.admin_url("/status")).expect("status");
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("status JSON");
    v["ready"].as_bool().expect("ready")
}

/// Sets the soft `RLIMIT_FSIZE` of process `pid` (`prlimit --fsize=SOFT:`, util-linux).
fn file_size_limit(pid: u32, soft: &str) {
    let status = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--fsize={soft}:")])
        .status()
        .expect("run prlimit (util-linux)");
    assert!(status.success(), "prlimit --fsize={soft}: failed");
}

/// A full disk, as the gateway sees one: with a file size limit of one byte, every write into
/// a regular file past its first byte fails (EFBIG; SIGXFSZ ignored, as `trap '' XFSZ` leaves
/// it to the exec'd gateway), so every store write fails. The readiness probe used to be a
/// purge that wrote nothing, and stayed 200 while every event got 503.
#[test]
fn readiness_is_503_while_the_store_cannot_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = format!("{}{}", base_config(), app());
    let gw = TestGateway::spawn_after(dir.path(), &cfg, "trap '' XFSZ");
    assert_eq!(send(&gw, "before"), 200);
    assert_eq!(readyz(&gw), 200);
    file_size_limit(gw.pid(), "1");
    assert_eq!(send(&gw, "full-1"), 503, "{}", gw.log());
    // A probe's answer stands for a second at most.
    let unready = wait_until(Duration::from_secs(3), || readyz(&gw) == 503);
    assert!(
        unready,
        "/readyz stayed 200 while the store could not write"
    );
    assert_eq!(readyz(&gw), 503);
    assert!(
        !status_ready(&gw),
        "/status says ready while /readyz does not"
    );
    // Every event refused while Lark keeps sending: the failure lines are limited (10 a
    // second; the embedded store's "store transaction failed" logged one per event).
    let started = Instant::now();
    for n in 0..60 {
        assert_eq!(send(&gw, &format!("full-more-{n}")), 503);
    }
    let took = started.elapsed();
    let logged = gw
        .log()
        .lines()
        .filter(|l| l.contains("store transaction failed"))
        .count();
    assert!(
        logged <= 10 * (took.as_secs() as usize + 2),
        "{logged} lines in {took:?}"
    );
    file_size_limit(gw.pid(), "unlimited");
    let ready = wait_until(Duration::from_secs(5), || readyz(&gw) == 200);
    assert!(ready, "/readyz did not come back:\n{}", gw.log());
    assert!(status_ready(&gw));
    assert_eq!(send(&gw, "full-1"), 200, "Lark's retry is stored");
}

/// The config with one `testkit` instance `name` (its settings `kit`) taking `t.x`.
fn with_instance(name: &str, kit: &str) -> String {
    format!(
        r#"{base}{app}
[delivery]
initial_backoff = "2s"
max_backoff = "2s"
removed_plugin_grace = "1h"

[[plugins]]
name = "{name}"
library = "{lib}"
config = {{ {kit}, record = "data/{name}.jsonl" }}

[[routes]]
events = ["t.x"]
plugins = ["{name}"]
"#,
        base = base_config(),
        app = app(),
        lib = harness::binaries().testkit.display(),
    )
}

/// A start mark the store refuses stops every new call until the store takes writes again.
/// When a reload removes the instance whose mark it was, that write is given up: nothing of
/// the engine writes again, so the waiting dispatchers must find out by themselves that the
/// store recovered (they probe it). They used to wait for a write that never came: once the
/// disk had room again, no plugin was called until a restart.
#[test]
fn calls_resume_after_a_refused_start_mark_whose_instance_a_reload_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = with_instance("p", r#"mode = "retry_then_ok""#);
    let gw = TestGateway::spawn_after(dir.path(), &first, "trap '' XFSZ");
    assert_eq!(send(&gw, "first"), 200);
    // Its first call asked for a retry, recorded: due 2 s later.
    assert!(
        wait_until(Duration::from_secs(20), || gw.delivery("first", "p")
            ["attempts"]
            == 1),
        "{}",
        gw.log()
    );
    file_size_limit(gw.pid(), "1");
    assert!(
        wait_until(Duration::from_secs(20), || gw
            .log()
            .contains("could not mark deliveries as started")),
        "the retry's start mark was not refused: {}",
        gw.log()
    );
    // `p` removed (its mark given up), `q` added, while the store still refuses writes.
    std::fs::write(
        dir.path().join("gateway.toml"),
        with_instance("q", r#"mode = "ok""#),
    )
    .expect("write");
    gw.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(20), || gw
            .log()
            .contains("config reloaded")),
        "{}",
        gw.log()
    );
    file_size_limit(gw.pid(), "unlimited");
    assert!(
        wait_until(Duration::from_secs(5), || readyz(&gw) == 200),
        "{}",
        gw.log()
    );
    assert_eq!(send(&gw, "second"), 200);
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .calls("q")
            .iter()
            .any(|c| c["event_id"] == "second" && c["outcome"] == "ok")),
        "no call started after the store recovered: {}\n{}",
        gw.delivery("second", "q"),
        gw.log()
    );
}

/// The processes of a PostgreSQL server stopped (SIGSTOP), continued when dropped so the
/// cluster can shut down.
struct Frozen(Vec<u32>);

impl Frozen {
    fn server(pg: &PgCluster) -> Frozen {
        let postmaster = pg.postmaster_pid();
        // The postmaster first: it forks no new backend once stopped.
        let mut pids = vec![postmaster];
        signal("STOP", &pids);
        let children = harness::children(postmaster);
        signal("STOP", &children);
        pids.extend(children);
        Frozen(pids)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal("CONT", &self.0);
    }
}

fn signal(name: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .args(pids.iter().map(u32::to_string))
        .status();
}

/// Load balancers give a health check a few seconds; an operation on a hung database fails
/// only after 10 s. The readiness probe answers 503 within its own bound (2 s) instead.
#[test]
fn readiness_answers_within_its_bound_while_postgresql_hangs() {
    let pg = PgCluster::start();
    let url = pg.create_database("hung");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        "{}{}",
        base_config().replace("path = \"data/gateway.db\"", "url = \"${PG_URL}\""),
        app()
    );
    let gw = TestGateway::spawn_with_env(dir.path(), &cfg, &[("PG_URL", &url)]);
    assert!(wait_until(Duration::from_secs(10), || readyz(&gw) == 200));
    assert_eq!(send(&gw, "before"), 200);
    {
        let _frozen = Frozen::server(&pg);
        // Past the second a successful probe answers for.
        std::thread::sleep(Duration::from_millis(1100));
        for _ in 0..2 {
            let started = Instant::now();
            let status = readyz(&gw);
            let took = started.elapsed();
            assert_eq!(status, 503, "took {took:?}");
            assert!(took < Duration::from_secs(3), "/readyz took {took:?}");
        }
        // `/metrics` and `/status` wait at most 2 s for the store's backlog too (they waited
        // for PostgreSQL's 10 s limit and its cancel: 13–15 s, past Prometheus' timeout).
        for _ in 0..2 {
            let started = Instant::now();
            let m = get(&gw.admin_url("/metrics")).expect("metrics");
            let took = started.elapsed();
            assert_eq!(m.status, 200);
            assert!(took < Duration::from_secs(3), "/metrics took {took:?}");
            assert!(m.body.contains("gateway_backlog_current 0"), "{}", m.body);
        }
        let started = Instant::now();
        let r = get(&gw.admin_url("/status")).expect("status");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("status JSON");
        assert!(
            v["backlog_error"]
                .as_str()
                .is_some_and(|e| e.contains("did not answer the backlog read within 2s")),
            "{v}"
        );
    }
    let ready = wait_until(Duration::from_secs(20), || readyz(&gw) == 200);
    assert!(ready, "/readyz did not come back:\n{}", gw.log());
    assert!(wait_until(Duration::from_secs(20), || get(
        &gw.admin_url("/metrics")
    )
    .is_ok_and(|m| m.body.contains("gateway_backlog_current 1"))));
}

/// A stop ends within `shutdown_grace` while PostgreSQL hangs: the release of this replica's
/// claims, its last store operation, gets what is left of the grace, not the store's own 10 s
/// limit (the stop took the grace plus those 10 s).
#[test]
fn a_stop_ends_within_its_grace_while_postgresql_hangs() {
    let pg = PgCluster::start();
    let url = pg.create_database("hungstop");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        "{}{}",
        base_config()
            .replace("path = \"data/gateway.db\"", "url = \"${PG_URL}\"")
            .replace("shutdown_grace = \"5s\"", "shutdown_grace = \"2s\""),
        app()
    );
    let mut gw = TestGateway::spawn_with_env(dir.path(), &cfg, &[("PG_URL", &url)]);
    assert!(wait_until(Duration::from_secs(10), || readyz(&gw) == 200));
    let _frozen = Frozen::server(&pg);
    let started = Instant::now();
    gw.signal("TERM");
    let exited = gw.wait(Duration::from_secs(30));
    let took = started.elapsed();
    assert!(exited.is_some(), "{}", gw.log());
    assert!(
        took < Duration::from_secs(6),
        "the stop took {took:?}: {}",
        gw.log()
    );
}

/// A webhook answer waits at most this long for a locked store, under Lark's 3 s (the store's
/// own bound is 1 s; the rest is room for a loaded machine running a debug build).
const ANSWER_BOUND: Duration = Duration::from_millis(2500);

/// Another process holds the embedded store's write lock for 4 s while requests keep coming:
/// each is answered 503 within the bound (Lark re-sends), none waits for the batch ahead's busy
/// wait and then its own (up to 4 s before), and once the lock is released every re-sent event
/// is stored and delivered once.
#[test]
fn a_locked_store_answers_503_within_the_bound_and_delivers_each_event_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        "{}{}\n[[plugins]]\nname = \"sink\"\nlibrary = \"{}\"\nconfig = {{ record = \"data/sink.jsonl\" }}\n\n[[routes]]\nevents = [\"t.x\"]\nplugins = [\"sink\"]\n",
        base_config(),
        app(),
        harness::binaries().testkit.display()
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    assert_eq!(send(&gw, "before"), 200);
    let db = dir.path().join("data/gateway.db");
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let other = rusqlite::Connection::open(db).expect("open");
        other.execute_batch("BEGIN EXCLUSIVE").expect("lock");
        locked_tx.send(()).expect("locked");
        std::thread::sleep(Duration::from_secs(4));
        other.execute_batch("ROLLBACK").expect("unlock");
    });
    locked_rx.recv().expect("the lock is held");
    let started = Instant::now();
    let gw = &gw;
    let answers: Vec<(String, u16, Duration)> = std::thread::scope(|s| {
        let senders: Vec<_> = (0..4)
            .map(|t| {
                s.spawn(move || {
                    let mut answers = Vec::new();
                    let mut n = 0;
                    while started.elapsed() < Duration::from_millis(3500) {
                        let id = format!("locked-{t}-{n}");
                        let sent = Instant::now();
                        let status = send(gw, &id);
                        answers.push((id, status, sent.elapsed()));
                        n += 1;
                    }
                    answers
                })
            })
            .collect();
        senders
            .into_iter()
            .flat_map(|h| h.join().expect("sender"))
            .collect()
    });
    holder.join().expect("holder");
    for (id, status, took) in &answers {
        assert!(
            *took < ANSWER_BOUND,
            "{id} answered {status} after {took:?} (bound {ANSWER_BOUND:?})"
        );
        assert!(matches!(status, 200 | 503), "{id}: {status}");
    }
    assert!(
        answers.iter().any(|(_, s, _)| *s == 503),
        "the lock refused nothing"
    );
    // Lark re-sends what was refused: every event is then delivered, those answered 200 from
    // the store alone (a re-send of them here would hide one answered 200 and not stored).
    for (id, _, _) in answers.iter().filter(|(_, s, _)| *s == 503) {
        assert_eq!(send(gw, id), 200, "{id} once the lock is gone");
    }
    let expected = answers.len() + 1;
    let sink = dir.path().join("data/sink.jsonl");
    let all = wait_until(Duration::from_secs(15), || {
        harness::read_jsonl(&sink).len() >= expected
    });
    assert!(all, "not every event was delivered:\n{}", gw.log());
    // And what it took for refused (a 200 it did not get): a duplicate, not delivered again.
    for (id, _, _) in answers.iter().filter(|(_, s, _)| *s == 200) {
        assert_eq!(send(gw, id), 200, "{id} sent again");
    }
    std::thread::sleep(Duration::from_millis(500));
    let delivered = harness::read_jsonl(&sink);
    let mut ids: Vec<String> = delivered
        .iter()
        .map(|d| d["event_id"].as_str().expect("event_id").to_owned())
        .collect();
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!(before, ids.len(), "an event delivered twice");
    assert_eq!(ids.len(), expected);
}

/// A stored event whose body is no longer JSON (damaged on disk, or edited by hand) cannot be
/// handed to a plugin: its delivery ends as a dead letter saying so, at its next attempt (here
/// the one after a crash during its first call), without a call; the next events are
/// delivered.
#[test]
fn a_stored_body_that_is_no_longer_json_is_a_dead_letter_without_a_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = harness::kit_config(
        TOKEN,
        r#"{ mode = "gate", gate = "data/open", record = "data/kit.jsonl" }"#,
    );
    let mut gw = TestGateway::spawn(dir.path(), &cfg);
    gw.send_plain(TOKEN, "damaged", "test.x");
    gw.wait_running("damaged", "kit");
    gw.kill9();
    let db = rusqlite::Connection::open(dir.path().join("data/gateway.db")).expect("open");
    let changed = db
        .execute(
            "UPDATE events SET body = '{\"schema\": \"2.0\", \"hea' WHERE id = 'damaged'",
            [],
        )
        .expect("damage the body");
    assert_eq!(changed, 1);
    drop(db);
    std::fs::write(dir.path().join("data/open"), "").expect("open the gate");
    let gw = TestGateway::spawn(dir.path(), &cfg);
    let d = || gw.delivery("damaged", "kit");
    assert!(
        wait_until(Duration::from_secs(15), || d()["state"] == "dead"),
        "{}\n{}",
        d(),
        gw.log()
    );
    let d = d();
    // Attempt 1 was the call the kill cut short (counted as a crash at the start), attempt 2
    // found the body unusable.
    assert_eq!(
        (d["attempts"].as_u64(), d["crashes"].as_u64()),
        (Some(2), Some(1)),
        "{d}"
    );
    let error = d["last_error"].as_str().unwrap_or_default();
    assert!(error.starts_with("stored event is not JSON: "), "{d}");
    let last = &d["history"][d["history"].as_array().map_or(0, Vec::len) - 1];
    assert_eq!(
        (&last["attempt"], &last["outcome"]),
        (&serde_json::json!(2), &serde_json::json!("reject")),
        "{d}"
    );
    gw.send_plain(TOKEN, "after", "test.x");
    assert!(
        wait_until(Duration::from_secs(15), || gw.delivery("after", "kit")
            ["state"]
            == "done"),
        "{}\n{}",
        gw.delivery("after", "kit"),
        gw.log()
    );
    let called: Vec<serde_json::Value> = gw
        .calls("kit")
        .into_iter()
        .map(|c| c["event_id"].clone())
        .collect();
    assert_eq!(
        called,
        [serde_json::json!("after")],
        "the damaged event reached the plugin"
    );
}
