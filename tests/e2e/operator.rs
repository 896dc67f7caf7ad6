//! What an operator sees and does: commands that refuse to guess (a store that is not there, an
//! event id or plugin that does not exist, a replay that would re-run a success), and the
//! `--dry-run` / `--force` of `replay`.

use std::time::Duration;

use gateway_e2e::harness::{
    base_config, binaries, kit_config, read_jsonl, run_cli, wait_until, Lark, TestGateway,
};

const TOKEN: &str = "tok";

fn config() -> String {
    kit_config(
        TOKEN,
        r#"{ mode = "ok", modes = { "test.bad" = "reject", "test.wait" = "retry_always" }, record = "data/kit.jsonl" }"#,
    )
}

fn state(gw: &TestGateway, id: &str) -> String {
    let (code, out, err) = gw.cli(&["events", "show", id]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    v["deliveries"][0]["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn read_only_commands_refuse_a_store_that_does_not_exist_and_create_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config()).expect("write");
    for args in [
        &["dead-letters"][..],
        &["events", "show", "x"],
        &["store", "check"],
        &["replay", "x"],
    ] {
        let (code, out, err) = run_cli(&path, args);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(err.contains("no store at"), "{args:?}: {err}");
        assert!(
            err.contains("is this the config the gateway runs with?"),
            "{err}"
        );
    }
    assert!(!dir.path().join("data").exists(), "nothing was created");
}

#[test]
fn replay_refuses_unknown_names_and_successes_without_force_and_dry_run_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config());
    let lark = Lark::plain(TOKEN);
    for (id, t) in [("ev-ok", "test.ok"), ("ev-bad", "test.bad")] {
        let a = lark.send(
            &gw.url("/hook"),
            &lark.event_v2(id, t, serde_json::json!({})),
        );
        assert_eq!(a.status, 200);
    }
    assert!(wait_until(Duration::from_secs(10), || state(&gw, "ev-ok")
        == "done"
        && state(&gw, "ev-bad") == "dead"));
    let calls = || read_jsonl(&dir.path().join("data/kit.jsonl")).len();
    assert_eq!(calls(), 2);

    let (code, out, err) = gw.cli(&["replay", "nope"]);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("no event \"nope\" in the store"), "{err}");
    let (code, _, err) = gw.cli(&["replay", "ev-ok", "--plugin", "nosuch"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown plugin \"nosuch\""), "{err}");
    let (code, _, err) = gw.cli(&["dead-letters", "--plugin", "nosuch"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown plugin \"nosuch\""), "{err}");

    // A success is re-run only on purpose.
    let (code, _, err) = gw.cli(&["replay", "ev-ok"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("ev-ok:kit already succeeded") && err.contains("--force"),
        "{err}"
    );
    // A dry run without --force lists what it would refuse, and says so (it only refused).
    let (code, out, err) = gw.cli(&["replay", "ev-ok", "ev-bad", "--dry-run"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("needs --force (already succeeded) ev-ok:kit (done, 1 attempt(s))")
            && out.contains("would replay ev-bad:kit (dead,"),
        "{out}"
    );
    assert!(err.contains("the replay would be refused"), "{err}");
    let (code, out, err) = gw.cli(&["replay", "ev-ok", "--force", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("would replay ev-ok:kit (done, 1 attempt(s))"),
        "{out}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        (state(&gw, "ev-ok"), calls()),
        ("done".to_owned(), 2),
        "dry run changed nothing"
    );
    let (code, out, err) = gw.cli(&["replay", "ev-ok", "--force"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 deliveries queued again"), "{out}");
    assert!(wait_until(Duration::from_secs(10), || calls() == 3));
    // Dead letters need no --force.
    let (code, out, err) = gw.cli(&["replay", "--dead-letters"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("replaying ev-bad:kit (dead, 1 attempt(s))"),
        "{out}"
    );
    assert!(wait_until(Duration::from_secs(10), || calls() == 4));
}

#[test]
fn dead_letters_stay_until_purged_on_purpose_with_a_filter() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The shortest dedup retention (1m): the events are then made older than it, so finished
    // events go at the next start; dead letters must not.
    let cfg = config().replace(
        "[store]\npath = \"data/gateway.db\"",
        "[store]\npath = \"data/gateway.db\"\nretention = \"1m\"",
    );
    assert!(cfg.contains("retention = \"1m\""), "{cfg}");
    let mut gw = TestGateway::spawn(dir.path(), &cfg);
    gw.send_plain(TOKEN, "dl-1", "test.bad");
    gw.send_plain(TOKEN, "ok-1", "test.ok");
    assert!(wait_until(Duration::from_secs(10), || state(&gw, "dl-1")
        == "dead"
        && state(&gw, "ok-1") == "done"));
    gw.kill9();
    drop(gw);
    let db = rusqlite::Connection::open(dir.path().join("data/gateway.db")).expect("open");
    db.execute("UPDATE events SET received_at = received_at - 600000", [])
        .expect("ten minutes older");
    drop(db);
    // A restart runs the retention purge at once.
    let gw = TestGateway::spawn(dir.path(), &cfg);
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .cli(&["events", "show", "ok-1"])
            .0
            == 1),
        "the finished event was purged"
    );
    let (code, out, _) = gw.cli(&["dead-letters"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("dl-1") && out.contains("1 dead letter(s)"),
        "{out}"
    );
    let (code, out, _) = gw.cli(&["dead-letters", "--since", "1h30m"]);
    assert_eq!(code, 0);
    assert!(out.contains("dl-1"), "compound durations: {out}");
    // A value that is not a duration is a usage error (2), like a missing filter.
    let (code, _, err) = gw.cli(&["dead-letters", "--since", "30m1h"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("largest to smallest"), "{err}");
    let (code, _, err) = gw.cli(&["dead-letters", "--purge"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--purge needs a filter"), "{err}");
    let (code, out, err) = gw.cli(&["dead-letters", "--purge", "--plugin", "kit"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 dead letter(s) deleted"), "{out}");
    let (_, out, _) = gw.cli(&["dead-letters"]);
    assert!(out.contains("0 dead letter(s)"), "{out}");
}

/// `--purge` deletes exactly what the listing with the same filters shows: `--older-than`
/// lists too, and a filter the purge cannot apply (`--since`) is refused, never dropped (it
/// used to be ignored: `--purge --plugin kit --since 2030-01-01` deleted all of kit's).
#[test]
fn a_purge_deletes_what_the_same_listing_shows_and_refuses_filters_it_cannot_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config());
    let ids = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["dead-letters", "--json"];
        all.extend_from_slice(args);
        let (code, out, err) = gw.cli(&all);
        assert_eq!(code, 0, "{args:?}: {err}");
        out.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json line");
                v["event_id"].as_str().unwrap_or_default().to_owned()
            })
            .collect()
    };
    gw.send_plain(TOKEN, "old-1", "test.bad");
    assert!(wait_until(Duration::from_secs(10), || state(&gw, "old-1") == "dead"));
    std::thread::sleep(Duration::from_millis(3_000));
    gw.send_plain(TOKEN, "new-1", "test.bad");
    assert!(wait_until(Duration::from_secs(10), || state(&gw, "new-1") == "dead"));

    for refused in [
        &["--purge", "--plugin", "kit", "--since", "2030-01-01"][..],
        &["--purge", "--plugin", "kit", "--since", "1h"],
        &["--purge", "--older-than", "1s", "--since", "1h"],
    ] {
        let mut args = vec!["dead-letters"];
        args.extend_from_slice(refused);
        let (code, out, err) = gw.cli(&args);
        assert_eq!(code, 2, "{refused:?}: {out}{err}");
        assert!(err.contains("--since"), "{refused:?}: {err}");
    }
    assert_eq!(ids(&[]), ["new-1", "old-1"], "nothing was deleted");

    let (code, _, err) = gw.cli(&["dead-letters", "--purge", "--older-than", "soon"]);
    assert_eq!(code, 2, "{err}");
    // A duration longer than the clock has run selects nothing (it must not wrap into "all").
    let (code, out, err) = gw.cli(&[
        "dead-letters",
        "--purge",
        "--plugin",
        "kit",
        "--older-than",
        "200000000000d",
    ]);
    assert_eq!((code, out.trim()), (0, "0 dead letter(s) deleted"), "{err}");

    let filters = ["--plugin", "kit", "--older-than", "2s"];
    assert_eq!(
        ids(&filters),
        ["old-1"],
        "the listing with the purge's filters"
    );
    let mut purge = vec!["dead-letters", "--purge", "--json"];
    purge.extend_from_slice(&filters);
    let (code, out, err) = gw.cli(&purge);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(out.trim()).expect("json"),
        serde_json::json!({ "deleted": 1 }),
        "{out}"
    );
    assert_eq!(ids(&[]), ["new-1"], "exactly what the listing showed");
}

/// Every listing filtered by a name fails on one that exists nowhere (not in the config, not in
/// the store), as `dead-letters` and `replay` do: a typo is not an empty list.
#[test]
fn listings_refuse_names_that_exist_nowhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config());
    gw.send_plain(TOKEN, "n-1", "test.ok");
    assert!(wait_until(Duration::from_secs(10), || state(&gw, "n-1") == "done"));
    for (args, needle) in [
        (
            &[
                "deliveries",
                "list",
                "--state",
                "pending",
                "--plugin",
                "nope",
            ][..],
            "unknown plugin \"nope\"",
        ),
        (
            &["deliveries", "list", "--state", "dead", "--plugin", "nope"],
            "unknown plugin \"nope\"",
        ),
        (
            &["dead-letters", "--plugin", "nope"],
            "unknown plugin \"nope\"",
        ),
        (
            &["replay", "--dead-letters", "--plugin", "nope"],
            "unknown plugin \"nope\"",
        ),
        (&["events", "list", "--app", "nope"], "unknown app \"nope\""),
        (
            &["events", "list", "--type", "test.nope"],
            "unknown event type \"test.nope\"",
        ),
    ] {
        let (code, out, err) = gw.cli(args);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(
            err.starts_with("error: ") && err.contains(needle),
            "{args:?}: {err}"
        );
        assert!(out.is_empty(), "{args:?}: {out}");
    }
    // Names that exist list normally, even with nothing to show.
    let (code, out, err) = gw.cli(&[
        "deliveries",
        "list",
        "--state",
        "pending",
        "--plugin",
        "kit",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("0 deliver(ies)"), "{out}");
    let (code, out, err) = gw.cli(&["events", "list", "--app", "hire"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("n-1") && out.contains("1 event(s)"), "{out}");
    let (code, out, err) = gw.cli(&["events", "list", "--type", "test.ok"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("n-1"), "{out}");
}

/// The exit codes the README lists: 2 for usage (a bad argument value, a missing required
/// filter or argument, an event file that cannot be used), 1 for a name that does not exist;
/// every error line starts with `error: `.
#[test]
fn usage_errors_exit_2_and_unknown_names_exit_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config());
    let hook = gw.url("/hook");
    let missing = dir.path().join("nonexistent.json");
    let missing = missing.to_str().expect("utf-8 path");
    for (args, code) in [
        (&["events", "list", "--since", "bogus"][..], 2),
        (&["dead-letters", "--since", "bogus"], 2),
        (&["dead-letters", "--purge"], 2),
        (&["dead-letters", "--purge", "--older-than", "bogus"], 2),
        (&["replay"], 2),
        (&["send", "--url", &hook, "--event", missing], 2),
        (&["plugins", "call", "x.so", "--event", missing], 2),
        (&["events", "list", "--limit", "many"], 2),
        (&["send", "--url", &hook, "--app", "nope"], 1),
        (&["events", "show", "nope"], 1),
        (&["replay", "nope"], 1),
    ] {
        let (got, out, err) = gw.cli(args);
        assert_eq!(got, code, "{args:?}: {out}{err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
    let (_, _, err) = gw.cli(&["events", "show", "nope"]);
    assert_eq!(err.trim(), "error: no event \"nope\" in the store");
}

/// A command whose reader went away (`gateway events list | head`) ends quietly: no panic
/// ("failed printing to stdout: Broken pipe", exit 101), whatever it prints. The pipe is closed
/// before the command starts, so its first write meets it.
#[test]
fn commands_end_quietly_when_their_output_pipe_is_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config());
    gw.send_plain(TOKEN, "p-ok", "test.ok");
    gw.send_plain(TOKEN, "p-bad", "test.bad");
    assert!(wait_until(Duration::from_secs(10), || state(&gw, "p-ok")
        == "done"
        && state(&gw, "p-bad") == "dead"));
    let hook = gw.url("/hook");
    // A folder of one plugin for `plugins list --dir`.
    let libs = dir.path().join("libs");
    std::fs::create_dir(&libs).expect("mkdir");
    std::fs::copy(&binaries().testkit, libs.join("libtestkit.so")).expect("copy");
    let libs = libs.to_str().expect("utf-8 path").to_owned();
    let testkit = binaries().testkit.to_str().expect("utf-8 path").to_owned();
    let fixture = gateway_e2e::workspace_root().join("fixtures/assets_update_v1.json");
    let fixture = fixture.to_str().expect("utf-8 path").to_owned();
    let run = |args: &[&str]| -> (Option<i32>, String) {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        // The config through the environment: `plugins call` takes a --config of its own.
        let out = std::process::Command::new(&binaries().gateway)
            .args(args)
            .env("GATEWAY_CONFIG", dir.path().join("gateway.toml"))
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run gateway");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for args in [
        &["events", "list"][..],
        &["events", "list", "--json"],
        &["events", "show", "p-ok"],
        &["deliveries", "list", "--state", "dead"],
        &["dead-letters"],
        &["dead-letters", "--json"],
        &["replay", "p-bad", "--dry-run"],
        &["store", "check"],
        &["check"],
        &["plugins", "list", "--dir", &libs],
        &["plugins", "inspect", &testkit],
        &["plugins", "call", &testkit, "--event", &fixture],
        &["config", "schema"],
        &["completions", "bash"],
        &["man"],
    ] {
        let (code, err) = run(args);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(code, Some(0), "{args:?}: {err}");
    }
    // `send` prints after its POST: the answer it could not show is no panic either.
    let (code, err) = run(&["send", "--url", &hook, "--event-id", "p-send"]);
    assert!(!err.contains("panicked"), "{err}");
    assert!(matches!(code, Some(0 | 141)), "{code:?}: {err}");
    assert_eq!(
        gw.cli(&["events", "show", "p-send"]).0,
        0,
        "sent and stored"
    );
    // A replay whose output nobody reads still happens.
    let (code, err) = run(&["replay", "p-bad"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(wait_until(Duration::from_secs(10), || gw
        .calls("kit")
        .len()
        == 3));
}

#[test]
fn check_is_a_dry_run_that_finds_what_run_would_refuse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    let logger = |table: &str| {
        format!(
            "{}\n[[apps]]\nname = \"hire\"\npath = \"/hook\"\n\n[[plugins]]\nname = \"audit\"\nlibrary = \"{}\"\nconfig = {{ {table} }}\n",
            base_config(),
            binaries().logger.display()
        )
    };
    // A typo in a plugin's own config: only the plugin can tell.
    std::fs::write(&path, logger("path = \"data/a.jsonl\", fsnyc = \"always\"")).expect("write");
    let (code, out, err) = run_cli(&path, &["check"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains("audit") && err.contains("fsnyc"), "{err}");
    assert!(!out.contains("is valid"), "{out}");
    // A store that cannot be created.
    std::fs::write(dir.path().join("file.txt"), "not a folder").expect("write");
    let cfg = logger("path = \"data/a.jsonl\"").replace("data/gateway.db", "file.txt/gateway.db");
    std::fs::write(&path, cfg).expect("write");
    let (code, out, err) = run_cli(&path, &["check"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("store.path:") && err.contains("is not a folder"),
        "{err}"
    );
    // A listen address someone else holds is reported (a warning: it may be this gateway).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let cfg = logger("path = \"data/a.jsonl\"").replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{addr}\""),
        1,
    );
    std::fs::write(&path, cfg).expect("write");
    let (code, out, err) = run_cli(&path, &["check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("warning: server.listen: cannot bind {addr}")),
        "{out}"
    );
    assert!(out.contains("is valid"), "{out}");
    assert!(
        !dir.path().join("data/gateway.db").exists(),
        "check creates no store"
    );
}

#[test]
fn oversized_request_heads_get_431() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config());
    let ask = |head: String| -> String {
        let mut conn = std::net::TcpStream::connect(gw.addr).expect("connect");
        conn.write_all(head.as_bytes()).expect("write");
        let mut answer = Vec::new();
        let _ = conn.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    };
    let many: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = ask(format!(
        "POST /hook HTTP/1.1\r\nHost: x\r\n{many}Content-Length: 0\r\n\r\n"
    ));
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let big = "v".repeat(20 * 1024);
    let answer = ask(format!(
        "POST /hook HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nContent-Length: 0\r\n\r\n"
    ));
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // An ordinary head still works.
    let lark = Lark::plain(TOKEN);
    let a = lark.send(
        &gw.url("/hook"),
        &lark.event_v2("h-ok", "test.ok", serde_json::json!({})),
    );
    assert_eq!(a.status, 200);
}

#[test]
fn metrics_show_the_build_dead_letters_pending_per_plugin_and_reloads() {
    use gateway_e2e::harness::{get, metric};
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config());
    gw.send_plain(TOKEN, "m-bad", "test.bad");
    assert!(wait_until(Duration::from_secs(10), || state(&gw, "m-bad") == "dead"));
    let scrape = || get(&gw.admin_url("/metrics")).expect("metrics").body;
    let m = scrape();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        metric(&m, &format!("gateway_build_info{{version=\"{version}\"}}")),
        1.0,
        "{m}"
    );
    assert_eq!(metric(&m, "gateway_dead_letters_current"), 1.0, "{m}");
    // A good reload, then a broken one.
    gw.signal("HUP");
    assert!(wait_until(Duration::from_secs(10), || metric(
        &scrape(),
        r#"gateway_reloads_total{result="ok"}"#
    ) == 1.0));
    assert!(metric(&scrape(), "gateway_last_reload_timestamp_seconds") > 1.0e9);
    std::fs::write(dir.path().join("gateway.toml"), "not = [toml").expect("write");
    gw.signal("HUP");
    assert!(wait_until(Duration::from_secs(10), || metric(
        &scrape(),
        r#"gateway_reloads_total{result="refused"}"#
    ) == 1.0));
    // A delivery that keeps retrying is pending, per plugin.
    std::fs::write(dir.path().join("gateway.toml"), config()).expect("write");
    gw.send_plain(TOKEN, "m-wait", "test.wait");
    assert!(wait_until(Duration::from_secs(10), || metric(
        &scrape(),
        r#"gateway_pending_deliveries_by_plugin{plugin="kit"}"#
    ) == 1.0));
}

#[test]
fn refused_requests_are_logged_with_the_client_and_rate_limited() {
    use gateway_e2e::harness::{get, metric, post};
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config().replacen(
        "[server]\n",
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n",
        1,
    );
    assert!(cfg.contains("trusted_proxies"), "{cfg}");
    let gw = TestGateway::spawn(dir.path(), &cfg);
    let wrong = Lark::plain("not-the-token");
    let body = wrong.event_v2("r-1", "test.ok", serde_json::json!({}));
    let started = std::time::Instant::now();
    for _ in 0..200 {
        let a = post(&gw.url("/hook"), &[], &body).expect("post");
        assert_eq!(a.status, 401);
    }
    let headers = vec![(
        "X-Forwarded-For".to_owned(),
        "10.9.8.7, 198.51.100.7".to_owned(),
    )];
    let a = post(&gw.url("/hook"), &headers, &body).expect("post");
    assert_eq!(a.status, 401);
    let seconds = started.elapsed().as_secs() + 1;
    assert!(wait_until(Duration::from_secs(5), || gw
        .log()
        .contains("client=198.51.100.7")
        || gw.log().matches("request refused").count() > 0));
    std::thread::sleep(Duration::from_millis(300));
    let log = gw.log();
    let lines = log.matches("request refused").count() as u64;
    assert!(
        lines <= 10 * (seconds + 1),
        "{lines} refusal lines in {seconds}s"
    );
    assert!(log.contains("client=127.0.0.1"), "{log}");
    let m = get(&gw.admin_url("/metrics")).expect("metrics").body;
    assert_eq!(
        metric(
            &m,
            r#"gateway_requests_total{app="hire",status="401",reason="bad_token"}"#
        ),
        201.0,
        "every refusal is counted"
    );
    // A trusted proxy's X-Forwarded-For names the client (once a line is let through).
    std::thread::sleep(Duration::from_millis(1100));
    let a = post(&gw.url("/hook"), &headers, &body).expect("post");
    assert_eq!(a.status, 401);
    assert!(
        wait_until(Duration::from_secs(5), || gw
            .log()
            .contains("client=198.51.100.7")),
        "{}",
        gw.log()
    );
    let reported = gw.log().lines().any(|l| {
        l.contains("request refused")
            && l.split("skipped=")
                .nth(1)
                .is_some_and(|n| !n.starts_with('0'))
    });
    assert!(
        reported,
        "a later line says how many were skipped:\n{}",
        gw.log()
    );
}

#[test]
fn events_and_deliveries_can_be_listed_with_filters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config());
    gw.send_plain(TOKEN, "l-ok", "test.ok");
    gw.send_plain(TOKEN, "l-bad", "test.bad");
    gw.send_plain(TOKEN, "l-wait", "test.wait");
    assert!(wait_until(Duration::from_secs(10), || state(&gw, "l-bad")
        == "dead"
        && state(&gw, "l-ok") == "done"));
    let (code, out, err) = gw.cli(&["events", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("3 event(s)"), "{out}");
    let first = out.lines().nth(1).unwrap_or_default();
    assert!(first.contains("l-wait"), "newest first: {out}");
    assert!(first.contains("Z "), "RFC 3339 times: {first}");
    let (_, out, _) = gw.cli(&["events", "list", "--state", "dead", "--json"]);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(rows[0]["id"], "l-bad");
    let (_, out, _) = gw.cli(&["events", "list", "--type", "test.ok", "--since", "1h"]);
    assert!(out.contains("l-ok") && out.contains("1 event(s)"), "{out}");
    assert!(wait_until(Duration::from_secs(10), || {
        gw.cli(&["deliveries", "list", "--state", "retrying"])
            .1
            .contains("l-wait")
    }));
    let (_, out, _) = gw.cli(&["deliveries", "list", "--state", "dead", "--json"]);
    let dead: serde_json::Value =
        serde_json::from_str(out.lines().next().unwrap_or("{}")).expect("json");
    assert_eq!(dead["event_id"], "l-bad");
    assert!(
        dead.get("next_at").is_none(),
        "a finished delivery has no next attempt: {dead}"
    );
    let (code, _, err) = gw.cli(&["deliveries", "list", "--state", "lost"]);
    assert_eq!(code, 2, "{err}");
    // `/status`: per-plugin health for humans and dashboards.
    let status = gateway_e2e::harness::get(&gw.admin_url("/status")).expect("status");
    assert_eq!(status.status, 200);
    let v: serde_json::Value = serde_json::from_str(&status.body).expect("json");
    assert_eq!(v["ready"], true, "{v}");
    let kit = &v["plugins"]["kit"];
    assert!(kit["last_success_ms"].as_i64().is_some(), "{v}");
    assert!(kit["consecutive_failures"].as_u64() >= Some(1), "{v}");
    assert!(
        kit["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("testkit")),
        "{v}"
    );
    assert_eq!(kit["pending"], 1, "l-wait keeps retrying: {v}");
    assert_eq!(kit["max_concurrency"], 4);
    assert_eq!(kit["queued"], 0, "{v}");
    let m = gateway_e2e::harness::get(&gw.admin_url("/metrics"))
        .expect("metrics")
        .body;
    assert!(m.contains(r#"gateway_queue_depth{plugin="kit"} 0"#), "{m}");
}

#[test]
fn json_logs_are_one_record_per_line_even_for_multi_line_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn_full(dir.path(), &config(), &[], &["--log-format", "json"]);
    // A refused reload logs a multi-line list of problems.
    let broken = config().replace("name = \"kit\"", "name = \"kit\"\nmax_concurrency = 0");
    std::fs::write(dir.path().join("gateway.toml"), broken).expect("write");
    gw.signal("HUP");
    assert!(wait_until(Duration::from_secs(10), || gw
        .log()
        .contains("reload refused")));
    let log = gw.log();
    assert!(log.contains("gateway listening on http://"), "{log}");
    for line in log.lines() {
        let record: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON record ({e}): {line}"));
        assert!(record["level"].is_string(), "{line}");
    }
}
