//! Loading a plugin library from one open file, so the bytes checked are the bytes loaded.
//!
//! [`LibraryFile::open`] opens the file once and hashes it (SHA-256) from that open file;
//! [`LibraryFile::load`] has the dynamic loader map that same open file, through its name in
//! `/proc/self/fd` (Linux). A file renamed over the path between the two is not what loads, so
//! a `sha256` pin checked against [`LibraryFile::sha256`] holds for the code that runs.
//!
//! glibc's `dlopen` hands back an object it already loaded under the same *name*, or from the
//! same *file* (device and inode). Hence:
//! - every descriptor whose name was given to `dlopen` stays open for the life of the process
//!   (libraries are never unloaded either), so its number, and with it its name, never comes
//!   back for another file;
//! - a file loaded before (same device and inode) is not given to `dlopen` again: what was
//!   loaded from it (the library, or the reason it was refused) is returned, once its content
//!   is found to hash as it did then. A loaded file rewritten in place (same inode, other
//!   bytes) is refused: the loaded code is not those bytes;
//! - a library refused for its descriptor stays loaded, under its own name and inode only: a
//!   fixed file installed at the same path (a new file: written beside it and renamed over it,
//!   or the old one deleted first) is loaded anew.
//!
//! One lock covers the look-up, the `dlopen` and the descriptor checks, so two threads loading
//! the same file cannot both give it to the loader.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use sha2::{Digest, Sha256};

use super::{Library, LoadError};

/// Which file a library was loaded from: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// A library file opened once and hashed from that open file; [`LibraryFile::load`] loads the
/// very file that was hashed.
#[derive(Debug)]
pub struct LibraryFile {
    path: PathBuf,
    file: File,
    id: FileId,
    sha256: String,
}

/// What this process loaded from one file.
struct Loaded {
    /// Kept open for the life of the process: its `/proc/self/fd` name is what the dynamic
    /// loader knows the object by, and must never name another file.
    _file: File,
    sha256: String,
    result: Result<Library, LoadError>,
}

fn loaded() -> &'static Mutex<HashMap<FileId, Loaded>> {
    static LOADED: OnceLock<Mutex<HashMap<FileId, Loaded>>> = OnceLock::new();
    LOADED.get_or_init(Default::default)
}

impl LibraryFile {
    /// Opens `path` and hashes its content from the open file.
    pub fn open(path: &Path) -> Result<LibraryFile, LoadError> {
        let path = path.to_path_buf();
        let failed = |path: &Path, e: std::io::Error| LoadError::Open {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LoadError::NotFound { path })
            }
            Err(e) => return Err(failed(&path, e)),
        };
        let meta = file.metadata().map_err(|e| failed(&path, e))?;
        if !meta.is_file() {
            return Err(LoadError::Open {
                path,
                reason: "not a regular file".into(),
            });
        }
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher).map_err(|e| failed(&path, e))?;
        let sha256 = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(LibraryFile {
            path,
            file,
            id: FileId {
                dev: meta.dev(),
                ino: meta.ino(),
            },
            sha256,
        })
    }

    /// The path it was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The SHA-256 of the content read from the open file, lowercase hex (what `sha256sum`
    /// prints).
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The file opened (device and inode).
    pub fn id(&self) -> FileId {
        self.id
    }

    /// Loads the opened file (not whatever is at its path now) and checks its ABI. A file this
    /// process loaded before gives what it gave then, unless its content changed since
    /// ([`LoadError::ChangedInPlace`]).
    pub fn load(self) -> Result<Library, LoadError> {
        let mut loaded = loaded().lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(before) = loaded.get(&self.id) {
            if before.sha256 != self.sha256 {
                return Err(LoadError::ChangedInPlace {
                    path: self.path,
                    loaded: before.sha256.clone(),
                    found: self.sha256,
                });
            }
            // `self.file` is closed: its number was never given to the loader.
            return match &before.result {
                Ok(lib) => Ok(lib.at(self.path)),
                Err(e) => Err(e.clone().at(self.path)),
            };
        }
        let name = PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()));
        // A `dlopen` that failed left nothing loaded under the name: the descriptor is closed.
        let object = Library::dlopen(&self.path, &name)?;
        let result = Library::from_object(self.path.clone(), object);
        loaded.insert(
            self.id,
            Loaded {
                _file: self.file,
                sha256: self.sha256,
                result: result.clone(),
            },
        );
        result
    }
}
