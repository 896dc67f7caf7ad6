//! The file sink: appends batches of lines under a lock and, with `fsync = "always"`, syncs them
//! outside it, concurrent batches sharing one `fdatasync` (group commit).
//!
//! What it guarantees when a write or a sync fails, or the file goes away:
//! - A write that fails part-way (a full disk) leaves its fragment ended by a line break before
//!   the next batch, so no later line is glued to it (the fragment is a line that does not
//!   parse). The lines it wrote whole before the error are made durable as any batch (synced,
//!   with `fsync`) and reported written ([`AppendError::whole`]): only the rest of the batch is
//!   retried, so no line appears twice. A file opened (at
//!   start, or again after a rotation) that does not end with a line break is such a fragment
//!   too (a process killed in the middle of a write, a disk that filled up before a restart).
//! - A failed sync fails every batch it covered, not only the one that ran it: Linux reports a
//!   writeback error once per open file and marks the pages clean, so a second sync of the
//!   same lines would succeed without them.
//! - Before each batch, a file whose name no longer leads to it (deleted, or renamed away by a
//!   rotation) is reopened at its path (created again); lines written before are synced first
//!   (should that sync fail, their batches fail as above and the new file is used all the same).
//! - A file it creates is private (mode 0600, folders 0700). With `fsync = "always"`, the
//!   name of a file it creates is synced (its folder's entry; the open fails otherwise), and,
//!   on a best-effort basis (a folder the gateway cannot read cannot be synced, and such setups
//!   worked), the folders it creates and the name of a file it finds at each open (a rotation's
//!   new file made by another program); the file must be a regular file (a sync of a pipe or a
//!   device fails every time).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The open file and what the appender knows about it.
#[derive(Debug)]
struct Appender {
    file: File,
    /// The last write failed part-way: the next one starts with a line break.
    torn: bool,
}

/// The sync handle and how far it got.
#[derive(Debug)]
struct Synced {
    file: File,
    /// Every batch up to this count is on disk.
    through: u64,
    /// Every batch up to this count was covered by a sync that failed.
    failed_through: u64,
}

/// The file sink of one logger instance.
#[derive(Debug)]
pub(crate) struct FileSink {
    path: PathBuf,
    fsync: bool,
    /// Batches appended so far (raised under `appender`'s lock, read without it: the sync
    /// stage never takes that lock while it holds `synced`, which `reopen` takes inside it).
    written: AtomicU64,
    /// Batches whose write began (the one being written included): raised under `appender`'s
    /// lock before the write. A failed sync fails all of them, not only those counted in
    /// `written` when it began: the kernel writes back whatever pages are dirty, a batch still
    /// being written included, and reports the failure once per open file (that batch's own
    /// sync would then pass).
    started: AtomicU64,
    appender: Mutex<Appender>,
    synced: Mutex<Synced>,
}

impl FileSink {
    /// Opens (creating it and its folders if needed) the file at `path`.
    pub(crate) fn open(path: PathBuf, fsync: bool) -> Result<FileSink, String> {
        if fsync {
            if let Ok(meta) = std::fs::metadata(&path) {
                if !meta.is_file() {
                    return Err(format!(
                        "logger config: `fsync = \"always\"` (the default) needs a regular file, and {} is not one (a pipe, a device or a folder cannot be synced): set `fsync = \"never\"`, or `stdout = true` for standard output",
                        path.display()
                    ));
                }
            }
        }
        let opened = open_pair(&path, fsync)
            .map_err(|e| format!("logger: cannot open {}: {e}", path.display()))?;
        Ok(FileSink {
            path,
            fsync,
            written: AtomicU64::new(0),
            started: AtomicU64::new(0),
            appender: Mutex::new(Appender {
                file: opened.file,
                torn: opened.torn,
            }),
            synced: Mutex::new(Synced {
                file: opened.sync,
                through: 0,
                failed_through: 0,
            }),
        })
    }

    /// Appends `bytes` (whole lines) with one `write`; with `fsync`, returns once they are on
    /// disk. On an error, how many of the first bytes are whole lines in the file (and on disk,
    /// with `fsync`).
    pub(crate) fn append(&self, bytes: &[u8]) -> Result<(), AppendError> {
        let poisoned = || std::io::Error::other(format!("{} lock poisoned", self.path.display()));
        let (mine, failed) = {
            let mut a = self.appender.lock().map_err(|_| poisoned())?;
            if moved(&a.file, &self.path) {
                self.reopen(&mut a)?;
            }
            let Appender { file, torn } = &mut *a;
            // Both counters move only under this lock: a batch's number is the same in each.
            let mine = self.started.fetch_add(1, Ordering::SeqCst) + 1;
            let failed = match write_lines(file, torn, bytes) {
                Ok(()) => None,
                // The lines written whole stay (made durable below, reported written). A batch
                // that wrote none keeps its number all the same (counted written: harmless for
                // a sync's target): given back, it could be taken again by a later batch that a
                // failed sync which read `begun` meanwhile had already booked as failed.
                Err(AppendError { error, whole }) => Some((error, whole)),
            };
            self.written.store(mine, Ordering::SeqCst);
            (mine, failed)
        };
        if self.fsync {
            let mut s = self.synced.lock().map_err(|_| poisoned())?;
            // Every batch counted here was appended (whole, or its whole lines) before the count.
            let target = self.written.load(Ordering::SeqCst);
            let begun = || self.started.load(Ordering::SeqCst);
            sync_covering(&mut s, mine, target, begun, |f| f.sync_data())?;
        }
        match failed {
            None => Ok(()),
            Some((error, whole)) => Err(AppendError { error, whole }),
        }
    }

    /// Replaces the file whose name went away with a new one at the path. The lines written to
    /// the old one are synced first (they were appended; their callers may still wait).
    fn reopen(&self, a: &mut Appender) -> std::io::Result<()> {
        let opened = open_pair(&self.path, self.fsync)?;
        let mut s = self
            .synced
            .lock()
            .map_err(|_| std::io::Error::other("lock poisoned"))?;
        let written = self.written.load(Ordering::SeqCst);
        if self.fsync && s.through < written {
            // A failure is booked (`failed_through`): every batch it covered gets it from its
            // own sync stage. Not this batch's error: it goes to the new file all the same (else
            // one failed sync, then a rotation, failed every later batch).
            let _ = sync_covering(&mut s, written, written, || written, |f| f.sync_data());
        }
        a.file = opened.file;
        a.torn = opened.torn;
        s.file = opened.sync;
        Ok(())
    }
}

/// Makes batch `mine` durable: a sync (of every batch up to `target`) unless one already
/// covered it; an error if a sync that covered it failed. A sync that fails covered every
/// batch `begun` says had begun by then (see `FileSink::started`).
fn sync_covering(
    s: &mut Synced,
    mine: u64,
    target: u64,
    begun: impl FnOnce() -> u64,
    sync: impl FnOnce(&File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if mine <= s.failed_through {
        return Err(std::io::Error::other(
            "a sync covering this write failed: the lines may not be on disk",
        ));
    }
    if s.through < mine {
        if let Err(e) = sync(&s.file) {
            s.failed_through = s.failed_through.max(target).max(begun());
            return Err(e);
        }
        s.through = target;
    }
    Ok(())
}

/// Whether `path` no longer names the open `file` (deleted, or renamed away).
fn moved(file: &File, path: &Path) -> bool {
    let Ok(open) = file.metadata() else {
        return false;
    };
    if open.nlink() == 0 {
        return true;
    }
    match std::fs::metadata(path) {
        Ok(named) => (named.dev(), named.ino()) != (open.dev(), open.ino()),
        Err(_) => true,
    }
}

/// Opens `path` for appending (created 0600 if missing). A FIFO is opened without waiting for
/// a reader, which a plain open does for ever (`gateway check` and the start hung, deaf to
/// SIGTERM): with none, it is refused, then it is made blocking again for the writes.
fn open_append(path: &Path) -> std::io::Result<File> {
    use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
    use std::os::unix::fs::FileTypeExt;
    let fifo = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo());
    let mut options = OpenOptions::new();
    options.create(true).append(true).mode(0o600);
    if fifo {
        options.custom_flags(OFlags::NONBLOCK.bits() as i32);
    }
    let file = options.open(path).map_err(|e| {
        if fifo && e.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) {
            std::io::Error::other(
                "it is a FIFO that no process has open for reading: start its reader first",
            )
        } else {
            e
        }
    })?;
    if fifo {
        fcntl_setfl(&file, fcntl_getfl(&file)? - OFlags::NONBLOCK)?;
    }
    Ok(file)
}

/// Writes `bytes` (whole lines) to `out`, first ending the fragment a failed write left there
/// (`torn`), so no line is glued to it. On an error, how many of the first bytes are whole lines
/// in `out` (the caller reports them written: writing them again would double them); `torn`
/// then says whether a fragment follows them. The file sink and the stdout sink both write so.
pub(crate) fn write_lines(
    out: &mut impl Write,
    torn: &mut bool,
    bytes: &[u8],
) -> Result<(), AppendError> {
    if *torn {
        out.write_all(b"\n")?;
        *torn = false;
    }
    write_whole(out, bytes).map_err(|(error, done)| {
        let whole = bytes[..done]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        *torn = done > whole;
        AppendError { error, whole }
    })
}

/// Writes all of `bytes`; on an error, how many of them are in the file.
fn write_whole(file: &mut impl Write, bytes: &[u8]) -> Result<(), (std::io::Error, usize)> {
    let mut done = 0;
    while done < bytes.len() {
        match file.write(&bytes[done..]) {
            Ok(0) => return Err((std::io::ErrorKind::WriteZero.into(), done)),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err((e, done)),
        }
    }
    Ok(())
}

/// Why an append failed, and how much of it is in the file all the same.
#[derive(Debug)]
pub(crate) struct AppendError {
    pub(crate) error: std::io::Error,
    /// The first bytes of the batch that are whole lines in the file, durable as a successful
    /// append's (0: none).
    pub(crate) whole: usize,
}

impl From<std::io::Error> for AppendError {
    fn from(error: std::io::Error) -> AppendError {
        AppendError { error, whole: 0 }
    }
}

impl std::fmt::Display for AppendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

/// A file opened for appending.
struct Opened {
    /// The append handle.
    file: File,
    /// The sync handle.
    sync: File,
    /// It does not end with a line break (a fragment the next write must end first).
    torn: bool,
}

/// The folder holding `path` (`.` for a bare file name).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Creates `dir` and its missing parents (0700); with `fsync`, each one's entry is synced in
/// its parent.
fn create_folders(dir: &Path, fsync: bool) -> std::io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_folders(parent, fsync)?;
    }
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    if fsync {
        // Best effort: the top one's parent may be a folder the gateway can write to but not
        // read (a sync needs it open), where a plugin used to start.
        let _ = sync_folder(folder_of(dir));
    }
    Ok(())
}

/// `fsync` of the folder `dir` (its entries: a name created in it).
fn sync_folder(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether the regular file `path` is non-empty and does not end with a line break (one that
/// cannot be read is taken as whole).
fn ends_torn(path: &Path) -> bool {
    use std::os::unix::fs::FileExt;
    let Ok(file) = File::open(path) else {
        return false;
    };
    match file.metadata() {
        Ok(meta) if meta.is_file() && meta.len() > 0 => {
            let mut last = [0u8; 1];
            matches!(file.read_at(&mut last, meta.len() - 1), Ok(1) if last[0] != b'\n')
        }
        _ => false,
    }
}

/// The append handle and the sync handle of the file at `path`, created (0600, folders 0700)
/// if missing; with `fsync`, the folders it creates and the file's name are synced: a name it
/// created must be (else the open fails), one it found is synced on a best-effort basis (a
/// rotation's new file made by another program, or one whose first open failed after it was
/// created; the folder may not be readable, where such a setup used to work).
fn open_pair(path: &Path, fsync: bool) -> std::io::Result<Opened> {
    create_folders(folder_of(path), fsync)?;
    let created = !path.exists();
    let file = open_append(path)?;
    if fsync {
        match sync_folder(folder_of(path)) {
            Err(e) if created => return Err(e),
            _ => {}
        }
    }
    let torn = ends_torn(path);
    let sync = file.try_clone()?;
    Ok(Opened { file, sync, torn })
}

#[cfg(test)]
mod tests;
