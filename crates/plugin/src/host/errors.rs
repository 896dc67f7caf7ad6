//! The loader's errors: why a library cannot be used as a plugin, and why an instance could not
//! be created. Messages name the file, both values where there are two, the plugin's build tag,
//! and the fix.

use std::path::PathBuf;

use crate::abi;

/// Why a library could not be used as a plugin. Every message names the file, what differs, both
/// values where there are two, the plugin's build tag when its descriptor has one (what built it:
/// SDK, compiler, target), and the fix, in terms that hold for plugins in any language (the ABI
/// version, the C header), not only for Rust ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    NotFound {
        path: PathBuf,
    },
    Open {
        path: PathBuf,
        reason: String,
    },
    NoEntry {
        path: PathBuf,
    },
    NullDescriptor {
        path: PathBuf,
    },
    AbiMajor {
        path: PathBuf,
        /// The plugin's `abi_major`.
        found: u32,
        /// The plugin's `abi_minor` (for the message: "built for plugin ABI 2.0").
        minor: u32,
        /// `None` when the descriptor is too short to hold one, or it is null.
        build_tag: Option<String>,
    },
    StructSize {
        path: PathBuf,
        found: u32,
        needed: u32,
        build_tag: Option<String>,
    },
    AbiMinor {
        path: PathBuf,
        found: u32,
        build_tag: Option<String>,
    },
    BadString {
        path: PathBuf,
        field: &'static str,
    },
    /// A required entry point (`init`, `handle`, `free_buf` or `shutdown`) is null.
    NullEntry {
        path: PathBuf,
        field: &'static str,
    },
    /// The file (same device and inode) was loaded by this process before and its content has
    /// changed since: the code loaded is not these bytes, and cannot be replaced in place.
    ChangedInPlace {
        path: PathBuf,
        /// SHA-256 of the content loaded then.
        loaded: String,
        /// SHA-256 of the content now.
        found: String,
    },
}

impl LoadError {
    /// The same error about the same file, known by another path.
    pub(super) fn at(mut self, to: PathBuf) -> LoadError {
        let path = match &mut self {
            LoadError::NotFound { path }
            | LoadError::Open { path, .. }
            | LoadError::NoEntry { path }
            | LoadError::NullDescriptor { path }
            | LoadError::AbiMajor { path, .. }
            | LoadError::StructSize { path, .. }
            | LoadError::AbiMinor { path, .. }
            | LoadError::BadString { path, .. }
            | LoadError::NullEntry { path, .. }
            | LoadError::ChangedInPlace { path, .. } => path,
        };
        *path = to;
        self
    }
}

/// The ABI versions this host speaks, for messages: "1.x (1.0–1.1)".
fn host_abi() -> String {
    format!(
        "{major}.x ({major}.0\u{2013}{major}.{minor})",
        major = abi::ABI_MAJOR,
        minor = abi::ABI_MINOR
    )
}

/// Where a plugin author finds the ABI, whatever the language.
const HOW_TO_BUILD: &str = "in Rust, implement gateway_plugin::Plugin and use \
     gateway_plugin::export_plugin!; in C or any language with a C FFI, follow \
     crates/plugin/include/gateway_plugin.h (a complete C plugin: examples/c-plugin/)";

/// " (build tag: ...)" or nothing.
fn tag(build_tag: &Option<String>) -> String {
    match build_tag {
        Some(t) => format!(" (build tag: {t})"),
        None => String::new(),
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let major = abi::ABI_MAJOR;
        match self {
            LoadError::NotFound { path } => write!(
                f,
                "plugin library {} does not exist; build it (cargo build --release) or fix `library`",
                path.display()
            ),
            LoadError::Open { path, reason } => write!(
                f,
                "cannot load plugin library {}: {reason}; it must be a shared library built for this machine",
                path.display()
            ),
            LoadError::NoEntry { path } => write!(
                f,
                "{} is not a gateway plugin: it does not export the function `{entry}` \
                 (`const GwPluginDescriptor *{entry}(void)`, with C linkage and default \
                 visibility); {HOW_TO_BUILD}",
                path.display(),
                entry = abi::ENTRY_NAME
            ),
            LoadError::NullDescriptor { path } => write!(
                f,
                "plugin {}: `{}` returned a null descriptor; it must return a pointer to a static \
                 descriptor of plugin ABI {} ({HOW_TO_BUILD})",
                path.display(),
                abi::ENTRY_NAME,
                host_abi()
            ),
            LoadError::AbiMajor {
                path,
                found,
                minor,
                build_tag,
            } => write!(
                f,
                "incompatible plugin {}{}: the plugin was built for plugin ABI {found}.{minor}; \
                 this gateway speaks ABI {}; rebuild the plugin for ABI {major}.x (a \
                 gateway-plugin SDK or gateway_plugin.h with GW_ABI_MAJOR {major}), or run a \
                 gateway that speaks ABI {found}.x",
                path.display(),
                tag(build_tag),
                host_abi()
            ),
            LoadError::StructSize {
                path,
                found,
                needed,
                build_tag,
            } => write!(
                f,
                "incompatible plugin {}{}: descriptor is {found} bytes, its ABI version needs at \
                 least {needed}; `struct_size` must be sizeof(GwPluginDescriptor) of the ABI \
                 version the plugin claims: rebuild it against the SDK or gateway_plugin.h of \
                 plugin ABI {}",
                path.display(),
                tag(build_tag),
                host_abi()
            ),
            LoadError::AbiMinor {
                path,
                found,
                build_tag,
            } => write!(
                f,
                "plugin {}{} was built for plugin ABI {major}.{found}; this gateway speaks ABI {}; \
                 upgrade the gateway, or rebuild the plugin for ABI {major}.{} or older",
                path.display(),
                tag(build_tag),
                host_abi(),
                abi::ABI_MINOR
            ),
            LoadError::BadString { path, field } => write!(
                f,
                "plugin {}: descriptor field `{field}` is null or not UTF-8; it must point to a \
                 static, NUL-terminated UTF-8 string",
                path.display()
            ),
            LoadError::NullEntry { path, field } => write!(
                f,
                "plugin {}: descriptor field `{field}` is null; `init`, `handle`, `free_buf` \
                 and `shutdown` must each point to a function of the plugin (only \
                 `handle_batch` may be null); {HOW_TO_BUILD}",
                path.display()
            ),
            LoadError::ChangedInPlace {
                path,
                loaded,
                found,
            } => write!(
                f,
                "{} was rewritten in place since this process loaded it (sha256 {loaded} then, \
                 {found} now); the loaded code cannot be replaced in place: write the new \
                 version to a new file and rename it over the path, then reload (or restart)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for LoadError {}

/// Why an instance could not be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitError {
    /// The plugin refused its config.
    Refused { instance: String, message: String },
    /// The plugin panicked in `new`.
    Panicked { instance: String, message: String },
    /// The config could not be serialised (never expected).
    Config { instance: String, message: String },
    /// The instance could not be started at all, whatever its config (an isolated instance's
    /// process did not start, or its library no longer matches its pinned `sha256`).
    Unavailable { instance: String, message: String },
}

impl std::fmt::Display for InitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InitError::Refused { instance, message } => {
                write!(f, "plugin `{instance}` refused its config: {message}")
            }
            InitError::Panicked { instance, message } => {
                write!(f, "plugin `{instance}` panicked while starting: {message}")
            }
            InitError::Config { instance, message } => {
                write!(f, "plugin `{instance}`: bad config: {message}")
            }
            InitError::Unavailable { instance, message } => {
                write!(f, "plugin `{instance}` cannot be started: {message}")
            }
        }
    }
}

impl std::error::Error for InitError {}
