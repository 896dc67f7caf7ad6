//! The glue [`export_plugin!`](crate::export_plugin) expands to: `extern "C"` functions that turn
//! ABI calls into calls of a [`Plugin`] and back, each wrapped in `catch_unwind` so no panic ever
//! unwinds into the host. This is one of the two FFI modules allowed to use `unsafe`.
//!
//! A [`Host`] is `Clone + Send + Sync + 'static`, so safe plugin code may keep it past its
//! instance (in a static, in a thread) while the ABI lets the host free the table behind it
//! once `shutdown` returns (or once a failed `init` returns). So the SDK retires the table
//! itself before handing control back: `AbiLog` holds a flag, read-locked across each host
//! call, that `shutdown` (and a failed `init`) clears under the write lock; later log lines are
//! dropped and never reach the host's `ctx`.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_void};
use std::mem::ManuallyDrop;
use std::panic::catch_unwind;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use crate::abi::{self, GwBuf, GwStr, HostApi, PluginDescriptor};
use crate::sdk::{Delivery, Host, Level, Outcome, OutcomeDetail, Plugin};

/// Where a plugin's [`Host::log`] goes.
#[derive(Clone)]
pub(crate) enum HostLogger {
    /// Unit tests of a plugin outside a host.
    Stderr,
    /// The host's `log` callback.
    Abi(AbiLog),
}

/// The host's `log` callback and its `ctx`, shared by every clone of one instance's [`Host`].
#[derive(Clone)]
pub(crate) struct AbiLog(Arc<AbiTable>);

struct AbiTable {
    ctx: *const c_void,
    log: unsafe extern "C" fn(*const c_void, u32, GwStr),
    /// `true` while the host's table is valid: until the instance's `shutdown` (or a failed
    /// `init`) returns to the host. Read-locked across each call of `log`, so [`AbiLog::retire`]
    /// waits for the calls in progress.
    live: RwLock<bool>,
}

// SAFETY: the ABI requires the host's `log` callback and its `ctx` to be usable from any thread
// while the table is valid, and `live` keeps every call within that time.
unsafe impl Send for AbiTable {}
// SAFETY: as above; the callback takes `ctx` by shared pointer and is documented thread-safe.
unsafe impl Sync for AbiTable {}

impl AbiLog {
    fn new(api: &HostApi) -> AbiLog {
        AbiLog(Arc::new(AbiTable {
            ctx: api.ctx,
            log: api.log,
            live: RwLock::new(true),
        }))
    }

    /// The host may free its table from now on: later log lines are dropped.
    fn retire(&self) {
        *self.0.live.write().unwrap_or_else(PoisonError::into_inner) = false;
    }
}

impl HostLogger {
    pub(crate) fn log(&self, level: Level, message: &str) {
        match self {
            HostLogger::Stderr => eprintln!("[{level:?}] {message}"),
            HostLogger::Abi(AbiLog(t)) => {
                let live = t.live.read().unwrap_or_else(PoisonError::into_inner);
                if !*live {
                    return; // the instance was shut down: the host's table may be gone
                }
                let msg = GwStr {
                    ptr: message.as_ptr(),
                    len: message.len(),
                };
                // SAFETY: `ctx`/`log` come from the host's table, valid until shutdown (ABI
                // contract), which `live` (held across the call) says has not come yet; `msg`
                // borrows `message`, alive for the duration of the call.
                unsafe { (t.log)(t.ctx, level.to_abi(), msg) };
                drop(live);
            }
        }
    }
}

/// What the instance pointer handed to the host points to: the plugin, and the log table its
/// [`Host`]s share, retired by `shutdown`.
struct Hosted<T> {
    plugin: T,
    log: AbiLog,
}

/// Whether `s` ends in a NUL (what the host reads the descriptor's strings up to).
const fn nul_terminated(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty() && b[b.len() - 1] == 0
}

/// Builds the static descriptor for `T`. `name`/`version` must be NUL-terminated: checked (in a
/// `static`, at compile time), so this safe function never hands the host a string it would
/// read past the end of.
///
/// The build tag says `panic=unwind` when the SDK was built so; [`export_plugin!`](crate::export_plugin) calls
/// [`descriptor_linked`] instead, which asks the plugin's own crate.
pub const fn descriptor<T: Plugin>(name: &'static str, version: &'static str) -> PluginDescriptor {
    descriptor_linked::<T>(name, version, cfg!(panic = "unwind"))
}

/// [`descriptor`] for a library whose own crate was built with `panic = "unwind"` (`unwinds`)
/// or not: the strategy the shared library is linked with is its top crate's (a crate built to
/// unwind, this SDK too, may be linked into one that aborts: `cargo rustc -- -C panic=abort`,
/// or a build system passing flags per crate), so the build tag says `panic=unwind` only when
/// both the SDK and the plugin's crate were built so. [`export_plugin!`](crate::export_plugin) passes the plugin
/// crate's `cfg!(panic = "unwind")`.
pub const fn descriptor_linked<T: Plugin>(
    name: &'static str,
    version: &'static str,
    unwinds: bool,
) -> PluginDescriptor {
    assert!(
        nul_terminated(name) && nul_terminated(version),
        "a plugin descriptor's name and version must end in a NUL"
    );
    PluginDescriptor {
        abi_major: abi::ABI_MAJOR,
        abi_minor: abi::ABI_MINOR,
        struct_size: abi::DESCRIPTOR_SIZE,
        build_tag: if unwinds && cfg!(panic = "unwind") {
            BUILD_TAG_UNWIND.as_ptr()
        } else {
            BUILD_TAG_ABORT.as_ptr()
        } as *const c_char,
        name: name.as_ptr() as *const c_char,
        version: version.as_ptr() as *const c_char,
        init: init::<T>,
        handle: handle::<T>,
        free_buf,
        shutdown: shutdown::<T>,
        handle_batch: Some(handle_batch::<T>),
    }
}

/// The build tag, with the panic strategy the plugin was built with: under `panic = "abort"` a
/// panic ends the whole process, so `gateway check` warns unless the plugin is isolated.
const BUILD_TAG_UNWIND: &str = concat!(env!("GATEWAY_PLUGIN_BUILD_TAG"), "; panic=unwind\0");
/// [`BUILD_TAG_UNWIND`] for a library whose panics abort.
const BUILD_TAG_ABORT: &str = concat!(env!("GATEWAY_PLUGIN_BUILD_TAG"), "; panic=abort\0");

/// Reads a borrowed `GwStr` as bytes.
///
/// # Safety
/// `s.ptr[..s.len]` must be readable for the returned lifetime (or `len == 0`).
unsafe fn bytes<'a>(s: GwStr) -> &'a [u8] {
    if s.len == 0 || s.ptr.is_null() {
        &[]
    } else {
        // SAFETY: guaranteed by the caller (the ABI's ownership rules for `GwStr`).
        unsafe { std::slice::from_raw_parts(s.ptr, s.len) }
    }
}

/// Moves `data` into a plugin-owned buffer released by [`free_buf`].
fn into_buf(data: Vec<u8>) -> GwBuf {
    if data.is_empty() {
        return GwBuf::EMPTY;
    }
    let mut v = ManuallyDrop::new(data);
    GwBuf {
        ptr: v.as_mut_ptr(),
        len: v.len(),
        cap: v.capacity(),
    }
}

fn detail(reason: String, retry_after_ms: Option<u64>) -> Vec<u8> {
    serde_json::to_vec(&OutcomeDetail {
        reason,
        retry_after_ms,
    })
    .unwrap_or_default()
}

unsafe extern "C" fn init<T: Plugin>(
    config: GwStr,
    host: *const HostApi,
    out_instance: *mut *mut c_void,
    out_error: *mut GwBuf,
) -> u32 {
    // Set once the `Host` exists: retired below unless an instance is created.
    let mut table: Option<AbiLog> = None;
    let result = caught(None, || -> Result<*mut c_void, String> {
        if host.is_null() {
            return Err("host API table is null".into());
        }
        // SAFETY: the host passes a valid table that outlives the instance (ABI contract).
        let api = unsafe { &*host };
        if api.api_major != abi::ABI_MAJOR {
            return Err(format!(
                "host ABI major {} differs from this plugin's {}",
                api.api_major,
                abi::ABI_MAJOR
            ));
        }
        // SAFETY: `config_dir`/`instance_name` are valid as long as the table (ABI contract).
        let (dir, name) = unsafe { (bytes(api.config_dir), bytes(api.instance_name)) };
        let log = table.insert(AbiLog::new(api)).clone();
        entry_log(&log);
        let host = Host {
            logger: HostLogger::Abi(log.clone()),
            config_dir: PathBuf::from(String::from_utf8_lossy(dir).into_owned()),
            instance_name: String::from_utf8_lossy(name).into_owned(),
        };
        // SAFETY: `config` is borrowed for the duration of this call.
        let config = unsafe { bytes(config) };
        let config: serde_json::Value = if config.is_empty() {
            serde_json::Value::Object(Default::default())
        } else {
            serde_json::from_slice(config).map_err(|e| format!("config is not JSON: {e}"))?
        };
        let plugin = T::new(config, host)?;
        Ok(Box::into_raw(Box::new(Hosted { plugin, log })) as *mut c_void)
    });
    if !matches!(result, Ok(Ok(_))) {
        // No instance: the host may free its table once this returns, and `new` may have kept
        // a `Host` anyway.
        if let Some(table) = &table {
            table.retire();
        }
    }
    let (code, message) = match result {
        Ok(Ok(instance)) => {
            // SAFETY: the host passes a valid, writable out-pointer.
            unsafe { *out_instance = instance };
            return abi::INIT_OK;
        }
        Ok(Err(msg)) => (abi::INIT_ERROR, msg),
        // No log for the hook: the init error carries the message.
        Err(payload) => (abi::INIT_PANICKED, take_panic(None, payload)),
    };
    if !out_error.is_null() {
        // SAFETY: the host passes a valid, writable out-pointer.
        unsafe { *out_error = into_buf(message.into_bytes()) };
    }
    code
}

unsafe extern "C" fn handle<T: Plugin>(
    instance: *mut c_void,
    delivery: GwStr,
    out_detail: *mut GwBuf,
) -> u32 {
    // SAFETY: `instance` is the pointer our `init` returned; the host keeps it alive until
    // `shutdown` and only shares it (`T: Sync`).
    let hosted = unsafe { &*(instance as *const Hosted<T>) };
    let entry_log = Some(HostLogger::Abi(hosted.log.clone()));
    let result = caught(entry_log.clone(), || {
        // SAFETY: borrowed for the duration of this call.
        let raw = unsafe { bytes(delivery) };
        match parse_delivery(raw) {
            Ok(d) => hosted.plugin.handle(&d),
            Err(e) => Outcome::reject(e),
        }
    });
    let (code, buf) = match result {
        Ok(outcome) => encode(outcome),
        Err(payload) => (
            abi::OUTCOME_PANICKED,
            detail(take_panic(entry_log, payload), None),
        ),
    };
    if !out_detail.is_null() {
        // SAFETY: the host passes a valid, writable out-pointer.
        unsafe { *out_detail = into_buf(buf) };
    }
    code
}

/// An outcome as its ABI code and detail bytes.
fn encode(outcome: Outcome) -> (u32, Vec<u8>) {
    match outcome {
        Outcome::Ok => (abi::OUTCOME_OK, Vec::new()),
        Outcome::Retry {
            reason,
            retry_after,
        } => (
            abi::OUTCOME_RETRY,
            detail(
                reason,
                retry_after.map(|d| d.as_millis().min(u64::MAX as u128) as u64),
            ),
        ),
        Outcome::Reject { reason } => (abi::OUTCOME_REJECT, detail(reason, None)),
    }
}

unsafe extern "C" fn handle_batch<T: Plugin>(
    instance: *mut c_void,
    deliveries: *const GwStr,
    count: usize,
    out_codes: *mut u32,
    out_details: *mut GwBuf,
) -> u32 {
    if count == 0 {
        return abi::OUTCOME_OK;
    }
    if deliveries.is_null() || out_codes.is_null() || out_details.is_null() {
        return abi::OUTCOME_PANICKED;
    }
    // SAFETY: the host passes `count` readable inputs and `count` writable slots of each kind
    // (ABI contract); they do not overlap and live for the duration of this call.
    let (inputs, codes, details) = unsafe {
        (
            std::slice::from_raw_parts(deliveries, count),
            std::slice::from_raw_parts_mut(out_codes, count),
            std::slice::from_raw_parts_mut(out_details, count),
        )
    };
    // SAFETY: `instance` is the pointer our `init` returned (see `handle`).
    let hosted = unsafe { &*(instance as *const Hosted<T>) };
    let plugin = &hosted.plugin;
    let entry_log = Some(HostLogger::Abi(hosted.log.clone()));
    let result = caught(entry_log.clone(), || {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; count];
        let mut parsed = Vec::with_capacity(count);
        let mut at = Vec::with_capacity(count);
        for (i, input) in inputs.iter().enumerate() {
            // SAFETY: each input is borrowed for the duration of this call.
            match parse_delivery(unsafe { bytes(*input) }) {
                Ok(d) => {
                    parsed.push(d);
                    at.push(i);
                }
                Err(e) => outcomes[i] = Some(Outcome::reject(e)),
            }
        }
        if !parsed.is_empty() {
            let mut given = plugin.handle_batch(&parsed).into_iter();
            for i in at {
                outcomes[i] = Some(given.next().unwrap_or_else(|| {
                    Outcome::retry(
                        "the plugin's handle_batch returned fewer outcomes than deliveries",
                    )
                }));
            }
        }
        outcomes
    });
    match result {
        Ok(outcomes) => {
            for (i, outcome) in outcomes.into_iter().enumerate() {
                let (code, buf) = encode(outcome.unwrap_or_else(|| Outcome::retry("no outcome")));
                codes[i] = code;
                details[i] = into_buf(buf);
            }
            abi::OUTCOME_OK
        }
        Err(payload) => {
            details[0] = into_buf(detail(take_panic(entry_log, payload), None));
            abi::OUTCOME_PANICKED
        }
    }
}

unsafe extern "C" fn free_buf(buf: GwBuf) {
    if buf.ptr.is_null() {
        return;
    }
    // SAFETY: `buf` was produced by `into_buf` from a `Vec<u8>` of this very library and is freed
    // once (ABI contract), so rebuilding the Vec with the same parts is sound.
    if let Err(payload) =
        catch_unwind(|| unsafe { drop(Vec::from_raw_parts(buf.ptr, buf.len, buf.cap)) })
    {
        take_panic(None, payload);
    }
}

unsafe extern "C" fn shutdown<T: Plugin>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    // SAFETY: `instance` came from `Box::into_raw` in our `init`; the host calls shutdown once,
    // after every `handle` returned, so we own it again here.
    let hosted = unsafe { Box::from_raw(instance as *mut Hosted<T>) };
    let Hosted { plugin, log } = *hosted;
    let entry_log = Some(HostLogger::Abi(log.clone()));
    // `shutdown` and the drop apart: a drop that panics while a panic of `shutdown` unwinds
    // would abort the process. Through [`caught`], as every entry: a panic is one line of the
    // instance's log, not std's text on the gateway's stderr.
    if let Err(payload) = caught(entry_log.clone(), || plugin.shutdown()) {
        take_panic(entry_log.clone(), payload);
    }
    if let Err(payload) = caught(entry_log.clone(), move || drop(plugin)) {
        take_panic(entry_log, payload);
    }
    // Before returning to the host, which may then free its table: `Host`s kept past the
    // instance (in a static, in a thread) log nothing from now on.
    log.retire();
}

/// Exports a [`Plugin`](crate::Plugin) type as this library's plugin: generates the
/// `gateway_plugin_v1` entry function and a static descriptor named after the crate.
///
/// ```ignore
/// gateway_plugin::export_plugin!(MyPlugin);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        // `cfg!` here is the plugin crate's: the panic strategy its library is linked with.
        static __GATEWAY_PLUGIN_DESCRIPTOR: $crate::abi::PluginDescriptor =
            $crate::export::descriptor_linked::<$plugin>(
                concat!(env!("CARGO_PKG_NAME"), "\0"),
                concat!(env!("CARGO_PKG_VERSION"), "\0"),
                cfg!(panic = "unwind"),
            );

        /// The plugin entry point (see `gateway_plugin::abi`). No `allow(unsafe_code)` on it:
        /// lints are not reported in another crate's macro, and a plugin crate that forbids
        /// `unsafe_code` refuses any `allow` of it.
        #[no_mangle]
        pub extern "C" fn gateway_plugin_v1() -> *const $crate::abi::PluginDescriptor {
            &__GATEWAY_PLUGIN_DESCRIPTOR
        }
    };
}

/// A delivery's JSON as the host passed it. The text is checked as UTF-8 once, in one pass, and
/// then parsed as a `str` (parsing the bytes would check every string again on its own).
fn parse_delivery(raw: &[u8]) -> Result<Delivery, String> {
    let text = std::str::from_utf8(raw)
        .map_err(|e| format!("malformed delivery from host: not UTF-8: {e}"))?;
    serde_json::from_str(text).map_err(|e| format!("malformed delivery from host: {e}"))
}

mod panics;
use panics::{caught, entry_log, take_panic};

#[cfg(test)]
mod tests;
