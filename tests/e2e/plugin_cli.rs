//! The plugin commands of the real binary, as an author or operator runs them: `plugins call`
//! (init, one handle, shutdown; an exit code per outcome; the delivery built as the engine
//! builds it), `plugins list` over a `[libraries] dir`, bare library names resolved there, and
//! `sha256` pins refused at `check`, at start, at reload and when an isolated plugin's process
//! restarts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gateway_e2e::harness::{
    base_config, binaries, read_jsonl, run_cli, wait_until, Lark, TestGateway,
};
use gateway_e2e::{raw_fixtures, workspace_root};
use serde_json::json;

/// The fixture every call delivers unless a test says otherwise.
fn fixture() -> PathBuf {
    workspace_root().join("fixtures/assets_update_v1.json")
}
const FIXTURE_ID: &str = "5e3702a84e847582be8db7fb73283c02";
const FIXTURE_TYPE: &str = "hire.referral_account.assets_update_v1";
const FIXTURE_TOKEN: &str = "rvaYgkND1GOiu5MM0E1rncYC6PLtF7JV";

/// Runs `gateway <args>` with no gateway config anywhere; returns (exit code, stdout, stderr).
fn gateway(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(&binaries().gateway)
        .args(args)
        .env_remove("GATEWAY_CONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run gateway");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn text(p: &Path) -> String {
    p.display().to_string()
}

fn write(path: &Path, content: &str) -> PathBuf {
    std::fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path.to_path_buf()
}

fn sha256(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// plugins call
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// [libraries] dir, plugins list, bare names
// ---------------------------------------------------------------------------------------------

/// A folder as an operator fills it: two plugins (one named `lib<name>.so`, one `<name>.so`),
/// a file that is no library, and a file that is no `.so` at all.
fn plugins_folder(dir: &Path) -> PathBuf {
    let folder = dir.join("plugins.d");
    std::fs::create_dir_all(&folder).expect("mkdir");
    std::fs::copy(&binaries().testkit, folder.join("libtestkit.so")).expect("copy testkit");
    std::fs::copy(&binaries().logger, folder.join("logger.so")).expect("copy logger");
    write(&folder.join("notes.so"), "not a library\n");
    write(&folder.join("README.txt"), "what these are\n");
    folder
}

fn folder_config(plugins: &str) -> String {
    format!(
        r#"{}
[[apps]]
name = "a"
path = "/hook"

[libraries]
dir = "plugins.d"
{plugins}"#,
        base_config()
    )
}

#[test]
fn plugins_list_shows_every_library_of_the_folder_with_its_sha256() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = plugins_folder(dir.path());
    let config = write(
        &dir.path().join("gateway.toml"),
        &folder_config(
            "[[plugins]]\nname = \"kit\"\nlibrary = \"testkit\"\n\
             [[plugins]]\nname = \"kit-2\"\nlibrary = \"testkit\"\n",
        ),
    );
    let (code, out, err) = run_cli(&config, &["plugins", "list"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&format!("folder {}", folder.display())),
        "{out}"
    );
    let kit_sha = sha256(&folder.join("libtestkit.so"));
    let logger_sha = sha256(&folder.join("logger.so"));
    // The indented lines under a file's name.
    let block = |name: &str| -> String {
        let lines: Vec<&str> = out.lines().collect();
        let at = lines
            .iter()
            .position(|l| *l == name)
            .unwrap_or_else(|| panic!("{name} in {out}"));
        lines[at + 1..]
            .iter()
            .take_while(|l| l.starts_with("  "))
            .copied()
            .collect::<Vec<_>>()
            .join("\n")
    };
    let kit = block("libtestkit.so");
    for line in [
        "  name      testkit",
        "  abi       1.1",
        "  batch     yes (handle_batch)",
        "  build     gateway-plugin ",
        &format!("  sha256    {kit_sha}"),
        "  used by   kit, kit-2",
    ] {
        assert!(kit.contains(line), "{line:?} in\n{kit}");
    }
    let logger = block("logger.so");
    assert!(logger.contains("  name      logger"), "{logger}");
    assert!(
        logger.contains(&format!("  sha256    {logger_sha}")),
        "{logger}"
    );
    assert!(!logger.contains("used by"), "{logger}");
    let notes = block("notes.so");
    assert!(
        notes.contains("  not a plugin: cannot load plugin library"),
        "{notes}"
    );
    assert!(notes.contains("  sha256    "), "{notes}");
    assert!(!out.contains("README.txt"), "only *.so files: {out}");

    // --dir needs no config; inspect prints the same digest.
    let (code, out, err) = gateway(&["plugins", "list", "--dir", &text(&folder)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("  sha256    {kit_sha}")), "{out}");
    let (code, out, _) = gateway(&["plugins", "inspect", &text(&folder.join("logger.so"))]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("sha256    {logger_sha}")), "{out}");

    // A config whose `library` names nothing in the folder is still listable (that is how one
    // fixes it), with its problems as a warning.
    let broken = write(
        &dir.path().join("broken.toml"),
        &folder_config("[[plugins]]\nname = \"kit\"\nlibrary = \"tetskit\"\n"),
    );
    let (code, out, err) = run_cli(&broken, &["plugins", "list"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("libtestkit.so"), "{out}");
    assert!(err.contains("warning:") && err.contains("tetskit"), "{err}");

    // Without a folder to list: a clear error.
    let plain = write(
        &dir.path().join("plain.toml"),
        &format!(
            "{}\n[[apps]]\nname = \"a\"\npath = \"/hook\"\n",
            base_config()
        ),
    );
    let (code, _, err) = run_cli(&plain, &["plugins", "list"]);
    assert_eq!(code, 2);
    assert!(err.contains("has no [libraries] dir"), "{err}");
    let (code, _, err) = gateway(&["plugins", "list", "--dir", &text(&dir.path().join("nope"))]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot list"), "{err}");
}

#[test]
fn a_bare_library_name_resolves_in_the_libraries_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = plugins_folder(dir.path());
    let config = write(
        &dir.path().join("gateway.toml"),
        &folder_config(
            "[[plugins]]\nname = \"kit\"\nlibrary = \"testkit\"\n\
             [[plugins]]\nname = \"audit\"\nlibrary = \"logger\"\nconfig = { stdout = true }\n\
             [[plugins]]\nname = \"by-path\"\nlibrary = \"plugins.d/libtestkit.so\"\n",
        ),
    );
    let (code, out, err) = run_cli(&config, &["check"]);
    assert_eq!(code, 0, "{out}\n{err}");
    // `lib<name>.so` first, then `<name>.so`; a path stays a path (relative to the config).
    for (name, file) in [
        ("kit", "libtestkit.so"),
        ("audit", "logger.so"),
        ("by-path", "libtestkit.so"),
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("plugin {name} ")))
            .unwrap_or_else(|| panic!("{name} in {out}"));
        assert!(
            line.contains(&format!("({})", folder.join(file).display())),
            "{line}"
        );
    }

    let missing = write(
        &dir.path().join("missing.toml"),
        &folder_config("[[plugins]]\nname = \"kit\"\nlibrary = \"nothere\"\n"),
    );
    let (code, _, err) = run_cli(&missing, &["check"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "plugins[0].library: no plugin library \"nothere\" in [libraries] dir {}: tried {} and {}",
            folder.display(),
            folder.join("libnothere.so").display(),
            folder.join("nothere.so").display()
        )),
        "{err}"
    );

    let no_folder = write(
        &dir.path().join("no-folder.toml"),
        &folder_config("").replace("plugins.d", "plugins.e"),
    );
    let (code, _, err) = run_cli(&no_folder, &["check"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("libraries.dir:") && err.contains("is not a folder"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// sha256 pins
// ---------------------------------------------------------------------------------------------

fn pinned(library: &Path, sha: &str, extra: &str) -> String {
    format!(
        r#"{}
[[apps]]
name = "a"
path = "/hook"
verification_token = "t"

[delivery]
initial_backoff = "50ms"
max_backoff = "100ms"

[[plugins]]
name = "kit"
library = "{}"
sha256 = "{sha}"
{extra}

[[routes]]
events = ["*"]
plugins = ["kit"]
"#,
        base_config(),
        library.display()
    )
}

#[test]
fn a_malformed_sha256_is_a_config_error_with_its_location() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kit = &binaries().testkit;
    for (pin, says) in [
        ("abc".to_owned(), "got 3 digits"),
        (
            format!("sha256:{}", "a".repeat(57)),
            "'s' is not a hexadecimal digit",
        ),
        ("g".repeat(64), "'g' is not a hexadecimal digit"),
    ] {
        let config = write(&dir.path().join("gateway.toml"), &pinned(kit, &pin, ""));
        let (code, _, err) = run_cli(&config, &["check"]);
        assert_eq!(code, 2, "{pin}: {err}");
        assert!(
            err.contains(
                "plugins[0].sha256: must be the library's SHA-256 as 64 hexadecimal digits"
            ),
            "{err}"
        );
        assert!(err.contains(says), "{says:?} in {err}");
    }
    // Either case is accepted.
    let config = write(
        &dir.path().join("gateway.toml"),
        &pinned(kit, &sha256(kit).to_ascii_uppercase(), ""),
    );
    let (code, out, err) = run_cli(&config, &["check"]);
    assert_eq!(code, 0, "{out}\n{err}");
}

/// Another file than the one pinned is never loaded: `check` shows both digests, `run` does
/// not start, a reload to a wrong pin is refused (the running config stays).
#[test]
fn a_sha256_mismatch_is_refused_by_check_at_start_and_at_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kit = &binaries().testkit;
    let right = sha256(kit);
    let wrong = sha256(&binaries().logger);
    let config = write(&dir.path().join("gateway.toml"), &pinned(kit, &wrong, ""));
    let (code, out, err) = run_cli(&config, &["check"]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(
        err.contains(&format!(
            "plugins[0] (kit): {} does not match its pinned sha256: expected {wrong}, found {right}",
            kit.display()
        )),
        "{err}"
    );
    assert!(!out.contains("is valid"), "{out}");

    // `run` refuses to start.
    let mut child = Command::new(&binaries().gateway)
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env_remove("GATEWAY_CONFIG")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start gateway");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the gateway started with a mismatched pin");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("does not match its pinned sha256"), "{err}");

    // With the right pin it runs; a reload to a wrong pin is refused and the old instance
    // keeps serving.
    let gw_dir = tempfile::tempdir().expect("tempdir");
    let good = pinned(kit, &right, "config = { record = \"data/kit.jsonl\" }");
    let gw = TestGateway::spawn(gw_dir.path(), &good);
    gw.send_plain("t", "ev-1", "t.one");
    assert!(wait_until(Duration::from_secs(10), || gw
        .calls("kit")
        .len()
        == 1));
    let bad = pinned(
        kit,
        &wrong,
        "config = { record = \"data/kit.jsonl\", tag = \"new\" }",
    );
    std::fs::write(gw_dir.path().join("gateway.toml"), bad).expect("write config");
    gw.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .log()
            .contains("reload refused")),
        "{}",
        gw.log()
    );
    assert!(
        gw.log()
            .contains(&format!("expected {wrong}, found {right}")),
        "{}",
        gw.log()
    );
    gw.send_plain("t", "ev-2", "t.two");
    assert!(wait_until(Duration::from_secs(10), || gw
        .calls("kit")
        .len()
        == 2));
    assert!(gw.calls("kit")[1].get("tag").is_none_or(|t| t.is_null()));
}

/// An isolated instance's process loads the library anew whenever it restarts (after a crash):
/// the pin is checked again then, so a file swapped in behind a running gateway never runs.
#[test]
fn an_isolated_plugin_is_not_restarted_from_a_file_that_no_longer_matches_its_pin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = dir.path().join("libkit.so");
    std::fs::copy(&binaries().testkit, &lib).expect("copy");
    let cfg = pinned(
        &lib,
        &sha256(&lib),
        "isolation = \"process\"\n\
         config = { record = \"data/kit.jsonl\", modes = { \"t.poison\" = \"panic_handle\" } }",
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    gw.send_plain("t", "ev-1", "t.ok");
    assert!(wait_until(Duration::from_secs(10), || gw
        .calls("kit")
        .len()
        == 1));
    // Replace the file the way deploy tools do (a new inode renamed over the path: the running
    // mappings keep the old one), then make the child restart: a panic replaces the instance.
    let swap = dir.path().join("libkit.so.new");
    std::fs::copy(&binaries().logger, &swap).expect("copy");
    std::fs::rename(&swap, &lib).expect("rename");
    gw.send_plain("t", "ev-2", "t.poison");
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .log()
            .contains("plugin panicked: dead letter")),
        "{}",
        gw.log()
    );
    // The next call needs a new process.
    gw.send_plain("t", "ev-3", "t.ok");
    assert!(
        wait_until(Duration::from_secs(15), || gw
            .log()
            .contains("does not match its pinned sha256")),
        "{}",
        gw.log()
    );
    assert!(
        gw.log().contains("plugin `kit` cannot be started"),
        "{}",
        gw.log()
    );
    // Nothing was called from the swapped file: only the first call and the poison one ran.
    std::thread::sleep(Duration::from_millis(300));
    let calls = gw.calls("kit");
    assert!(
        calls.iter().all(|c| c["event_id"] != "ev-3"),
        "{calls:?}\n{}",
        gw.log()
    );
}
