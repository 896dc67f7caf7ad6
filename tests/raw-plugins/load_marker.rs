//! A raw-ABI plugin (no SDK) with load-time code, compiled by `e2e/isolation_load.rs` with
//! `rustc --edition 2021 --crate-type cdylib` (it is not a cargo target). A constructor in
//! `.init_array` runs when the dynamic loader maps the library, before anything calls it (as C/C++
//! constructors and `#[ctor]`-style initialisers do): when `$LOAD_MARKER_DIR` is set it writes a
//! file `loaded-<pid>` there, naming the process that loaded it; when `$LOAD_MARKER_ABORT` is
//! set it then aborts the process (a constructor that crashes). Otherwise a well-formed ABI 1.0
//! plugin whose `handle` answers Ok.

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

/// The 1.0 descriptor, restated (the host table is only passed through, as a pointer).
#[repr(C)]
pub struct Descriptor {
    abi_major: u32,
    abi_minor: u32,
    struct_size: u32,
    build_tag: *const c_char,
    name: *const c_char,
    version: *const c_char,
    init: unsafe extern "C" fn(GwStr, *const c_void, *mut *mut c_void, *mut GwBuf) -> u32,
    handle: unsafe extern "C" fn(*mut c_void, GwStr, *mut GwBuf) -> u32,
    free_buf: unsafe extern "C" fn(GwBuf),
    shutdown: unsafe extern "C" fn(*mut c_void),
}

// SAFETY: an immutable static holding pointers to static data and functions.
unsafe impl Sync for Descriptor {}

static DESCRIPTOR: Descriptor = Descriptor {
    abi_major: 1,
    abi_minor: 0,
    struct_size: std::mem::size_of::<Descriptor>() as u32,
    build_tag: b"raw fixture; load marker\0".as_ptr() as *const c_char,
    name: b"load_marker\0".as_ptr() as *const c_char,
    version: b"0.0.1\0".as_ptr() as *const c_char,
    init,
    handle,
    free_buf,
    shutdown,
};

/// Runs at load time: the loader calls every function in `.init_array`.
extern "C" fn on_load() {
    if let Some(dir) = std::env::var_os("LOAD_MARKER_DIR") {
        let pid = std::process::id();
        let _ = std::fs::write(
            std::path::Path::new(&dir).join(format!("loaded-{pid}")),
            pid.to_string(),
        );
    }
    if std::env::var_os("LOAD_MARKER_ABORT").is_some() {
        std::process::abort();
    }
}

#[used]
#[link_section = ".init_array"]
static ON_LOAD: extern "C" fn() = on_load;

#[no_mangle]
pub extern "C" fn gateway_plugin_v1() -> *const c_void {
    &DESCRIPTOR as *const _ as *const c_void
}

static INSTANCE: u8 = 0;

unsafe extern "C" fn init(
    _config: GwStr,
    _host: *const c_void,
    out_instance: *mut *mut c_void,
    _out_error: *mut GwBuf,
) -> u32 {
    // SAFETY: the host passes a valid, writable out-pointer.
    unsafe { *out_instance = &INSTANCE as *const u8 as *mut c_void };
    0
}

unsafe extern "C" fn handle(_instance: *mut c_void, _delivery: GwStr, _out: *mut GwBuf) -> u32 {
    0
}

unsafe extern "C" fn free_buf(_buf: GwBuf) {}

unsafe extern "C" fn shutdown(_instance: *mut c_void) {}
