//! The C ABI between the gateway (host) and a plugin library. **Stable within an `ABI_MAJOR`.**
//!
//! Only C types cross this boundary: fixed-width integers, raw pointers, `#[repr(C)]` structs and
//! `extern "C"` function pointers. No Rust `String`, `Vec`, `Box`, `Result`, trait object or panic
//! ever crosses it.
//!
//! # Discovery
//! A plugin library exports one function, [`ENTRY_SYMBOL`] (`gateway_plugin_v1`), of type
//! [`EntryFn`]. It returns a pointer to a [`PluginDescriptor`] with `'static` lifetime. The host
//! calls it once per library, then checks, in this order and before calling anything else:
//! `abi_major == ABI_MAJOR`, `struct_size >=` [`DESCRIPTOR_SIZE_1_0`] (the 1.0 layout),
//! `abi_minor <= ABI_MINOR` (the host's). The first four fields never move (`build_tag` too: the loader shows it when it refuses another major).
//!
//! # Versions
//! - 1.0: `init`, `handle`, `free_buf`, `shutdown`.
//! - 1.1: `handle_batch` appended. The host reads it only when the plugin says `abi_minor >= 1`
//!   and its `struct_size` covers the field; a 1.0 plugin keeps working unchanged (the host then
//!   calls `handle` once per delivery). A plugin claiming 1.1 with a 1.0-sized descriptor is
//!   refused.
//!
//! # Ownership
//! - [`GwStr`] is *borrowed*: the side that passes it owns the bytes; they are valid only for the
//!   duration of the call they are passed to. Copy them to keep them.
//! - [`GwBuf`] is *plugin-owned*: a plugin writes one into an out-parameter; the host reads it and
//!   then releases it by calling the same plugin's `free_buf`, exactly once. The host never frees
//!   plugin memory with its own allocator (the two sides may not share one).
//!
//! # Threading
//! `init` and `shutdown` are called once per instance, on whichever host thread (`shutdown` is
//! usually not on `init`'s: keep no thread-local state between them). `handle` and
//! `handle_batch` may be called from several host threads at once on the same instance (up to
//! the plugin's configured `max_concurrency` calls in all, a batch counting as one call), so an
//! instance must be thread-safe. `shutdown` is never concurrent with them on that instance.
//! `log` in [`HostApi`] may be called from any thread.
//!
//! # Unwinding
//! A panic must never unwind across these functions (it aborts the process). The SDK's
//! [`export_plugin!`](crate::export_plugin) wraps each function in `catch_unwind` and reports a
//! panic as [`OUTCOME_PANICKED`] / [`INIT_PANICKED`]. Plugins must be built with `panic = "unwind"`.

use std::ffi::{c_char, c_void};

/// Incremented on any incompatible change. A plugin with another major is refused.
pub const ABI_MAJOR: u32 = 1;
/// Incremented when fields are appended (compatibly). A host refuses plugins newer than itself.
pub const ABI_MINOR: u32 = 1;
/// The entry symbol (NUL-terminated for `dlsym`).
pub const ENTRY_SYMBOL: &[u8] = b"gateway_plugin_v1\0";
/// The entry symbol as text, for messages.
pub const ENTRY_NAME: &str = "gateway_plugin_v1";

/// The type of the exported entry function. Must be callable any number of times from any thread
/// and always return the same non-null, `'static` descriptor.
pub type EntryFn = unsafe extern "C" fn() -> *const PluginDescriptor;

/// Borrowed bytes (UTF-8 JSON or UTF-8 text, as each use says). Owned by the caller; valid only
/// during the call. `ptr` may be null only when `len == 0`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GwStr {
    pub ptr: *const u8,
    pub len: usize,
}

/// A buffer allocated by the plugin and released by the host through the plugin's `free_buf`.
/// `ptr`/`len`/`cap` are opaque to the host except that `ptr[..len]` is readable until freed.
/// The empty buffer (`ptr` null) need not be freed, but freeing it is a no-op.
#[repr(C)]
#[derive(Debug)]
pub struct GwBuf {
    pub ptr: *mut u8,
    pub len: usize,
    pub cap: usize,
}

impl GwBuf {
    pub const EMPTY: GwBuf = GwBuf {
        ptr: std::ptr::null_mut(),
        len: 0,
        cap: 0,
    };
}

/// `init` succeeded; `*out_instance` is set.
pub const INIT_OK: u32 = 0;
/// `init` failed; `*out_error` may hold a UTF-8 message (plugin-owned).
pub const INIT_ERROR: u32 = 1;
/// `init` panicked; `*out_error` may hold the panic message (plugin-owned).
pub const INIT_PANICKED: u32 = 2;

/// The delivery was handled; the host marks it done.
pub const OUTCOME_OK: u32 = 0;
/// Transient failure; `out_detail` holds `{"reason": str, "retry_after_ms": int|null}`. The host
/// retries with backoff (at least `retry_after_ms` later, at most `[delivery] max_backoff`)
/// until `max_attempts`. A
/// `retry_after_ms` that is not a whole number of milliseconds (`"5000"` as a string, a negative
/// or fractional number) is ignored with a warning in the gateway's log, once per instance.
pub const OUTCOME_RETRY: u32 = 1;
/// Permanent failure; `out_detail` holds `{"reason": str}`. The host dead-letters the delivery.
pub const OUTCOME_REJECT: u32 = 2;
/// The plugin panicked; `out_detail` holds `{"reason": str}`. The host dead-letters the delivery
/// and replaces the instance: the old one gets no call after the panic (calls already running on
/// it finish there) and is shut down just before the fresh one's `init`, or, when a call still
/// runs on it, once that call returns (maybe while the fresh `init` runs). A call that comes
/// while the fresh `init` runs, or after it failed, is a retry ("plugin instance unavailable").
pub const OUTCOME_PANICKED: u32 = 3;

/// Log levels for [`HostApi::log`].
pub const LOG_ERROR: u32 = 1;
pub const LOG_WARN: u32 = 2;
pub const LOG_INFO: u32 = 3;
pub const LOG_DEBUG: u32 = 4;
pub const LOG_TRACE: u32 = 5;

/// Services the host offers to an instance. Owned by the host; the pointer handed to `init` stays
/// valid, and its content unchanged, until that instance's `shutdown` returns (or, when `init`
/// fails, until `init` returns). Probe `api_minor` before using fields added after 1.0. (This
/// host never frees the table, its strings or `ctx`, and drops lines `log`ged after that point,
/// so a plugin that breaks the rule harms nothing; the Rust SDK stops calling `log` at that
/// point by itself.)
#[repr(C)]
#[derive(Debug)]
pub struct HostApi {
    /// The host's `ABI_MAJOR`.
    pub api_major: u32,
    /// The host's `ABI_MINOR`: which appended fields below exist.
    pub api_minor: u32,
    /// `size_of::<HostApi>()` as the host built it.
    pub struct_size: u32,
    /// Opaque host state; pass it back as the first argument of the callbacks.
    pub ctx: *const c_void,
    /// Writes a log line (`level` one of `LOG_*`, `message` UTF-8, borrowed) into the host's log,
    /// tagged with the plugin instance and, during an in-process `handle` of one delivery, its
    /// event id (not in a batch call, nor from an isolated process). Thread-safe.
    pub log: unsafe extern "C" fn(ctx: *const c_void, level: u32, message: GwStr),
    /// The folder of the gateway's config file (UTF-8): relative paths in plugin config resolve
    /// against it. Valid as long as this table. (A folder whose path is not UTF-8 is never
    /// handed over mangled: this host refuses to start the instance, saying why.)
    pub config_dir: GwStr,
    /// The instance name from the gateway config (`[[plugins]] name`). Valid as long as this table.
    pub instance_name: GwStr,
}

/// What a plugin library describes about itself. Lives in the plugin's static memory.
#[repr(C)]
#[derive(Debug)]
pub struct PluginDescriptor {
    /// Must equal the host's [`ABI_MAJOR`]. Never moves.
    pub abi_major: u32,
    /// At most the host's [`ABI_MINOR`]. Never moves.
    pub abi_minor: u32,
    /// `size_of::<PluginDescriptor>()` as the plugin was built. Never moves.
    pub struct_size: u32,
    /// NUL-terminated, static, UTF-8: `"gateway-plugin <sdk>; rustc <version>; <target>"`. Never
    /// moves. (`build_tag`, `name` and `version`: a null one, or one that is not UTF-8, refuses
    /// the library.)
    pub build_tag: *const c_char,
    /// NUL-terminated, static, UTF-8: the library's plugin name (its crate name by default).
    pub name: *const c_char,
    /// NUL-terminated, static, UTF-8: the plugin's version.
    pub version: *const c_char,
    /// Creates an instance from `config` (UTF-8 JSON object, borrowed) and `host` (see
    /// [`HostApi`]). On [`INIT_OK`] writes an opaque non-null pointer to `*out_instance`; otherwise
    /// may write a message to `*out_error`. Both out-pointers are valid and initialised by the host.
    /// On any other result the host ignores `*out_instance` and never calls `shutdown` for it (it
    /// cannot tell a half-made instance from garbage): free what a failed `init` made before
    /// returning. `init`, `handle`, `free_buf` and `shutdown` must not be null: the host refuses to load a
    /// descriptor with a null one (the Rust types say non-null; the host reads them as nullable).
    pub init: unsafe extern "C" fn(
        config: GwStr,
        host: *const HostApi,
        out_instance: *mut *mut c_void,
        out_error: *mut GwBuf,
    ) -> u32,
    /// Handles one delivery (UTF-8 JSON, borrowed; see [`crate::Delivery`] for its fields, and
    /// `delivery.schema.json` beside this crate's manifest for other languages) and
    /// returns an `OUTCOME_*`. May write a detail buffer to `*out_detail` (host frees it).
    /// Called concurrently; blocking is allowed (the host calls it on a blocking thread).
    pub handle:
        unsafe extern "C" fn(instance: *mut c_void, delivery: GwStr, out_detail: *mut GwBuf) -> u32,
    /// Releases a buffer this plugin returned. Called exactly once per non-empty buffer.
    pub free_buf: unsafe extern "C" fn(buf: GwBuf),
    /// Destroys an instance. Called once, after every `handle` call on it has returned.
    pub shutdown: unsafe extern "C" fn(instance: *mut c_void),
    /// **ABI 1.1; may be null.** Handles `count` (≥ 1) deliveries in one call, so a plugin can
    /// amortise its own I/O (one write and one fsync for the batch). `deliveries` points to
    /// `count` borrowed [`GwStr`]s, each the JSON of one delivery, valid during the call.
    /// `out_codes` points to `count` host-owned `u32` slots and `out_details` to `count`
    /// host-owned [`GwBuf`] slots set to empty; for each `i` the plugin writes an `OUTCOME_*`
    /// to `out_codes[i]` and may write a detail buffer (as for `handle`) to `out_details[i]`,
    /// which the host frees with `free_buf`. Returns [`OUTCOME_OK`] when every slot was
    /// written (a code slot left unwritten is retried, its reason saying the plugin wrote no
    /// outcome for it), or [`OUTCOME_PANICKED`] when the batch as a whole failed (any other code is
    /// taken as that too): then the codes mean nothing, `out_details[0]` may hold the message
    /// (read whatever `out_codes[0]` says), and the host replaces the instance and
    /// hands the same deliveries to `handle` one by one (each gets its own outcome; deliveries
    /// the batch had already handled may be seen twice, which at-least-once allows).
    pub handle_batch: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            deliveries: *const GwStr,
            count: usize,
            out_codes: *mut u32,
            out_details: *mut GwBuf,
        ) -> u32,
    >,
}

// SAFETY: the descriptor only holds pointers to static, immutable data and function pointers; it
// is never mutated after construction, so sharing it between threads is sound.
#[allow(unsafe_code)]
unsafe impl Sync for PluginDescriptor {}

/// `size_of::<PluginDescriptor>()` as a `u32` (the value a plugin writes into `struct_size`).
pub const DESCRIPTOR_SIZE: u32 = std::mem::size_of::<PluginDescriptor>() as u32;
/// The size of the 1.0 descriptor (everything before `handle_batch`): the least a host accepts.
pub const DESCRIPTOR_SIZE_1_0: u32 = std::mem::offset_of!(PluginDescriptor, handle_batch) as u32;
/// The size of the 1.1 descriptor (through `handle_batch`): the least a 1.1 plugin declares. A
/// later minor appends fields after it, so a host of that minor still takes 1.1 plugins of this
/// size (checking against its own whole size would refuse them).
pub const DESCRIPTOR_SIZE_1_1: u32 = (std::mem::offset_of!(PluginDescriptor, handle_batch)
    + std::mem::size_of::<Option<unsafe extern "C" fn()>>())
    as u32;
// At ABI 1.1 its fields are the whole descriptor. A minor that appends fields changes this
// check (and gates each new field on its minor and its end offset, as `handle_batch` is).
const _: () = assert!(DESCRIPTOR_SIZE_1_1 == DESCRIPTOR_SIZE);

/// `size_of::<HostApi>()` as a `u32`.
pub const HOST_API_SIZE: u32 = std::mem::size_of::<HostApi>() as u32;
