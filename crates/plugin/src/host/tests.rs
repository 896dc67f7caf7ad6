//! The loader against descriptors built in this test binary (no `dlopen`): the host table a
//! plugin keeps past its instance's `shutdown` (an SDK `Host` in a static or a thread, a raw
//! plugin that stashed `ctx` and `log`) stays safe to call, and logs nothing any more.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::*;
use crate::{Delivery, Host, Outcome, Plugin};

/// A sink that keeps every line it gets.
fn recording() -> (LogSink, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let kept = lines.clone();
    let sink: LogSink = Arc::new(move |_: &str, _: Level, message: &str| {
        if let Ok(mut l) = kept.lock() {
            l.push(message.to_owned());
        }
    });
    (sink, lines)
}

/// Allocates and frees blocks of the sizes the host's tables have, so memory freed at
/// `shutdown` would be reused and overwritten before the late log calls.
fn churn_the_allocator() {
    let blocks: Vec<Vec<u8>> = (0..4096).map(|i| vec![0xA5; 16 + i % 200]).collect();
    drop(blocks);
}

fn lines(kept: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    kept.lock().map(|l| l.clone()).unwrap_or_default()
}

/// The SDK plugin: keeps its `Host` in a static and hands a clone to a thread that logs
/// after the instance was shut down.
static KEPT: Mutex<Option<Host>> = Mutex::new(None);

struct Keeper;

impl Plugin for Keeper {
    fn new(_config: serde_json::Value, host: Host) -> Result<Self, String> {
        host.log(Level::Info, "started");
        if let Ok(mut kept) = KEPT.lock() {
            *kept = Some(host);
        }
        Ok(Keeper)
    }

    fn handle(&self, _delivery: &Delivery) -> Outcome {
        Outcome::Ok
    }

    fn shutdown(&self) {
        if let Some(host) = KEPT.lock().ok().and_then(|k| k.clone()) {
            host.log(Level::Info, "shutting down");
        }
    }
}

static KEEPER: abi::PluginDescriptor = crate::export::descriptor::<Keeper>("keeper\0", "0.1.0\0");

#[test]
fn an_sdk_host_kept_past_shutdown_logs_nothing_and_reads_no_freed_memory() {
    // SAFETY: a descriptor built by the SDK, static.
    let lib = unsafe { Library::from_descriptor("keeper.so".into(), &KEEPER) }.expect("valid");
    let (sink, kept) = recording();
    let instance = lib
        .instantiate("kept", &serde_json::json!({}), Path::new("/etc"), sink)
        .expect("init");
    drop(instance); // the last reference: `shutdown` runs, the host retires its table
    churn_the_allocator();
    let host = KEPT.lock().ok().and_then(|mut k| k.take()).expect("kept");
    host.log(Level::Warn, "after shutdown");
    let from_thread = host.clone();
    std::thread::spawn(move || from_thread.log(Level::Warn, "after shutdown, from a thread"))
        .join()
        .expect("the thread logs without crashing");
    assert_eq!(lines(&kept), ["started", "shutting down"]);
    assert_eq!(host.instance_name(), "kept");
}

/// A raw plugin (no SDK) that stashes `ctx` and `log` from its host table, as one written in C
/// might, and a plugin whose `init` fails after stashing them.
static STASHED: Mutex<Option<(usize, LogFn)>> = Mutex::new(None);

type LogFn = unsafe extern "C" fn(*const c_void, u32, GwStr);

unsafe extern "C" fn raw_init(
    config: GwStr,
    host: *const HostApi,
    out_instance: *mut *mut c_void,
    out_error: *mut GwBuf,
) -> u32 {
    // SAFETY: the host passes a valid table for the duration of `init`.
    let api = unsafe { &*host };
    if let Ok(mut s) = STASHED.lock() {
        *s = Some((api.ctx as usize, api.log));
    }
    // SAFETY: borrowed for the call.
    let config = unsafe { std::slice::from_raw_parts(config.ptr, config.len) };
    if config == b"{\"fail\":true}" {
        // SAFETY: a valid out-pointer; an empty buffer needs no `free_buf`.
        unsafe { *out_error = GwBuf::EMPTY };
        return abi::INIT_ERROR;
    }
    // SAFETY: a valid out-pointer; any non-null pointer will do as the instance.
    unsafe { *out_instance = std::ptr::NonNull::<u8>::dangling().as_ptr().cast() };
    abi::INIT_OK
}

unsafe extern "C" fn raw_handle(_: *mut c_void, _: GwStr, _: *mut GwBuf) -> u32 {
    abi::OUTCOME_OK
}

unsafe extern "C" fn raw_free_buf(_: GwBuf) {}

unsafe extern "C" fn raw_shutdown(_: *mut c_void) {}

static RAW: abi::PluginDescriptor = abi::PluginDescriptor {
    abi_major: abi::ABI_MAJOR,
    abi_minor: abi::ABI_MINOR,
    struct_size: abi::DESCRIPTOR_SIZE,
    build_tag: c"raw test plugin".as_ptr(),
    name: c"raw".as_ptr(),
    version: c"0.0.1".as_ptr(),
    init: raw_init,
    handle: raw_handle,
    free_buf: raw_free_buf,
    shutdown: raw_shutdown,
    handle_batch: None,
};

/// Logs through the stashed table, as the raw plugin would.
fn log_through_stash(message: &str) {
    let (ctx, log) = STASHED.lock().ok().and_then(|s| *s).expect("stashed");
    let msg = GwStr {
        ptr: message.as_ptr(),
        len: message.len(),
    };
    // SAFETY: what this test checks: the host keeps `ctx` valid for the life of the process.
    unsafe { log(ctx as *const c_void, abi::LOG_WARN, msg) };
}

#[test]
fn a_raw_plugin_logging_through_its_host_table_after_shutdown_or_a_failed_init_is_ignored() {
    // SAFETY: a static descriptor of this ABI.
    let lib = unsafe { Library::from_descriptor("raw.so".into(), &RAW) }.expect("valid");
    let (sink, kept) = recording();
    let instance = lib
        .instantiate(
            "raw",
            &serde_json::json!({}),
            Path::new("/etc"),
            sink.clone(),
        )
        .expect("init");
    log_through_stash("while alive");
    drop(instance);
    churn_the_allocator();
    log_through_stash("after shutdown");
    let refused = lib.instantiate(
        "raw",
        &serde_json::json!({"fail": true}),
        Path::new("/etc"),
        sink,
    );
    assert!(refused.is_err());
    churn_the_allocator();
    log_through_stash("after a failed init");
    assert_eq!(lines(&kept), ["while alive"]);
}

/// A raw batch plugin whose `handle_batch` handles the first delivery (`out_codes[0] = OK`),
/// then fails as a whole with its message in `out_details[0]`, as the ABI allows ("read
/// whatever `out_codes[0]` says"); or writes a garbage code there first.
unsafe extern "C" fn failing_batch(
    _: *mut c_void,
    deliveries: *const GwStr,
    count: usize,
    out_codes: *mut u32,
    out_details: *mut GwBuf,
) -> u32 {
    assert!(count >= 1 && !deliveries.is_null());
    // SAFETY: `count` >= 1 readable inputs, borrowed for the call.
    let first = unsafe { *deliveries };
    // SAFETY: borrowed for the call.
    let first = unsafe { std::slice::from_raw_parts(first.ptr, first.len) };
    let code0 = if first == b"garbage" {
        77
    } else {
        abi::OUTCOME_OK
    };
    let mut message = ManuallyDrop::new(br#"{"reason":"the batch broke"}"#.to_vec());
    // SAFETY: `count` >= 1 writable slots of each kind.
    unsafe {
        *out_codes = code0;
        *out_details = GwBuf {
            ptr: message.as_mut_ptr(),
            len: message.len(),
            cap: message.capacity(),
        };
    }
    abi::OUTCOME_PANICKED
}

unsafe extern "C" fn vec_free_buf(buf: GwBuf) {
    if !buf.ptr.is_null() {
        // SAFETY: made from a `Vec<u8>` above, freed once.
        drop(unsafe { Vec::from_raw_parts(buf.ptr, buf.len, buf.cap) });
    }
}

use std::mem::ManuallyDrop;

static FAILING_BATCH: abi::PluginDescriptor = abi::PluginDescriptor {
    abi_major: abi::ABI_MAJOR,
    abi_minor: abi::ABI_MINOR,
    struct_size: abi::DESCRIPTOR_SIZE,
    build_tag: c"raw test plugin".as_ptr(),
    name: c"raw".as_ptr(),
    version: c"0.0.1".as_ptr(),
    init: raw_init,
    handle: raw_handle,
    free_buf: vec_free_buf,
    shutdown: raw_shutdown,
    handle_batch: Some(failing_batch),
};

/// Regression: a batch that failed as a whole had its message read from `out_details[0]` only
/// when `out_codes[0]` held RETRY, REJECT or PANICKED: after an `OK` there the message was
/// dropped ("handle_batch returned code 3"), after an unknown code it came back wrapped in
/// "plugin returned unknown outcome code ...".
#[test]
fn a_failed_batch_s_message_is_read_whatever_out_codes_0_says() {
    // SAFETY: a static descriptor of this ABI.
    let lib = unsafe { Library::from_descriptor("raw.so".into(), &FAILING_BATCH) }.expect("ok");
    let (sink, _) = recording();
    let instance = lib
        .instantiate("raw", &serde_json::json!({}), Path::new("/etc"), sink)
        .expect("init");
    for first in [&b"ok"[..], b"garbage"] {
        let failed = instance.handle_batch(&[first, b"second"]);
        assert_eq!(
            failed,
            Err("the batch broke".to_owned()),
            "{}",
            String::from_utf8_lossy(first)
        );
    }
}

/// The `config_dir` the last [`dir_init`] was handed, as bytes.
static SEEN_DIR: Mutex<Vec<u8>> = Mutex::new(Vec::new());

unsafe extern "C" fn dir_init(
    _config: GwStr,
    host: *const HostApi,
    out_instance: *mut *mut c_void,
    _out_error: *mut GwBuf,
) -> u32 {
    // SAFETY: the host passes a valid table for the duration of `init`.
    let api = unsafe { &*host };
    // SAFETY: valid as long as the table.
    let dir = unsafe { std::slice::from_raw_parts(api.config_dir.ptr, api.config_dir.len) };
    *SEEN_DIR.lock().unwrap_or_else(PoisonError::into_inner) = dir.to_vec();
    // SAFETY: a valid out-pointer; any non-null pointer will do as the instance.
    unsafe { *out_instance = std::ptr::NonNull::<u8>::dangling().as_ptr().cast() };
    abi::INIT_OK
}

use std::sync::PoisonError;

static DIR_SEER: abi::PluginDescriptor = abi::PluginDescriptor {
    abi_major: abi::ABI_MAJOR,
    abi_minor: abi::ABI_MINOR,
    struct_size: abi::DESCRIPTOR_SIZE,
    build_tag: c"raw test plugin".as_ptr(),
    name: c"raw".as_ptr(),
    version: c"0.0.1".as_ptr(),
    init: dir_init,
    handle: raw_handle,
    free_buf: raw_free_buf,
    shutdown: raw_shutdown,
    handle_batch: None,
};

/// Regression: a config folder whose path is not UTF-8 was handed to the plugin lossily
/// (`/srv/\xffconf` as `/srv/\u{FFFD}conf`), so the plugin resolved its relative paths (a log
/// file, payout's ledger) under another folder than the gateway's own (its store, its TLS
/// files): it is refused instead, saying why.
#[test]
fn a_config_folder_that_is_not_utf8_is_refused_not_handed_over_mangled() {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: a static descriptor of this ABI.
    let lib = unsafe { Library::from_descriptor("raw.so".into(), &DIR_SEER) }.expect("valid");
    let (sink, _) = recording();
    let dir = Path::new(std::ffi::OsStr::from_bytes(b"/srv/\xffconf"));
    let made = lib.instantiate("raw", &serde_json::json!({}), dir, sink);
    let seen = SEEN_DIR
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    match made {
        Ok(_) => panic!(
            "started with config_dir {:?} for the folder {dir:?}",
            String::from_utf8_lossy(&seen)
        ),
        Err(e) => {
            let said = e.to_string();
            assert!(said.contains("not UTF-8"), "{said}");
            assert!(seen.is_empty(), "init ran: {seen:?}");
        }
    }
}

/// A raw batch plugin that returns `OK` having written only the first slot's code; and a
/// `handle` whose detail buffer claims a length no slice can have (a C plugin's `-1` cast to
/// `size_t`).
unsafe extern "C" fn half_written_batch(
    _: *mut c_void,
    _: *const GwStr,
    count: usize,
    out_codes: *mut u32,
    _: *mut GwBuf,
) -> u32 {
    assert!(count >= 2);
    // SAFETY: `count` >= 1 writable slots.
    unsafe { *out_codes = abi::OUTCOME_OK };
    abi::OUTCOME_OK
}

unsafe extern "C" fn impossible_detail(_: *mut c_void, _: GwStr, out_detail: *mut GwBuf) -> u32 {
    // SAFETY: a valid out-pointer. The buffer is never read (its length is refused first);
    // `raw_free_buf` frees nothing.
    unsafe {
        *out_detail = GwBuf {
            ptr: std::ptr::NonNull::<u8>::dangling().as_ptr(),
            len: usize::MAX,
            cap: 0,
        }
    };
    abi::OUTCOME_RETRY
}

static CARELESS: abi::PluginDescriptor = abi::PluginDescriptor {
    abi_major: abi::ABI_MAJOR,
    abi_minor: abi::ABI_MINOR,
    struct_size: abi::DESCRIPTOR_SIZE,
    build_tag: c"raw test plugin".as_ptr(),
    name: c"raw".as_ptr(),
    version: c"0.0.1".as_ptr(),
    init: raw_init,
    handle: impossible_detail,
    free_buf: raw_free_buf,
    shutdown: raw_shutdown,
    handle_batch: Some(half_written_batch),
};

/// An unwritten slot of an `OK` batch was a `Retry` with an empty reason (a dead letter with no
/// explanation after max_attempts); a detail of impossible length was read as a slice
/// (undefined behaviour: a debug build aborts on it).
#[test]
fn a_careless_plugins_unwritten_slots_and_impossible_lengths_are_said() {
    // SAFETY: a static descriptor of this ABI.
    let lib = unsafe { Library::from_descriptor("raw.so".into(), &CARELESS) }.expect("ok");
    let (sink, _) = recording();
    let instance = lib
        .instantiate("raw", &serde_json::json!({}), Path::new("/etc"), sink)
        .expect("init");
    let outcomes = instance.handle_batch(&[b"a", b"b"]).expect("batch");
    assert_eq!(outcomes[0], CallOutcome::Ok);
    match &outcomes[1] {
        CallOutcome::Retry { reason, .. } => {
            assert!(
                reason.contains("without writing this delivery's outcome"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    match instance.handle(b"x") {
        CallOutcome::Retry { reason, .. } => {
            assert!(reason.contains("impossible length"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

/// Where the log test below keeps its instance's host table (its own: `STASHED` is another
/// test's).
static LOGGER_TABLE: Mutex<Option<(usize, LogFn)>> = Mutex::new(None);

unsafe extern "C" fn logger_init(
    _: GwStr,
    host: *const HostApi,
    out_instance: *mut *mut c_void,
    _: *mut GwBuf,
) -> u32 {
    // SAFETY: the host passes a valid table for the duration of `init`.
    let api = unsafe { &*host };
    if let Ok(mut s) = LOGGER_TABLE.lock() {
        *s = Some((api.ctx as usize, api.log));
    }
    // SAFETY: a valid out-pointer; any non-null pointer will do as the instance.
    unsafe { *out_instance = std::ptr::NonNull::<u8>::dangling().as_ptr().cast() };
    abi::INIT_OK
}

static LOGGER: abi::PluginDescriptor = abi::PluginDescriptor {
    abi_major: abi::ABI_MAJOR,
    abi_minor: abi::ABI_MINOR,
    struct_size: abi::DESCRIPTOR_SIZE,
    build_tag: c"raw test plugin".as_ptr(),
    name: c"raw".as_ptr(),
    version: c"0.0.1".as_ptr(),
    init: logger_init,
    handle: raw_handle,
    free_buf: raw_free_buf,
    shutdown: raw_shutdown,
    handle_batch: None,
};

/// A C plugin's log call with a length no buffer can have (a failed `snprintf`'s -1 cast to
/// `size_t`) is said, not read: the slice it made was undefined behaviour (a debug build
/// aborts the whole process on it).
#[test]
fn a_log_message_of_impossible_length_is_said_not_read() {
    // SAFETY: a static descriptor of this ABI.
    let lib = unsafe { Library::from_descriptor("raw.so".into(), &LOGGER) }.expect("valid");
    let (sink, kept) = recording();
    let _instance = lib
        .instantiate("raw", &serde_json::json!({}), Path::new("/etc"), sink)
        .expect("init");
    let (ctx, log) = LOGGER_TABLE.lock().ok().and_then(|s| *s).expect("stashed");
    let impossible = GwStr {
        ptr: std::ptr::NonNull::<u8>::dangling().as_ptr(),
        len: usize::MAX,
    };
    // SAFETY: the table of a live instance; the message is never read (its length is refused).
    unsafe { log(ctx as *const c_void, abi::LOG_WARN, impossible) };
    assert_eq!(
        lines(&kept),
        [format!(
            "(the plugin logged a message of impossible length {})",
            usize::MAX
        )]
    );
}
