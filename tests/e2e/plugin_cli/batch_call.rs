//! `plugins call` with several `--event`s: one batch, through the plugin's batch entry (or
//! `handle` for each when it has none), each delivery's outcome printed, the exit code the first
//! outcome that is not ok; a batch entry failing as a whole; an event given twice refused. Part
//! of `plugin_cli.rs`.

use std::path::{Path, PathBuf};

use gateway_e2e::harness::{binaries, read_jsonl};
use gateway_e2e::{raw_fixtures, workspace_root};

use super::helpers::{gateway, gateway_with, text, write};

/// The fixture envelope with another event id and type, written to `dir/<id>.json`.
fn event(dir: &Path, id: &str, event_type: &str) -> PathBuf {
    let fixture = workspace_root().join("fixtures/assets_update_v1.json");
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture).expect("fixture")).expect("JSON");
    v["header"]["event_id"] = id.into();
    v["header"]["event_type"] = event_type.into();
    write(&dir.join(format!("{id}.json")), &v.to_string())
}

#[test]
fn several_events_are_one_batch_with_an_outcome_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kit = text(&binaries().testkit);
    let events: Vec<String> = [("e-ok", "t.ok"), ("e-rej", "t.rej"), ("e-retry", "t.retry")]
        .iter()
        .map(|(id, ty)| text(&event(dir.path(), id, ty)))
        .collect();
    let config = write(
        &dir.path().join("kit.toml"),
        "record = \"kit.jsonl\"\nmodes = { \"t.rej\" = \"reject\", \"t.retry\" = \"retry_always\" }\n",
    );
    let mut args = vec!["plugins", "call", &kit, "--config"];
    let config = text(&config);
    args.push(&config);
    for e in &events {
        args.extend(["--event", e.as_str()]);
    }
    let (code, out, err) = gateway(&args);
    // The first outcome that is not ok: the reject (6), not the retry after it.
    assert_eq!(code, 6, "{out}\n{err}");
    let expected = [
        "batch     3 deliveries through handle_batch",
        "delivery  e-ok:testkit (attempt 1, app plugins-call, t.ok)",
        "outcome   ok",
        "delivery  e-rej:testkit (attempt 1, app plugins-call, t.rej)",
        "outcome   reject",
        "reason    testkit: reject e-rej:testkit",
        "delivery  e-retry:testkit (attempt 1, app plugins-call, t.retry)",
        "outcome   retry",
    ];
    let mut at = 0;
    for line in expected {
        let found = out[at..]
            .find(line)
            .unwrap_or_else(|| panic!("{line:?} after byte {at} in\n{out}"));
        at += found + line.len();
    }
    let lines = read_jsonl(&dir.path().join("kit.jsonl"));
    let batches: Vec<_> = lines.iter().map(|l| l["batch"].clone()).collect();
    assert_eq!(
        lines.len(),
        4,
        "three deliveries in one call, then shutdown: {lines:?}"
    );
    assert_eq!(&batches[..3], [3, 3, 3], "{lines:?}");
    assert_eq!(lines[3]["outcome"], "shutdown");

    // All ok: 0.
    let ok = write(&dir.path().join("ok.json"), r#"{"record": "ok.jsonl"}"#);
    let ok = text(&ok);
    let (code, out, err) = gateway(&[
        "plugins", "call", &kit, "--config", &ok, "--event", &events[0], "--event", &events[2],
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(out.matches("outcome   ok").count(), 2, "{out}");

    // A batch entry that fails as a whole: 7, said so.
    let broken = write(
        &dir.path().join("broken.toml"),
        "panic_batch = true\nrecord = \"broken.jsonl\"\n",
    );
    let broken = text(&broken);
    let (code, out, err) = gateway(&[
        "plugins", "call", &kit, "--config", &broken, "--event", &events[0], "--event", &events[1],
    ]);
    assert_eq!(code, 7, "{out}\n{err}");
    assert!(
        out.contains("outcome   the batch failed as a whole")
            && out.contains("testkit: the whole batch of 2 panics")
            && out.contains("replace the instance and call handle for each delivery alone"),
        "{out}"
    );

    // One event twice: refused before the library is loaded.
    let (code, out, err) = gateway(&[
        "plugins", "call", &kit, "--event", &events[0], "--event", &events[0],
    ]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("holds event \"e-ok\" again: a batch never holds one event twice")
            && out.is_empty(),
        "{out}\n{err}"
    );
}

#[test]
fn a_library_without_a_batch_entry_gets_handle_for_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let legacy = raw_fixtures(Path::new(env!("CARGO_TARGET_TMPDIR"))).legacy;
    let a = text(&event(dir.path(), "l-1", "t.a"));
    let b = text(&event(dir.path(), "l-2", "t.b"));
    let (code, out, err) = gateway(&[
        "plugins",
        "call",
        &text(&legacy),
        "--event",
        &a,
        "--event",
        &b,
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(
            "batch     2 deliveries through handle for each (the library has no batch entry)"
        ) && out.matches("outcome   ok").count() == 2,
        "{out}"
    );
}

/// A 1.0 library's batch is `handle` for each, as the gateway calls it: after a delivery that
/// panicked, the next one goes to a fresh instance, never to the one that just panicked, made
/// once the panicked one was shut down (its `shutdown` never beside the fresh `init`: the raw
/// fixture records each `init`, call and `shutdown`, in order).
#[test]
fn a_1_0_librarys_batch_mate_never_runs_on_the_instance_that_panicked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let legacy = raw_fixtures(Path::new(env!("CARGO_TARGET_TMPDIR"))).legacy;
    let a = text(&event(dir.path(), "p-1", "panicked"));
    let b = text(&event(dir.path(), "p-2", "ok"));
    let record = dir.path().join("raw-calls.txt");
    let legacy = text(&legacy);
    let (code, out, _) = gateway_with(
        &["plugins", "call", &legacy, "--event", &a, "--event", &b],
        &[("RAW_PLUGIN_CALLS", &record)],
    );
    assert_eq!(code, 7, "the first outcome not ok, a panic: {out}");
    let calls: Vec<String> = std::fs::read_to_string(&record)
        .expect("calls recorded")
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(_, what)| what.to_owned()))
        .collect();
    assert_eq!(
        calls,
        ["init", "panicked", "shutdown", "init", "ok", "shutdown"],
        "{out}"
    );
    assert!(
        out.contains("(delivery 1 of 2 panicked: the instance is replaced before the next")
            && out.matches("outcome   ok").count() == 1,
        "{out}"
    );
}

/// `plugins call --help` shows the global `--config` with the gateway's default and variable,
/// which this command ignores: its help says so.
#[test]
fn the_help_says_which_config_the_call_reads() {
    let (code, out, err) = gateway(&["plugins", "call", "--help"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("--config here is the plugin's own config")
            && out.contains("which this command never reads"),
        "{out}"
    );
}
