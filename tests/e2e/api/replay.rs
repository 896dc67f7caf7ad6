//! `/api/v1/replay` and `/api/v1/reload`: a success re-run only with `force`, a dry run, dead
//! letters replayed, each generation's attempts kept, refusals (a bounded body among them), and
//! a reload answering its result and what waits for a restart; a replay of every dead letter
//! counted, not listed whole. Part of `api.rs`.

use std::time::Duration;

use gateway_e2e::harness::{attempts, metric, read_jsonl, wait_until, TestGateway};
use serde_json::{json, Value};

use super::admin_client::*;

#[test]
fn replay_reruns_successes_only_with_force_and_reload_answers_its_result() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config(""));
    send(&gw, "/hook", "ev-ok", "test.ok");
    send(&gw, "/hook", "ev-flaky", "test.flaky");
    assert!(wait_until(Duration::from_secs(10), || state(&gw, "ev-ok")
        == "done"
        && state(&gw, "ev-flaky") == "dead"));
    let calls = || read_jsonl(&dir.path().join("data/kit.jsonl")).len();
    assert_eq!(calls(), 2);

    // A success is not re-run without force: 409 naming what would run again, nothing changes.
    let r = post_json(&gw, "/api/v1/replay", json!({"event_ids": ["ev-ok"]}));
    assert_eq!(r.status, 409, "{}", r.body);
    let v = r.json();
    assert_eq!(v["succeeded"][0]["event_id"], "ev-ok");
    assert_eq!(v["would_replay"][0]["plugin"], "kit");
    // A dry run lists, changes nothing.
    let r = post_json(
        &gw,
        "/api/v1/replay",
        json!({"event_ids": ["ev-ok"], "force": true, "dry_run": true}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["would_replay"][0]["event_id"], "ev-ok");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(calls(), 2, "no call after a refused replay or a dry run");
    let r = post_json(
        &gw,
        "/api/v1/replay",
        json!({"event_ids": ["ev-ok"], "force": true}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["replayed"], 1);
    assert!(wait_until(Duration::from_secs(10), || calls() == 3));

    // Dead letters need no force; the flaky delivery succeeds the second time.
    let r = post_json(
        &gw,
        "/api/v1/replay",
        json!({"deliveries": [{"event_id": "ev-flaky", "plugin": "kit"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(wait_until(Duration::from_secs(10), || state(
        &gw, "ev-flaky"
    ) == "done"));
    let r = post_json(&gw, "/api/v1/replay", json!({"dead_letters": true}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["replayed"], 0);
    // Each delivery's history keeps every generation's attempts, oldest first.
    let outcomes =
        |id: &str| attempts(&get(&gw, &format!("/api/v1/events/{id}")).json()["deliveries"][0]);
    assert_eq!(
        outcomes("ev-ok"),
        [(0, 1, "ok".into()), (1, 1, "ok".into())]
    );
    assert_eq!(
        outcomes("ev-flaky"),
        [(0, 1, "retry".into()), (1, 1, "ok".into())]
    );

    // Refusals.
    let table: &[(Value, u16, &str)] = &[
        (json!({"event_ids": ["nope"]}), 404, "no event \"nope\""),
        (
            json!({"event_ids": ["ev-ok"], "plugin": "nosuch"}),
            404,
            "unknown plugin",
        ),
        (json!({}), 400, "exactly one of"),
        (
            json!({"event_ids": ["ev-ok"], "dead_letters": true}),
            400,
            "exactly one of",
        ),
        (json!({"evnt_ids": ["x"]}), 400, "unknown field"),
    ];
    for (body, status, says) in table {
        let r = post_json(&gw, "/api/v1/replay", body.clone());
        assert_eq!(r.status, *status, "{body}: {}", r.body);
        let error = r.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(error.contains(says), "{body}: {}", r.body);
    }
    let r = call(
        "POST",
        &gw.admin_url("/api/v1/replay"),
        &[("Content-Type", "text/plain")],
        Some("{}"),
    );
    assert_eq!(r.status, 415, "{}", r.body);
    let big = format!("{{\"event_ids\": [\"{}\"]}}", "x".repeat(1024 * 1024));
    let r = call(
        "POST",
        &gw.admin_url("/api/v1/replay"),
        &[("Content-Type", "application/json")],
        Some(&big),
    );
    assert_eq!(r.status, 413, "{}", r.body);

    // Reload: the same validation as SIGHUP, the result in the answer.
    let r = post_json(&gw, "/api/v1/reload", json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["result"], "ok");
    assert_eq!(r.json()["not_applied"], json!([]), "{}", r.body);
    let path = dir.path().join("gateway.toml");
    let good = std::fs::read_to_string(&path).expect("config");
    // What waits for a restart is in the answer, not only in the log.
    std::fs::write(&path, good.replace("[server]\n", "[server]\nworkers = 7\n")).expect("write");
    let r = post_json(&gw, "/api/v1/reload", json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    let notes = r.json()["not_applied"].to_string();
    assert!(
        notes.contains("[server] workers changes only on restart"),
        "{}",
        r.body
    );
    // Still not applied at the next reload of the same file; back to the running value, none.
    let r = post_json(&gw, "/api/v1/reload", json!({}));
    let notes = r.json()["not_applied"].to_string();
    assert!(
        notes.contains("workers changes only on restart"),
        "{}",
        r.body
    );
    std::fs::write(&path, &good).expect("write");
    let r = post_json(&gw, "/api/v1/reload", json!({}));
    assert_eq!(r.json()["not_applied"], json!([]), "{}", r.body);
    std::fs::write(
        &path,
        good.replace("plugins = [\"kit\"]", "plugins = [\"ghost\"]"),
    )
    .expect("write");
    let r = post_json(&gw, "/api/v1/reload", json!({}));
    assert_eq!(r.status, 422, "{}", r.body);
    let error = r.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("unknown plugin \"ghost\""), "{}", r.body);
    let m = get(&gw, "/metrics").body;
    assert_eq!(
        metric(&m, "gateway_reloads_total{result=\"refused\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(metric(&m, "gateway_reloads_total{result=\"ok\"}"), 4.0);
    // The running config stayed: events are still delivered.
    send(&gw, "/hook", "ev-after", "test.ok");
    assert!(wait_until(Duration::from_secs(10), || state(
        &gw, "ev-after"
    ) == "done"));
}

/// `{"dead_letters": true}` after an outage: the reply counts every dead letter and lists at
/// most 500 of each kind (it used to read and list all of them: 500,000 dead letters took the
/// gateway to 1 GB of memory and a 56 MB reply); an id named twice is replayed once.
#[test]
fn a_replay_of_every_dead_letter_counts_them_and_lists_at_most_500() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config(""));
    const DEAD: usize = 503;
    for i in 0..DEAD {
        send(&gw, "/hook", &format!("ev-bad-{i}"), "test.bad");
    }
    let dead = || {
        get(&gw, "/api/v1/dead-letters?limit=500").json()["dead_letters"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert!(wait_until(Duration::from_secs(30), || state(
        &gw,
        &format!("ev-bad-{}", DEAD - 1)
    ) == "dead"
        && metric(
            &get(&gw, "/metrics").body,
            "gateway_dead_letters_current"
        ) == DEAD as f64));
    assert_eq!(dead(), 500);

    let r = post_json(
        &gw,
        "/api/v1/replay",
        json!({"dead_letters": true, "dry_run": true}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["would_replay_count"], DEAD, "{}", r.body);
    assert_eq!(v["would_replay"].as_array().map(Vec::len), Some(500));
    assert_eq!(v["skipped_count"], 0);
    assert_eq!(v["truncated"], true);
    // The newest first.
    assert_eq!(
        v["would_replay"][0]["event_id"],
        format!("ev-bad-{}", DEAD - 1)
    );

    // One plugin's, named: the same counts.
    let r = post_json(
        &gw,
        "/api/v1/replay",
        json!({"dead_letters": true, "plugin": "kit", "dry_run": true}),
    );
    assert_eq!(r.json()["would_replay_count"], DEAD, "{}", r.body);

    let r = post_json(&gw, "/api/v1/replay", json!({"dead_letters": true}));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["replayed"], DEAD, "{}", r.body);
    assert_eq!(v["deliveries"].as_array().map(Vec::len), Some(500));
    assert_eq!(v["truncated"], true);
    // Each is rejected again: dead letters once more, every one with two generations.
    assert!(wait_until(Duration::from_secs(30), || {
        let h = attempts(&get(&gw, "/api/v1/events/ev-bad-0").json()["deliveries"][0]);
        h.len() == 2
            && metric(&get(&gw, "/metrics").body, "gateway_dead_letters_current") == DEAD as f64
    }));

    // An id named twice is one delivery, replayed once.
    let r = post_json(
        &gw,
        "/api/v1/replay",
        json!({"event_ids": ["ev-bad-1", "ev-bad-1"], "dry_run": true}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["would_replay"].as_array().map(Vec::len), Some(1));
}

/// A replay naming a plugin no entry configures any more (only the store still has its
/// deliveries) is refused in every form, as the CLI refuses it: the API's `dead_letters` and
/// `deliveries` forms queued them again, and they died again after `removed_plugin_grace`.
#[test]
fn a_replay_of_a_plugin_no_longer_configured_is_refused_in_every_form() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config("");
    let gw = TestGateway::spawn(dir.path(), &cfg);
    send(&gw, "/hook", "ev-flaky", "test.flaky");
    assert!(wait_until(Duration::from_secs(10), || state(
        &gw, "ev-flaky"
    ) == "dead"));
    let renamed = cfg
        .replace("name = \"kit\"", "name = \"kit2\"")
        .replace("plugins = [\"kit\"]", "plugins = [\"kit2\"]");
    std::fs::write(dir.path().join("gateway.toml"), renamed).expect("write");
    let r = post_json(&gw, "/api/v1/reload", json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    for body in [
        json!({"dead_letters": true, "plugin": "kit"}),
        json!({"deliveries": [{"event_id": "ev-flaky", "plugin": "kit"}], "dead_only": true}),
        json!({"event_ids": ["ev-flaky"], "plugin": "kit"}),
    ] {
        let r = post_json(&gw, "/api/v1/replay", body.clone());
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(
            r.body.contains("plugin \\\"kit\\\" is not configured"),
            "{body}: {}",
            r.body
        );
    }
    assert_eq!(state(&gw, "ev-flaky"), "dead");
}

/// An event-id replay without a plugin leaves out the deliveries of names no entry configures
/// any more (they would die again after `removed_plugin_grace`), lists them in
/// `not_configured`, and replays the others; with nothing else left it is 400. It used to
/// queue them all again.
#[test]
fn an_event_replay_without_a_plugin_leaves_out_plugins_no_longer_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let two = config("")
        .replace(
            "[[routes]]\nevents = [\"test.*\"]\nplugins = [\"kit\"]",
            "[[routes]]\nevents = [\"test.*\"]\nplugins = [\"kit\", \"kit2\"]",
        )
        .replace(
            "[[routes]]",
            "[[plugins]]\nname = \"kit2\"\nlibrary = \"LIB\"\nconfig = { mode = \"ok\", modes = { \"test.flaky\" = \"retry_then_ok\" }, retries = 1, record = \"data/kit2.jsonl\" }\n\n[[routes]]",
        );
    let library = two
        .lines()
        .find_map(|l| l.strip_prefix("library = "))
        .expect("the kit's library")
        .trim_matches('"')
        .to_owned();
    let two = two.replace("\"LIB\"", &format!("{library:?}"));
    assert!(two.contains("plugins = [\"kit\", \"kit2\"]"), "{two}");
    let gw = TestGateway::spawn(dir.path(), &two);
    send(&gw, "/hook", "ev-flaky", "test.flaky");
    let states = |gw: &TestGateway| -> Vec<(String, String)> {
        let v = get(gw, "/api/v1/events/ev-flaky").json();
        let mut s: Vec<(String, String)> = v["deliveries"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                (
                    d["plugin"].as_str().unwrap_or_default().to_owned(),
                    d["state"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        s.sort();
        s
    };
    let dead = vec![
        ("kit".to_owned(), "dead".to_owned()),
        ("kit2".to_owned(), "dead".to_owned()),
    ];
    assert!(wait_until(Duration::from_secs(10), || states(&gw) == dead));
    // `kit` renamed away: only `kit2` is configured now.
    let renamed = two
        .replace("name = \"kit\"", "name = \"kit3\"")
        .replace("plugins = [\"kit\", \"kit2\"]", "plugins = [\"kit2\"]");
    std::fs::write(dir.path().join("gateway.toml"), renamed).expect("write");
    let r = post_json(&gw, "/api/v1/reload", json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    // So does a replay of every dead letter.
    let r = post_json(
        &gw,
        "/api/v1/replay",
        json!({"dead_letters": true, "dry_run": true}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(
        (&v["would_replay_count"], &v["not_configured_count"]),
        (&json!(1), &json!(1)),
        "{v}"
    );
    assert_eq!(v["would_replay"][0]["plugin"], "kit2", "{v}");
    assert_eq!(v["not_configured"][0]["plugin"], "kit", "{v}");
    let r = post_json(
        &gw,
        "/api/v1/replay",
        json!({"event_ids": ["ev-flaky"], "dry_run": true}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["would_replay"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["would_replay"][0]["plugin"], "kit2");
    assert_eq!(v["not_configured"][0]["plugin"], "kit", "{v}");
    let r = post_json(&gw, "/api/v1/replay", json!({"event_ids": ["ev-flaky"]}));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["replayed"], 1, "{v}");
    assert_eq!(v["not_configured"][0]["plugin"], "kit", "{v}");
    assert!(wait_until(Duration::from_secs(10), || states(&gw)
        == vec![
            ("kit".to_owned(), "dead".to_owned()),
            ("kit2".to_owned(), "done".to_owned()),
        ]));
    // `kit2` done, `kit` not configured: nothing left without force.
    let r = post_json(&gw, "/api/v1/replay", json!({"event_ids": ["ev-flaky"]}));
    assert_eq!(r.status, 409, "{}", r.body);
    // Neither configured any more: nothing to replay, even forced.
    let only_kit = dir.path().join("gateway.toml");
    let cfg = std::fs::read_to_string(&only_kit).expect("read");
    std::fs::write(
        &only_kit,
        cfg.replace("plugins = [\"kit2\"]", "plugins = [\"kit3\"]")
            .replace("name = \"kit2\"", "name = \"kit4\""),
    )
    .expect("write");
    let r = post_json(&gw, "/api/v1/reload", json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = post_json(
        &gw,
        "/api/v1/replay",
        json!({"event_ids": ["ev-flaky"], "force": true}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("nothing to replay") && r.body.contains("(kit, kit2)"),
        "{}",
        r.body
    );
    assert_eq!(states(&gw)[0].1, "dead");
    let r = post_json(&gw, "/api/v1/replay", json!({"dead_letters": true}));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(
        (&v["replayed"], &v["not_configured_count"]),
        (&json!(0), &json!(1)),
        "{v}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        states(&gw)[0].1,
        "dead",
        "a removed plugin's dead letter stays one"
    );
}
