//! A raw-ABI plugin (no SDK) whose descriptor leaves one required entry point null, compiled by
//! `e2e/plugin_host.rs` with `rustc --edition 2021 --crate-type cdylib --cfg VARIANT` (it is not
//! a cargo target). The host must refuse it at load, naming the file and the field, instead of
//! calling (or, at shutdown, jumping to) address 0.
//!
//! Variants (`--cfg`, exactly one): `null_init`, `null_handle`, `null_free_buf`,
//! `null_shutdown`. Every other entry is a working ABI 1.0 plugin that answers Ok.

#![allow(dead_code)]

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

type InitFn = unsafe extern "C" fn(GwStr, *const c_void, *mut *mut c_void, *mut GwBuf) -> u32;
type HandleFn = unsafe extern "C" fn(*mut c_void, GwStr, *mut GwBuf) -> u32;
type FreeFn = unsafe extern "C" fn(GwBuf);
type ShutdownFn = unsafe extern "C" fn(*mut c_void);

/// The 1.0 descriptor, restated with nullable entries (`Option<fn>` is a nullable pointer).
#[repr(C)]
pub struct Descriptor {
    abi_major: u32,
    abi_minor: u32,
    struct_size: u32,
    build_tag: *const c_char,
    name: *const c_char,
    version: *const c_char,
    init: Option<InitFn>,
    handle: Option<HandleFn>,
    free_buf: Option<FreeFn>,
    shutdown: Option<ShutdownFn>,
}

// SAFETY: an immutable static holding pointers to static data and functions.
unsafe impl Sync for Descriptor {}

static DESCRIPTOR: Descriptor = Descriptor {
    abi_major: 1,
    abi_minor: 0,
    struct_size: std::mem::size_of::<Descriptor>() as u32,
    build_tag: b"raw fixture; null entry\0".as_ptr() as *const c_char,
    name: b"null_entries\0".as_ptr() as *const c_char,
    version: b"0.0.1\0".as_ptr() as *const c_char,
    init: if cfg!(null_init) { None } else { Some(init) },
    handle: if cfg!(null_handle) {
        None
    } else {
        Some(handle)
    },
    free_buf: if cfg!(null_free_buf) {
        None
    } else {
        Some(free_buf)
    },
    shutdown: if cfg!(null_shutdown) {
        None
    } else {
        Some(shutdown)
    },
};

#[no_mangle]
pub extern "C" fn gateway_plugin_v1() -> *const c_void {
    &DESCRIPTOR as *const _ as *const c_void
}

/// Any non-null pointer will do: the instance holds nothing.
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
