//! Opening the embedded store's file: a connection through the WAL-buffering VFS with the
//! store's settings, and the lock file that keeps a second gateway off the same store.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::deadline;
use crate::store::StoreError;

/// A connection to the store at `path`, through the VFS that writes a commit's WAL frames at
/// once ([`sqlite_walbuf`], attached: a rolled-back transaction's frames are dropped).
pub(super) fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    sqlite_walbuf::register().map_err(|e| StoreError(e.to_string()))?;
    let conn = Connection::open_with_flags_and_vfs(
        path,
        rusqlite::OpenFlags::default(),
        sqlite_walbuf::VFS_NAME,
    )
    .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
    sqlite_walbuf::attach(&conn);
    // A write lock held by another process is waited for this long at most; the writer
    // shortens it for a batch whose events would otherwise wait past their deadline (an event
    // is answered 503 well within Lark's 3 s: see `deadline`).
    conn.busy_timeout(deadline::BUSY_WAIT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Creates the store's file, empty, readable by its owner only (0600), unless it exists: every
/// event's body holds its app's verification token, and SQLite gives the WAL and shared-memory
/// files it makes beside it the same mode. An existing file keeps the mode it has.
pub(super) fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut create = std::fs::OpenOptions::new();
    create.write(true).create_new(true).mode(0o600);
    let made = match create.open(path) {
        // A symbolic link whose target does not exist yet is "there" for `create_new`: its
        // target is made (0600) through it, as SQLite would have made it (0644).
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && !path.exists() => {
            create.create_new(false).create(true).open(path)
        }
        made => made,
    };
    match made {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError(format!("cannot create {}: {e}", path.display()))),
    }
}

/// Takes the exclusive lock of the store at `path` (on `<path>.lock`, released when the
/// process exits or its writer stops), or says that another gateway holds it.
pub(super) fn lock(path: &Path) -> Result<std::fs::File, StoreError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError(format!("cannot open {}: {e}", lock_path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError(format!(
            "the store at {} is in use by another running gateway (it holds {}); one gateway \
             per embedded store",
            path.display(),
            lock_path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError(format!(
            "cannot lock {}: {e}",
            lock_path.display()
        ))),
    }
}
