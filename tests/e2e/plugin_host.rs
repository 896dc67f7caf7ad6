//! The plugin host loader (`gateway_plugin::host`) against raw-ABI fixtures compiled from
//! `raw-plugins/` that describe themselves wrongly on purpose: every loader error with its message,
//! the process surviving them, and buffer ownership across the boundary.

use std::path::Path;
use std::time::Duration;

use gateway_e2e::build_plugins;
use gateway_e2e::hostkit::{call, instantiate, open, quiet};
use gateway_e2e::{raw_fixtures, RawFixtures};
use gateway_plugin::abi::{ABI_MAJOR, ABI_MINOR, DESCRIPTOR_SIZE_1_0};
use gateway_plugin::host::{CallOutcome, InitError, Library, LoadError};
use serde_json::json;

fn raw() -> RawFixtures {
    raw_fixtures(Path::new(env!("CARGO_TARGET_TMPDIR")))
}

fn load_err(path: &Path) -> (LoadError, String) {
    let err = Library::open(path).expect_err("must be refused");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "message must name the file: {msg}"
    );
    (err, msg)
}

/// "rebuild it against gateway-plugin 1.x" named a crate version that does not exist (the SDK
/// is 0.1.0; 1 is the ABI's major): the message speaks of ABI versions only.
#[test]
fn wrong_abi_major_is_refused_with_both_values() {
    let path = raw().bad_major;
    let (err, msg) = load_err(&path);
    assert_eq!(
        err,
        LoadError::AbiMajor {
            path: path.clone(),
            found: 2,
            minor: 0,
            // The fixture's descriptor stops before `build_tag`.
            build_tag: None,
        }
    );
    assert!(
        msg.contains(&format!(
            "the plugin was built for plugin ABI 2.0; this gateway speaks ABI {ABI_MAJOR}.x \
             ({ABI_MAJOR}.0–{ABI_MAJOR}.{ABI_MINOR})"
        )),
        "{msg}"
    );
    assert!(!msg.contains("gateway-plugin 1.x"), "{msg}");
    assert!(!msg.contains("build tag"), "no tag to show: {msg}");
}

#[test]
fn too_small_descriptor_is_refused_with_both_sizes_and_its_build_tag() {
    let path = raw().small_struct;
    let (err, msg) = load_err(&path);
    // abi_major, abi_minor, struct_size (u32 each), padding, build_tag (a pointer).
    let found = (3 * 4 + 4 + std::mem::size_of::<usize>()) as u32;
    assert!(found < DESCRIPTOR_SIZE_1_0);
    assert_eq!(
        err,
        LoadError::StructSize {
            path: path.clone(),
            found,
            needed: DESCRIPTOR_SIZE_1_0,
            build_tag: Some("raw fixture; small".into()),
        }
    );
    assert!(
        msg.contains(&format!(
            "descriptor is {found} bytes, its ABI version needs at least {DESCRIPTOR_SIZE_1_0}"
        )),
        "{msg}"
    );
    assert!(msg.contains("(build tag: raw fixture; small)"), "{msg}");
}

#[test]
fn newer_abi_minor_is_refused_with_both_versions_and_its_build_tag() {
    let path = raw().newer_minor;
    let (err, msg) = load_err(&path);
    assert_eq!(
        err,
        LoadError::AbiMinor {
            path: path.clone(),
            found: ABI_MINOR + 1,
            build_tag: Some("raw fixture; no SDK".into()),
        }
    );
    assert!(
        msg.contains(&format!(
            "was built for plugin ABI {ABI_MAJOR}.{}; this gateway speaks ABI {ABI_MAJOR}.x \
             ({ABI_MAJOR}.0–{ABI_MAJOR}.{ABI_MINOR})",
            ABI_MINOR + 1
        )),
        "{msg}"
    );
    assert!(msg.contains("(build tag: raw fixture; no SDK)"), "{msg}");
    assert!(!msg.contains("gateway-plugin 1.x"), "{msg}");
}

/// The hint used to say only "build it with gateway_plugin::export_plugin!": authors in C (or
/// any language) get the symbol's C declaration, the header and the C example.
#[test]
fn missing_entry_symbol_is_refused_with_a_hint_for_every_language() {
    let path = raw().wrong_symbol;
    let (err, msg) = load_err(&path);
    assert_eq!(err, LoadError::NoEntry { path: path.clone() });
    assert!(
        msg.contains("does not export the function `gateway_plugin_v1`"),
        "{msg}"
    );
    assert!(
        msg.contains("const GwPluginDescriptor *gateway_plugin_v1(void)"),
        "{msg}"
    );
    assert!(
        msg.contains("crates/plugin/include/gateway_plugin.h"),
        "{msg}"
    );
    assert!(msg.contains("examples/c-plugin/"), "{msg}");
    assert!(msg.contains("export_plugin!"), "{msg}");
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

/// A `retry_after_ms` of the wrong type (`"5000"`, `-5`, `1.5`) used to make the whole detail
/// the reason and drop the delay silently: now the reason is kept, the delay ignored, and the
/// instance's log gets one warning (once per instance, not once per call).
#[test]
fn a_retry_after_of_the_wrong_type_is_ignored_with_one_warning_per_instance() {
    use gateway_e2e::hostkit::recording;
    use gateway_plugin::Level;
    let lib = open(&raw().legacy);
    let dir = tempfile::tempdir().expect("tempdir");
    let (sink, lines) = recording();
    let inst = lib
        .instantiate("strict", &json!({}), dir.path(), sink)
        .expect("instance");
    for event_type in [
        "retry_after_string",
        "retry_after_negative",
        "retry_after_fraction",
        "retry_after_string",
    ] {
        assert_eq!(
            call(&inst, 1, event_type),
            CallOutcome::Retry {
                reason: "raw busy".into(),
                retry_after: None
            },
            "{event_type}"
        );
    }
    // A well-formed delay still counts.
    assert_eq!(
        call(&inst, 2, "retry"),
        CallOutcome::Retry {
            reason: "raw busy".into(),
            retry_after: Some(Duration::from_millis(1500))
        }
    );
    let kept = lines.lock().expect("log lines").clone();
    let warnings: Vec<&(String, Level, String)> = kept
        .iter()
        .filter(|(_, _, m)| m.contains("retry_after_ms"))
        .collect();
    assert_eq!(warnings.len(), 1, "once per instance: {kept:?}");
    let (instance, level, message) = warnings[0];
    assert_eq!((instance.as_str(), *level), ("strict", Level::Warn));
    assert!(message.contains(r#"the string "5000""#), "{message}");
    assert!(message.contains("ignored"), "{message}");

    // Another instance warns again, for its first wrong value.
    let (sink, lines) = recording();
    let other = lib
        .instantiate("strict-2", &json!({}), dir.path(), sink)
        .expect("instance");
    call(&other, 3, "retry_after_negative");
    let kept = lines.lock().expect("log lines").clone();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].2.contains("the negative number -5"), "{kept:?}");
}

/// `build_plugins` reports the libraries cargo really built, wherever the target dir is.
#[test]
fn plugin_paths_are_absolute_existing_files() {
    let p = build_plugins();
    for path in [&p.logger, &p.testkit] {
        assert!(path.is_file() && path.is_absolute(), "{}", path.display());
    }
}

#[test]
fn a_plugin_built_for_abi_1_0_keeps_working_and_batches_go_through_handle() {
    // The raw fixture restates the 1.0 descriptor (no batch entry, 1.0 size).
    let lib = open(&raw().legacy);
    let dir = tempfile::tempdir().expect("tempdir");
    let inst = instantiate(&lib, "raw", json!({}), dir.path());
    assert!(!inst.has_batch());
    let inputs: Vec<Vec<u8>> = ["ok", "reject", "ok"]
        .iter()
        .enumerate()
        .map(|(n, t)| gateway_e2e::delivery_json(&gateway_e2e::delivery(n as u64, t, 0)))
        .collect();
    let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    let outcomes = inst
        .handle_batch(&refs)
        .expect("no batch panic without a batch entry");
    assert_eq!(outcomes.len(), 3);
    assert_eq!(outcomes[0], CallOutcome::Ok);
    assert!(
        matches!(outcomes[1], CallOutcome::Reject { .. }),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[2], CallOutcome::Ok);
}

#[test]
fn an_sdk_plugin_handles_a_batch_with_one_outcome_per_delivery_and_a_batch_panic_is_reported() {
    let lib = open(&build_plugins().testkit);
    let dir = tempfile::tempdir().expect("tempdir");
    let inst = instantiate(
        &lib,
        "kit",
        json!({"modes": {"t.bad": "reject", "t.retry": "retry_always"}}),
        dir.path(),
    );
    assert!(inst.has_batch());
    let inputs: Vec<Vec<u8>> = ["t.ok", "t.bad", "t.retry", "t.ok"]
        .iter()
        .enumerate()
        .map(|(n, t)| gateway_e2e::delivery_json(&gateway_e2e::delivery(n as u64, t, 0)))
        .collect();
    let mut refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    refs.push(b"{not a delivery");
    let outcomes = inst.handle_batch(&refs).expect("outcomes");
    assert_eq!(outcomes.len(), 5);
    assert_eq!(outcomes[0], CallOutcome::Ok);
    assert!(matches!(&outcomes[1], CallOutcome::Reject { reason } if reason.contains("reject")));
    assert!(matches!(outcomes[2], CallOutcome::Retry { .. }));
    assert_eq!(outcomes[3], CallOutcome::Ok);
    assert!(
        matches!(&outcomes[4], CallOutcome::Reject { reason } if reason.contains("malformed delivery"))
    );

    let poison = instantiate(
        &lib,
        "kit",
        json!({"modes": {"t.poison": "panic_handle"}}),
        dir.path(),
    );
    let inputs: Vec<Vec<u8>> = ["t.ok", "t.poison"]
        .iter()
        .enumerate()
        .map(|(n, t)| gateway_e2e::delivery_json(&gateway_e2e::delivery(n as u64, t, 0)))
        .collect();
    let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    let err = poison.handle_batch(&refs).expect_err("the batch panicked");
    assert!(err.contains("testkit: panic in handle"), "{err}");
}

/// `crates/plugin/include/gateway_plugin.h` and `abi.rs` describe the same ABI: every size,
/// offset and constant the C compiler sees in the header equals Rust's.
#[test]
fn the_c_header_matches_the_rust_abi() {
    use gateway_plugin::abi::{self, GwBuf, GwStr, HostApi, PluginDescriptor};
    use std::mem::{offset_of, size_of};
    let root = gateway_e2e::workspace_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = dir.path().join("header_layout");
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let out = std::process::Command::new(&cc)
        .args(["-Wall", "-Werror", "-I"])
        .arg(root.join("crates/plugin/include"))
        .arg("-o")
        .arg(&exe)
        .arg(root.join("tests/raw-plugins/header_layout.c"))
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = std::process::Command::new(&exe).output().expect("run");
    let c: std::collections::HashMap<String, u64> = String::from_utf8_lossy(&printed.stdout)
        .lines()
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect();
    // (the name the C program prints, Rust's value)
    macro_rules! size {
        ($c:literal, $t:ty) => {
            (concat!("sizeof ", $c), size_of::<$t>() as u64)
        };
    }
    macro_rules! off {
        ($c:literal, $t:ty, $f:ident) => {
            (
                concat!("offsetof ", $c, ".", stringify!($f)),
                offset_of!($t, $f) as u64,
            )
        };
    }
    macro_rules! constant {
        ($c:literal, $v:expr) => {
            (concat!("const ", $c), u64::from($v))
        };
    }
    let rust: Vec<(&str, u64)> = vec![
        size!("GwStr", GwStr),
        off!("GwStr", GwStr, ptr),
        off!("GwStr", GwStr, len),
        size!("GwBuf", GwBuf),
        off!("GwBuf", GwBuf, ptr),
        off!("GwBuf", GwBuf, len),
        off!("GwBuf", GwBuf, cap),
        size!("GwHostApi", HostApi),
        off!("GwHostApi", HostApi, api_major),
        off!("GwHostApi", HostApi, api_minor),
        off!("GwHostApi", HostApi, struct_size),
        off!("GwHostApi", HostApi, ctx),
        off!("GwHostApi", HostApi, log),
        off!("GwHostApi", HostApi, config_dir),
        off!("GwHostApi", HostApi, instance_name),
        size!("GwPluginDescriptor", PluginDescriptor),
        off!("GwPluginDescriptor", PluginDescriptor, abi_major),
        off!("GwPluginDescriptor", PluginDescriptor, abi_minor),
        off!("GwPluginDescriptor", PluginDescriptor, struct_size),
        off!("GwPluginDescriptor", PluginDescriptor, build_tag),
        off!("GwPluginDescriptor", PluginDescriptor, name),
        off!("GwPluginDescriptor", PluginDescriptor, version),
        off!("GwPluginDescriptor", PluginDescriptor, init),
        off!("GwPluginDescriptor", PluginDescriptor, handle),
        off!("GwPluginDescriptor", PluginDescriptor, free_buf),
        off!("GwPluginDescriptor", PluginDescriptor, shutdown),
        off!("GwPluginDescriptor", PluginDescriptor, handle_batch),
        constant!("GW_ABI_MAJOR", abi::ABI_MAJOR),
        constant!("GW_ABI_MINOR", abi::ABI_MINOR),
        constant!("GW_DESCRIPTOR_SIZE_1_0", abi::DESCRIPTOR_SIZE_1_0),
        constant!("GW_INIT_OK", abi::INIT_OK),
        constant!("GW_INIT_ERROR", abi::INIT_ERROR),
        constant!("GW_INIT_PANICKED", abi::INIT_PANICKED),
        constant!("GW_OUTCOME_OK", abi::OUTCOME_OK),
        constant!("GW_OUTCOME_RETRY", abi::OUTCOME_RETRY),
        constant!("GW_OUTCOME_REJECT", abi::OUTCOME_REJECT),
        constant!("GW_OUTCOME_PANICKED", abi::OUTCOME_PANICKED),
        constant!("GW_LOG_ERROR", abi::LOG_ERROR),
        constant!("GW_LOG_WARN", abi::LOG_WARN),
        constant!("GW_LOG_INFO", abi::LOG_INFO),
        constant!("GW_LOG_DEBUG", abi::LOG_DEBUG),
        constant!("GW_LOG_TRACE", abi::LOG_TRACE),
    ];
    for (name, value) in &rust {
        assert_eq!(c.get(*name), Some(value), "{name}: header vs abi.rs");
    }
    assert_eq!(
        c.len(),
        rust.len(),
        "the header program prints what the test checks: {c:?}"
    );
}

#[test]
fn plugins_inspect_shows_a_descriptor_without_a_config_or_a_call() {
    use gateway_e2e::harness::run_cli;
    let nowhere = Path::new("/nonexistent/gateway.toml");
    let kit = build_plugins().testkit;
    let (code, out, err) = run_cli(nowhere, &["plugins", "inspect", &kit.display().to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("name      testkit"), "{out}");
    assert!(out.contains("abi       1.1"), "{out}");
    assert!(out.contains("batch     yes"), "{out}");
    assert!(out.contains("panics contained"), "{out}");
    let legacy = raw().legacy;
    let (code, out, _) = run_cli(
        nowhere,
        &["plugins", "inspect", &legacy.display().to_string()],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("abi       1.0") && out.contains("batch     no"),
        "{out}"
    );
    assert!(out.contains("not contained"), "{out}");
    let (code, _, err) = run_cli(
        nowhere,
        &[
            "plugins",
            "inspect",
            &raw().not_a_plugin.display().to_string(),
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("is not a gateway plugin"), "{err}");
}

/// What the loader read from a descriptor, through the accessors and `Debug` (which the gateway
/// logs and `plugins inspect` print): an SDK plugin of the current ABI and a raw 1.0 one.
#[test]
fn libraries_and_instances_report_their_descriptor_and_name() {
    use gateway_plugin::abi::DESCRIPTOR_SIZE;
    let kit_path = build_plugins().testkit;
    let kit = open(&kit_path);
    assert_eq!(
        (kit.abi_minor(), kit.struct_size(), kit.has_batch_entry()),
        (ABI_MINOR, DESCRIPTOR_SIZE, true)
    );
    let shown = format!("{kit:?}");
    for part in [
        format!("{:?}", kit_path),
        r#"name: "testkit""#.to_owned(),
        format!("version: {:?}", kit.version()),
        format!("build_tag: {:?}", kit.build_tag()),
    ] {
        assert!(shown.contains(&part), "{part} in {shown}");
    }

    let legacy = open(&raw().legacy);
    assert_eq!(
        (
            legacy.abi_minor(),
            legacy.struct_size(),
            legacy.has_batch_entry()
        ),
        (0, DESCRIPTOR_SIZE_1_0, false)
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let inst = instantiate(&kit, "kit-7", json!({}), dir.path());
    assert_eq!(inst.name(), "kit-7");
    assert_eq!(inst.library().name(), "testkit");
    let shown = format!("{inst:?}");
    assert!(
        shown.contains(r#"name: "kit-7""#) && shown.contains(r#"name: "testkit""#),
        "{shown}"
    );
}

/// A descriptor that claims ABI 1.1 must be as long as the 1.1 layout: a 1.0-sized one would
/// make the host read `handle_batch` past its end.
#[test]
fn a_1_1_descriptor_of_the_1_0_size_is_refused() {
    use gateway_plugin::abi::DESCRIPTOR_SIZE;
    let path = raw().short_1_1;
    let (err, msg) = load_err(&path);
    assert_eq!(
        err,
        LoadError::StructSize {
            path: path.clone(),
            found: DESCRIPTOR_SIZE_1_0,
            needed: DESCRIPTOR_SIZE,
            build_tag: Some("raw fixture; no SDK".into()),
        }
    );
    assert!(
        msg.contains(&format!(
            "descriptor is {DESCRIPTOR_SIZE_1_0} bytes, its ABI version needs at least \
             {DESCRIPTOR_SIZE}"
        )),
        "{msg}"
    );
}

/// `init` returning success without writing an instance is a refusal, not an instance wrapping a
/// null pointer (every later call would hand the plugin null).
#[test]
fn init_success_without_an_instance_is_refused() {
    let lib = open(&raw().legacy);
    let dir = tempfile::tempdir().expect("tempdir");
    let err = lib
        .instantiate(
            "hollow",
            &json!({"null_instance": true}),
            dir.path(),
            quiet(),
        )
        .expect_err("no instance");
    assert_eq!(
        err,
        InitError::Refused {
            instance: "hollow".into(),
            message: "init returned success but no instance".into()
        }
    );
}

/// A raw plugin's batch entry: one outcome per delivery when it succeeds; when the batch fails,
/// the error is the first slot's Retry reason, or else names the code (never an empty message).
#[test]
fn a_failed_batch_reports_its_first_reason_or_its_code() {
    let lib = open(&raw().batch);
    assert!(lib.has_batch_entry());
    let dir = tempfile::tempdir().expect("tempdir");
    let inst = instantiate(&lib, "raw", json!({}), dir.path());
    assert!(inst.has_batch());
    let batch = |types: &[&str]| {
        let inputs: Vec<Vec<u8>> = types
            .iter()
            .enumerate()
            .map(|(n, t)| gateway_e2e::delivery_json(&gateway_e2e::delivery(n as u64, t, 0)))
            .collect();
        let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
        inst.handle_batch(&refs)
    };
    assert_eq!(
        batch(&["ok", "reject"]),
        Ok(vec![
            CallOutcome::Ok,
            CallOutcome::Reject {
                reason: "raw says no".into()
            }
        ])
    );
    assert_eq!(batch(&[]), Ok(vec![]));
    assert_eq!(
        batch(&["batch_fails_silently", "ok"]),
        Err("handle_batch returned code 3".into())
    );
    assert_eq!(
        batch(&["batch_fails_with_reason", "ok"]),
        Err("raw batch broke".into())
    );
}

/// `raw-plugins/null_entries.rs` compiled once per process for each of its variants, into
/// `<CARGO_TARGET_TMPDIR>/raw-plugins/` (named after a hash of the source and the variant, so a
/// library another process may have loaded is never overwritten): `(field, library)`.
fn null_entry_fixtures() -> Vec<(&'static str, std::path::PathBuf)> {
    use std::sync::OnceLock;
    static BUILT: OnceLock<Result<Vec<(&'static str, std::path::PathBuf)>, String>> =
        OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR"));
        ["init", "handle", "free_buf", "shutdown"]
            .into_iter()
            .map(|field| {
                let cfg = format!("null_{field}");
                gateway_e2e::compile_raw_plugin(out, "null_entries.rs", &cfg, Some(&cfg))
                    .map(|lib| (field, lib))
            })
            .collect()
    });
    match built {
        Ok(libs) => libs.clone(),
        Err(e) => panic!("compiling raw-plugins/null_entries.rs failed: {e}"),
    }
}

/// A descriptor whose `init`, `handle`, `free_buf` or `shutdown` is null was read into a
/// non-nullable function pointer (undefined behaviour) and crashed the process when called (at
/// the latest at `shutdown`). It is refused at load, with the file and the field named, by the
/// loader, by `plugins inspect` and by `check`, and nothing crashes.
#[test]
fn a_descriptor_with_a_null_entry_point_is_refused_at_load() {
    use gateway_e2e::harness::{base_config, run_cli};
    let nowhere = Path::new("/nonexistent/gateway.toml");
    for (field, lib) in null_entry_fixtures() {
        let (err, msg) = load_err(&lib);
        assert_eq!(
            err,
            LoadError::NullEntry {
                path: lib.clone(),
                field
            },
            "{msg}"
        );
        assert!(msg.contains(&format!("`{field}` is null")), "{msg}");
        let shown = lib.display().to_string();
        let (code, out, err) = run_cli(nowhere, &["plugins", "inspect", &shown]);
        assert_eq!(code, 1, "{field}: refused, not crashed: {out}{err}");
        assert!(
            err.contains(&shown) && err.contains(&format!("`{field}` is null")),
            "{field}: {err}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "{}\n[[apps]]\nname = \"hire\"\npath = \"/hook\"\n\n[[plugins]]\nname = \"bad\"\nlibrary = \"{shown}\"\n",
                base_config()
            ),
        )
        .expect("write gateway.toml");
        let (code, out, err) = run_cli(&config, &["check"]);
        assert_eq!(code, 3, "{field}: refused, not crashed: {out}{err}");
        assert!(
            err.contains(&shown) && err.contains(&format!("`{field}` is null")),
            "{field}: {out}{err}"
        );
    }
}
