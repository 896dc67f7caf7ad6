//! A SQLite VFS that writes each transaction's WAL frames to the OS in one `pwrite`.
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
//!   tells other connections (the wal-index) that the commit exists. So this works with any
//!   `synchronous` setting, and a commit's `fsync` covers all of its frames.
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
//! A write error of held bytes is reported by the operation that wrote them (the write that
//! ends a commit, or the one after), which fails as the original write would have made it fail.
//!
//! All `unsafe` of the gateway's store is here: the VFS is a C interface.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::OnceLock;

use rusqlite::ffi;

/// The name to open connections with (`Connection::open_with_flags_and_vfs`), after
/// [`register`].
pub const VFS_NAME: &str = "gateway-walbuf";
const VFS_NAME_C: &CStr = c"gateway-walbuf";

/// At most this many bytes are held; a longer run is written through.
const MAX_HELD: usize = 4 << 20;
/// The most bytes handed to the real file in one write. The unix VFS masks a write's length
/// with `0x1ffff` (it writes at most 128 KiB − 1 per system call and loops), so a longer write
/// must be cut below that: a length of exactly 128 KiB would be written as none.
const MAX_WRITE: usize = 120 << 10;
/// After a write, a buffer that grew past this is given back rather than kept.
const KEEP_CAPACITY: usize = 256 << 10;

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

/// A WAL file: SQLite's file object (whose methods are [`WAL_METHODS`]) followed by the real
/// file's object, at [`REAL_OFFSET`] in the same allocation.
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    /// Whether writes may be held (the device has powersafe overwrite).
    hold: bool,
    /// Bytes written by SQLite and not yet by us, starting at file offset `at`.
    held: Vec<u8>,
    at: i64,
    /// The last frame header held carries a commit mark: its page ends the commit.
    commit_next: bool,
}

/// Where the real file object starts in a [`WalFile`]'s allocation (SQLite's allocations are
/// 8-byte aligned; so is this).
const REAL_OFFSET: usize = std::mem::size_of::<WalFile>().next_multiple_of(8);

static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

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
    };
    // SAFETY: the allocation starts with room for a `WalFile`, suitably aligned, not yet
    // initialized (no drop of old contents); `close` drops it.
    unsafe { ptr::write(file.cast::<WalFile>(), wal) };
    rc
}

/// The `WalFile` SQLite passes back to a method of [`WAL_METHODS`].
///
/// # Safety
/// `file` must be a file object initialized by `open` with [`WAL_METHODS`], not yet closed,
/// and not used by another thread meanwhile (SQLite uses a file from one thread at a time).
unsafe fn wal<'a>(file: *mut ffi::sqlite3_file) -> &'a mut WalFile {
    // SAFETY: per this function's contract.
    unsafe { &mut *file.cast::<WalFile>() }
}

/// The real file's methods.
///
/// # Safety
/// `real` must be an open file of the default VFS.
unsafe fn methods<'a>(real: *mut ffi::sqlite3_file) -> &'a ffi::sqlite3_io_methods {
    // SAFETY: an open file's `pMethods` is non-null and static.
    unsafe { &*(*real).pMethods }
}

/// # Safety
/// As [`methods`].
unsafe fn real_device_characteristics(real: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: per the contract; the method is SQLite's.
    unsafe { methods(real).xDeviceCharacteristics.map_or(0, |f| f(real)) }
}

/// # Safety
/// As [`methods`]; `data` points to `len` readable bytes.
unsafe fn real_write(
    real: *mut ffi::sqlite3_file,
    data: *const c_void,
    len: c_int,
    at: i64,
) -> c_int {
    MADE.fetch_add(1, Ordering::Relaxed);
    // SAFETY: per the contract.
    match unsafe { methods(real).xWrite } {
        // SAFETY: per the contract.
        Some(f) => unsafe { f(real, data, len, at) },
        None => ffi::SQLITE_IOERR_WRITE,
    }
}

impl WalFile {
    /// Writes what is held. Held bytes are gone afterwards even if the write failed: SQLite
    /// fails the operation, and a failed transaction's frames are written again from SQLite's
    /// pages if it retries.
    fn flush(&mut self) -> c_int {
        if self.held.is_empty() {
            return ffi::SQLITE_OK;
        }
        let mut rc = ffi::SQLITE_OK;
        let mut at = self.at;
        for piece in self.held.chunks(MAX_WRITE) {
            // At most MAX_WRITE bytes: both conversions hold.
            let len = c_int::try_from(piece.len()).unwrap_or(c_int::MAX);
            // SAFETY: `real` is open while `self` is; `piece` is `len` readable bytes.
            rc = unsafe { real_write(self.real, piece.as_ptr().cast(), len, at) };
            if rc != ffi::SQLITE_OK {
                break;
            }
            at = at.saturating_add(i64::from(len));
        }
        self.discard();
        rc
    }

    /// Forgets what is held, counted as dropped: an unfinished transaction's frames.
    fn drop_held(&mut self) {
        DROPPED.fetch_add(self.held.len() as u64, Ordering::Relaxed);
        self.discard();
    }

    /// Forgets what is held.
    fn discard(&mut self) {
        self.held.clear();
        self.commit_next = false;
        if self.held.capacity() > KEEP_CAPACITY {
            self.held = Vec::new();
        }
    }
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes a file it opened through `open`, once, and never uses it after.
    let wal = unsafe { wal(file) };
    // Committed frames were written when their commit mark arrived: anything still held is an
    // unfinished transaction's, and another connection may have written over its place.
    wal.drop_held();
    let real = wal.real;
    // SAFETY: the real file is open; it is closed once, here.
    let closed = unsafe { methods(real).xClose.map_or(ffi::SQLITE_OK, |f| f(real)) };
    // SAFETY: `file` holds the `WalFile` written by `open`; dropped once (its buffer), after
    // which SQLite frees the allocation.
    unsafe { ptr::drop_in_place(file.cast::<WalFile>()) };
    closed
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    len: c_int,
    at: i64,
) -> c_int {
    ASKED.fetch_add(1, Ordering::Relaxed);
    // SAFETY: SQLite's file object, opened by `open`.
    let wal = unsafe { wal(file) };
    let Ok(n) = usize::try_from(len) else {
        // SAFETY: passed on unchanged.
        return unsafe { real_write(wal.real, data, len, at) };
    };
    let end = i64::try_from(wal.held.len()).map_or(i64::MAX, |held| wal.at.saturating_add(held));
    let continues = !wal.held.is_empty() && at == end;
    if !continues || wal.held.len() + n > MAX_HELD {
        let rc = wal.flush();
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    if !wal.hold || n > MAX_HELD {
        // SAFETY: SQLite's buffer of `len` bytes.
        return unsafe { real_write(wal.real, data, len, at) };
    }
    if wal.held.is_empty() {
        wal.at = at;
    }
    // SAFETY: SQLite passes `len` readable bytes at `data`.
    let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), n) };
    wal.held.extend_from_slice(bytes);
    if n == FRAME_HEADER {
        // A frame's header (SQLite writes nothing else of this size to a WAL): bytes 4..8 are
        // the database size after a commit, zero in other frames.
        wal.commit_next = bytes.get(4..8).is_some_and(|size| size != [0; 4]);
        ffi::SQLITE_OK
    } else if wal.commit_next {
        // The commit frame's page: the commit is complete.
        wal.flush()
    } else {
        ffi::SQLITE_OK
    }
}

/// The size of a WAL frame's header (the file format's `WAL_FRAME_HDRSIZE`).
const FRAME_HEADER: usize = 24;

/// Writes what is held, then calls the real method `call` if that went well.
///
/// # Safety
/// `file` is SQLite's file object, opened by `open`.
unsafe fn flushed(
    file: *mut ffi::sqlite3_file,
    call: impl FnOnce(*mut ffi::sqlite3_file, &ffi::sqlite3_io_methods) -> c_int,
) -> c_int {
    // SAFETY: per the contract.
    let wal = unsafe { wal(file) };
    let rc = wal.flush();
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    // SAFETY: the real file is open while ours is.
    call(wal.real, unsafe { methods(wal.real) })
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    len: c_int,
    at: i64,
) -> c_int {
    // SAFETY: SQLite's file object and buffer, passed on.
    unsafe {
        flushed(file, |real, m| {
            m.xRead
                .map_or(ffi::SQLITE_IOERR_READ, |f| f(real, buf, len, at))
        })
    }
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    // SAFETY: SQLite's file object, passed on.
    unsafe {
        flushed(file, |real, m| {
            m.xTruncate
                .map_or(ffi::SQLITE_IOERR_TRUNCATE, |f| f(real, size))
        })
    }
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: SQLite's file object, passed on.
    unsafe {
        flushed(file, |real, m| {
            m.xSync.map_or(ffi::SQLITE_IOERR_FSYNC, |f| f(real, flags))
        })
    }
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    // SAFETY: SQLite's file object and out-pointer, passed on.
    unsafe {
        flushed(file, |real, m| {
            m.xFileSize
                .map_or(ffi::SQLITE_IOERR_FSTAT, |f| f(real, size))
        })
    }
}

unsafe extern "C" fn file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: SQLite's file object and argument, passed on.
    unsafe {
        flushed(file, |real, m| {
            m.xFileControl
                .map_or(ffi::SQLITE_NOTFOUND, |f| f(real, op, arg))
        })
    }
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: SQLite's file object; locks move no bytes, so nothing is written first.
    let real = unsafe { wal(file) }.real;
    // SAFETY: the real file is open.
    unsafe {
        methods(real)
            .xLock
            .map_or(ffi::SQLITE_OK, |f| f(real, level))
    }
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: as `lock`.
    let real = unsafe { wal(file) }.real;
    // SAFETY: the real file is open.
    unsafe {
        methods(real)
            .xUnlock
            .map_or(ffi::SQLITE_OK, |f| f(real, level))
    }
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: as `lock`.
    let real = unsafe { wal(file) }.real;
    // SAFETY: the real file is open; `out` is SQLite's.
    unsafe {
        methods(real)
            .xCheckReservedLock
            .map_or(ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, |f| f(real, out))
    }
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite's file object.
    let real = unsafe { wal(file) }.real;
    // SAFETY: the real file is open.
    unsafe { methods(real).xSectorSize.map_or(4096, |f| f(real)) }
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite's file object.
    let real = unsafe { wal(file) }.real;
    // SAFETY: the real file is open.
    unsafe { real_device_characteristics(real) }
}

#[cfg(test)]
mod tests;
