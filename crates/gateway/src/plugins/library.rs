//! Opening a `[[plugins]]` library: the file opened once, its content hashed and checked
//! against the pinned `sha256`, and (in process) that same open file loaded, once per path for
//! the life of the process. An isolated plugin's library is only examined here; its child loads
//! it, refusing any file whose content differs from what was examined.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use gateway_plugin::host::{DescriptorSummary, Library, LibraryFile, LoadError};

use crate::config::{Config, Isolation, PluginSpec};

/// What each path loaded in this process: the SHA-256 of what it held, and the library. Libraries are never unloaded, so another file with other bytes at the same path is
/// refused (see [`open`] and the registry's `reusable`); one with the same bytes (a deploy that copies every
/// file again) is served by the library already loaded, never loaded a second time (a second
/// copy would have globals of its own).
type LoadedLibrary = (String, Library);

pub(super) fn loaded() -> &'static Mutex<HashMap<PathBuf, LoadedLibrary>> {
    static LOADED: OnceLock<Mutex<HashMap<PathBuf, LoadedLibrary>>> = OnceLock::new();
    LOADED.get_or_init(Default::default)
}

/// An isolated plugin's library as the gateway examined it, without loading it: the SHA-256 of
/// the content read from one open file (its pin checked). Its child loads only a file with this
/// content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Examined {
    pub(super) sha256: String,
    /// Whether `sha256` is the config's pin.
    pub(super) pinned: bool,
}

/// A library opened for an instance: loaded here, or only examined (isolated).
pub(super) enum Opened {
    Loaded(Library),
    Examined(Examined),
}

/// Opens every library of the config and checks its descriptor; all problems are returned
/// together, each with its place in the config. An isolated plugin's library is loaded and
/// described by a short-lived child process, never by this one.
pub fn open_all(config: &Config) -> Result<Vec<(PluginSpec, DescriptorSummary)>, Vec<String>> {
    let mut problems = Vec::new();
    let mut out = Vec::new();
    for (i, spec) in config.plugins.iter().enumerate() {
        let described = open(spec).and_then(|opened| match opened {
            Opened::Loaded(lib) => Ok(lib.summary()),
            Opened::Examined(e) => {
                crate::isolation::describe::describe(&spec.library, &e.sha256, e.pinned)
            }
        });
        match described {
            Ok(descriptor) => out.push((spec.clone(), descriptor)),
            Err(e) => problems.push(format!("plugins[{i}] ({}): {e}", spec.name)),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// The SHA-256 of a file's content, lowercase hex (what `sha256sum` prints).
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Refuses an opened library file whose content (hashed from the open file, the one that
/// loads) is not the one `sha256` pins.
pub(super) fn check_pin(file: &LibraryFile, sha256: Option<&str>) -> Result<(), String> {
    let Some(expected) = sha256 else {
        return Ok(());
    };
    let actual = file.sha256();
    if actual == expected {
        return Ok(());
    }
    Err(format!(
        "{} does not match its pinned sha256: expected {expected}, found {actual}; refusing to \
         load it (the file was replaced, rebuilt or tampered with; if this build is the one \
         you mean to run, set `sha256 = \"{actual}\"`)",
        file.path().display()
    ))
}

/// The check an isolated plugin's child makes on the file it opened, before loading it: its
/// content must hash to `sha256`, what the gateway examined (`pinned`: the config's pin, and
/// the refusal says so).
pub fn check_examined(file: &LibraryFile, sha256: &str, pinned: bool) -> Result<(), String> {
    if pinned {
        return check_pin(file, Some(sha256));
    }
    let actual = file.sha256();
    if actual == sha256 {
        return Ok(());
    }
    Err(format!(
        "{} is not the file the gateway examined: expected {sha256}, found {actual} (sha256); \
         refusing to load it (the file was replaced since the gateway started or last \
         reloaded; reload the config to examine and run the file at the path now)",
        file.path().display()
    ))
}

/// Opens and hashes an isolated plugin's library and checks its pin, without loading it.
pub(super) fn examine(spec: &PluginSpec) -> Result<Examined, String> {
    let file = LibraryFile::open(&spec.library).map_err(|e| e.to_string())?;
    check_pin(&file, spec.sha256.as_deref())?;
    Ok(Examined {
        sha256: file.sha256().to_owned(),
        pinned: spec.sha256.is_some(),
    })
}

/// Opens the library once and checks that open file (the path's history, the pin). In process,
/// loads that same file: a file renamed over the path meanwhile is not what loads. Isolated, only
/// examines it ([`examine`]).
pub(super) fn open(spec: &PluginSpec) -> Result<Opened, String> {
    if spec.isolation == Isolation::Process {
        return examine(spec).map(Opened::Examined);
    }
    let path = spec.library.as_path();
    let file = LibraryFile::open(path).map_err(|e| e.to_string())?;
    let before = loaded().lock().ok().and_then(|l| l.get(path).cloned());
    if let Some((sha256, lib)) = before {
        // Other bytes, in a new file or the loaded one rewritten in place: refused (the
        // library loaded then is what would run).
        if sha256 != file.sha256() {
            return Err(changed_on_disk(path));
        }
        // The file it loaded, or the same bytes installed again: the library loaded then.
        check_pin(&file, spec.sha256.as_deref())?;
        return Ok(Opened::Loaded(lib));
    }
    check_pin(&file, spec.sha256.as_deref())?;
    let sha256 = file.sha256().to_owned();
    let lib = file.load().map_err(|e: LoadError| e.to_string())?;
    if let Ok(mut loaded) = loaded().lock() {
        loaded
            .entry(path.to_path_buf())
            .or_insert((sha256, lib.clone()));
    }
    Ok(Opened::Loaded(lib))
}

pub(super) fn changed_on_disk(path: &Path) -> String {
    format!(
        "{} changed on disk since this gateway loaded it; libraries are never unloaded, so \
         install the new version under a new path (e.g. libname-2.so) and point `library` at \
         it, or restart",
        path.display()
    )
}
