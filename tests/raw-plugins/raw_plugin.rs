//! A gateway plugin written against the raw C ABI, with no SDK and no dependencies, compiled by
//! the loader tests with `rustc --edition 2021 --crate-type cdylib -O [--cfg VARIANT]` (it is not
//! a cargo target). It restates the ABI types of `gateway_plugin::abi` by hand, the way a third
//! party would, so it can also describe itself *wrongly* on purpose.
//!
//! Variants (`--cfg`):
//! - none: a well-formed plugin that counts every buffer it hands out and every `free_buf` call
//!   (read them through the exported `raw_*_count` functions) to prove the host frees each
//!   returned buffer exactly once, with this library's `free_buf`. `handle` picks its answer from
//!   the delivery's `event_type`: `ok` (no buffer), `ok_with_detail` (Ok plus a buffer),
//!   `retry` (detail with `retry_after_ms` 1500), `reject`, `panicked`, `not_json` (Reject whose
//!   detail is plain text), `unknown_code` (code 7 plus a buffer), `retry_after_string`,
//!   `retry_after_negative`, `retry_after_fraction` (Retry "raw busy" whose `retry_after_ms` is
//!   `"5000"`, `-5`, `1.5`: the wrong types the host warns about), `slow` (Ok after 1.5 s),
//!   `holds_exit_lock` (Ok after 30 s, holding the lock the library's destructor takes at the
//!   process's exit: an exit during the call waits for it); and what native code does
//!   when it fails, which no `catch_unwind` stops: `crash_abort` (`abort()`), `crash_segv` (a
//!   write through a null pointer), `crash_exit` (`exit(3)`); anything else is Ok. `init`
//!   refuses a config containing `"refuse"` with a message buffer, and answers a config
//!   containing `"null_instance"` with success but no instance. With `RAW_PLUGIN_CALLS` set in
//!   its environment, `handle` appends `<pid> <event_type>` to that file for each call (and
//!   `init`, `init_refused` and `shutdown` their names). `init`
//!   keeps the host table it is handed (`raw_log_through_kept_host` logs through it later). While
//!   the file `RAW_PLUGIN_REFUSE` names exists, `init` refuses (and records `init_refused`).
//! - `bad_major`: ABI major 2 and a descriptor of only the three header fields.
//! - `small_struct`: ABI 1.0 but a descriptor that stops after `build_tag`.
//! - `newer_minor`: ABI 1.2 (newer than any host) with one appended field.
//! - `short_1_1`: claims ABI 1.1 but its descriptor has the 1.0 size (no `handle_batch`).
//! - `batch`: ABI 1.1 with a `handle_batch` that calls `handle` for each delivery, unless the
//!   first delivery's `event_type` is `batch_fails_silently` (the batch fails, writing no slot)
//!   or `batch_fails_with_reason` (it fails, with a Retry reason in the first slot), or
//!   `batch_fails_as_reject` (it returns REJECT, a Panicked reason in the first slot).
//! - `wrong_symbol`: a full descriptor exported under `gateway_plugin_v2` instead of `_v1`.
//! - `null_descriptor`: the entry returns null.
//! - `null_name`: a full descriptor whose `name` is null.
//! - `bad_utf8_version`: a full descriptor whose `version` is not UTF-8.

#![allow(dead_code)]

use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[repr(C)]
pub struct GwStr {
    ptr: *const u8,
    len: usize,
}

#[repr(C)]
pub struct GwBuf {
    ptr: *mut u8,
    len: usize,
    cap: usize,
}

type InitFn = unsafe extern "C" fn(GwStr, *const c_void, *mut *mut c_void, *mut GwBuf) -> u32;
type HandleFn = unsafe extern "C" fn(*mut c_void, GwStr, *mut GwBuf) -> u32;
type BatchFn = unsafe extern "C" fn(*mut c_void, *const GwStr, usize, *mut u32, *mut GwBuf) -> u32;

/// `gateway_plugin::abi::PluginDescriptor`, restated (plus one appended field for ABI 1.1).
#[repr(C)]
pub struct Descriptor {
    abi_major: u32,
    abi_minor: u32,
    struct_size: u32,
    build_tag: *const c_char,
    name: *const c_char,
    version: *const c_char,
    init: InitFn,
    handle: HandleFn,
    free_buf: unsafe extern "C" fn(GwBuf),
    shutdown: unsafe extern "C" fn(*mut c_void),
    #[cfg(newer_minor)]
    appended_in_1_1: u64,
    #[cfg(batch)]
    handle_batch: Option<BatchFn>,
}

/// Only the fields that never move.
#[repr(C)]
pub struct Header {
    abi_major: u32,
    abi_minor: u32,
    struct_size: u32,
}

/// A descriptor cut short after `build_tag`.
#[repr(C)]
pub struct Small {
    abi_major: u32,
    abi_minor: u32,
    struct_size: u32,
    build_tag: *const c_char,
}

// SAFETY: immutable statics holding pointers to static data and functions.
unsafe impl Sync for Descriptor {}
// SAFETY: as above.
unsafe impl Sync for Small {}

const fn cstr(s: &'static [u8]) -> *const c_char {
    s.as_ptr() as *const c_char
}

#[cfg(not(any(bad_major, small_struct, null_descriptor)))]
static DESCRIPTOR: Descriptor = Descriptor {
    abi_major: 1,
    abi_minor: if cfg!(newer_minor) {
        2
    } else if cfg!(any(short_1_1, batch)) {
        1
    } else {
        0
    },
    struct_size: std::mem::size_of::<Descriptor>() as u32,
    build_tag: cstr(b"raw fixture; no SDK\0"),
    name: if cfg!(null_name) {
        std::ptr::null()
    } else {
        cstr(b"raw\0")
    },
    version: if cfg!(bad_utf8_version) {
        cstr(b"\xff\xfe\0")
    } else {
        cstr(b"9.9.9\0")
    },
    init,
    handle,
    free_buf,
    shutdown,
    #[cfg(newer_minor)]
    appended_in_1_1: 0,
    #[cfg(batch)]
    handle_batch: Some(handle_batch),
};

#[cfg(bad_major)]
static DESCRIPTOR: Header = Header {
    abi_major: 2,
    abi_minor: 0,
    struct_size: std::mem::size_of::<Header>() as u32,
};

#[cfg(small_struct)]
static DESCRIPTOR: Small = Small {
    abi_major: 1,
    abi_minor: 0,
    struct_size: std::mem::size_of::<Small>() as u32,
    build_tag: cstr(b"raw fixture; small\0"),
};

#[cfg(not(any(wrong_symbol, null_descriptor)))]
#[no_mangle]
pub extern "C" fn gateway_plugin_v1() -> *const c_void {
    &DESCRIPTOR as *const _ as *const c_void
}

#[cfg(wrong_symbol)]
#[no_mangle]
pub extern "C" fn gateway_plugin_v2() -> *const c_void {
    &DESCRIPTOR as *const _ as *const c_void
}

#[cfg(null_descriptor)]
#[no_mangle]
pub extern "C" fn gateway_plugin_v1() -> *const c_void {
    std::ptr::null()
}

// ---- Counters, read by the tests through the exported functions below. ----

/// Non-empty buffers handed to the host.
static ALLOCATED: AtomicU64 = AtomicU64::new(0);
/// `free_buf` calls with a non-null buffer this library handed out and had not freed yet.
static FREED: AtomicU64 = AtomicU64::new(0);
/// `free_buf` calls with a non-null pointer that is not outstanding (double free or foreign).
static BAD_FREES: AtomicU64 = AtomicU64::new(0);
/// `free_buf` calls with a null buffer (allowed, a no-op).
static NULL_FREES: AtomicU64 = AtomicU64::new(0);
static INITS: AtomicU64 = AtomicU64::new(0);
static SHUTDOWNS: AtomicU64 = AtomicU64::new(0);
static HANDLES: AtomicU64 = AtomicU64::new(0);
/// Addresses of the buffers handed out and not yet freed.
static OUTSTANDING: Mutex<Vec<usize>> = Mutex::new(Vec::new());

#[no_mangle]
pub extern "C" fn raw_allocated_count() -> u64 {
    ALLOCATED.load(Ordering::SeqCst)
}
#[no_mangle]
pub extern "C" fn raw_freed_count() -> u64 {
    FREED.load(Ordering::SeqCst)
}
#[no_mangle]
pub extern "C" fn raw_bad_free_count() -> u64 {
    BAD_FREES.load(Ordering::SeqCst)
}
#[no_mangle]
pub extern "C" fn raw_null_free_count() -> u64 {
    NULL_FREES.load(Ordering::SeqCst)
}
#[no_mangle]
pub extern "C" fn raw_init_count() -> u64 {
    INITS.load(Ordering::SeqCst)
}
#[no_mangle]
pub extern "C" fn raw_shutdown_count() -> u64 {
    SHUTDOWNS.load(Ordering::SeqCst)
}
#[no_mangle]
pub extern "C" fn raw_handle_count() -> u64 {
    HANDLES.load(Ordering::SeqCst)
}

/// `gateway_plugin::abi::HostApi`, restated.
#[repr(C)]
pub struct HostApi {
    api_major: u32,
    api_minor: u32,
    struct_size: u32,
    ctx: *const c_void,
    log: unsafe extern "C" fn(*const c_void, u32, GwStr),
    config_dir: GwStr,
    instance_name: GwStr,
}

/// The host table the last `init` was handed, kept as a C plugin keeps it (for a flusher
/// thread that logs, say), also past its instance's `shutdown`.
static KEPT_HOST: std::sync::atomic::AtomicPtr<HostApi> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

/// Through the kept host table: its `struct_size`, and a line logged with its `log` and `ctx`
/// (0 when no table was kept).
#[no_mangle]
pub extern "C" fn raw_log_through_kept_host() -> u32 {
    let host = KEPT_HOST.load(Ordering::SeqCst);
    if host.is_null() {
        return 0;
    }
    // SAFETY: the host promises the table is never freed (this is what the test checks).
    let host = unsafe { &*host };
    let line = b"a line logged late";
    let message = GwStr {
        ptr: line.as_ptr(),
        len: line.len(),
    };
    // SAFETY: as above; the message is borrowed for the call.
    unsafe { (host.log)(host.ctx, 3, message) };
    host.struct_size
}

fn outstanding() -> std::sync::MutexGuard<'static, Vec<usize>> {
    OUTSTANDING.lock().unwrap_or_else(|e| e.into_inner())
}

fn give(text: &str) -> GwBuf {
    let mut v = std::mem::ManuallyDrop::new(text.as_bytes().to_vec());
    let buf = GwBuf {
        ptr: v.as_mut_ptr(),
        len: v.len(),
        cap: v.capacity(),
    };
    outstanding().push(buf.ptr as usize);
    ALLOCATED.fetch_add(1, Ordering::SeqCst);
    buf
}

unsafe fn bytes<'a>(s: &GwStr) -> &'a [u8] {
    if s.ptr.is_null() || s.len == 0 {
        &[]
    } else {
        // SAFETY: the host lends `ptr[..len]` for the duration of the call.
        unsafe { std::slice::from_raw_parts(s.ptr, s.len) }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The value of the first `"event_type"` key: the delivery's own (it precedes the envelope).
fn event_type(delivery: &[u8]) -> &[u8] {
    const KEY: &[u8] = b"\"event_type\":\"";
    let Some(at) = delivery.windows(KEY.len()).position(|w| w == KEY) else {
        return &[];
    };
    let rest = &delivery[at + KEY.len()..];
    &rest[..rest.iter().position(|&b| b == b'"').unwrap_or(rest.len())]
}

/// Appends `<pid> <event_type>` as a line to the file `RAW_PLUGIN_CALLS` names, when set: which
/// process served which call (an isolated instance's child); `<pid> init` for each instance made.
fn record_call(event_type: &[u8]) {
    use std::io::Write;
    let Some(path) = std::env::var_os("RAW_PLUGIN_CALLS") else {
        return;
    };
    let mut line = format!("{} ", std::process::id()).into_bytes();
    line.extend_from_slice(event_type);
    line.push(b'\n');
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = f.write_all(&line);
    }
}

/// The instance: a heap allocation, to check `shutdown` gets our pointer back.
struct Instance {
    magic: u64,
}
const MAGIC: u64 = 0x6761_7465_7761_7921;

unsafe extern "C" fn init(
    config: GwStr,
    host: *const c_void,
    out_instance: *mut *mut c_void,
    out_error: *mut GwBuf,
) -> u32 {
    // SAFETY: borrowed for this call.
    let config = unsafe { bytes(&config) };
    let marker = std::env::var_os("RAW_PLUGIN_REFUSE");
    if marker.is_some_and(|m| std::path::Path::new(&m).exists()) {
        record_call(b"init_refused");
        // SAFETY: the host passes a valid, writable out-pointer.
        unsafe { *out_error = give("raw plugin refuses to start: the marker file exists") };
        return 1;
    }
    if contains(config, b"refuse") {
        // SAFETY: the host passes a valid, writable out-pointer.
        unsafe { *out_error = give("raw plugin refuses this config") };
        return 1;
    }
    if contains(config, b"null_instance") {
        return 0;
    }
    INITS.fetch_add(1, Ordering::SeqCst);
    record_call(b"init");
    KEPT_HOST.store(host as *mut HostApi, Ordering::SeqCst);
    let instance = Box::into_raw(Box::new(Instance { magic: MAGIC }));
    // SAFETY: the host passes a valid, writable out-pointer.
    unsafe { *out_instance = instance as *mut c_void };
    0
}

/// Taken by `holds_exit_lock` calls, and by the library's destructor ([`at_exit`]).
static EXIT_LOCK: Mutex<()> = Mutex::new(());

/// The library's destructor (run by the C runtime at the process's normal exit, as native
/// libraries' destructors are): waits for `EXIT_LOCK`.
extern "C" fn at_exit() {
    let _held = EXIT_LOCK.lock();
}

#[used]
#[link_section = ".fini_array"]
static AT_EXIT: extern "C" fn() = at_exit;

unsafe extern "C" fn handle(instance: *mut c_void, delivery: GwStr, out_detail: *mut GwBuf) -> u32 {
    HANDLES.fetch_add(1, Ordering::SeqCst);
    // SAFETY: `instance` is what `init` returned and is alive until `shutdown`.
    if unsafe { (*(instance as *const Instance)).magic } != MAGIC {
        std::process::abort();
    }
    // SAFETY: borrowed for this call.
    let d = unsafe { bytes(&delivery) };
    record_call(event_type(d));
    let (code, detail) = match event_type(d) {
        b"ok_with_detail" => (0, Some(r#"{"reason":"fine, with a note"}"#)),
        b"retry" => (1, Some(r#"{"reason":"raw busy","retry_after_ms":1500}"#)),
        b"reject" => (2, Some(r#"{"reason":"raw says no"}"#)),
        b"panicked" => (3, Some(r#"{"reason":"raw pretends to panic"}"#)),
        b"not_json" => (2, Some("plain text detail")),
        b"unknown_code" => (7, Some(r#"{"reason":"from the future"}"#)),
        b"retry_after_string" => (1, Some(r#"{"reason":"raw busy","retry_after_ms":"5000"}"#)),
        b"retry_after_negative" => (1, Some(r#"{"reason":"raw busy","retry_after_ms":-5}"#)),
        b"retry_after_fraction" => (1, Some(r#"{"reason":"raw busy","retry_after_ms":1.5}"#)),
        b"slow" => {
            std::thread::sleep(std::time::Duration::from_millis(1500));
            (0, None)
        }
        b"holds_exit_lock" => {
            let _held = EXIT_LOCK.lock();
            std::thread::sleep(std::time::Duration::from_secs(30));
            (0, None)
        }
        b"crash_abort" => std::process::abort(),
        b"crash_exit" => std::process::exit(3),
        b"crash_segv" => {
            // SAFETY: deliberately not: this fixture dies the way broken native code does.
            unsafe { std::ptr::write_volatile(std::ptr::null_mut::<u64>(), 1) };
            (0, None)
        }
        _ => (0, None),
    };
    if let Some(text) = detail {
        // SAFETY: the host passes a valid, writable out-pointer.
        unsafe { *out_detail = give(text) };
    }
    code
}

#[cfg(batch)]
unsafe extern "C" fn handle_batch(
    instance: *mut c_void,
    deliveries: *const GwStr,
    count: usize,
    out_codes: *mut u32,
    out_details: *mut GwBuf,
) -> u32 {
    if count == 0 {
        return 0;
    }
    // SAFETY: the host passes `count` borrowed deliveries and `count` writable slots of each.
    unsafe {
        match event_type(bytes(&*deliveries)) {
            b"batch_fails_silently" => return 3,
            b"batch_fails_with_reason" => {
                *out_codes = 1;
                *out_details = give(r#"{"reason":"raw batch broke"}"#);
                return 3;
            }
            // A C author's way: the first slot says PANICKED with the message, and the call
            // returns REJECT (not a batch answer: taken as a failed batch).
            b"batch_fails_as_reject" => {
                *out_codes = 3;
                *out_details = give(r#"{"reason":"raw batch refused"}"#);
                return 2;
            }
            _ => {}
        }
        for i in 0..count {
            let d = &*deliveries.add(i);
            let one = GwStr {
                ptr: d.ptr,
                len: d.len,
            };
            *out_codes.add(i) = handle(instance, one, out_details.add(i));
        }
    }
    0
}

unsafe extern "C" fn free_buf(buf: GwBuf) {
    if buf.ptr.is_null() {
        NULL_FREES.fetch_add(1, Ordering::SeqCst);
        return;
    }
    let mut live = outstanding();
    match live.iter().position(|p| *p == buf.ptr as usize) {
        Some(i) => {
            live.swap_remove(i);
            FREED.fetch_add(1, Ordering::SeqCst);
            // SAFETY: this buffer came from `give` (a Vec of this library) and was outstanding.
            drop(unsafe { Vec::from_raw_parts(buf.ptr, buf.len, buf.cap) });
        }
        None => {
            BAD_FREES.fetch_add(1, Ordering::SeqCst);
        }
    }
}

unsafe extern "C" fn shutdown(instance: *mut c_void) {
    // SAFETY: `instance` came from `Box::into_raw` in `init`; the host calls this once.
    let instance = unsafe { Box::from_raw(instance as *mut Instance) };
    if instance.magic != MAGIC {
        std::process::abort();
    }
    SHUTDOWNS.fetch_add(1, Ordering::SeqCst);
    record_call(b"shutdown");
}
