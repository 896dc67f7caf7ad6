//! A raw-ABI plugin (no SDK) whose `init` hangs on demand, compiled by `e2e/isolation.rs` with
//! `rustc --edition 2021 --crate-type cdylib` (it is not a cargo target): while a file named
//! `slow-init` exists in the gateway config's folder (`HostApi::config_dir`), `init` sleeps for
//! the milliseconds the file holds (30 s when it holds no number), so a test can let the first
//! start through and make every restart slow or hang. Each `init` that read the file appends a
//! line to `slow-init.seen` first, so a test knows when a start has read it (and can change it
//! for the starts after that one). `handle` exits the process
//! with code 3 for a delivery whose `event_type` is `crash_exit`, and answers Ok otherwise.
//! ABI 1.1: its `handle_batch` calls `handle` for each delivery, so a batch holding a
//! `crash_exit` dies as a whole (the gateway then runs it again one delivery at a time).

use std::ffi::{c_char, c_void};

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

/// The 1.1 descriptor, restated.
#[repr(C)]
pub struct Descriptor {
    abi_major: u32,
    abi_minor: u32,
    struct_size: u32,
    build_tag: *const c_char,
    name: *const c_char,
    version: *const c_char,
    init: unsafe extern "C" fn(GwStr, *const HostApi, *mut *mut c_void, *mut GwBuf) -> u32,
    handle: unsafe extern "C" fn(*mut c_void, GwStr, *mut GwBuf) -> u32,
    free_buf: unsafe extern "C" fn(GwBuf),
    shutdown: unsafe extern "C" fn(*mut c_void),
    handle_batch: Option<
        unsafe extern "C" fn(*mut c_void, *const GwStr, usize, *mut u32, *mut GwBuf) -> u32,
    >,
}

// SAFETY: an immutable static holding pointers to static data and functions.
unsafe impl Sync for Descriptor {}

static DESCRIPTOR: Descriptor = Descriptor {
    abi_major: 1,
    abi_minor: 1,
    struct_size: std::mem::size_of::<Descriptor>() as u32,
    build_tag: b"raw fixture; slow restart\0".as_ptr() as *const c_char,
    name: b"slow_restart\0".as_ptr() as *const c_char,
    version: b"0.0.1\0".as_ptr() as *const c_char,
    init,
    handle,
    free_buf,
    shutdown,
    handle_batch: Some(handle_batch),
};

#[no_mangle]
pub extern "C" fn gateway_plugin_v1() -> *const c_void {
    &DESCRIPTOR as *const _ as *const c_void
}

static INSTANCE: u8 = 0;

unsafe fn bytes<'a>(s: &GwStr) -> &'a [u8] {
    if s.ptr.is_null() || s.len == 0 {
        &[]
    } else {
        // SAFETY: the host lends `ptr[..len]` for the duration of the call.
        unsafe { std::slice::from_raw_parts(s.ptr, s.len) }
    }
}

unsafe extern "C" fn init(
    _config: GwStr,
    host: *const HostApi,
    out_instance: *mut *mut c_void,
    _out_error: *mut GwBuf,
) -> u32 {
    // SAFETY: the host passes a valid table for the duration of `init`.
    let dir = unsafe { bytes(&(*host).config_dir) };
    let marker = std::path::Path::new(&*String::from_utf8_lossy(dir)).join("slow-init");
    if let Ok(text) = std::fs::read_to_string(&marker) {
        let seen = marker.with_extension("seen");
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(seen) {
            use std::io::Write;
            let _ = f.write_all(b"read\n");
        }
        let ms = text.trim().parse().unwrap_or(30_000);
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    // SAFETY: the host passes a valid, writable out-pointer.
    unsafe { *out_instance = &INSTANCE as *const u8 as *mut c_void };
    0
}

unsafe extern "C" fn handle(_instance: *mut c_void, delivery: GwStr, _out: *mut GwBuf) -> u32 {
    // SAFETY: borrowed for this call.
    let d = unsafe { bytes(&delivery) };
    let key = b"\"event_type\":\"crash_exit\"";
    if d.windows(key.len()).any(|w| w == key) {
        std::process::exit(3);
    }
    0
}

unsafe extern "C" fn free_buf(_buf: GwBuf) {}

unsafe extern "C" fn shutdown(_instance: *mut c_void) {}

unsafe extern "C" fn handle_batch(
    instance: *mut c_void,
    deliveries: *const GwStr,
    count: usize,
    out_codes: *mut u32,
    out_details: *mut GwBuf,
) -> u32 {
    for i in 0..count {
        // SAFETY: the host passes `count` borrowed deliveries and `count` writable slots of
        // each, for the duration of the call.
        unsafe {
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
