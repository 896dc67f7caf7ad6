//! The host side (feature `host`): open plugin libraries, check their ABI, create instances and
//! call them. This is one of the two FFI modules allowed to use `unsafe`.
//!
//! Invariants:
//! - A library is opened with `RTLD_NOW | RTLD_LOCAL` and **never unloaded**: its handle is leaked
//!   for the life of the process (unloading Rust libraries with thread-local destructors crashes).
//! - What loads is the file that was opened and hashed, not whatever is at its path by then
//!   ([`LibraryFile`], `host/file.rs`): the loader gets the open file's `/proc/self/fd` name.
//! - Checks run in the order symbol → `abi_major` → `struct_size` → `abi_minor`, before anything
//!   else in the library is called or read.
//! - Every buffer a plugin returns is released by that plugin's `free_buf`, never by the host's
//!   allocator.
//! - An [`Instance`] calls the plugin's `shutdown` exactly once, when the last reference drops,
//!   which is after every `handle` call on it has returned.
//! - The host table an instance is handed (`HostApi`, with its strings) and the host state
//!   behind its `ctx` (`HostCtx`) are **never freed**: a plugin may keep the table (a C plugin
//!   is told to), or its `ctx` and `log` (an SDK `Host` in a static or a thread), past
//!   `shutdown`, or past an `init` that failed, and reading it or calling `log` must stay sound.
//!   Once the instance is shut down (or its `init` failed) the ctx is retired: its log sink and
//!   name are released and later lines are dropped. What stays allocated is the table, a lock
//!   and an empty slot, about 150 bytes per instance ever created (at start, on reload, on a
//!   restart after a panic), and the table's strings once per distinct instance name and
//!   config folder, like the libraries themselves, which are never unloaded either.
#![allow(unsafe_code)]

use std::ffi::{c_void, CStr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::abi::{self, GwBuf, GwStr, HostApi};
use crate::sdk::Level;

mod ctx;
mod detail;
mod errors;
mod file;
mod inside;
mod instance;
mod summary;
#[cfg(test)]
mod tests;

use ctx::{host_log, interned, HostCtx};
use detail::Detail;
pub use errors::{InitError, LoadError};
pub use file::{FileId, LibraryFile};
use inside::Inside;
pub use inside::{exit_beside_plugins, exit_process, plugin_code_running};
pub use instance::Instance;
use instance::InstanceInner;
pub use summary::DescriptorSummary;

/// What one `handle` call produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    Ok,
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    Reject {
        reason: String,
    },
    Panicked {
        message: String,
    },
}

/// Receives plugin log lines: (instance name, level, message).
pub type LogSink = Arc<dyn Fn(&str, Level, &str) + Send + Sync>;

/// The descriptor's entries, copied out once at load (only those its version has).
#[derive(Clone, Copy)]
struct Fns {
    init: InitFn,
    handle: HandleFn,
    free_buf: FreeBufFn,
    shutdown: ShutdownFn,
    /// ABI 1.1: `None` for 1.0 plugins, or when the plugin left it null.
    handle_batch: BatchFn,
}

type InitFn = unsafe extern "C" fn(GwStr, *const HostApi, *mut *mut c_void, *mut GwBuf) -> u32;
type HandleFn = unsafe extern "C" fn(*mut c_void, GwStr, *mut GwBuf) -> u32;
type FreeBufFn = unsafe extern "C" fn(GwBuf);
type ShutdownFn = unsafe extern "C" fn(*mut c_void);
type BatchFn =
    Option<unsafe extern "C" fn(*mut c_void, *const GwStr, usize, *mut u32, *mut GwBuf) -> u32>;

/// A required entry of the descriptor, or the load error naming it.
fn required<F>(entry: Option<F>, path: &Path, field: &'static str) -> Result<F, LoadError> {
    entry.ok_or_else(|| LoadError::NullEntry {
        path: path.to_path_buf(),
        field,
    })
}

/// An opened, ABI-checked plugin library. Cheap to clone; the library stays loaded forever.
#[derive(Clone)]
pub struct Library {
    path: PathBuf,
    fns: Fns,
    abi_minor: u32,
    struct_size: u32,
    name: String,
    version: String,
    build_tag: String,
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Library")
            .field("path", &self.path)
            .field("name", &self.name)
            .field("version", &self.version)
            .field("build_tag", &self.build_tag)
            .finish()
    }
}

impl Library {
    /// Opens and checks a plugin library. Safe to call for the same path several times. The
    /// file is opened once and what loads is that open file ([`LibraryFile`]); use
    /// [`LibraryFile`] directly to check its SHA-256 before it loads.
    pub fn open(path: &Path) -> Result<Library, LoadError> {
        LibraryFile::open(path)?.load()
    }

    /// Has the dynamic loader load `name` (a name of the file at `path`), with `RTLD_NOW |
    /// RTLD_LOCAL`, and leaks the handle (see the module invariants). An error means nothing
    /// was loaded.
    fn dlopen(
        path: &Path,
        name: &Path,
    ) -> Result<&'static libloading::os::unix::Library, LoadError> {
        let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL;
        // Its constructors are plugin code (and the loader's lock is held while they run).
        let inside = Inside::enter();
        // SAFETY: loading a library runs its initialisers (`.init_array` constructors, its
        // dependencies' too); plugins are trusted code chosen by the operator, and an isolated
        // plugin's library is loaded only in its own child process.
        let opened = unsafe { libloading::os::unix::Library::open(Some(name), flags) };
        drop(inside);
        let lib = opened.map_err(|e| {
            let mut reason = e.to_string();
            if !Path::new("/proc/self/fd").is_dir() {
                reason.push_str(" (libraries are loaded through /proc/self/fd: mount /proc)");
            }
            LoadError::Open {
                path: path.to_path_buf(),
                // The loader names the descriptor; the operator knows the file.
                reason: reason.replace(&*name.to_string_lossy(), &path.to_string_lossy()),
            }
        })?;
        // Never unloaded: see the module invariants.
        Ok(Box::leak(Box::new(lib)))
    }

    /// Finds the entry of a loaded library and checks its descriptor.
    fn from_object(
        path: PathBuf,
        lib: &'static libloading::os::unix::Library,
    ) -> Result<Library, LoadError> {
        // SAFETY: the symbol's type is fixed by the ABI (`EntryFn`); a library exporting a
        // different type under this exact name violates the plugin contract. Read as an
        // `Option`: a symbol that resolves to address 0 (a weak undefined one) is `None`, never
        // a null function pointer.
        let entry = unsafe { lib.get::<Option<abi::EntryFn>>(abi::ENTRY_SYMBOL) }
            .ok()
            .and_then(|e| *e)
            .ok_or_else(|| LoadError::NoEntry { path: path.clone() })?;
        let inside = Inside::enter();
        // SAFETY: calling the entry function is allowed any number of times (ABI contract).
        let ptr = unsafe { entry() };
        drop(inside);
        // SAFETY: a non-null descriptor pointer from the entry function is static, immutable
        // data of at least its own `struct_size` bytes (ABI contract).
        unsafe { Library::from_descriptor(path, ptr) }
    }

    /// The same library, known by another path (a file loaded before, opened by another name).
    fn at(&self, path: PathBuf) -> Library {
        Library {
            path,
            ..self.clone()
        }
    }

    /// Checks the descriptor at `ptr` (the entry function's answer for the library at `path`)
    /// and copies out what the host needs.
    ///
    /// # Safety
    /// `ptr` is null, or points to static, immutable data that starts with the ABI's fixed
    /// prefix (`abi_major`, `abi_minor`, `struct_size`) and holds at least `struct_size`
    /// readable bytes, laid out as [`abi::PluginDescriptor`] up to that size.
    unsafe fn from_descriptor(
        path: PathBuf,
        ptr: *const abi::PluginDescriptor,
    ) -> Result<Library, LoadError> {
        if ptr.is_null() {
            return Err(LoadError::NullDescriptor { path });
        }
        // The first three u32 fields never move: read them before trusting anything else.
        let head = ptr as *const u32;
        // SAFETY: every descriptor version starts with abi_major, abi_minor, struct_size (u32s).
        let (major, minor, size) = unsafe { (*head, *head.add(1), *head.add(2)) };
        // For the refusals below only: `build_tag` never moves either (4th field, every ABI),
        // and is read only when the plugin's own `struct_size` says its descriptor holds it.
        // SAFETY: as for the three fields above; `size` covers the field.
        let tag = || unsafe { build_tag_of(ptr, size) };
        if major != abi::ABI_MAJOR {
            return Err(LoadError::AbiMajor {
                path,
                found: major,
                minor,
                build_tag: tag(),
            });
        }
        if size < abi::DESCRIPTOR_SIZE_1_0 {
            return Err(LoadError::StructSize {
                path,
                found: size,
                needed: abi::DESCRIPTOR_SIZE_1_0,
                build_tag: tag(),
            });
        }
        if minor > abi::ABI_MINOR {
            return Err(LoadError::AbiMinor {
                path,
                found: minor,
                build_tag: tag(),
            });
        }
        if minor >= 1 && size < abi::DESCRIPTOR_SIZE_1_1 {
            return Err(LoadError::StructSize {
                path,
                found: size,
                needed: abi::DESCRIPTOR_SIZE_1_1,
                build_tag: tag(),
            });
        }
        // Read field by field through the raw pointer: a 1.0 descriptor is shorter than ours,
        // so no reference to a whole `PluginDescriptor` is ever made. The entries are read as
        // nullable (`Option<fn>` has the layout of the bare pointer): a null one read into a
        // non-nullable `fn` type would be undefined behaviour. Nulls are refused below.
        // SAFETY: major matches and `struct_size` covers the 1.0 fields; the descriptor is
        // static, immutable data (ABI contract).
        let (name, version, build_tag, init, handle, free_buf, shutdown, handle_batch) = unsafe {
            use std::ptr::addr_of;
            (
                addr_of!((*ptr).name).read(),
                addr_of!((*ptr).version).read(),
                addr_of!((*ptr).build_tag).read(),
                addr_of!((*ptr).init).cast::<Option<InitFn>>().read(),
                addr_of!((*ptr).handle).cast::<Option<HandleFn>>().read(),
                addr_of!((*ptr).free_buf).cast::<Option<FreeBufFn>>().read(),
                addr_of!((*ptr).shutdown)
                    .cast::<Option<ShutdownFn>>()
                    .read(),
                // Present only from 1.1 (checked above: size covers it when minor >= 1).
                if minor >= 1 {
                    addr_of!((*ptr).handle_batch).read()
                } else {
                    None
                },
            )
        };
        let text = |p: *const std::ffi::c_char, field| {
            if p.is_null() {
                return Err(LoadError::BadString {
                    path: path.clone(),
                    field,
                });
            }
            // SAFETY: the ABI requires NUL-terminated static strings in these fields.
            unsafe { CStr::from_ptr(p) }
                .to_str()
                .map(str::to_owned)
                .map_err(|_| LoadError::BadString {
                    path: path.clone(),
                    field,
                })
        };
        let name = text(name, "name")?;
        let version = text(version, "version")?;
        let build_tag = text(build_tag, "build_tag")?;
        let fns = Fns {
            init: required(init, &path, "init")?,
            handle: required(handle, &path, "handle")?,
            free_buf: required(free_buf, &path, "free_buf")?,
            shutdown: required(shutdown, &path, "shutdown")?,
            handle_batch,
        };
        Ok(Library {
            name,
            version,
            build_tag,
            fns,
            abi_minor: minor,
            struct_size: size,
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn version(&self) -> &str {
        &self.version
    }
    pub fn build_tag(&self) -> &str {
        &self.build_tag
    }
    /// The ABI minor the plugin was built for (its major is the host's: checked at load).
    pub fn abi_minor(&self) -> u32 {
        self.abi_minor
    }
    /// The size of the plugin's descriptor.
    pub fn struct_size(&self) -> u32 {
        self.struct_size
    }
    /// Whether the plugin exports the batch entry (ABI 1.1).
    pub fn has_batch_entry(&self) -> bool {
        self.fns.handle_batch.is_some()
    }

    /// Creates an instance named `instance` from its JSON `config`.
    pub fn instantiate(
        &self,
        instance: &str,
        config: &serde_json::Value,
        config_dir: &Path,
        log: LogSink,
    ) -> Result<Instance, InitError> {
        let config = serde_json::to_vec(config).map_err(|e| InitError::Config {
            instance: instance.to_owned(),
            message: e.to_string(),
        })?;
        let name = instance.to_owned();
        let config_dir = config_dir_text(instance, config_dir)?;
        let ctx = HostCtx::leak(&name, log.clone());
        let api: &'static HostApi = Box::leak(Box::new(HostApi {
            api_major: abi::ABI_MAJOR,
            api_minor: abi::ABI_MINOR,
            struct_size: abi::HOST_API_SIZE,
            ctx: ctx as *const HostCtx as *const c_void,
            log: host_log,
            config_dir: gw_str(interned(config_dir).as_bytes()),
            instance_name: gw_str(interned(&name).as_bytes()),
        }));
        let mut out_instance: *mut c_void = std::ptr::null_mut();
        let mut out_error = GwBuf::EMPTY;
        let inside = Inside::enter();
        // SAFETY: `config` outlives the call; `api`, the strings it points to and `ctx` are
        // never freed; the out-pointers are valid and initialised.
        let code =
            unsafe { (self.fns.init)(gw_str(&config), api, &mut out_instance, &mut out_error) };
        drop(inside);
        let message = self.take_buf(out_error);
        if code != abi::INIT_OK || out_instance.is_null() {
            // The plugin may have kept the table although it has no instance.
            ctx.retire();
        }
        match code {
            abi::INIT_OK if !out_instance.is_null() => Ok(Instance {
                inner: Arc::new(InstanceInner {
                    library: self.clone(),
                    ptr: out_instance,
                    name,
                    log,
                    ctx,
                    warned_retry_after: Default::default(),
                }),
            }),
            abi::INIT_PANICKED => Err(InitError::Panicked {
                instance: instance.to_owned(),
                message,
            }),
            abi::INIT_OK => Err(InitError::Refused {
                instance: instance.to_owned(),
                message: "init returned success but no instance".into(),
            }),
            _ => Err(InitError::Refused {
                instance: instance.to_owned(),
                message: if message.is_empty() {
                    format!("init failed with code {code}")
                } else {
                    message
                },
            }),
        }
    }

    /// Copies a plugin buffer out as text and releases it with the plugin's own `free_buf`.
    fn take_buf(&self, buf: GwBuf) -> String {
        if buf.ptr.is_null() {
            return String::new();
        }
        if buf.len > isize::MAX as usize {
            // No slice can be that long (`from_raw_parts` would be undefined behaviour): a C
            // plugin's bug, e.g. a failed `snprintf`'s -1 cast to `size_t`.
            let len = buf.len;
            // SAFETY: the buffer came from this plugin and is freed exactly once, by its own
            // free_buf (which gets back the very parts it made).
            unsafe { (self.fns.free_buf)(buf) };
            return format!("(the plugin returned a text buffer of impossible length {len})");
        }
        // SAFETY: the plugin guarantees `ptr[..len]` is readable until freed, and `len` is at
        // most `isize::MAX` (checked above).
        let text = String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(buf.ptr, buf.len) })
            .into_owned();
        // SAFETY: the buffer came from this plugin and is freed exactly once, by its own free_buf.
        unsafe { (self.fns.free_buf)(buf) };
        text
    }
}

/// `config_dir` as the UTF-8 text the ABI hands plugins ([`HostApi::config_dir`]), or why
/// `instance` cannot be started: plugins resolve their relative paths against it, so a lossy
/// copy of a folder whose path is not UTF-8 would name another folder than the gateway's own
/// relative paths use. Also for an isolated instance, whose process gets the folder as text.
pub fn config_dir_text<'a>(instance: &str, config_dir: &'a Path) -> Result<&'a str, InitError> {
    config_dir.to_str().ok_or_else(|| InitError::Unavailable {
        instance: instance.to_owned(),
        message: format!(
            "the gateway config's folder {config_dir:?} is not UTF-8, and plugins are handed \
             it as UTF-8 text (`config_dir`, against which they resolve relative paths): move \
             the config to a folder whose path is UTF-8"
        ),
    })
}

/// The build tag of a descriptor that is being refused, for the message: `None` when the
/// plugin's `struct_size` does not cover the field or the pointer is null; lossy UTF-8, at most
/// 200 characters.
///
/// # Safety
/// `ptr` points to at least `size` readable bytes of a descriptor whose first fields follow the
/// ABI's fixed prefix (`abi_major`, `abi_minor`, `struct_size`, `build_tag`), and a non-null
/// `build_tag` points to a NUL-terminated string.
unsafe fn build_tag_of(ptr: *const abi::PluginDescriptor, size: u32) -> Option<String> {
    let end = std::mem::offset_of!(abi::PluginDescriptor, build_tag)
        + std::mem::size_of::<*const std::ffi::c_char>();
    if (size as usize) < end {
        return None;
    }
    // SAFETY: the caller guarantees `size` readable bytes, which cover the field.
    let p = unsafe { std::ptr::addr_of!((*ptr).build_tag).read() };
    if p.is_null() {
        return None;
    }
    // SAFETY: the caller guarantees a NUL-terminated string behind a non-null pointer.
    let text = unsafe { CStr::from_ptr(p) }.to_string_lossy();
    Some(text.chars().take(200).collect())
}

fn gw_str(bytes: &[u8]) -> GwStr {
    GwStr {
        ptr: bytes.as_ptr(),
        len: bytes.len(),
    }
}
