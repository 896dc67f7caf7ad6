//! Commands that refuse to guess and say so: a store that does not exist (nothing created),
//! names that exist nowhere, the exit codes of usage errors and unknown names; listings of
//! events and deliveries with filters (and `/status`, per plugin); a closed output pipe ending a
//! command quietly; and `check` as a dry run that finds what `run` would refuse. Part of
//! `operator.rs`.

use std::time::Duration;

use gateway_e2e::harness::{base_config, binaries, run_cli, wait_until, TestGateway};

use super::helpers::{config, state, TOKEN};

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
    // `--limit 0` printed "0 event(s)" as if the store were empty: a usage error.
    for args in [
        &["events", "list", "--limit", "0"][..],
        &["deliveries", "list", "--state", "dead", "--limit", "0"],
    ] {
        let (code, out, err) = gw.cli(args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains("--limit"), "{args:?}: {err}");
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
    // Output that cannot be written (a full disk: /dev/full) fails the command, which says
    // that the replay itself went through (so nobody repeats it), and it did.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let out = std::process::Command::new(&binaries().gateway)
        .args(["replay", "p-bad"])
        .env("GATEWAY_CONFIG", dir.path().join("gateway.toml"))
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(full)
        .output()
        .expect("run gateway");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot write to stdout")
            && err.contains("the command itself succeeded: only its output is incomplete"),
        "{err}"
    );
    assert!(wait_until(Duration::from_secs(10), || gw
        .calls("kit")
        .len()
        == 4));
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
    // An address this host does not have fails `run` whatever runs: a problem, not a warning
    // (only "in use" may be this gateway; a port below 1024 without the capability was
    // "valid" too, and the unit restarted a `run` that could never bind).
    let cfg = logger("path = \"data/a.jsonl\"").replacen(
        "listen = \"127.0.0.1:0\"",
        "listen = \"192.0.2.1:7777\"",
        1,
    );
    std::fs::write(&path, cfg).expect("write");
    let (code, out, err) = run_cli(&path, &["check"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("server.listen: cannot bind 192.0.2.1:7777"),
        "{err}"
    );
    // A store `run` would refuse: written by a newer gateway, or no database at all (check
    // only tried to open the file for writing and said "valid"; review finding).
    let cfg = logger("path = \"data/a.jsonl\"");
    std::fs::write(&path, &cfg).expect("write");
    std::fs::create_dir_all(dir.path().join("data")).expect("mkdir");
    let store = dir.path().join("data/gateway.db");
    let newer = rusqlite::Connection::open(&store).expect("store");
    newer
        .execute_batch("CREATE TABLE t (x); PRAGMA user_version = 1000;")
        .expect("newer");
    drop(newer);
    let (code, out, err) = run_cli(&path, &["check"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("store.path:") && err.contains("written by a newer gateway"),
        "{err}"
    );
    std::fs::write(&store, "not a database, at all; not even close").expect("write");
    let (code, out, err) = run_cli(&path, &["check"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("store.path:") && err.contains("cannot be read as a store"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&store).expect("read"),
        b"not a database, at all; not even close",
        "check changes no store"
    );
    // Nothing is created beside a store (a gateway's, stopped): no -wal or -shm file that a
    // root-run check would leave root's.
    std::fs::remove_file(&store).expect("remove");
    let made = rusqlite::Connection::open(&store).expect("store");
    made.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x);")
        .expect("wal");
    drop(made);
    let (_, out, err) = run_cli(&path, &["check"]);
    assert!(out.contains("older schema version 0"), "{out}{err}");
    for suffix in ["-wal", "-shm"] {
        let mut beside = store.as_os_str().to_owned();
        beside.push(suffix);
        assert!(
            !std::path::Path::new(&beside).exists(),
            "check left {}",
            std::path::Path::new(&beside).display()
        );
    }
}
