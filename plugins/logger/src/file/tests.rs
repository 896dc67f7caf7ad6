//! The file sink's unit tests (in a file of their own: `file.rs` stays readable).

use super::*;

/// A writer that takes at most `chunk` bytes a call, is interrupted once before each
/// write, and fails once `limit` bytes are in.
struct Flaky {
    out: Vec<u8>,
    chunk: usize,
    limit: usize,
    interrupt: bool,
}

impl Write for Flaky {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.interrupt = !self.interrupt;
        if self.interrupt {
            return Err(std::io::ErrorKind::Interrupted.into());
        }
        let room = self.limit - self.out.len();
        if room == 0 {
            return Err(std::io::Error::other("no space left"));
        }
        let n = buf.len().min(self.chunk).min(room);
        self.out.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Interrupted writes are tried again; a write that fails exactly at a line's end leaves no
/// fragment (the next batch starts without a line break), one that fails inside a line does.
#[test]
fn interrupted_writes_go_on_and_only_a_cut_line_is_a_fragment() {
    let mut w = Flaky {
        out: Vec::new(),
        chunk: 3,
        limit: 8,
        interrupt: false,
    };
    let mut torn = false;
    let e = write_lines(&mut w, &mut torn, b"abc\ndef\nghi\n").expect_err("full");
    assert_eq!((e.whole, torn, &w.out[..]), (8, false, &b"abc\ndef\n"[..]));
    w.limit = 20;
    write_lines(&mut w, &mut torn, b"x\n").expect("room again");
    assert_eq!(&w.out[..], b"abc\ndef\nx\n", "no empty line");
    w.limit = 12;
    let e = write_lines(&mut w, &mut torn, b"yy\nzz\n").expect_err("full");
    assert_eq!(
        (e.whole, torn),
        (0, true),
        "{:?}",
        String::from_utf8_lossy(&w.out)
    );
    w.limit = 30;
    write_lines(&mut w, &mut torn, b"q\n").expect("room again");
    assert_eq!(
        &w.out[..],
        b"abc\ndef\nx\nyy\nq\n",
        "the fragment ended first"
    );
}

/// Only a FIFO's missing reader gets the FIFO message; any other open error is the OS's,
/// the same error number (ENXIO) from a Unix socket's path included.
#[test]
fn an_open_error_of_another_file_is_the_systems_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = open_append(&dir.path().join("missing/out.jsonl")).expect_err("no folder");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
    let socket = dir.path().join("out.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let err = open_append(&socket).expect_err("a socket cannot be opened");
    assert_eq!(
        err.raw_os_error(),
        Some(rustix::io::Errno::NXIO.raw_os_error()),
        "{err}"
    );
    assert!(!err.to_string().contains("FIFO"), "{err}");
}

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
    assert!(sync_covering(&mut s, 1, 2, || 2, failing).is_err());
    // 2 was covered by it: an error, without another sync (which would pass on Linux).
    let mut called = false;
    let r = sync_covering(
        &mut s,
        2,
        2,
        || 2,
        |_| {
            called = true;
            Ok(())
        },
    );
    assert!(r.is_err() && !called);
    // A write after it is synced again and can succeed.
    assert!(sync_covering(&mut s, 3, 3, || 3, |_| Ok(())).is_ok());
    assert_eq!((s.through, s.failed_through), (3, 2));
    // Covered by that sync: no other one.
    assert!(sync_covering(&mut s, 3, 4, || 4, |_| panic!("synced twice")).is_ok());
}

/// A batch still being written while another batch's sync fails was covered by that sync too
/// (its dirty pages were written back, and failed, with the others); its own sync would pass
/// (Linux reports the failure once per open file): it fails all the same.
#[test]
fn a_failed_sync_fails_a_batch_whose_write_began_before_it_failed() {
    let mut s = synced(0, 0);
    let failing = |_: &File| Err(std::io::Error::other("EIO"));
    // Batch 1 is appended and syncs; batch 2's write has begun, not counted yet.
    assert!(sync_covering(&mut s, 1, 1, || 2, failing).is_err());
    let mut called = false;
    let r = sync_covering(
        &mut s,
        2,
        2,
        || 2,
        |_| {
            called = true;
            Ok(())
        },
    );
    assert!(r.is_err() && !called, "batch 2 was reported on disk");
    assert!(sync_covering(&mut s, 3, 3, || 3, |_| Ok(())).is_ok());
}

/// Batches counted by `started` and `written` alike: a write that wrote nothing keeps its
/// number (counted in both), so no two batches ever have the same number.
#[test]
fn a_write_that_wrote_nothing_keeps_its_number() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("a.jsonl");
    let sink = FileSink::open(path.clone(), true).expect("open");
    sink.append(b"{\"n\":1}\n").expect("append");
    let counts = || {
        (
            sink.started.load(Ordering::SeqCst),
            sink.written.load(Ordering::SeqCst),
        )
    };
    assert_eq!(counts(), (1, 1));
    // The same file, read only: the next write fails before a byte is written.
    let writable = {
        let mut a = sink.appender.lock().expect("lock");
        std::mem::replace(&mut a.file, File::open(&path).expect("open"))
    };
    let e = sink.append(b"{\"n\":2}\n").expect_err("a read-only file");
    assert_eq!(e.whole, 0);
    // Never given back: a failed sync that read `begun` while it was taken books it as failed,
    // and a later batch given the same number would fail with it.
    assert_eq!(counts(), (2, 2));
    sink.appender.lock().expect("lock").file = writable;
    sink.append(b"{\"n\":3}\n").expect("append");
    assert_eq!(counts(), (3, 3));
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

/// Regression: a sync that failed, then a rotation, failed every later batch until a
/// restart (the reopen synced the old file again, met the booked failure, and gave up).
#[test]
fn a_failed_sync_then_a_rotation_fails_only_the_batches_it_covered() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("a.jsonl");
    let sink = FileSink::open(path.clone(), true).expect("open");
    sink.append(b"{\"n\":1}\n").expect("append");
    // Batch 2 is appended, and its sync fails (EIO on a full thin disk).
    {
        let mut a = sink.appender.lock().expect("lock");
        a.file.write_all(b"{\"n\":2}\n").expect("write");
        sink.started.fetch_add(1, Ordering::SeqCst);
        sink.written.fetch_add(1, Ordering::SeqCst);
    }
    {
        let mut s = sink.synced.lock().expect("lock");
        let failing = |_: &File| Err(std::io::Error::other("EIO"));
        assert!(sync_covering(&mut s, 2, 2, || 2, failing).is_err());
    }
    std::fs::rename(&path, dir.path().join("a.jsonl.1")).expect("rotate");
    for n in 3..6 {
        sink.append(format!("{{\"n\":{n}}}\n").as_bytes())
            .unwrap_or_else(|e| panic!("batch {n} after the rotation: {e}"));
    }
    let text = std::fs::read_to_string(&path).expect("new file");
    assert_eq!(text, "{\"n\":3}\n{\"n\":4}\n{\"n\":5}\n");
}

/// A file that ends in a fragment (a process killed during a write, a disk that filled up
/// before a restart): the first line written after opening it is not glued to it.
#[test]
fn a_fragment_left_before_the_open_is_ended_before_the_next_line() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("a.jsonl");
    std::fs::write(&path, "{\"n\":1}\n{\"n\":2,\"pa").expect("fragment");
    let sink = FileSink::open(path.clone(), true).expect("open");
    sink.append(b"{\"n\":3}\n").expect("append");
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(text, "{\"n\":1}\n{\"n\":2,\"pa\n{\"n\":3}\n");
    // A whole file is appended to as it is.
    let sink = FileSink::open(path.clone(), false).expect("open again");
    sink.append(b"{\"n\":4}\n").expect("append");
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.ends_with("\n{\"n\":3}\n{\"n\":4}\n"), "{text:?}");
}

#[test]
fn missing_folders_are_created_private() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("x/y/a.jsonl");
    FileSink::open(path.clone(), true).expect("open");
    for folder in [dir.path().join("x"), dir.path().join("x/y")] {
        let mode = std::fs::metadata(&folder).expect("folder").mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", folder.display());
    }
    assert!(path.is_file());
}

#[test]
fn fsync_always_refuses_what_cannot_be_synced() {
    let e = FileSink::open(PathBuf::from("/dev/null"), true).expect_err("refused");
    assert!(
        e.contains("`fsync = \"always\"`") && e.contains("/dev/null is not one"),
        "{e}"
    );
    FileSink::open(PathBuf::from("/dev/null"), false).expect("never: accepted");
}

#[test]
fn a_file_renamed_or_deleted_is_seen_as_moved() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("a.jsonl");
    let file = open_pair(&path, true).expect("open").file;
    assert!(!moved(&file, &path));
    std::fs::rename(&path, dir.path().join("a.jsonl.1")).expect("rename");
    assert!(moved(&file, &path));
    let file = open_pair(&path, true).expect("open again").file;
    assert!(!moved(&file, &path));
    std::fs::remove_file(&path).expect("rm");
    assert!(moved(&file, &path));
}

#[test]
fn the_folder_of_a_bare_name_is_the_current_one() {
    assert_eq!(folder_of(Path::new("out.jsonl")), Path::new("."));
    assert_eq!(
        folder_of(Path::new("/var/log/out.jsonl")),
        Path::new("/var/log")
    );
    assert_eq!(folder_of(Path::new("sub/out.jsonl")), Path::new("sub"));
}

/// An append error reads as its I/O error (the logger's warning and its retries' reason).
#[test]
fn an_append_error_shows_its_io_error() {
    let e = AppendError {
        error: std::io::Error::other("no space left on device"),
        whole: 3,
    };
    assert_eq!(e.to_string(), "no space left on device");
}
