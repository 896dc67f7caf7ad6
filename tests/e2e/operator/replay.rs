//! `replay` and dead letters: unknown names, names no longer configured and successes refused
//! without `--force`, a
//! `--dry-run` that changes nothing, dead letters kept until purged on purpose with a filter, and
//! a purge deleting what the same listing shows. Part of `operator.rs`.

use std::time::Duration;

use gateway_e2e::harness::{read_jsonl, wait_until, Lark, TestGateway};

use super::helpers::{config, state, TOKEN};

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

    // With `kit` no longer configured (its entry renamed in the config file the commands
    // read), its name is known from the store only: listed, but not replayed (the deliveries
    // would die again once removed_plugin_grace passes; the replay used to say it queued them).
    let renamed = config()
        .replace("name = \"kit\"", "name = \"other\"")
        .replace("plugins = [\"kit\"]", "plugins = [\"other\"]");
    assert!(!renamed.contains("\"kit\""), "{renamed}");
    std::fs::write(dir.path().join("gateway.toml"), renamed).expect("write");
    let (code, _, err) = gw.cli(&["dead-letters", "--plugin", "kit"]);
    assert_eq!(code, 0, "{err}");
    // Named by event id alone, its deliveries are left out: here that leaves nothing.
    let (code, out, err) = gw.cli(&["replay", "ev-bad"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("nothing to replay: every delivery of these events is of a plugin no [[plugins]] entry configures any more (kit)")
            && out.is_empty(),
        "{out}{err}"
    );
    // Every dead letter: its one is left out too.
    let (code, out, err) = gw.cli(&["replay", "--dead-letters"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("skipped: ev-bad:kit (dead): no [[plugins]] entry configures \"kit\"")
            && out.contains("0 deliveries queued again")
            && !out.contains("replaying"),
        "{out}{err}"
    );
    for args in [
        &["replay", "--dead-letters", "--plugin", "kit"][..],
        &["replay", "ev-bad", "--plugin", "kit"],
    ] {
        let (code, out, err) = gw.cli(args);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(
            err.contains("plugin \"kit\" is not configured") && out.is_empty(),
            "{args:?}: {out}{err}"
        );
    }
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
    // `check` warns about such a retention, and so does `run` as it starts (it did not).
    assert!(
        gw.log()
            .contains("config: store.retention (60s) is shorter than Lark's re-sends"),
        "{}",
        gw.log()
    );
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

/// More dead letters than the commands read at a time (a page is 1,000): `dead-letters`, its
/// `--json`, and `replay --dead-letters` (dry run and real) each take every one once, newest
/// first. (They used to read them all into memory at once: gigabytes after a long outage.)
#[test]
fn the_dead_letter_commands_read_past_a_page_each_once() {
    const DEAD: usize = 1_003;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config());
    std::thread::scope(|s| {
        for t in 0..4 {
            let gw = &gw;
            s.spawn(move || {
                for i in (t..DEAD).step_by(4) {
                    gw.send_plain(TOKEN, &format!("many-{i:04}"), "test.bad");
                }
            });
        }
    });
    let listed = || {
        let (code, out, err) = gw.cli(&["dead-letters", "--json"]);
        assert_eq!(code, 0, "{err}");
        out.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
            .collect::<Vec<_>>()
    };
    assert!(wait_until(Duration::from_secs(60), || listed().len() == DEAD));
    let rows = listed();
    let ids: std::collections::HashSet<&str> =
        rows.iter().filter_map(|r| r["event_id"].as_str()).collect();
    assert_eq!(ids.len(), DEAD, "each once");
    let died: Vec<i64> = rows
        .iter()
        .filter_map(|r| r["updated_at_ms"].as_i64())
        .collect();
    assert!(died.windows(2).all(|w| w[0] >= w[1]), "newest first");

    let (code, out, err) = gw.cli(&["dead-letters"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().filter(|l| l.starts_with("many-")).count(), DEAD);
    assert!(out.ends_with(&format!("{DEAD} dead letter(s)\n")), "{out}");

    let (code, out, err) = gw.cli(&["replay", "--dead-letters", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    let would: std::collections::HashSet<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("would replay "))
        .collect();
    assert_eq!(would.len(), DEAD, "{out}");
    assert!(
        out.ends_with(&format!(
            "{DEAD} deliveries would be queued again (dry run)\n"
        )),
        "{out}"
    );
    let (code, out, err) = gw.cli(&["replay", "--dead-letters"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("replaying ")).count(),
        DEAD
    );
    assert!(
        out.ends_with(&format!("{DEAD} deliveries queued again\n")),
        "{out}"
    );
}

/// An operator's write waits for the store's write lock as long as a busy gateway keeps it
/// (its writer commits back to back, and while it calls what a replay of every dead letter
/// queued, each step's 10,000 deliveries): it gave up after the gateway's own 1 s, so
/// `replay --dead-letters` beside a busy gateway stopped part-way ("database is locked ...
/// stopped after 190000 of them", exit 1) and a replay by id failed. Here another connection
/// holds the lock for 2.5 s, as such a gateway does between the CLI's polls.
#[test]
fn an_operator_write_waits_for_a_write_lock_held_past_one_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config());
    let lark = Lark::plain(TOKEN);
    for id in ["ev-a", "ev-b"] {
        let a = lark.send(
            &gw.url("/hook"),
            &lark.event_v2(id, "test.bad", serde_json::json!({})),
        );
        assert_eq!(a.status, 200);
    }
    assert!(wait_until(Duration::from_secs(10), || state(&gw, "ev-a")
        == "dead"
        && state(&gw, "ev-b") == "dead"));
    let hold = |ms: u64| {
        let db = rusqlite::Connection::open(dir.path().join("data/gateway.db")).expect("open");
        db.busy_timeout(Duration::from_secs(5)).expect("busy");
        db.execute_batch("BEGIN IMMEDIATE").expect("lock");
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(ms));
            db.execute_batch("COMMIT").expect("unlock");
        })
    };
    let held = hold(2_500);
    let (code, out, err) = gw.cli(&["replay", "ev-a"]);
    held.join().expect("holder");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 deliveries queued again"), "{out}");
    assert!(wait_until(Duration::from_secs(10), || state(&gw, "ev-a")
        == "dead"
        && read_jsonl(&dir.path().join("data/kit.jsonl")).len() == 3));
    let held = hold(2_500);
    let (code, out, err) = gw.cli(&["replay", "--dead-letters"]);
    held.join().expect("holder");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 deliveries queued again"), "{out}");
}

/// `replay --dead-letters --plugin P` lists, counts and queues P's dead letters only, never
/// another instance's dead letters of the same events.
#[test]
fn a_dead_letter_replay_for_one_plugin_lists_only_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = gateway_e2e::harness::binaries()
        .testkit
        .display()
        .to_string();
    let cfg = config().replace("plugins = [\"kit\"]", "plugins = [\"kit\", \"also\"]")
        + &format!(
            r#"
[[plugins]]
name = "also"
library = "{lib}"
config = {{ mode = "reject", record = "data/also.jsonl" }}
"#
        );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    for id in ["two-1", "two-2"] {
        gw.send_plain(TOKEN, id, "test.bad");
    }
    let dead = || {
        let (code, out, err) = gw.cli(&["dead-letters", "--json"]);
        assert_eq!(code, 0, "{err}");
        out.lines().count()
    };
    assert!(wait_until(Duration::from_secs(10), || dead() == 4));
    for (args, verb, tail) in [
        (
            &["replay", "--dead-letters", "--plugin", "kit", "--dry-run"][..],
            "would replay ",
            "2 deliveries would be queued again (dry run)\n",
        ),
        (
            &["replay", "--dead-letters", "--plugin", "kit"],
            "replaying ",
            "2 deliveries queued again\n",
        ),
    ] {
        let (code, out, err) = gw.cli(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        let listed: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix(verb)).collect();
        assert_eq!(listed.len(), 2, "{args:?}: {out}");
        assert!(listed.iter().all(|l| l.contains(":kit (dead")), "{out}");
        assert!(out.ends_with(tail), "{args:?}: {out}");
    }
}
