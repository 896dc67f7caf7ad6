//! Operating the gateway end to end: metrics after known traffic, readiness during shutdown,
//! SIGTERM during a burst, SIGHUP reloads (broken config kept out, plugin and route added,
//! requests in flight across reloads, a changed library refused), replay of a fixed dead letter.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway_e2e::harness::{
    self, base_config, binaries, get, metric, read_jsonl, run_cli, wait_until, Lark, TestGateway,
};

const TOKEN: &str = "ops-token";

fn app() -> String {
    format!(
        r#"
[[apps]]
name = "ops"
path = "/hook"
verification_token = "{TOKEN}"

[delivery]
max_attempts = 3
initial_backoff = "50ms"
max_backoff = "100ms"
timeout = "10s"
"#
    )
}

fn testkit(name: &str, config: &str) -> String {
    format!(
        "\n[[plugins]]\nname = \"{name}\"\nlibrary = \"{}\"\nconfig = {{ {config} }}\n",
        binaries().testkit.display()
    )
}

fn route(events: &str, plugins: &str) -> String {
    format!("\n[[routes]]\nevents = [{events}]\nplugins = [{plugins}]\n")
}

fn send(gw: &TestGateway, id: &str, event_type: &str) -> u16 {
    let lark = Lark::plain(TOKEN);
    lark.send(
        &gw.url("/hook"),
        &lark.event_v2(id, event_type, serde_json::json!({})),
    )
    .status
}

fn recorded(gw: &TestGateway, file: &str) -> Vec<serde_json::Value> {
    read_jsonl(&gw.dir.join("data").join(file))
}

fn reload(gw: &TestGateway, config: &str, expect: &str) {
    let before = gw.log().matches(expect).count();
    std::fs::write(gw.dir.join("gateway.toml"), config).expect("write config");
    gw.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(10), || gw.log().matches(expect).count()
            > before),
        "no {expect:?} after SIGHUP:\n{}",
        gw.log()
    );
}

#[test]
fn metrics_move_with_known_traffic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        "{}{}{}{}{}{}",
        base_config(),
        app(),
        testkit("good", "record = \"data/good.jsonl\""),
        testkit("bad", "mode = \"reject\""),
        route("\"t.good\"", "\"good\""),
        route("\"t.bad\"", "\"bad\""),
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    assert_eq!(get(&gw.admin_url("/healthz")).expect("healthz").status, 200);
    assert_eq!(get(&gw.admin_url("/readyz")).expect("readyz").status, 200);
    for i in 0..3 {
        assert_eq!(send(&gw, &format!("g{i}"), "t.good"), 200);
    }
    assert_eq!(send(&gw, "g0", "t.good"), 200);
    assert_eq!(send(&gw, "b0", "t.bad"), 200);
    assert_eq!(send(&gw, "u0", "t.none"), 200);
    let bad = harness::post(&gw.url("/hook"), &[], "{oops").expect("post");
    assert_eq!(bad.status, 400);

    let m = || get(&gw.admin_url("/metrics")).expect("metrics").body;
    assert!(wait_until(Duration::from_secs(10), || {
        metric(&m(), r#"gateway_dead_letters_total{plugin="bad"}"#) == 1.0
            && metric(
                &m(),
                r#"gateway_deliveries_total{plugin="good",outcome="ok"}"#,
            ) == 3.0
    }));
    let text = m();
    let at = |s: &str| metric(&text, s);
    assert_eq!(
        at(r#"gateway_requests_total{app="ops",status="200",reason="stored"}"#),
        5.0
    );
    assert_eq!(
        at(r#"gateway_requests_total{app="ops",status="200",reason="duplicate"}"#),
        1.0
    );
    assert_eq!(
        at(r#"gateway_requests_total{app="ops",status="400",reason="malformed"}"#),
        1.0
    );
    assert_eq!(at(r#"gateway_events_stored_total{app="ops"}"#), 5.0);
    assert_eq!(at(r#"gateway_duplicate_events_total{app="ops"}"#), 1.0);
    assert_eq!(at(r#"gateway_unrouted_events_total{app="ops"}"#), 1.0);
    assert_eq!(
        at(r#"gateway_deliveries_total{plugin="bad",outcome="reject"}"#),
        1.0
    );
    assert_eq!(at("gateway_pending_deliveries"), 0.0);
    assert_eq!(at("gateway_request_duration_seconds_count"), 7.0);
    // Three deliveries in one to three calls: one sent while another's call still runs may
    // wait `[delivery] linger` and share its successor's call.
    let calls = at(r#"gateway_plugin_call_duration_seconds_count{plugin="good"}"#);
    assert!((1.0..=3.0).contains(&calls), "{calls} calls");
    assert!(at("gateway_store_commit_batch_size_count") >= 1.0);
    assert_eq!(
        at("gateway_store_commit_duration_seconds_count"),
        at("gateway_store_commit_batch_size_count"),
        "every commit timed"
    );
    // Exposed (`at` reads a missing series as 0), and never more than the commits.
    assert!(
        text.lines()
            .any(|l| l.starts_with("gateway_store_commits_paced_total ")),
        "the paced-commit counter is exposed"
    );
    let paced = at("gateway_store_commits_paced_total");
    assert!(
        paced <= at("gateway_store_commit_batch_size_count"),
        "{paced} paced commits"
    );
    // Five events stored (the unrouted one included), each id held once for dedup.
    assert_eq!(at("gateway_store_dedup_ids"), 5.0);
}

#[test]
fn sigterm_during_a_burst_exits_0_and_restart_delivers_everything_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        "{}{}{}{}",
        base_config(),
        app(),
        testkit(
            "worker",
            "mode = \"slow\", sleep_ms = 5, record = \"data/worker.jsonl\""
        ),
        route("\"t.burst\"", "\"worker\""),
    ) + &testkit(
        "anchor",
        "mode = \"slow\", sleep_ms = 1500, record = \"data/anchor.jsonl\"",
    ) + &route("\"t.anchor\"", "\"anchor\"");
    let mut gw = TestGateway::spawn(dir.path(), &cfg);
    let url = gw.url("/hook");
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..8)
        .map(|_| {
            let (acked, next, url) = (acked.clone(), next.clone(), url.clone());
            std::thread::spawn(move || {
                let lark = Lark::plain(TOKEN);
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= 500 {
                        break;
                    }
                    let id = format!("burst-{i:03}");
                    let (body, headers) =
                        lark.wrap(&lark.event_v2(&id, "t.burst", serde_json::json!({})));
                    if let Ok(a) = harness::post(&url, &headers, &body) {
                        if a.status == 200 {
                            acked.lock().expect("lock").insert(id);
                        }
                    }
                }
            })
        })
        .collect();
    assert!(wait_until(Duration::from_secs(30), || acked
        .lock()
        .map(|a| a.len())
        .unwrap_or(0)
        >= 100));
    // A 1.5 s call in flight keeps the gateway draining long enough to watch readiness flip.
    assert_eq!(send(&gw, "anchor-1", "t.anchor"), 200);
    assert_eq!(get(&gw.admin_url("/readyz")).expect("readyz").status, 200);
    gw.signal("TERM");
    let flipped = wait_until(Duration::from_secs(5), || {
        get(&gw.admin_url("/readyz")).is_ok_and(|r| r.status == 503)
    });
    let status = gw.wait(Duration::from_secs(20)).expect("exited");
    for s in senders {
        s.join().expect("sender");
    }
    assert!(status.success(), "exit status {status:?}\n{}", gw.log());
    assert!(flipped, "/readyz did not turn 503 during shutdown");
    // The in-flight call finished within the grace period and was recorded; then the plugin
    // instance was shut down.
    let anchor: Vec<String> = recorded(&gw, "anchor.jsonl")
        .iter()
        .map(|l| l["outcome"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(anchor, ["ok", "shutdown"]);
    let acked = acked.lock().expect("lock").clone();

    // Restart: everything acknowledged is delivered, without Lark re-sending anything.
    let gw = TestGateway::spawn(dir.path(), &cfg);
    assert!(
        wait_until(Duration::from_secs(30), || {
            let done: HashSet<String> = recorded(&gw, "worker.jsonl")
                .iter()
                .filter(|l| l["outcome"] == "ok")
                .filter_map(|l| l["event_id"].as_str().map(str::to_owned))
                .collect();
            acked.is_subset(&done)
        }),
        "acknowledged events missing after restart"
    );
    let mut calls: HashMap<String, usize> = HashMap::new();
    for l in recorded(&gw, "worker.jsonl") {
        if let Some(id) = l["event_id"].as_str() {
            *calls.entry(id.to_owned()).or_default() += 1;
        }
    }
    // A graceful stop finishes or abandons calls cleanly: every call is recorded once.
    let repeated: Vec<_> = calls.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "repeated calls after a graceful stop: {repeated:?}"
    );
    let metrics = get(&gw.admin_url("/metrics")).expect("metrics").body;
    assert!(
        wait_until(Duration::from_secs(5), || {
            metric(
                &get(&gw.admin_url("/metrics")).expect("m").body,
                "gateway_pending_deliveries",
            ) == 0.0
        }),
        "{metrics}"
    );
}

#[test]
fn sighup_reloads_safely() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = format!("{}{}", base_config(), app());
    let v1 = format!(
        "{base}{}{}",
        testkit("first", "record = \"data/first.jsonl\""),
        route("\"t.a\"", "\"first\""),
    );
    let gw = TestGateway::spawn(dir.path(), &v1);
    assert_eq!(send(&gw, "a1", "t.a"), 200);
    assert!(wait_until(Duration::from_secs(5), || recorded(
        &gw,
        "first.jsonl"
    )
    .len()
        == 1));

    // A broken config is refused; the old routes keep working.
    reload(
        &gw,
        &format!("{v1}\n[[routes]]\nevents = [\"t.b\"]\nplugins = [\"ghost\"]\n"),
        "reload refused",
    );
    assert!(
        gw.log().contains("unknown plugin \"ghost\""),
        "{}",
        gw.log()
    );
    assert_eq!(send(&gw, "a2", "t.a"), 200);
    assert!(wait_until(Duration::from_secs(5), || recorded(
        &gw,
        "first.jsonl"
    )
    .len()
        == 2));

    // Adding a plugin and a route starts delivering to it; requests in flight across several
    // reloads all succeed.
    let v2 = format!(
        "{v1}{}{}",
        testkit("second", "record = \"data/second.jsonl\""),
        route("\"t.b\"", "\"second\""),
    );
    let failures = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let url = gw.url("/hook");
    let senders: Vec<_> = (0..4)
        .map(|t| {
            let (failures, sent, url) = (failures.clone(), sent.clone(), url.clone());
            std::thread::spawn(move || {
                let lark = Lark::plain(TOKEN);
                for i in 0..50 {
                    let id = format!("flight-{t}-{i}");
                    let (body, headers) =
                        lark.wrap(&lark.event_v2(&id, "t.a", serde_json::json!({})));
                    match harness::post(&url, &headers, &body) {
                        Ok(a) if a.status == 200 => {}
                        _ => {
                            failures.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for config in [&v2, &v1, &v2] {
        reload(&gw, config, "config reloaded");
    }
    for s in senders {
        s.join().expect("sender");
    }
    assert_eq!(sent.load(Ordering::SeqCst), 200);
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "requests failed during reloads"
    );
    assert_eq!(send(&gw, "b1", "t.b"), 200);
    let second = |outcome: &str| {
        recorded(&gw, "second.jsonl")
            .iter()
            .filter(|l| l["outcome"] == outcome)
            .count()
    };
    assert!(wait_until(Duration::from_secs(5), || second("ok") == 1));
    // Removed by the v1 reload: its instance was shut down (and a fresh one made by the last v2).
    assert_eq!(second("shutdown"), 1);
    assert!(wait_until(Duration::from_secs(10), || recorded(
        &gw,
        "first.jsonl"
    )
    .len()
        == 202));

    // A library replaced at the same path is refused: libraries are never unloaded.
    let lib = dir.path().join("libcopy.so");
    std::fs::copy(&binaries().testkit, &lib).expect("copy");
    let v3 = format!(
        "{v2}\n[[plugins]]\nname = \"copy\"\nlibrary = \"{}\"\nconfig = {{ mode = \"ok\" }}\n",
        lib.display()
    );
    reload(&gw, &v3, "config reloaded");
    std::thread::sleep(Duration::from_millis(20));
    // The same bytes installed again (a new file): the instance is kept.
    std::fs::remove_file(&lib).expect("remove");
    std::fs::copy(&binaries().testkit, &lib).expect("copy again");
    reload(&gw, &v3, "config reloaded");
    // Other bytes, even with the entry unchanged (a rebuild installed over the path, then a
    // reload): the instance was kept silently on the old library.
    std::fs::remove_file(&lib).expect("remove");
    std::fs::copy(&binaries().logger, &lib).expect("copy another library");
    reload(&gw, &v3, "changed on disk since this gateway loaded it");
    reload(
        &gw,
        &v3.replace("mode = \"ok\"", "mode = \"reject\""),
        "changed on disk since this gateway loaded it",
    );
}

#[test]
fn dead_letter_replayed_after_the_plugin_is_fixed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = format!("{}{}", base_config(), app());
    let broken = format!(
        "{base}{}{}",
        testkit("payer", "mode = \"reject\", record = \"data/payer.jsonl\""),
        route("\"t.pay\"", "\"payer\""),
    );
    let gw = TestGateway::spawn(dir.path(), &broken);
    assert_eq!(send(&gw, "p1", "t.pay"), 200);
    assert!(wait_until(Duration::from_secs(5), || {
        gw.cli(&["dead-letters", "--json"]).1.lines().count() == 1
    }));
    reload(
        &gw,
        &broken.replace("mode = \"reject\", ", ""),
        "config reloaded",
    );
    let (code, out, err) = gw.cli(&["replay", "--dead-letters", "--plugin", "payer"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 deliveries queued again"), "{out}");
    assert!(wait_until(Duration::from_secs(10), || {
        recorded(&gw, "payer.jsonl")
            .iter()
            .any(|l| l["outcome"] == "ok")
    }));
    assert!(gw.cli(&["dead-letters", "--json"]).1.trim().is_empty());
    let m = get(&gw.admin_url("/metrics")).expect("metrics").body;
    assert_eq!(
        metric(&m, r#"gateway_replays_total{plugin="payer"}"#),
        1.0,
        "{m}"
    );
    // `--since` takes RFC 3339 too: the event came after the epoch, not after 2100.
    assert_eq!(
        gw.cli(&[
            "events",
            "list",
            "--since",
            "1970-01-02T00:00:00+08:00",
            "--json"
        ])
        .1
        .lines()
        .count(),
        1
    );
    assert!(gw
        .cli(&["events", "list", "--since", "2100-01-01", "--json"])
        .1
        .trim()
        .is_empty());
    let (code, out, _) = gw.cli(&["store", "check"]);
    assert_eq!(code, 0);
    assert!(out.contains("sound"), "{out}");
}

#[test]
fn watch_reloads_when_an_editor_replaces_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = format!("{}{}", base_config(), app());
    let v1 = format!(
        "{base}{}{}",
        testkit("first", "record = \"data/first.jsonl\""),
        route("\"t.a\"", "\"first\"")
    );
    let gw = TestGateway::spawn_full(dir.path(), &v1, &[], &["--watch"]);
    assert_eq!(send(&gw, "w1", "t.b"), 200, "unrouted at first");
    // Write a new file and rename it over the config, as editors and git do.
    let v2 = format!("{v1}{}", route("\"t.b\"", "\"first\""));
    let tmp = dir.path().join(".gateway.toml.swp");
    std::fs::write(&tmp, v2).expect("write");
    std::fs::rename(&tmp, dir.path().join("gateway.toml")).expect("rename");
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .log()
            .contains("config reloaded")),
        "{}",
        gw.log()
    );
    assert!(gw.log().contains("config file changed"), "{}", gw.log());
    assert_eq!(send(&gw, "w2", "t.b"), 200);
    assert!(wait_until(Duration::from_secs(5), || {
        recorded(&gw, "first.jsonl")
            .iter()
            .any(|l| l["event_id"] == "w2")
    }));
}

#[test]
fn check_reports_plugin_problems_and_run_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = dir.path().join("libfake.so");
    std::fs::write(&fake, "not a library").expect("write");
    let cfg = format!(
        "{}{}\n[[plugins]]\nname = \"fake\"\nlibrary = \"libfake.so\"\n\n[[plugins]]\nname = \"gone\"\nlibrary = \"missing/libgone.so\"\n{}",
        base_config(),
        app(),
        route("\"t.x\"", "\"fake\", \"gone\""),
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, &cfg).expect("write");
    let (code, out, err) = harness::run_cli(&path, &["check"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains("plugins[0] (fake)"), "{err}");
    assert!(err.contains(&fake.display().to_string()), "{err}");
    assert!(
        err.contains("plugins[1] (gone)") && err.contains("does not exist"),
        "{err}"
    );
    let run = std::process::Command::new(&binaries().gateway)
        .arg("--config")
        .arg(&path)
        .arg("run")
        .output()
        .expect("run");
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("plugins failed to start"));

    // A good config passes and prints the route table.
    let good = format!(
        "{}{}{}{}",
        base_config(),
        app(),
        testkit("ok", ""),
        route("\"t.*\"", "\"ok\"")
    );
    std::fs::write(&path, good).expect("write");
    let (code, out, err) = harness::run_cli(&path, &["check"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("plugin ok") && out.contains("testkit"),
        "{out}"
    );
    assert!(out.contains("t.* (any app) -> ok"), "{out}");
}

#[test]
fn gateway_send_signs_encrypts_and_dedups_like_lark() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        r#"{base}
[[apps]]
name = "hire"
path = "/hook"
verification_token = "t0k"
encrypt_key = "k3y"

[[plugins]]
name = "audit"
library = "{logger}"
config = {{ path = "data/audit.jsonl", fsync = "never" }}

[[routes]]
events = ["hire.referral_account.assets_update_v1"]
plugins = ["audit"]
"#,
        base = base_config(),
        logger = binaries().logger.display(),
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    let url = gw.url("/hook");
    let (code, out, err) = gw.cli(&["send", "--url", &url]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("HTTP 200 {\"msg\":\"success\"}"), "{out}");
    for _ in 0..2 {
        let (code, out, _) = gw.cli(&["send", "--url", &url, "--event-id", "same-1"]);
        assert_eq!(code, 0, "{out}");
    }
    assert!(wait_until(Duration::from_secs(5), || recorded(
        &gw,
        "audit.jsonl"
    )
    .len()
        == 2));
    std::thread::sleep(Duration::from_millis(200));
    let lines = recorded(&gw, "audit.jsonl");
    assert_eq!(lines.len(), 2, "the duplicate is delivered once");
    assert_eq!(lines[1]["event_id"], "same-1");
    // The verification token never reaches the log file or the CLI.
    assert_eq!(lines[1]["event"]["header"]["token"], "<redacted>");
    let (code, out, _) = gw.cli(&["events", "show", "same-1"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(r#"\"token\":\"<redacted>\""#) && !out.contains("t0k"),
        "{out}"
    );
    // A wrong app name is a clear error; a non-2xx answer is exit code 4.
    let (code, _, err) = gw.cli(&["send", "--app", "nope", "--url", &url]);
    assert_eq!(code, 1);
    assert!(err.contains("no app named \"nope\""), "{err}");
    let (code, out, _) = gw.cli(&["send", "--url", &gw.url("/elsewhere")]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("HTTP 404"), "{out}");
}

/// One app whose `t.s` events go to a testkit plugin recording to `data/sink.jsonl`.
fn sink_config() -> String {
    format!(
        "{}{}{}{}",
        base_config(),
        app(),
        testkit("sink", "record = \"data/sink.jsonl\""),
        route("\"t.s\"", "\"sink\""),
    )
}

#[test]
fn a_store_that_cannot_write_answers_503_and_claims_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &sink_config());
    // Another process holds the database's write lock for longer than the gateway waits.
    let other = rusqlite::Connection::open(dir.path().join("data/gateway.db")).expect("open");
    other.execute_batch("BEGIN IMMEDIATE").expect("lock");
    assert_eq!(send(&gw, "locked-1", "t.s"), 503);
    let m = get(&gw.admin_url("/metrics")).expect("metrics").body;
    assert_eq!(
        metric(
            &m,
            r#"gateway_requests_total{app="ops",status="503",reason="store_unavailable"}"#
        ),
        1.0
    );
    assert_eq!(get(&gw.admin_url("/readyz")).expect("readyz").status, 503);
    other.execute_batch("ROLLBACK").expect("unlock");
    // Nothing was claimed: Lark's retry is stored and delivered once.
    assert_eq!(send(&gw, "locked-1", "t.s"), 200);
    assert!(wait_until(Duration::from_secs(5), || recorded(
        &gw,
        "sink.jsonl"
    )
    .len()
        == 1));
    // The probe's 503 stands for a second (probes add at most one store write a second).
    assert!(wait_until(Duration::from_secs(3), || get(
        &gw.admin_url("/readyz")
    )
    .is_ok_and(|r| r.status == 200)));
}

#[test]
fn a_second_gateway_on_the_same_store_refuses_to_start_and_check_names_the_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &sink_config());
    // The same config again (its listeners would take other ports): the store is taken.
    let mut second = std::process::Command::new(&binaries().gateway)
        .arg("--config")
        .arg(dir.path().join("gateway.toml"))
        .arg("run")
        .env_remove("GATEWAY_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start a second gateway");
    let exited = wait_until(Duration::from_secs(20), || {
        matches!(second.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = second.kill();
        panic!("a second gateway started on the same store");
    }
    let out = second.wait_with_output().expect("its output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("in use by another running gateway"), "{err}");
    // The operator commands still open it, and the first gateway goes on serving.
    let (code, out, err) = gw.cli(&["store", "check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(send(&gw, "after-refusal", "t.s"), 200);
    drop(gw);
    // A lock path that cannot be opened as a file is a `check` error, with its location.
    let lock = dir.path().join("data/gateway.db.lock");
    std::fs::remove_file(&lock).expect("the lock file stays behind, unlocked");
    std::fs::create_dir(&lock).expect("a folder in its place");
    let (code, out, err) = run_cli(&dir.path().join("gateway.toml"), &["check"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("store.path:") && err.contains("gateway.db.lock"),
        "{err}"
    );
    // So is a folder of id runs that is a file.
    std::fs::remove_dir(&lock).expect("remove the folder");
    let runs = dir.path().join("data/gateway.db.ids");
    std::fs::remove_dir_all(&runs).expect("the runs folder the gateway made");
    std::fs::write(&runs, b"not a folder").expect("a file in its place");
    let (code, out, err) = run_cli(&dir.path().join("gateway.toml"), &["check"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("store.path:") && err.contains("gateway.db.ids is not a folder"),
        "{err}"
    );
}

#[test]
fn sigterm_does_not_wait_for_a_hung_plugin_and_the_delivery_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = format!(
        "{}{}",
        base_config().replace("shutdown_grace = \"5s\"", "shutdown_grace = \"300ms\""),
        app()
    );
    let hung = format!(
        "{base}{}{}",
        testkit(
            "stuck",
            "mode = \"slow\", sleep_ms = 60000, record = \"data/stuck.jsonl\""
        ),
        route("\"t.h\"", "\"stuck\""),
    );
    let mut gw = TestGateway::spawn(dir.path(), &hung);
    assert_eq!(send(&gw, "hung-1", "t.h"), 200);
    std::thread::sleep(Duration::from_millis(200));
    let started = std::time::Instant::now();
    gw.signal("TERM");
    let status = gw
        .wait(Duration::from_secs(10))
        .expect("exited despite the hung call");
    assert!(status.success(), "{status:?}\n{}", gw.log());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        wait_until(Duration::from_secs(5), || gw
            .log()
            .contains("their deliveries stay pending")),
        "{}",
        gw.log()
    );

    // Restarted with the plugin fixed, the acknowledged delivery is made.
    let fixed = hung.replace("mode = \"slow\", sleep_ms = 60000, ", "");
    let gw = TestGateway::spawn(dir.path(), &fixed);
    assert!(wait_until(Duration::from_secs(10), || {
        recorded(&gw, "stuck.jsonl")
            .iter()
            .any(|l| l["event_id"] == "hung-1")
    }));
}

#[test]
fn connections_past_max_connections_are_closed_and_service_continues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        "{}{}{}{}",
        base_config().replace("[server]\n", "[server]\nmax_connections = 2\n"),
        app(),
        testkit("sink", ""),
        route("\"t.s\"", "\"sink\""),
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    // Two idle connections take both slots; a third is closed without an answer.
    let idle: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(gw.addr).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = std::net::TcpStream::connect(gw.addr).expect("connect");
    third
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    use std::io::{Read, Write};
    let _ = third.write_all(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
    let mut buf = [0u8; 64];
    assert!(
        matches!(third.read(&mut buf), Ok(0) | Err(_)),
        "the third connection is closed"
    );
    assert!(
        wait_until(Duration::from_secs(5), || gw
            .log()
            .contains("connection limit reached")),
        "{}",
        gw.log()
    );
    // Freed slots serve again.
    drop(idle);
    assert!(wait_until(Duration::from_secs(5), || {
        let lark = Lark::plain(TOKEN);
        let (body, headers) =
            lark.wrap(&lark.event_v2("after-limit", "t.s", serde_json::json!({})));
        harness::post(&gw.url("/hook"), &headers, &body).is_ok_and(|a| a.status == 200)
    }));
}
