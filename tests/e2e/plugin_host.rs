//! The plugin host loader (`gateway_plugin::host`) against real libraries: the `logger` plugin,
//! the config-driven `testkit` fixture plugin, and raw-ABI fixtures compiled from `raw-plugins/`
//! that describe themselves wrongly on purpose. Covers concurrency, every outcome, panics on both
//! sides of `init`, every loader error, and buffer ownership across the boundary.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gateway_e2e::{build_plugins, delivery, delivery_json, raw_fixtures, RawFixtures};
use gateway_plugin::abi::{ABI_MAJOR, ABI_MINOR, DESCRIPTOR_SIZE};
use gateway_plugin::host::{CallOutcome, InitError, Instance, Library, LoadError, LogSink};
use gateway_plugin::Level;
use serde_json::json;

fn raw() -> RawFixtures {
    raw_fixtures(Path::new(env!("CARGO_TARGET_TMPDIR")))
}

/// A log sink that drops everything.
fn quiet() -> LogSink {
    Arc::new(|_: &str, _: Level, _: &str| {})
}

/// Log lines kept by [`recording`]: `(instance, level, message)`.
type Kept = Arc<Mutex<Vec<(String, Level, String)>>>;

/// A log sink that keeps every line.
fn recording() -> (LogSink, Kept) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let keep = lines.clone();
    let sink: LogSink = Arc::new(move |instance: &str, level: Level, message: &str| {
        keep.lock()
            .expect("log lock")
            .push((instance.to_owned(), level, message.to_owned()));
    });
    (sink, lines)
}

fn open(path: &Path) -> Library {
    Library::open(path).unwrap_or_else(|e| panic!("{} should load: {e}", path.display()))
}

fn instantiate(lib: &Library, name: &str, config: serde_json::Value, dir: &Path) -> Instance {
    lib.instantiate(name, &config, dir, quiet())
        .unwrap_or_else(|e| panic!("instance {name} should start: {e}"))
}

fn call(instance: &Instance, n: u64, event_type: &str) -> CallOutcome {
    instance.handle(&delivery_json(&delivery(n, event_type, 16)))
}

fn read_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("line {l:?} is not JSON: {e}")))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The logger plugin
// ---------------------------------------------------------------------------------------------

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
                l["event_id"].as_str().expect("id"),
                l["outcome"].as_str().expect("outcome")
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        ["ev-1=ok", "ev-2=panic", "ev-3=ok", "ev-4=panic", "ev-5=ok"]
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

fn load_err(path: &Path) -> (LoadError, String) {
    let err = Library::open(path).expect_err("must be refused");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "message must name the file: {msg}"
    );
    (err, msg)
}

#[test]
fn wrong_abi_major_is_refused_with_both_values() {
    let path = raw().bad_major;
    let (err, msg) = load_err(&path);
    assert_eq!(
        err,
        LoadError::AbiMajor {
            path: path.clone(),
            found: 2
        }
    );
    assert!(
        msg.contains(&format!("ABI major 2, gateway expects {ABI_MAJOR}")),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("rebuild it against gateway-plugin {ABI_MAJOR}.x")),
        "{msg}"
    );
}

#[test]
fn too_small_descriptor_is_refused_with_both_sizes() {
    let path = raw().small_struct;
    let (err, msg) = load_err(&path);
    // abi_major, abi_minor, struct_size (u32 each), padding, build_tag (a pointer).
    let found = (3 * 4 + 4 + std::mem::size_of::<usize>()) as u32;
    assert!(found < DESCRIPTOR_SIZE);
    assert_eq!(
        err,
        LoadError::StructSize {
            path: path.clone(),
            found
        }
    );
    assert!(
        msg.contains(&format!(
            "descriptor is {found} bytes, gateway needs at least {DESCRIPTOR_SIZE}"
        )),
        "{msg}"
    );
}

#[test]
fn newer_abi_minor_is_refused_with_both_versions() {
    let path = raw().newer_minor;
    let (err, msg) = load_err(&path);
    assert_eq!(
        err,
        LoadError::AbiMinor {
            path: path.clone(),
            found: ABI_MINOR + 1
        }
    );
    assert!(
        msg.contains(&format!(
            "needs ABI {ABI_MAJOR}.{} but this gateway provides {ABI_MAJOR}.{ABI_MINOR}",
            ABI_MINOR + 1
        )),
        "{msg}"
    );
}

#[test]
fn missing_entry_symbol_is_refused() {
    let path = raw().wrong_symbol;
    let (err, msg) = load_err(&path);
    assert_eq!(err, LoadError::NoEntry { path: path.clone() });
    assert!(msg.contains("does not export `gateway_plugin_v1`"), "{msg}");
}

#[test]
fn plain_shared_library_is_refused() {
    let path = raw().not_a_plugin;
    let (err, msg) = load_err(&path);
    assert_eq!(err, LoadError::NoEntry { path: path.clone() });
    assert!(msg.contains("is not a gateway plugin"), "{msg}");
}

#[test]
fn null_descriptor_is_refused() {
    let path = raw().null_descriptor;
    let (err, _) = load_err(&path);
    assert_eq!(err, LoadError::NullDescriptor { path: path.clone() });
}

#[test]
fn null_or_non_utf8_descriptor_strings_are_refused() {
    let f = raw();
    let (err, _) = load_err(&f.null_name);
    assert_eq!(
        err,
        LoadError::BadString {
            path: f.null_name.clone(),
            field: "name"
        }
    );
    let (err, _) = load_err(&f.bad_utf8_version);
    assert_eq!(
        err,
        LoadError::BadString {
            path: f.bad_utf8_version.clone(),
            field: "version"
        }
    );
}

#[test]
fn text_file_named_so_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("libfake.so");
    std::fs::write(&path, "this is not a shared library\n").expect("write");
    let (err, msg) = load_err(&path);
    match err {
        LoadError::Open { path: p, reason } => {
            assert_eq!(p, path);
            assert!(!reason.is_empty());
        }
        other => panic!("expected Open, got {other:?}"),
    }
    assert!(msg.contains("cannot load plugin library"), "{msg}");
    // A folder is no library either.
    let (err, _) = load_err(dir.path());
    assert!(matches!(err, LoadError::Open { .. }), "{err:?}");
}

#[test]
fn missing_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("libnothere.so");
    let (err, msg) = load_err(&path);
    assert_eq!(err, LoadError::NotFound { path: path.clone() });
    assert!(msg.contains("does not exist"), "{msg}");
}

#[test]
fn the_process_survives_every_load_error_and_still_loads_plugins() {
    let f = raw();
    let dir = tempfile::tempdir().expect("tempdir");
    let text = dir.path().join("libtext.so");
    std::fs::write(&text, "not ELF").expect("write");
    let bad: [&Path; 10] = [
        &f.bad_major,
        &f.small_struct,
        &f.newer_minor,
        &f.wrong_symbol,
        &f.not_a_plugin,
        &f.null_descriptor,
        &f.null_name,
        &f.bad_utf8_version,
        &text,
        &dir.path().join("missing.so"),
    ];
    // Twice: a refused library may be opened again and is refused the same way.
    for _ in 0..2 {
        for path in bad {
            assert!(Library::open(path).is_err(), "{}", path.display());
        }
    }
    let lib = open(&build_plugins().testkit);
    let kit = instantiate(&lib, "kit", json!({}), dir.path());
    assert_eq!(call(&kit, 1, "t"), CallOutcome::Ok);
}

/// A library path given as a bare file name (`library = "libx.so"` in a config in the current
/// folder) names that file, as it does for `exists()`: it must not send `dlopen` searching the
/// system library path. Runs in a child process, whose current folder is a temp dir.
#[test]
fn bare_file_name_is_opened_from_the_current_folder() {
    const CHILD: &str = "GATEWAY_E2E_BARE_NAME_CHILD";
    if let Some(name) = std::env::var_os(CHILD) {
        let lib = open(Path::new(&name));
        assert_eq!(lib.name(), "testkit");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let name = "libbare_testkit.so";
    std::fs::copy(build_plugins().testkit, dir.path().join(name)).expect("copy");
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "bare_file_name_is_opened_from_the_current_folder",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD, name)
        .current_dir(dir.path())
        .output()
        .expect("run child");
    assert!(
        out.status.success(),
        "child failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
}

// ---------------------------------------------------------------------------------------------
// Buffer ownership: every returned buffer is freed once, by the plugin's own free_buf
// ---------------------------------------------------------------------------------------------

/// Reads the raw fixture's counters through its exported functions.
mod counters {
    #![allow(unsafe_code)] // reason: reading counters exported by a C-ABI test library.

    use std::path::Path;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct Counts {
        pub allocated: u64,
        pub freed: u64,
        pub bad_frees: u64,
        pub inits: u64,
        pub shutdowns: u64,
        pub handles: u64,
    }

    pub fn read(path: &Path) -> Counts {
        // SAFETY: the raw fixture has no initialisers; it is already loaded by the host (same
        // file), so this only takes another reference to it.
        let lib = unsafe { libloading::Library::new(path) }.expect("open raw fixture");
        let get = |name: &[u8]| -> u64 {
            // SAFETY: the raw fixture exports these names as `extern "C" fn() -> u64`.
            unsafe {
                let f = lib
                    .get::<extern "C" fn() -> u64>(name)
                    .expect("counter symbol");
                f()
            }
        };
        Counts {
            allocated: get(b"raw_allocated_count\0"),
            freed: get(b"raw_freed_count\0"),
            bad_frees: get(b"raw_bad_free_count\0"),
            inits: get(b"raw_init_count\0"),
            shutdowns: get(b"raw_shutdown_count\0"),
            handles: get(b"raw_handle_count\0"),
        }
    }
}

#[test]
fn host_frees_every_returned_buffer_exactly_once_with_the_plugins_free_buf() {
    let path = raw().counting;
    let lib = open(&path);
    assert_eq!((lib.name(), lib.version()), ("raw", "9.9.9"));
    assert_eq!(counters::read(&path), counters::Counts::default());
    let dir = tempfile::tempdir().expect("tempdir");

    // A refused init returns one message buffer.
    let err = lib
        .instantiate("raw", &json!({"refuse": true}), dir.path(), quiet())
        .expect_err("refused");
    assert_eq!(
        err,
        InitError::Refused {
            instance: "raw".into(),
            message: "raw plugin refuses this config".into()
        }
    );
    let mut buffers = 1;

    let inst = instantiate(&lib, "raw", json!({}), dir.path());
    let cases: [(&str, CallOutcome, bool); 8] = [
        ("ok", CallOutcome::Ok, false),
        ("ok_with_detail", CallOutcome::Ok, true),
        (
            "retry",
            CallOutcome::Retry {
                reason: "raw busy".into(),
                retry_after: Some(Duration::from_millis(1500)),
            },
            true,
        ),
        (
            "reject",
            CallOutcome::Reject {
                reason: "raw says no".into(),
            },
            true,
        ),
        (
            "panicked",
            CallOutcome::Panicked {
                message: "raw pretends to panic".into(),
            },
            true,
        ),
        (
            "not_json",
            CallOutcome::Reject {
                reason: "plain text detail".into(),
            },
            true,
        ),
        (
            "unknown_code",
            CallOutcome::Reject {
                reason: "plugin returned unknown outcome code 7: from the future".into(),
            },
            true,
        ),
        ("other", CallOutcome::Ok, false),
    ];
    for (i, (event_type, expected, has_buffer)) in cases.iter().enumerate() {
        assert_eq!(&call(&inst, i as u64, event_type), expected, "{event_type}");
        buffers += u64::from(*has_buffer);
    }
    let mut handles = cases.len() as u64;

    // Concurrent calls on clones of one instance.
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 200;
    let cases = &cases;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let inst = inst.clone();
            s.spawn(move || {
                for k in 0..PER_THREAD {
                    let (event_type, _, _) = &cases[((t + k) % cases.len() as u64) as usize];
                    call(&inst, t * 1000 + k, event_type);
                }
            });
        }
    });
    handles += THREADS * PER_THREAD;
    for t in 0..THREADS {
        for k in 0..PER_THREAD {
            buffers += u64::from(cases[((t + k) % cases.len() as u64) as usize].2);
        }
    }

    let c = counters::read(&path);
    assert_eq!(c.handles, handles);
    assert_eq!(
        c.allocated, buffers,
        "every non-empty buffer the plugin returned"
    );
    assert_eq!(c.freed, buffers, "each freed by the plugin's free_buf");
    assert_eq!(c.bad_frees, 0, "no double or foreign free");
    assert_eq!(
        (c.inits, c.shutdowns),
        (1, 0),
        "instance alive while referenced"
    );

    // shutdown runs exactly once, when the last clone drops.
    let other = inst.clone();
    drop(inst);
    assert_eq!(counters::read(&path).shutdowns, 0);
    drop(other);
    let c = counters::read(&path);
    assert_eq!((c.inits, c.shutdowns), (1, 1));
    assert_eq!((c.allocated, c.freed, c.bad_frees), (buffers, buffers, 0));
}

/// `build_plugins` reports the libraries cargo really built, wherever the target dir is.
#[test]
fn plugin_paths_are_absolute_existing_files() {
    let p = build_plugins();
    for path in [&p.logger, &p.testkit] {
        assert!(path.is_file() && path.is_absolute(), "{}", path.display());
    }
}
