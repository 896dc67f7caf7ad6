//! What runs where for `isolation = "process"`: an isolated plugin's library is loaded only by
//! its child process. The gateway (and `gateway check`) only opens and hashes the file; its
//! load-time code (constructors) never runs in the gateway. The child reports the descriptor
//! back, and loads only the file that hashes to what the gateway examined: a file swapped in
//! behind the gateway is refused when the child restarts, and taken by a reload.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gateway_e2e::harness::{base_config, binaries, children, get, wait_until, TestGateway};
use gateway_e2e::raw_fixtures;

const TOKEN: &str = "tok";
const WAIT: Duration = Duration::from_secs(30);

/// `raw-plugins/load_marker.rs` compiled once per process into
/// `<CARGO_TARGET_TMPDIR>/raw-plugins/` (named after a hash of its source, so a library another
/// process may have loaded is never overwritten). Once: two tests of this binary use it and run
/// in parallel threads, and each compiling it wrote the same `.tmp` file (named after this
/// process) at once, the second rename finding it gone.
fn load_marker_fixture() -> PathBuf {
    use std::sync::OnceLock;
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR"));
        gateway_e2e::compile_raw_plugin(out, "load_marker.rs", "load_marker", None)
    });
    match built {
        Ok(lib) => lib.clone(),
        Err(e) => panic!("compiling raw-plugins/load_marker.rs failed: {e}"),
    }
}

fn sha256(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One isolated instance `native` of `library` (with `extra` lines), every event routed to it.
fn config(library: &Path, extra: &str) -> String {
    format!(
        r#"{base}
[[apps]]
name = "hire"
path = "/hook"
verification_token = "{TOKEN}"

[delivery]
initial_backoff = "50ms"
max_backoff = "100ms"
max_attempts = 2

[[plugins]]
name = "native"
library = "{library}"
isolation = "process"
{extra}

[[routes]]
events = ["*"]
plugins = ["native"]
"#,
        base = base_config(),
        library = library.display(),
    )
}

/// The pids the fixture's constructor wrote into `dir` (one `loaded-<pid>` file per process
/// that loaded it).
fn loaders(dir: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.strip_prefix("loaded-")?.parse().ok()?;
            let text = std::fs::read_to_string(e.path()).ok()?;
            assert_eq!(text, name["loaded-".len()..], "the marker names its writer");
            Some(pid)
        })
        .collect();
    pids.sort_unstable();
    pids
}

#[test]
fn an_isolated_library_loads_only_in_its_child_never_in_the_gateway_check_or_inspect() {
    let lib = load_marker_fixture();
    let dir = tempfile::tempdir().expect("tempdir");
    let markers = dir.path().join("markers");
    std::fs::create_dir(&markers).expect("markers dir");
    let env = [("LOAD_MARKER_DIR", markers.to_str().expect("utf-8 path"))];
    let gw = TestGateway::spawn_with_env(dir.path(), &config(&lib, ""), &env);
    let kids = children(gw.pid());
    assert_eq!(kids.len(), 1, "one plugin process: {kids:?}");
    let loaded = loaders(&markers);
    assert!(
        !loaded.contains(&gw.pid()),
        "the library's constructor ran in the gateway (pid {}): {loaded:?}\n{}",
        gw.pid(),
        gw.log()
    );
    assert_eq!(loaded, kids, "loaded by its child only");
    gw.send_plain(TOKEN, "ev-1", "t.any");
    assert!(
        wait_until(WAIT, || gw.delivery("ev-1", "native")["state"] == "done"),
        "{}\n{}",
        gw.delivery("ev-1", "native"),
        gw.log()
    );
    // The descriptor the child reported is what the gateway shows.
    let plugins = get(&gw.admin_url("/api/v1/plugins")).expect("api");
    let v: serde_json::Value = serde_json::from_str(&plugins.body).expect("json");
    let d = &v["plugins"][0]["descriptor"];
    assert_eq!(d["name"], "load_marker", "{v}");
    assert_eq!(d["version"], "0.0.1", "{v}");
    assert_eq!(d["abi_minor"], 0, "{v}");
    assert_eq!(d["batch_entry"], false, "{v}");
    assert_eq!(d["build_tag"], "raw fixture; load marker", "{v}");
    assert!(!loaders(&markers).contains(&gw.pid()));

    // `gateway check` validates the descriptor through a child as well, and `plugins inspect`
    // reads it the same way: neither loads the library in its own process.
    let config = dir.path().join("gateway.toml");
    let (check_pid, out) = cli(&config, &["check"], &markers);
    assert!(out.contains("load_marker 0.0.1") && out.contains("[raw fixture; load marker]"));
    let (inspect_pid, out) = cli(
        &config,
        &["plugins", "inspect", &lib.display().to_string()],
        &markers,
    );
    assert!(out.contains("name      load_marker"), "{out}");
    assert!(
        out.contains(&format!("sha256    {}", sha256(&lib))),
        "{out}"
    );
    let loaded = loaders(&markers);
    for (who, pid) in [
        ("gateway", gw.pid()),
        ("check", check_pid),
        ("inspect", inspect_pid),
    ] {
        assert!(
            !loaded.contains(&pid),
            "{who} (pid {pid}) loaded the library itself: {loaded:?}"
        );
    }
    assert!(loaded.len() >= 3, "their children loaded it: {loaded:?}");
}

/// Runs `gateway --config CONFIG ARGS` with `$LOAD_MARKER_DIR` set; asserts it succeeded and
/// returns its pid and stdout.
fn cli(config: &Path, args: &[&str], markers: &Path) -> (u32, String) {
    let child = Command::new(&binaries().gateway)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("GATEWAY_CONFIG")
        .env("RUST_LOG", "warn")
        .env("LOAD_MARKER_DIR", markers)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the gateway cli");
    let pid = child.id();
    let out = child.wait_with_output().expect("its output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (pid, stdout)
}

/// A library whose load-time code crashes (a constructor that aborts), isolated: it ends only
/// the child that loads it. `check` reports it with the plugin's place in the config and the
/// file, and `run` refuses to start with the reason; neither dies of it.
#[test]
fn a_crashing_constructor_of_an_isolated_library_ends_only_its_child() {
    let lib = load_marker_fixture();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config(&lib, "")).expect("write");
    let env = [("LOAD_MARKER_ABORT", "1")];
    let (code, out, err) = gateway_e2e::harness::run_cli_with_env(&path, &["check"], &env);
    assert_eq!(
        code, 3,
        "check reports it, it does not die of it: {out}{err}"
    );
    assert!(
        err.contains(&format!(
            "plugins[0] (native): {}: the plugin process died while loading the library: \
             killed by signal 6 (SIGABRT)",
            lib.display()
        )),
        "{err}"
    );
    let (code, out, err) = gateway_e2e::harness::run_cli_with_env(&path, &["run"], &env);
    let log = format!("{out}{err}");
    assert_ne!(code, -1, "run ended by a signal: {log}");
    assert_ne!(code, 0, "{log}");
    assert!(
        log.contains("plugin `native` cannot be started: the plugin process for")
            && log.contains("died while starting: killed by signal 6 (SIGABRT)"),
        "{log}"
    );
}

/// `gateway check` still reports an isolated library the loader refuses, with the plugin's
/// place in the config and the file: the error comes back from the child that loaded it.
#[test]
fn check_reports_an_isolated_library_refused_by_its_child_with_its_config_location() {
    let raw = raw_fixtures(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    for (lib, says) in [
        (&raw.bad_major, "plugin ABI 2."),
        (&raw.wrong_symbol, "gateway_plugin_v1"),
        (&raw.null_name, "name"),
    ] {
        std::fs::write(&path, config(lib, "")).expect("write");
        let (code, out, err) = gateway_e2e::harness::run_cli(&path, &["check"]);
        assert_eq!(code, 3, "{lib:?}: {out}{err}");
        let line = "plugins[0] (native): ";
        let at = err
            .find(line)
            .unwrap_or_else(|| panic!("{lib:?}: no {line:?} in:\n{err}"));
        let problem = err[at..].lines().next().unwrap_or_default();
        assert!(
            problem.contains(&lib.display().to_string()) && problem.contains(says),
            "{problem}"
        );
    }
}

/// An unpinned isolated plugin whose file is replaced behind the gateway: the child that
/// restarts after a crash is given the hash the gateway examined and refuses the new file, so
/// nothing from it runs (the delivery is retried, then dead-lettered). A reload examines the
/// new file and restarts the instance on it.
#[test]
fn a_restarted_child_refuses_a_file_other_than_the_one_the_gateway_examined() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = dir.path().join("libkit.so");
    std::fs::copy(&binaries().testkit, &lib).expect("copy");
    let examined = sha256(&lib);
    let cfg = config(&lib, "config = { record = \"data/native.jsonl\" }");
    let gw = TestGateway::spawn(dir.path(), &cfg);
    gw.send_plain(TOKEN, "ev-1", "t.ok");
    assert!(wait_until(WAIT, || gw.calls("native").len() == 1));
    // A reload with the file unchanged keeps the instance and its process.
    let first = children(gw.pid());
    reload(&gw);
    assert_eq!(children(gw.pid()), first, "kept:\n{}", gw.log());
    // A new file renamed over the path (the running child keeps the old one mapped): another
    // build of the same plugin (bytes appended: the loader ignores them, the hash does not).
    let swap = dir.path().join("libkit.so.new");
    std::fs::copy(&binaries().testkit, &swap).expect("copy");
    let mut rebuilt = std::fs::OpenOptions::new()
        .append(true)
        .open(&swap)
        .expect("open for append");
    std::io::Write::write_all(&mut rebuilt, b"another build").expect("append");
    drop(rebuilt);
    std::fs::rename(&swap, &lib).expect("rename");
    let found = sha256(&lib);
    // The child dies; the next call needs a new one.
    let kids = children(gw.pid());
    assert_eq!(kids.len(), 1, "{kids:?}");
    let killed = Command::new("kill")
        .arg("-9")
        .arg(kids[0].to_string())
        .status()
        .expect("kill");
    assert!(killed.success());
    // Gone before the next event (its reader marks it dead before reaping it), so the next
    // attempts meet the refused restart, not the dying child.
    assert!(
        wait_until(WAIT, || !children(gw.pid()).contains(&kids[0])),
        "{}",
        gw.log()
    );
    gw.send_plain(TOKEN, "ev-2", "t.ok");
    assert!(
        wait_until(WAIT, || gw.delivery("ev-2", "native")["state"] == "dead"),
        "{}\n{}",
        gw.delivery("ev-2", "native"),
        gw.log()
    );
    let error = gw.delivery("ev-2", "native")["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains(&lib.display().to_string())
            && error.contains(&format!("expected {examined}, found {found}")),
        "{error}\n{}",
        gw.log()
    );
    assert!(
        gw.calls("native").iter().all(|c| c["event_id"] != "ev-2"),
        "{:?}",
        gw.calls("native")
    );
    // A reload examines the file at the path again and starts the instance on it.
    reload(&gw);
    gw.send_plain(TOKEN, "ev-3", "t.ok");
    assert!(
        wait_until(WAIT, || gw.delivery("ev-3", "native")["state"] == "done"),
        "{}\n{}",
        gw.delivery("ev-3", "native"),
        gw.log()
    );
}

/// Sends SIGHUP and waits for the reload to be logged.
fn reload(gw: &TestGateway) {
    let before = gw.log().matches("config reloaded").count();
    gw.signal("HUP");
    assert!(
        wait_until(WAIT, || gw.log().matches("config reloaded").count()
            > before),
        "{}",
        gw.log()
    );
}

/// A reload that leaves an isolated instance unchanged is not refused because its library
/// cannot be examined right now (removed mid-deploy): the running child keeps serving what it
/// loaded, with a warning. (It used to refuse the whole reload for a plugin nobody touched.)
#[test]
fn a_reload_keeps_an_unchanged_isolated_instance_whose_file_is_missing_for_now() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = dir.path().join("libkit.so");
    std::fs::copy(&binaries().testkit, &lib).expect("copy");
    let cfg = config(&lib, "config = { record = \"data/native.jsonl\" }");
    let gw = TestGateway::spawn(dir.path(), &cfg);
    gw.send_plain(TOKEN, "gone-1", "t.ok");
    assert!(wait_until(WAIT, || gw.calls("native").len() == 1));
    let first = children(gw.pid());
    std::fs::remove_file(&lib).expect("remove the library");
    reload(&gw);
    assert!(
        gw.log()
            .contains("cannot be examined: keeping the instance"),
        "{}",
        gw.log()
    );
    assert_eq!(children(gw.pid()), first, "the same child:\n{}", gw.log());
    gw.send_plain(TOKEN, "gone-2", "t.ok");
    assert!(
        wait_until(WAIT, || gw.calls("native").len() == 2),
        "{}",
        gw.log()
    );
}

/// A reload that starts a slow plugin (here a child whose `new` takes 3 s) does not hold up
/// the admin API meanwhile: the running config is locked only to be read or swapped, never
/// while the new plugins start. (The API's plugin list used to wait for the whole reload, an
/// async worker blocked with it.)
#[test]
fn the_admin_api_answers_while_a_reload_starts_a_slow_plugin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        &binaries().testkit,
        "config = { record = \"data/native.jsonl\" }",
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    let slow = config(
        &binaries().testkit,
        "config = { record = \"data/native.jsonl\", init_sleep_ms = 3000 }",
    );
    std::fs::write(dir.path().join("gateway.toml"), slow).expect("write");
    gw.signal("HUP");
    assert!(
        wait_until(WAIT, || gw.log().contains("reloading config")),
        "{}",
        gw.log()
    );
    std::thread::sleep(Duration::from_millis(300)); // well into the 3 s start
    let asked = std::time::Instant::now();
    let plugins = get(&gw.admin_url("/api/v1/plugins")).expect("api");
    let took = asked.elapsed();
    assert_eq!(plugins.status, 200, "{}", plugins.body);
    assert!(
        took < Duration::from_millis(1500),
        "the API waited {took:?}"
    );
    assert!(
        !gw.log().contains("config reloaded"),
        "the reload had already ended: the test proves nothing\n{}",
        gw.log()
    );
    assert!(
        wait_until(WAIT, || gw.log().contains("config reloaded")),
        "{}",
        gw.log()
    );
}
