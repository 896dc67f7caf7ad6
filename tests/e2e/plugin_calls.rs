//! The plugin host (`gateway_plugin::host`) calling real plugins: the `logger` plugin and the
//! config-driven `testkit` fixture: concurrency, every outcome, panics on both sides of `init`,
//! config refusals, and plugin logs reaching the host.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use gateway_e2e::hostkit::{call, instantiate, open, quiet, read_lines, recording};
use gateway_e2e::{build_plugins, delivery, delivery_json};
use gateway_plugin::host::{CallOutcome, InitError};
use gateway_plugin::Level;
use serde_json::json;

#[test]
fn logger_two_instances_take_1000_events_from_8_threads_each_exactly_once() {
    let lib = open(&build_plugins().logger);
    assert_eq!(lib.name(), "logger");
    let dir = tempfile::tempdir().expect("tempdir");
    // Relative paths resolve against the config dir; one instance fsyncs, the other does not.
    let a = instantiate(&lib, "audit-a", json!({"path": "a/out.jsonl"}), dir.path());
    let b = instantiate(
        &lib,
        "audit-b",
        json!({"path": "b.jsonl", "fsync": "never"}),
        dir.path(),
    );
    const EVENTS: u64 = 1000;
    const THREADS: u64 = 8;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (a, b) = (a.clone(), b.clone());
            s.spawn(move || {
                for n in (t..EVENTS).step_by(THREADS as usize) {
                    // Even events go to instance a, odd ones to b.
                    let target = if n % 2 == 0 { &a } else { &b };
                    let d = delivery(n, "hire.referral_account.assets_update_v1", 200);
                    assert_eq!(
                        target.handle(&delivery_json(&d)),
                        CallOutcome::Ok,
                        "event {n}"
                    );
                }
            });
        }
    });
    drop((a, b));
    for (file, parity, count) in [("a/out.jsonl", 0, 500), ("b.jsonl", 1, 500)] {
        let lines = read_lines(&dir.path().join(file));
        assert_eq!(lines.len(), count, "{file}");
        let mut seen = HashMap::new();
        for line in &lines {
            let n = line["event"]["event"]["n"]
                .as_u64()
                .expect("n in the envelope");
            assert_eq!(n % 2, parity, "event {n} landed in the wrong file {file}");
            assert_eq!(line["event_id"], format!("ev-{n}"));
            assert_eq!(line["delivery_id"], format!("dl-{n}"));
            assert_eq!(line["event"]["header"]["event_id"], format!("ev-{n}"));
            assert_eq!(line["attempt"], 1);
            assert_eq!(line["received_at"], 1_700_000_000_000 + n);
            assert_eq!(
                line["event"]["event"]["padding"].as_str().map(str::len),
                Some(200)
            );
            *seen.entry(n).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), count, "{file}: some event missing");
        assert!(
            seen.values().all(|&c| c == 1),
            "{file}: an event appears twice"
        );
    }
}

#[test]
fn logger_refuses_a_bad_config_with_its_message() {
    let lib = open(&build_plugins().logger);
    let dir = tempfile::tempdir().expect("tempdir");
    let err = lib
        .instantiate("audit", &json!({"fsync": "never"}), dir.path(), quiet())
        .expect_err("no path");
    assert_eq!(
        err,
        InitError::Refused {
            instance: "audit".into(),
            message: "logger config: `path` is required".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "plugin `audit` refused its config: logger config: `path` is required"
    );
}

// ---------------------------------------------------------------------------------------------
// The testkit plugin: outcomes, panics, record file, logs
// ---------------------------------------------------------------------------------------------

#[test]
fn library_describes_itself() {
    let path = build_plugins().testkit;
    let lib = open(&path);
    assert_eq!(lib.path(), path);
    assert_eq!(lib.name(), "testkit");
    assert_eq!(lib.version(), env!("CARGO_PKG_VERSION"));
    assert!(
        lib.build_tag().starts_with("gateway-plugin ") && lib.build_tag().contains("rustc "),
        "{}",
        lib.build_tag()
    );
    // Opening the same file again is fine (the library is shared, never unloaded).
    assert_eq!(open(&path).name(), "testkit");
}

#[test]
fn testkit_outcomes_map_to_call_outcomes() {
    let lib = open(&build_plugins().testkit);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();

    let ok = instantiate(&lib, "ok", json!({}), d);
    assert_eq!(call(&ok, 1, "t"), CallOutcome::Ok);

    let reject = instantiate(&lib, "rej", json!({"mode": "reject"}), d);
    assert_eq!(
        call(&reject, 2, "t"),
        CallOutcome::Reject {
            reason: "testkit: reject dl-2".into()
        }
    );

    let retry = instantiate(
        &lib,
        "retry",
        json!({"mode": "retry_always", "retry_after_ms": 2500}),
        d,
    );
    assert_eq!(
        call(&retry, 3, "t"),
        CallOutcome::Retry {
            reason: "testkit: retry always for dl-3".into(),
            retry_after: Some(Duration::from_millis(2500)),
        }
    );
    let retry_plain = instantiate(&lib, "retry2", json!({"mode": "retry_always"}), d);
    assert_eq!(
        call(&retry_plain, 4, "t"),
        CallOutcome::Retry {
            reason: "testkit: retry always for dl-4".into(),
            retry_after: None,
        }
    );

    let flaky = instantiate(
        &lib,
        "flaky",
        json!({"mode": "retry_then_ok", "retries": 2}),
        d,
    );
    let retry_n = |k: u32, n: u64| CallOutcome::Retry {
        reason: format!("testkit: retry {k} of 2 for dl-{n}"),
        retry_after: None,
    };
    assert_eq!(call(&flaky, 5, "t"), retry_n(1, 5));
    assert_eq!(call(&flaky, 6, "t"), retry_n(1, 6));
    assert_eq!(call(&flaky, 5, "t"), retry_n(2, 5));
    assert_eq!(call(&flaky, 5, "t"), CallOutcome::Ok);
    assert_eq!(call(&flaky, 6, "t"), retry_n(2, 6));
    assert_eq!(call(&flaky, 6, "t"), CallOutcome::Ok);

    let slow = instantiate(&lib, "slow", json!({"mode": "slow", "sleep_ms": 60}), d);
    let start = Instant::now();
    assert_eq!(call(&slow, 7, "t"), CallOutcome::Ok);
    assert!(start.elapsed() >= Duration::from_millis(60));

    let picky = instantiate(
        &lib,
        "picky",
        json!({"mode": "reject", "only_event_types": ["bad"]}),
        d,
    );
    assert_eq!(call(&picky, 8, "good"), CallOutcome::Ok);
    assert!(matches!(call(&picky, 9, "bad"), CallOutcome::Reject { .. }));
}

#[test]
fn testkit_refuses_unknown_config() {
    let lib = open(&build_plugins().testkit);
    let dir = tempfile::tempdir().expect("tempdir");
    match lib.instantiate("kit", &json!({"mode": "sometimes"}), dir.path(), quiet()) {
        Err(InitError::Refused { instance, message }) => {
            assert_eq!(instance, "kit");
            assert!(
                message.starts_with("testkit config: unknown variant `sometimes`"),
                "{message}"
            );
        }
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[test]
fn panic_in_new_is_init_error_panicked_with_the_message() {
    let lib = open(&build_plugins().testkit);
    let dir = tempfile::tempdir().expect("tempdir");
    let err = lib
        .instantiate("boom", &json!({"mode": "panic_new"}), dir.path(), quiet())
        .expect_err("new panics");
    assert_eq!(
        err,
        InitError::Panicked {
            instance: "boom".into(),
            message: "testkit: panic in new (instance `boom`)".into(),
        }
    );
    assert!(err.to_string().contains("panicked while starting"), "{err}");
    // The process survives and the library still works.
    let fine = instantiate(&lib, "fine", json!({}), dir.path());
    assert_eq!(call(&fine, 1, "t"), CallOutcome::Ok);
}

#[test]
fn panic_in_handle_is_reported_and_a_fresh_instance_works() {
    let lib = open(&build_plugins().testkit);
    let dir = tempfile::tempdir().expect("tempdir");
    let record = dir.path().join("calls.jsonl");
    let config =
        json!({"mode": "panic_handle", "only_event_types": ["boom"], "record": "calls.jsonl"});
    let kit = instantiate(&lib, "kit", config.clone(), dir.path());
    assert_eq!(call(&kit, 1, "fine"), CallOutcome::Ok);
    assert_eq!(
        call(&kit, 2, "boom"),
        CallOutcome::Panicked {
            message: "testkit: panic in handle for ev-2".into()
        }
    );
    // What the gateway does: drop the panicked instance (shutdown runs) and start a fresh one.
    drop(kit);
    let fresh = instantiate(&lib, "kit", config, dir.path());
    assert_eq!(call(&fresh, 3, "fine"), CallOutcome::Ok);
    assert!(matches!(
        call(&fresh, 4, "boom"),
        CallOutcome::Panicked { .. }
    ));
    assert_eq!(call(&fresh, 5, "fine"), CallOutcome::Ok);
    let outcomes: Vec<String> = read_lines(&record)
        .iter()
        .map(|l| {
            format!(
                "{}={}",
                l["event_id"].as_str().unwrap_or("-"),
                l["outcome"].as_str().expect("outcome")
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            "ev-1=ok",
            "ev-2=panic",
            "-=shutdown",
            "ev-3=ok",
            "ev-4=panic",
            "ev-5=ok"
        ]
    );
}

#[test]
fn testkit_record_file_counts_concurrent_calls_and_logs_reach_the_sink() {
    let lib = open(&build_plugins().testkit);
    let dir = tempfile::tempdir().expect("tempdir");
    let (sink, logs) = recording();
    let kit = lib
        .instantiate(
            "kit",
            &json!({"mode": "retry_then_ok", "retries": 1, "record": "rec/calls.jsonl", "log": true}),
            dir.path(),
            sink,
        )
        .expect("starts");
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let kit = kit.clone();
            s.spawn(move || {
                for n in (t * 25)..(t * 25 + 25) {
                    assert!(matches!(call(&kit, n, "t"), CallOutcome::Retry { .. }));
                    assert_eq!(call(&kit, n, "t"), CallOutcome::Ok);
                }
            });
        }
    });
    let lines = read_lines(&dir.path().join("rec/calls.jsonl"));
    assert_eq!(lines.len(), 200);
    let mut per_delivery: HashMap<String, Vec<String>> = HashMap::new();
    for l in &lines {
        assert_eq!(l["instance"], "kit");
        assert_eq!(l["attempt"], 1);
        assert_eq!(
            l["event_id"].as_str().map(|e| e.replacen("ev-", "dl-", 1)),
            l["delivery_id"].as_str().map(str::to_owned)
        );
        per_delivery
            .entry(l["delivery_id"].as_str().expect("id").to_owned())
            .or_default()
            .push(l["outcome"].as_str().expect("outcome").to_owned());
    }
    assert_eq!(per_delivery.len(), 100);
    assert!(per_delivery.values().all(|o| o == &["retry", "ok"]));
    let logs = logs.lock().expect("log lock");
    assert_eq!(logs.len(), 200);
    assert!(logs
        .iter()
        .all(|(instance, level, _)| instance == "kit" && *level == Level::Info));
    assert!(logs
        .iter()
        .any(|(_, _, m)| m == "testkit handling ev-42 (attempt 1, call 2)"));
}

// ---------------------------------------------------------------------------------------------
// Loader errors: each one precise, named, and survivable
// ---------------------------------------------------------------------------------------------
