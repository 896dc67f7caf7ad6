//! The file sink: appends batches of lines under a lock and, with `fsync = "always"`, syncs them
//! outside it, concurrent batches sharing one `fdatasync` (group commit).
//!
//! What it guarantees when a write or a sync fails, or the file goes away:
//! - A write that fails part-way leaves its fragment ended by a line break before the next
//!   batch, so no later line is glued to it (the fragment is a line that does not parse; the
//!   whole batch is retried: lines written before the error appear twice).
//! - A failed sync fails every batch it covered, not only the one that ran it: Linux reports a
//!   writeback error once per open file and marks the pages clean, so a second sync of the
//!   same lines would succeed without them.
//! - Before each batch, a file whose name no longer leads to it (deleted, or renamed away by a
//!   rotation) is reopened at its path (created again); lines written before are synced first.
//! - A file it creates is private (mode 0600, folders 0700) and, with `fsync = "always"`, its
//!   name is synced too (the folder's entry).

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
    appender: Mutex<Appender>,
    synced: Mutex<Synced>,
}

impl FileSink {
    /// Opens (creating it and its folders if needed) the file at `path`.
    pub(crate) fn open(path: PathBuf, fsync: bool) -> Result<FileSink, String> {
        let (file, sync) = open_pair(&path, fsync)
            .map_err(|e| format!("logger: cannot open {}: {e}", path.display()))?;
        Ok(FileSink {
            path,
            fsync,
            written: AtomicU64::new(0),
            appender: Mutex::new(Appender { file, torn: false }),
            synced: Mutex::new(Synced {
                file: sync,
                through: 0,
                failed_through: 0,
            }),
        })
    }

    /// Appends `bytes` (whole lines) with one `write`; with `fsync`, returns once they are on
    /// disk.
    pub(crate) fn append(&self, bytes: &[u8]) -> std::io::Result<()> {
        let poisoned = || std::io::Error::other(format!("{} lock poisoned", self.path.display()));
        let mine = {
            let mut a = self.appender.lock().map_err(|_| poisoned())?;
            if moved(&a.file, &self.path) {
                self.reopen(&mut a)?;
            }
            if a.torn {
                a.file.write_all(b"\n")?;
                a.torn = false;
            }
            if let Err(e) = a.file.write_all(bytes) {
                // Part of it may be in the file: end it before the next batch.
                a.torn = true;
                return Err(e);
            }
            self.written.fetch_add(1, Ordering::SeqCst) + 1
        };
        if !self.fsync {
            return Ok(());
        }
        let mut s = self.synced.lock().map_err(|_| poisoned())?;
        // Every batch counted here was fully appended before the count.
        let target = self.written.load(Ordering::SeqCst);
        sync_covering(&mut s, mine, target, |f| f.sync_data())
    }

    /// Replaces the file whose name went away with a new one at the path. The lines written to
    /// the old one are synced first (they were appended; their callers may still wait).
    fn reopen(&self, a: &mut Appender) -> std::io::Result<()> {
        let (file, sync) = open_pair(&self.path, self.fsync)?;
        let mut s = self
            .synced
            .lock()
            .map_err(|_| std::io::Error::other("lock poisoned"))?;
        let written = self.written.load(Ordering::SeqCst);
        if self.fsync && s.through < written {
            let target = written;
            sync_covering(&mut s, target, target, |f| f.sync_data())?;
        }
        a.file = file;
        a.torn = false;
        s.file = sync;
        Ok(())
    }
}

/// Makes batch `mine` durable: a sync (of every batch up to `target`) unless one already
/// covered it; an error if a sync that covered it failed.
fn sync_covering(
    s: &mut Synced,
    mine: u64,
    target: u64,
    sync: impl FnOnce(&File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if mine <= s.failed_through {
        return Err(std::io::Error::other(
            "a sync covering this write failed: the lines may not be on disk",
        ));
    }
    if s.through < mine {
        if let Err(e) = sync(&s.file) {
            s.failed_through = s.failed_through.max(target);
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

/// The append handle and the sync handle of the file at `path`, created (0600, folders 0700)
/// if missing; a new file's name synced when `fsync`.
fn open_pair(path: &Path, fsync: bool) -> std::io::Result<(File, File)> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
    }
    let created = !path.exists();
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    if created && fsync {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
    }
    let sync = file.try_clone()?;
    Ok((file, sync))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synced(through: u64, failed_through: u64) -> Synced {
        Synced {
            file: tempfile::tempfile().expect("file"),
            through,
            failed_through,
        }
    }

    #[test]
    fn a_failed_sync_fails_every_write_it_covered_and_no_later_sync_clears_it() {
        let mut s = synced(0, 0);
        let failing = |_: &File| Err(std::io::Error::other("EIO"));
        // Writes 1 and 2 are appended; 1's sync fails.
        assert!(sync_covering(&mut s, 1, 2, failing).is_err());
        // 2 was covered by it: an error, without another sync (which would pass on Linux).
        let mut called = false;
        let r = sync_covering(&mut s, 2, 2, |_| {
            called = true;
            Ok(())
        });
        assert!(r.is_err() && !called);
        // A write after it is synced again and can succeed.
        assert!(sync_covering(&mut s, 3, 3, |_| Ok(())).is_ok());
        assert_eq!((s.through, s.failed_through), (3, 2));
        // Covered by that sync: no other one.
        assert!(sync_covering(&mut s, 3, 4, |_| panic!("synced twice")).is_ok());
    }

    /// Appends that sync while others reopen a rotated file: no lock cycle (the sync stage used
    /// to take the append lock inside the sync lock, and a reopen the reverse).
    #[test]
    fn appends_and_reopens_side_by_side_never_deadlock() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("a.jsonl");
        let sink = std::sync::Arc::new(FileSink::open(path.clone(), true).expect("open"));
        let (tx, rx) = std::sync::mpsc::channel();
        for t in 0..3 {
            let (sink, tx, path) = (sink.clone(), tx.clone(), path.clone());
            std::thread::spawn(move || {
                for i in 0..300 {
                    if t == 0 && i % 3 == 0 {
                        let _ = std::fs::rename(&path, path.with_extension(format!("{i}")));
                    }
                    sink.append(b"{}\n").expect("append");
                }
                let _ = tx.send(());
            });
        }
        for _ in 0..3 {
            rx.recv_timeout(std::time::Duration::from_secs(60))
                .expect("the appenders finished (no deadlock)");
        }
    }

    #[test]
    fn a_file_renamed_or_deleted_is_seen_as_moved() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("a.jsonl");
        let (file, _) = open_pair(&path, true).expect("open");
        assert!(!moved(&file, &path));
        std::fs::rename(&path, dir.path().join("a.jsonl.1")).expect("rename");
        assert!(moved(&file, &path));
        let (file, _) = open_pair(&path, true).expect("open again");
        assert!(!moved(&file, &path));
        std::fs::remove_file(&path).expect("rm");
        assert!(moved(&file, &path));
    }
}
