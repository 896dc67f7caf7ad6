//! `plugins call`: init, one handle and shutdown, an exit code per outcome, the delivery built as
//! the running engine builds it, bad inputs refused with clear errors, and the host's warnings
//! on stderr. Part of `plugin_cli.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gateway_e2e::harness::{base_config, binaries, read_jsonl, wait_until, Lark, TestGateway};
use gateway_e2e::{raw_fixtures, workspace_root};
use serde_json::json;

use super::helpers::{gateway, text, write};

/// The fixture every call delivers unless a test says otherwise.
fn fixture() -> PathBuf {
    workspace_root().join("fixtures/assets_update_v1.json")
}
const FIXTURE_ID: &str = "5e3702a84e847582be8db7fb73283c02";
const FIXTURE_TYPE: &str = "hire.referral_account.assets_update_v1";
const FIXTURE_TOKEN: &str = "rvaYgkND1GOiu5MM0E1rncYC6PLtF7JV";

/// One config file per outcome, TOML and JSON alike: the exit code and the printed outcome, and
/// the testkit's own record that `init`, one `handle` and `shutdown` ran, in that order, with
/// relative paths resolved against the config file's folder.
#[test]
fn plugins_call_runs_init_handle_shutdown_and_exits_by_outcome() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kit = text(&binaries().testkit);
    let event = text(&fixture());
    let delivery_id = format!("{FIXTURE_ID}:testkit");
    // (config file, its text, exit code, recorded outcome, lines printed)
    let cases: [(&str, String, i32, &str, Vec<String>); 5] = [
        (
            "ok.toml",
            "record = \"ok.jsonl\"\n".into(),
            0,
            "ok",
            vec!["outcome   ok".into()],
        ),
        (
            "reject.json",
            json!({"mode": "reject", "record": "reject.jsonl"}).to_string(),
            6,
            "reject",
            vec![
                "outcome   reject".into(),
                format!("reason    testkit: reject {delivery_id}"),
            ],
        ),
        (
            "retry.toml",
            "mode = \"retry_always\"\nretry_after_ms = 5000\nrecord = \"retry.jsonl\"\n".into(),
            5,
            "retry",
            vec![
                "outcome   retry".into(),
                format!("reason    testkit: retry always for {delivery_id}"),
                "retry_after 5000 ms".into(),
            ],
        ),
        (
            "retry-no-delay.json",
            json!({"mode": "retry_always", "record": "retry-no-delay.jsonl"}).to_string(),
            5,
            "retry",
            vec!["retry_after none".into()],
        ),
        (
            "panic.toml",
            "mode = \"panic_handle\"\nrecord = \"panic.jsonl\"\n".into(),
            7,
            "panic",
            vec![
                "outcome   panicked".into(),
                format!("testkit: panic in handle for {FIXTURE_ID}"),
            ],
        ),
    ];
    for (file, content, code, recorded, printed) in &cases {
        let config = write(&dir.path().join(file), content);
        let (got, out, err) = gateway(&[
            "plugins",
            "call",
            &kit,
            "--config",
            &text(&config),
            "--event",
            &event,
        ]);
        assert_eq!(got, *code, "{file}:\n{out}\n{err}");
        assert!(out.contains("plugin    testkit 0.1.0"), "{file}: {out}");
        assert!(
            out.contains(&format!(
                "delivery  {delivery_id} (attempt 1, app plugins-call, {FIXTURE_TYPE})"
            )),
            "{file}: {out}"
        );
        for line in printed {
            assert!(out.contains(line.as_str()), "{file}: {line:?} in\n{out}");
        }
        let stem = file.rsplit_once('.').map_or(*file, |(stem, _)| stem);
        let record = dir.path().join(format!("{stem}.jsonl"));
        let lines = read_jsonl(&record);
        assert_eq!(lines.len(), 2, "one call, then shutdown: {lines:?}");
        assert_eq!(lines[0]["outcome"], *recorded, "{file}");
        assert_eq!(lines[0]["delivery_id"], delivery_id.as_str());
        assert_eq!(lines[0]["event_id"], FIXTURE_ID);
        assert_eq!(lines[0]["event_type"], FIXTURE_TYPE);
        assert_eq!(lines[0]["attempt"], 1);
        assert_eq!(lines[0]["instance"], "testkit");
        assert_eq!(lines[1]["outcome"], "shutdown", "{file}");
    }

    // --config may come before the subcommand too; --instance and --app name the delivery.
    let config = write(&dir.path().join("named.toml"), "record = \"named.jsonl\"\n");
    let (code, out, err) = gateway(&[
        "--config",
        &text(&config),
        "plugins",
        "call",
        &kit,
        "--event",
        &event,
        "--instance",
        "kit-a",
        "--app",
        "hire",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&format!(
            "delivery  {FIXTURE_ID}:kit-a (attempt 1, app hire,"
        )),
        "{out}"
    );
    let lines = read_jsonl(&dir.path().join("named.jsonl"));
    assert_eq!(lines[0]["instance"], "kit-a");

    // Without --config the plugin gets `{}` (and $GATEWAY_CONFIG, the gateway's, is ignored).
    let out = Command::new(&binaries().gateway)
        .args(["plugins", "call", &kit, "--event", &event])
        .env("GATEWAY_CONFIG", "/nonexistent/gateway.toml")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run gateway");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `plugins call` hands the plugin the very delivery the running engine hands it: the logger's
/// line for the fixture event is the same through both, but for the times.
#[test]
fn plugins_call_builds_the_delivery_the_engine_builds() {
    let dir = tempfile::tempdir().expect("tempdir");
    // On one line, as Lark sends it (the logger writes the envelope byte-exact, so a
    // pretty-printed one would span several lines of its JSON Lines file).
    let compact = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(fixture()).expect("fixture"),
    )
    .expect("fixture JSON")
    .to_string();
    let event = write(&dir.path().join("event.json"), &compact);
    let config = write(
        &dir.path().join("logger.toml"),
        "path = \"out/called.jsonl\"\n",
    );
    let (code, out, err) = gateway(&[
        "plugins",
        "call",
        &text(&binaries().logger),
        "--config",
        &text(&config),
        "--event",
        &text(&event),
        "--instance",
        "audit",
        "--app",
        "hire",
        "--show-delivery",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("outcome   ok"), "{out}");
    let called = read_jsonl(&dir.path().join("out/called.jsonl"));
    assert_eq!(called.len(), 1, "{called:?}");
    let called = &called[0];
    let shown = out
        .lines()
        .find(|l| l.starts_with("{\"delivery_id\""))
        .expect("--show-delivery prints the delivery");
    assert!(
        shown.contains("\"attempt\":1,\"plugin\":\"audit\""),
        "{shown}"
    );

    // The same event through a running gateway.
    let gw_dir = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        r#"{}
[[apps]]
name = "hire"
path = "/hook"
verification_token = "{FIXTURE_TOKEN}"

[[plugins]]
name = "audit"
library = "{}"
config = {{ path = "data/engine.jsonl" }}

[[routes]]
events = ["{FIXTURE_TYPE}"]
plugins = ["audit"]
"#,
        base_config(),
        text(&binaries().logger)
    );
    let gw = TestGateway::spawn(gw_dir.path(), &cfg);
    let answer = Lark::plain(FIXTURE_TOKEN).send(&gw.url("/hook"), &compact);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let engine_file = gw_dir.path().join("data/engine.jsonl");
    assert!(
        wait_until(Duration::from_secs(10), || !read_jsonl(&engine_file)
            .is_empty()),
        "{}",
        gw.log()
    );
    let engine = &read_jsonl(&engine_file)[0];
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v
            .as_object()
            .expect("a JSON object")
            .keys()
            .cloned()
            .collect();
        k.sort();
        k
    };
    assert_eq!(keys(called), keys(engine));
    for key in keys(engine) {
        if key == "received_at" || key == "logged_at" {
            continue;
        }
        assert_eq!(called[&key], engine[&key], "{key}");
    }
    assert_eq!(called["delivery_id"], format!("{FIXTURE_ID}:audit"));
}

/// Whatever is wrong, the message says what and the exit code is not 0: 2 for files that
/// cannot be used (usage), 1 for a library that cannot be loaded or started. No outcome is
/// printed, and nothing of a library is run for a bad input file.
#[test]
fn plugins_call_refuses_bad_inputs_with_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let kit = text(&binaries().testkit);
    let event = text(&fixture());
    let raw = raw_fixtures(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let encrypted = write(&d.join("encrypted.json"), r#"{"encrypt":"AAAA"}"#);
    let challenge = write(
        &d.join("challenge.json"),
        r#"{"type":"url_verification","challenge":"c","token":"t"}"#,
    );
    let not_json = write(&d.join("event.txt"), "hello");
    let yaml = write(&d.join("kit.yaml"), "mode: ok\n");
    let bad_toml = write(&d.join("bad.toml"), "mode = \n");
    let array = write(&d.join("array.json"), "[1, 2]");
    let unknown_key = write(&d.join("unknown.toml"), "bogus = 1\n");
    let missing_var = write(&d.join("var.toml"), "tag = \"${GATEWAY_E2E_UNSET_VAR}\"\n");
    let missing = d.join("missing.toml");
    let cases: Vec<(&str, Vec<String>, i32, &str)> = vec![
        (
            "missing library",
            vec![
                text(&d.join("libnothere.so")),
                "--event".into(),
                event.clone(),
            ],
            1,
            "does not exist",
        ),
        (
            "not a plugin",
            vec![text(&raw.not_a_plugin), "--event".into(), event.clone()],
            1,
            "is not a gateway plugin",
        ),
        (
            "missing event file",
            vec![kit.clone(), "--event".into(), text(&d.join("none.json"))],
            2,
            "cannot read event file",
        ),
        (
            "encrypted event",
            vec![kit.clone(), "--event".into(), text(&encrypted)],
            2,
            "give the decrypted envelope",
        ),
        (
            "challenge",
            vec![kit.clone(), "--event".into(), text(&challenge)],
            2,
            "not an event",
        ),
        (
            "not JSON",
            vec![kit.clone(), "--event".into(), text(&not_json)],
            2,
            "is not a Lark event envelope",
        ),
        (
            "missing config file",
            vec![
                kit.clone(),
                "--config".into(),
                text(&missing),
                "--event".into(),
                event.clone(),
            ],
            2,
            "cannot read config",
        ),
        (
            "config of another format",
            vec![
                kit.clone(),
                "--config".into(),
                text(&yaml),
                "--event".into(),
                event.clone(),
            ],
            2,
            "must end in .toml",
        ),
        (
            "TOML syntax",
            vec![
                kit.clone(),
                "--config".into(),
                text(&bad_toml),
                "--event".into(),
                event.clone(),
            ],
            2,
            "line 1",
        ),
        (
            "JSON that is no object",
            vec![
                kit.clone(),
                "--config".into(),
                text(&array),
                "--event".into(),
                event.clone(),
            ],
            2,
            "JSON object",
        ),
        (
            "a missing ${VAR}",
            vec![
                kit.clone(),
                "--config".into(),
                text(&missing_var),
                "--event".into(),
                event.clone(),
            ],
            2,
            "GATEWAY_E2E_UNSET_VAR",
        ),
        (
            "init refuses the config",
            vec![
                kit.clone(),
                "--config".into(),
                text(&unknown_key),
                "--event".into(),
                event.clone(),
            ],
            1,
            "refused its config",
        ),
    ];
    for (what, args, code, says) in cases {
        let mut all = vec!["plugins", "call"];
        all.extend(args.iter().map(String::as_str));
        let (got, out, err) = gateway(&all);
        assert_eq!(got, code, "{what}:\n{out}\n{err}");
        assert!(err.contains(says), "{what}: {says:?} in {err}");
        assert!(!out.contains("outcome"), "{what}: {out}");
    }
}

/// The host's strictness, seen from the command: a `retry_after_ms` of the wrong type is a
/// warning on stderr (and no delay), not silence.
#[test]
fn plugins_call_warns_about_a_retry_after_of_the_wrong_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = raw_fixtures(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let event = write(
        &dir.path().join("event.json"),
        &Lark::plain("t").event_v2("ev-strict", "retry_after_string", json!({})),
    );
    let (code, out, err) = gateway(&[
        "plugins",
        "call",
        &text(&raw.legacy),
        "--event",
        &text(&event),
    ]);
    assert_eq!(code, 5, "{out}\n{err}");
    assert!(out.contains("reason    raw busy\n"), "{out}");
    assert!(out.contains("retry_after none"), "{out}");
    assert!(
        err.contains("WARN") && err.contains(r#"`retry_after_ms` is the string "5000""#),
        "{err}"
    );
}
