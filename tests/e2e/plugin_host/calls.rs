//! Calling an instance across the boundary: every returned buffer freed once, by the plugin's
//! own `free_buf` (also under concurrent calls), a `retry_after_ms` of the wrong type ignored
//! with one warning per instance, and batches (an ABI 1.0 plugin's through `handle`, an SDK
//! plugin's with one outcome per delivery, a failed batch's reason). Part of `plugin_host.rs`.

use std::time::Duration;

use gateway_e2e::build_plugins;
use gateway_e2e::hostkit::{call, instantiate, open, quiet};
use gateway_plugin::host::{CallOutcome, InitError};
use serde_json::json;

use super::helpers::raw;

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

/// A raw plugin's batch entry: one outcome per delivery when it succeeds; when the batch fails,
/// the error is the first slot's message, or else names the code (never an empty message).
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
    // Any code but OK fails the batch, and the first slot's message is read whatever its code
    // (it was lost unless that code stayed RETRY).
    assert_eq!(
        batch(&["batch_fails_as_reject", "ok"]),
        Err("raw batch refused".into())
    );
}

/// Regression: a C plugin is told to keep the host table it gets in `init` (`docs/plugins.md`),
/// and may log through it from a thread of its own after `shutdown`; the host freed the table
/// (and its strings) with the instance, so such a line read freed memory and called through
/// whatever was there. The table now lives as long as the process, as the context behind it
/// does; the line is dropped.
#[test]
fn a_host_table_kept_past_shutdown_stays_readable_and_its_late_lines_are_dropped() {
    // A copy of its own (its statics apart from the counting tests'), loaded once.
    let path = gateway_e2e::compile_raw_plugin(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")),
        "raw_plugin.rs",
        "raw_kept_host",
        None,
    )
    .expect("compile the raw fixture");
    let lib = open(&path);
    let dir = tempfile::tempdir().expect("tempdir");
    let (sink, lines) = gateway_e2e::hostkit::recording();
    let inst = lib
        .instantiate("raw", &json!({}), dir.path(), sink)
        .expect("instance");
    drop(inst);
    // Memory of the table's size, reused and scribbled over.
    let scribbles: Vec<Vec<u8>> = (0..10_000).map(|_| vec![0xaa; 64]).collect();
    let size = kept::log_through_kept_host(&path);
    drop(scribbles);
    assert_eq!(size, gateway_plugin::abi::HOST_API_SIZE);
    assert!(
        lines.lock().expect("lines").is_empty(),
        "a line logged after shutdown reached the sink"
    );
}

/// Calls the raw fixture's `raw_log_through_kept_host`.
mod kept {
    #![allow(unsafe_code)] // reason: calling a function exported by a C-ABI test library.

    pub fn log_through_kept_host(path: &std::path::Path) -> u32 {
        // SAFETY: the raw fixture is already loaded by the host (same file): another reference.
        let lib = unsafe { libloading::Library::new(path) }.expect("open raw fixture");
        // SAFETY: the raw fixture exports this name as `extern "C" fn() -> u32`.
        unsafe {
            let f = lib
                .get::<extern "C" fn() -> u32>(b"raw_log_through_kept_host\0")
                .expect("symbol");
            f()
        }
    }
}
