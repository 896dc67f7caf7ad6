//! A SQLite VFS that writes each commit's WAL frames to the OS in one `pwrite` (a few, for a
//! commit over 120 KiB).
//!
//! SQLite writes a WAL frame as two `write` calls (its 24-byte header, then the page), so a
//! transaction that changes 12 pages costs 24 system calls before its `fsync`. On the machines
//! the gateway is measured on, each of those small writes into the page cache costs about as
//! much as one write of the whole transaction. This VFS wraps the default one: a WAL file opened
//! through it keeps consecutive writes in memory and hands them to the real file in one write
//! at the next operation that must see them. Every other file (the database, its shared-memory
//! index, journals) is the default VFS's own object, untouched.
//!
//! # What stays the same
//! The bytes in the file, their order, and when they are there:
//! - A commit's frames are written as soon as SQLite has handed over its last one (the frame
//!   whose header carries the database size: the commit mark), before SQLite syncs the WAL or
//!   tells other connections (the wal-index) that the commit exists, and a commit's `fsync`
//!   covers all of its frames. One exception: after a write error inside a frame header, the
//!   next transaction's commit header may be written through while its page is held until the
//!   following sync or read, so a commit is known to be whole in the file at its sync, not at
//!   its last write. The gateway syncs every commit (`synchronous = FULL`), where that makes no
//!   difference; with `NORMAL` a crash in that window could lose that commit.
//! - Before any read, sync, truncation, size query or file control, everything held is written,
//!   so SQLite (re-reading a frame it spilled mid-transaction) reads what it wrote.
//! - A write that does not continue the held bytes writes them first: writes reach the file in
//!   the order SQLite made them.
//! - Frames of a transaction that is rolled back are never written late, when another
//!   connection may have written its own frames at the same place: [`attach`] installs a
//!   rollback hook that drops them, and closing a file drops them (only an uncommitted
//!   transaction's frames can still be held then).
//!
//! A WAL on a device without `SQLITE_IOCAP_POWERSAFE_OVERWRITE` (SQLite then writes part of the
//! last frame after the sync) is not held at all: it is written through.
//!
//! A write that rewrites bytes below the furthest one written (SQLite rewrites frame headers
//! with new checksums at a commit that wrote a spilled page again) is written through at once.
//!
//! A write error of held bytes is reported by the operation that wrote them: the write that
//! ends a commit, or the one after, fails as the original write would have made it fail; a
//! read, sync, truncation, size query or file control fails with `SQLITE_IOERR_WRITE`, so SQLite
//! rolls the whole transaction back (an error it takes for a statement's own, like
//! `SQLITE_FULL` from a read, would let it commit frames that were never written).
//!
//! All `unsafe` of the gateway's store is here: the VFS is a C interface.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::OnceLock;

use rusqlite::ffi;

mod file;

use file::{real_device_characteristics, wal, WalFile, REAL_OFFSET, WAL_METHODS};

/// The name to open connections with (`Connection::open_with_flags_and_vfs`), after
/// [`register`].
pub const VFS_NAME: &str = "gateway-walbuf";
const VFS_NAME_C: &CStr = c"gateway-walbuf";

/// The default VFS this one wraps, set once by [`register`].
static REAL_VFS: AtomicPtr<ffi::sqlite3_vfs> = AtomicPtr::new(ptr::null_mut());

/// Writes SQLite asked for on WAL files, and writes made to the files, since the start.
static ASKED: AtomicU64 = AtomicU64::new(0);
static MADE: AtomicU64 = AtomicU64::new(0);
/// Bytes of rolled-back transactions dropped without being written.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Why the VFS could not be registered: SQLite's result code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterError(pub c_int);

impl std::fmt::Display for RegisterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot register the SQLite VFS {VFS_NAME} (SQLite code {})",
            self.0
        )
    }
}

impl std::error::Error for RegisterError {}

/// Makes a connection opened through this VFS drop the held frames of a transaction it rolls
/// back (see the module's docs). Call it once per connection, right after opening; it takes the
/// connection's rollback hook (do not set another).
pub fn attach(conn: &rusqlite::Connection) {
    // SAFETY: the handle is valid while `conn` lives, and SQLite calls the hook only on it.
    let db = unsafe { conn.handle() };
    // SAFETY: `db` is an open connection; the hook's argument is the connection itself, which
    // outlives every call of its hook.
    unsafe { ffi::sqlite3_rollback_hook(db, Some(on_rollback), db.cast()) };
}

/// The rollback hook: drops what the connection's WAL file still holds.
unsafe extern "C" fn on_rollback(db: *mut c_void) {
    let mut file: *mut ffi::sqlite3_file = ptr::null_mut();
    // SAFETY: `db` is the connection the hook was set on, in the middle of its rollback (on its
    // own thread); asking for its WAL file changes nothing.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            db.cast(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_JOURNAL_POINTER,
            ptr::addr_of_mut!(file).cast(),
        )
    };
    // SAFETY: a non-null file returned by SQLite is open; only ours have WAL_METHODS.
    if rc == ffi::SQLITE_OK
        && !file.is_null()
        && unsafe { (*file).pMethods } == ptr::addr_of!(WAL_METHODS)
    {
        // SAFETY: ours, used by this thread (the connection's) only.
        unsafe { wal(file) }.drop_held();
    }
}

/// Registers the VFS under [`VFS_NAME`] (not as the default), once per process; later calls
/// return the first call's result.
pub fn register() -> Result<(), RegisterError> {
    static DONE: OnceLock<Result<(), RegisterError>> = OnceLock::new();
    *DONE.get_or_init(register_once)
}

/// WAL writes counted since the process started: what SQLite asked for, and what reached the
/// files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub asked: u64,
    pub made: u64,
    pub dropped_bytes: u64,
}

/// The counts so far, over every WAL file opened through this VFS.
pub fn stats() -> Stats {
    Stats {
        asked: ASKED.load(Ordering::Relaxed),
        made: MADE.load(Ordering::Relaxed),
        dropped_bytes: DROPPED.load(Ordering::Relaxed),
    }
}

fn register_once() -> Result<(), RegisterError> {
    // SAFETY: `sqlite3_vfs_find(NULL)` initializes SQLite if needed and returns the default VFS,
    // which SQLite never frees, or NULL.
    let real = unsafe { ffi::sqlite3_vfs_find(ptr::null()) };
    if real.is_null() {
        return Err(RegisterError(ffi::SQLITE_ERROR));
    }
    // SAFETY: `real` is a valid, registered VFS; copying the struct copies its plain fields and
    // function pointers. The copied functions get this VFS as their first argument: the default
    // (unix) VFS reads only `mxPathname` and `pAppData` from it, copied unchanged, and its
    // `xOpen`, which also depends on which VFS object it is given, is replaced by `open`, which
    // passes the real one.
    let mut vfs: ffi::sqlite3_vfs = unsafe { *real };
    let real_size = usize::try_from(vfs.szOsFile).map_err(|_| RegisterError(ffi::SQLITE_ERROR))?;
    vfs.szOsFile =
        c_int::try_from(REAL_OFFSET + real_size).map_err(|_| RegisterError(ffi::SQLITE_ERROR))?;
    vfs.pNext = ptr::null_mut();
    vfs.zName = VFS_NAME_C.as_ptr();
    vfs.xOpen = Some(open);
    REAL_VFS.store(real, Ordering::Release);
    // Leaked on purpose: SQLite keeps the pointer for the life of the process.
    let vfs = Box::into_raw(Box::new(vfs));
    // SAFETY: `vfs` points to a complete VFS that lives forever; SQLite links it into its list.
    let rc = unsafe { ffi::sqlite3_vfs_register(vfs, 0) };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(RegisterError(rc))
    }
}

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let real_vfs = REAL_VFS.load(Ordering::Acquire);
    // SAFETY: set before this VFS was registered, so before SQLite could call this; the default
    // VFS lives forever.
    let Some(real_open) = (unsafe { real_vfs.as_ref() }).and_then(|v| v.xOpen) else {
        return ffi::SQLITE_ERROR;
    };
    if flags & ffi::SQLITE_OPEN_WAL == 0 {
        // Not a WAL: the real file object takes the allocation (it is at least its size) and
        // SQLite calls the real methods directly.
        // SAFETY: the arguments are SQLite's own, passed on unchanged to the VFS that owns them.
        return unsafe { real_open(real_vfs, name, file, flags, out_flags) };
    }
    // SAFETY: `file` is an allocation of `szOsFile` bytes = REAL_OFFSET + the real size.
    let real = unsafe { file.cast::<u8>().add(REAL_OFFSET) }.cast::<ffi::sqlite3_file>();
    // SAFETY: as above, with the real object's part of the allocation.
    let rc = unsafe { real_open(real_vfs, name, real, flags, out_flags) };
    // SAFETY: `real` was just initialized (or at least its `pMethods` set) by the real xOpen.
    let real_methods = unsafe { (*real).pMethods };
    if real_methods.is_null() {
        // Nothing to close: SQLite must not call ours either.
        // SAFETY: `file` is SQLite's allocation for this file object.
        unsafe { (*file).pMethods = ptr::null() };
        return rc;
    }
    // SAFETY: the real file is open (SQLite calls its close through ours even if rc failed).
    let characteristics = unsafe { real_device_characteristics(real) };
    let wal = WalFile {
        base: ffi::sqlite3_file {
            pMethods: &WAL_METHODS,
        },
        real,
        hold: characteristics & ffi::SQLITE_IOCAP_POWERSAFE_OVERWRITE != 0,
        held: Vec::new(),
        at: 0,
        commit_next: false,
        high_water: 0,
    };
    // SAFETY: the allocation starts with room for a `WalFile`, suitably aligned, not yet
    // initialized (no drop of old contents); `close` drops it.
    unsafe { ptr::write(file.cast::<WalFile>(), wal) };
    rc
}

#[cfg(test)]
mod normal_tests;
#[cfg(test)]
mod tests;
