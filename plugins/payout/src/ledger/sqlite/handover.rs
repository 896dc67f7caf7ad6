//! One SQLite connection per ledger file in a process, across copies of this library.
//!
//! A reload that installs a new payout version at a new library path (libraries are never
//! unloaded, so that is how one upgrades without a restart) runs a second copy of this plugin,
//! and of the SQLite built into it, in the gateway's process, beside the instance it replaces
//! until that one's last call returns. Two copies of SQLite in one process do not see each
//! other: POSIX locks belong to the process, and each copy keeps its own table of the files it
//! has open. So when the replaced instance closed its connection, its SQLite found itself the
//! file's last user, checkpointed and deleted the WAL (and the shared-memory index) the new
//! instance was writing to: every ledger write after the upgrade went to a deleted file and was
//! lost at the next crash (and a second writer at once could corrupt the file).
//!
//! So a ledger opens its connection only once no other copy of this library has the file open:
//! when this copy holds no connection to it ([`Registration`], kept per copy: statics are not
//! shared between copies) yet a descriptor of this process refers to it (read from
//! `/proc/self/fd`, whoever holds it, copies older than this code included), the connection is
//! not opened: the ledger's calls wait for that descriptor to go (the replaced instance shut
//! down once its last call returned), within [`WAIT`] from the first call that waited (then
//! they are retries at once until it is gone), and the first call after opens it. The
//! look and the open are one step for every copy ([`OpenLock`]: an exclusive `flock` on a
//! file of its own beside the ledger, `<ledger>-handover`, which, unlike a POSIX lock, holds
//! between copies in one process), so two copies waiting for the file cannot both open it. Connections of one copy share its SQLite,
//! whose locks work between them, and other processes (a `payout-report`, a `gateway check`)
//! are not counted: SQLite's locks work between processes.
//!
//! Nothing here opens the ledger file itself: closing any descriptor of a file drops every
//! POSIX lock the process holds on it, those of the other copy's SQLite included.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long calls wait for the other copy to close the file, from the first that waits.
pub(super) const WAIT: Duration = Duration::from_secs(5);

/// How often a waiting call looks again.
pub(super) const POLL: Duration = Duration::from_millis(20);

/// A file, as the kernel tells files apart: device and inode.
type FileId = (u64, u64);

/// The files this copy of the library has connections to, and how many.
static OPEN: Mutex<Option<HashMap<FileId, usize>>> = Mutex::new(None);

fn file_id(path: &Path) -> std::io::Result<Option<FileId>> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some((m.dev(), m.ino()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A connection of this copy to a file, counted while it lives: drop it after the connection.
#[derive(Debug)]
pub(super) struct Registration(FileId);

impl Registration {
    /// Counts a connection just opened to `path`.
    pub(super) fn new(path: &Path) -> std::io::Result<Registration> {
        let id = file_id(path)?.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "the ledger file vanished")
        })?;
        let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
        *open.get_or_insert_with(HashMap::new).entry(id).or_insert(0) += 1;
        Ok(Registration(id))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = open.as_mut() {
            if let Some(n) = open.get_mut(&self.0) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&self.0);
                }
            }
        }
    }
}

/// Whether a connection to `path` may be opened now: this copy already has one (its SQLite
/// sees to the rest), or no descriptor of this process refers to the file.
pub(super) fn may_open(path: &Path) -> std::io::Result<bool> {
    let Some(file) = file_id(path)? else {
        return Ok(true);
    };
    let open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
    if open.as_ref().is_some_and(|o| o.contains_key(&file)) {
        return Ok(true);
    }
    Ok(!open_here(file)?)
}

/// Whether a descriptor of this process refers to `file`.
fn open_here(file: FileId) -> std::io::Result<bool> {
    for entry in std::fs::read_dir("/proc/self/fd")? {
        // A descriptor closed meanwhile (this scan's own included), a socket or a pipe: not
        // the file.
        let Ok(entry) = entry else { continue };
        let Ok(target) = std::fs::metadata(entry.path()) else {
            continue;
        };
        if (target.dev(), target.ino()) == file {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Held while a copy looks whether it may open the ledger and opens it ([`OpenLock::take`]).
#[derive(Debug)]
pub(super) struct OpenLock {
    _held: File,
}

impl OpenLock {
    /// Takes the exclusive `flock` of `<path>-handover` (created if missing; `path` with its
    /// folder's symbolic links resolved, so every name of the ledger locks one file), waiting
    /// up to [`LOCK_WAIT`] for whoever holds it; released when dropped.
    pub(super) fn take(path: &Path) -> std::io::Result<OpenLock> {
        let lock_path = handover_file(path)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)?;
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(OpenLock { _held: file }),
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(POLL);
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(std::io::Error::other(format!(
                        "{} stayed locked for {} s",
                        lock_path.display(),
                        LOCK_WAIT.as_secs()
                    )))
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
        }
    }
}

/// How long [`OpenLock::take`] waits (the holder only looks and opens: milliseconds, seconds
/// at most while a migration runs).
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// `<path>-handover`, the ledger's folder resolved (the ledger itself too when it exists).
fn handover_file(path: &Path) -> std::io::Result<PathBuf> {
    let resolved = match std::fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let folder = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            let name = path.file_name().ok_or_else(|| {
                std::io::Error::other(format!("{} names no file", path.display()))
            })?;
            std::fs::canonicalize(folder)?.join(name)
        }
        Err(e) => return Err(e),
    };
    let mut name = resolved.into_os_string();
    name.push("-handover");
    Ok(PathBuf::from(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_another_holds_here_may_be_opened_once_it_is_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.db");
        assert!(may_open(&path).expect("scan"), "missing: open nowhere");
        std::fs::write(&path, b"x").expect("write");
        assert!(may_open(&path).expect("scan"));
        // Held by something that is not a connection of this copy (another copy's SQLite).
        let held = std::fs::File::open(&path).expect("open");
        assert!(!may_open(&path).expect("scan"));
        // Another name of the same file counts; another file does not.
        let link = dir.path().join("link.db");
        std::fs::hard_link(&path, &link).expect("link");
        assert!(!may_open(&link).expect("scan"));
        std::fs::write(dir.path().join("other.db"), b"y").expect("write");
        assert!(may_open(&dir.path().join("other.db")).expect("scan"));
        drop(held);
        assert!(may_open(&path).expect("scan"));
        let again = std::fs::File::open(&path).expect("open");
        // Once this copy holds a connection to it, another of this copy may open at once.
        let registered = Registration::new(&path).expect("register");
        assert!(may_open(&path).expect("scan"));
        drop(registered);
        assert!(!may_open(&path).expect("scan"));
        drop(again);
    }

    #[test]
    fn the_open_lock_is_exclusive_between_descriptors_of_one_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.db");
        let held = OpenLock::take(&path).expect("lock");
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let second = OpenLock::take(&path).expect("lock");
            tx.send(()).expect("send");
            drop(second);
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(200))
                .is_err(),
            "taken twice at once"
        );
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("taken once released");
        waiter.join().expect("waiter");
    }
}
