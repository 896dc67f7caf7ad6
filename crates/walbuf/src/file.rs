//! The WAL file object: what is held, and SQLite's file methods on it (each writes what is
//! held first where it must; see the crate's docs for the rules).
#![allow(unsafe_code)]

use std::ffi::{c_int, c_void};
use std::ptr;
use std::sync::atomic::Ordering;

use rusqlite::ffi;

use super::{ASKED, DROPPED, MADE};

/// At most this many bytes are held: a write that would go past it writes what is held first,
/// and a single write longer than it is written through.
const MAX_HELD: usize = 4 << 20;
/// The most bytes handed to the real file in one write. The unix VFS masks a write's length
/// with `0x1ffff` (it writes at most 128 KiB − 1 per system call and loops), so a longer write
/// must be cut below that: a length of exactly 128 KiB would be written as none.
const MAX_WRITE: usize = 120 << 10;
/// After a write, a buffer that grew past this is given back rather than kept.
const KEEP_CAPACITY: usize = 256 << 10;

/// A WAL file: SQLite's file object (whose methods are [`WAL_METHODS`]) followed by the real
/// file's object, at [`REAL_OFFSET`] in the same allocation.
#[repr(C)]
pub(crate) struct WalFile {
    pub(crate) base: ffi::sqlite3_file,
    pub(crate) real: *mut ffi::sqlite3_file,
    /// Whether writes may be held (the device has powersafe overwrite).
    pub(crate) hold: bool,
    /// Bytes written by SQLite and not yet by us, starting at file offset `at`.
    pub(crate) held: Vec<u8>,
    pub(crate) at: i64,
    /// The last frame header held carries a commit mark: its page ends the commit.
    pub(crate) commit_next: bool,
    /// The end of the furthest write so far (back to the header's end when the WAL restarts at
    /// offset 0): a write below it rewrites earlier bytes (the frame headers SQLite rewrites
    /// with new checksums at a commit) and is written through, never held.
    pub(crate) high_water: i64,
}

/// Where the real file object starts in a [`WalFile`]'s allocation (SQLite's allocations are
/// 8-byte aligned; so is this).
pub(crate) const REAL_OFFSET: usize = std::mem::size_of::<WalFile>().next_multiple_of(8);

pub(crate) static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
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

/// The `WalFile` SQLite passes back to a method of [`WAL_METHODS`].
///
/// # Safety
/// `file` must be a file object initialized by `open` with [`WAL_METHODS`], not yet closed,
/// and not used by another thread meanwhile (SQLite uses a file from one thread at a time).
pub(crate) unsafe fn wal<'a>(file: *mut ffi::sqlite3_file) -> &'a mut WalFile {
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
pub(crate) unsafe fn real_device_characteristics(real: *mut ffi::sqlite3_file) -> c_int {
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
    pub(crate) fn drop_held(&mut self) {
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
    if at == 0 {
        wal.high_water = 0; // the WAL restarts: its header, then frames from the start
    }
    let rewrite = at < wal.high_water && !continues;
    wal.high_water = wal.high_water.max(at.saturating_add(i64::from(len)));
    // The page of a commit frame whose header is held ends the commit, even when the held
    // bytes are written first to make room.
    let commit_page = continues && wal.commit_next;
    if !continues || wal.held.len() + n > MAX_HELD {
        let rc = wal.flush();
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    if !wal.hold || n > MAX_HELD || rewrite {
        // SAFETY: SQLite's buffer of `len` bytes.
        return unsafe { real_write(wal.real, data, len, at) };
    }
    wal.commit_next |= commit_page;
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
    if wal.flush() != ffi::SQLITE_OK {
        // Reported as the write error it is: a read (or size query) that failed with, say,
        // SQLITE_FULL would let SQLite undo only the statement and go on to commit the
        // transaction whose frames were never written; a write error rolls it all back.
        return ffi::SQLITE_IOERR_WRITE;
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
mod tests {
    use super::*;

    /// A file object that is never handed to SQLite: only its buffer is used.
    fn holding(capacity: usize) -> WalFile {
        WalFile {
            base: ffi::sqlite3_file {
                pMethods: ptr::null(),
            },
            real: ptr::null_mut(),
            hold: true,
            held: Vec::with_capacity(capacity),
            at: 0,
            commit_next: true,
            high_water: 0,
        }
    }

    #[test]
    fn discarding_keeps_a_buffer_up_to_its_limit_and_frees_a_larger_one() {
        for (capacity, kept) in [
            (4096, true),
            (KEEP_CAPACITY, true),
            (KEEP_CAPACITY + 1, false),
        ] {
            let mut wal = holding(capacity);
            wal.held.push(1);
            wal.discard();
            assert!(
                wal.held.is_empty() && !wal.commit_next,
                "capacity {capacity}"
            );
            assert_eq!(wal.held.capacity() >= capacity, kept, "capacity {capacity}");
        }
    }
}
