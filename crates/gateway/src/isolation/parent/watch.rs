//! Notices a child's end by its pid, not only by the end of its output. A plugin that forked a
//! process without `exec` (a worker pool, a daemonised helper) leaves the protocol pipe's write
//! end open in it: the child can die while its output never ends, and the reader would wait for
//! the helper instead. Its calls would never be answered (a timed-out one would keep its permit
//! for good: SIGKILL does nothing to a dead child) and new calls would be written to it.
//!
//! The watcher waits for the child to exit (`waitid` with `WNOWAIT`: the reader still reaps
//! it), then says so on a pipe of its own. The reader waits on both (`ExitAware`): it reads
//! the output while anything is unread, and takes the child's exit for the end of the output
//! only when a wait finds the output empty. The child wrote everything before it exited, so
//! all of it has been read then, and every whole frame handled; a frame cut off by the death
//! never completes. The decision is the reader's, between two of its own reads: an outcome the
//! child sent is never taken for a crash, however long the reader thread is paused.

use std::io::{PipeWriter, Write};

use rustix::process::{Pid, WaitId, WaitIdOptions};

/// Starts the watcher of process `pid`, which writes a byte to `exited` once it has exited.
/// Returns false if the thread could not start (`exited` is then closed, which the reader
/// takes for "no watcher": it reads the output alone).
pub(super) fn watch(name: &str, pid: u32, mut exited: PipeWriter) -> bool {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return false;
    };
    let spawned = std::thread::Builder::new()
        .name(format!("plugin-{name}-exit"))
        .spawn(move || loop {
            match rustix::process::waitid(
                WaitId::Pid(pid),
                WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
            ) {
                Ok(_) => {
                    // No reader left (it saw the end first) is no error.
                    let _ = exited.write_all(&[1]);
                    return;
                }
                Err(rustix::io::Errno::INTR) => continue,
                // Already reaped: the reader saw its end first.
                Err(_) => return,
            }
        });
    match spawned {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(plugin = %name, error = %e, "cannot start the plugin process's exit watcher: its end is noticed by its output only");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufWriter, Read};
    use std::os::fd::{AsFd, BorrowedFd};
    use std::os::unix::process::CommandExt;
    use std::process::{ChildStdout, Command, Stdio};

    use super::super::reader::{ExitAware, Reader};
    use super::super::*;
    use super::*;

    /// The child's output, with the reader thread paused for `pause` after each read returned
    /// (as a loaded machine may pause it between a read and its handling).
    struct Paused {
        out: ChildStdout,
        pause: Duration,
    }

    impl Read for Paused {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.out.read(buf);
            std::thread::sleep(self.pause);
            n
        }
    }

    impl AsFd for Paused {
        fn as_fd(&self) -> BorrowedFd<'_> {
            self.out.as_fd()
        }
    }

    /// A reader on the output of `sh -c script` (in a process group of its own, as a plugin
    /// process), with call 1 pending, and the watcher on it.
    fn watched(script: &str, pause: Duration) -> mpsc::Receiver<Reply> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("sh");
        let stdin = child.stdin.take().expect("stdin");
        let out = child.stdout.take().expect("stdout");
        let pid = child.id();
        let proc = ChildProc::new(child, BufWriter::new(stdin));
        let (tx, rx) = mpsc::channel();
        proc.pending.lock().expect("pending").insert(1, tx);
        let log: LogSink = Arc::new(|_: &str, _: Level, _: &str| {});
        let reader = Reader {
            name: "t".into(),
            library: PathBuf::from("t.so"),
            proc: proc.clone(),
            log,
            init: None,
        };
        let (exited, tell) = std::io::pipe().expect("pipe");
        assert!(watch("t", pid, tell));
        let out = ExitAware {
            inner: Paused { out, pause },
            exited: Some(exited),
            proc,
        };
        std::thread::spawn(move || reader.run(BufReader::new(out)));
        rx
    }

    fn frame_file(name: &str, bytes: &[u8]) -> PathBuf {
        let path = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::write(&path, bytes).expect("write");
        path
    }

    /// The child ends in the middle of a frame while a process it started (`sleep`) holds its
    /// output: the call is answered as its death, not left waiting for the helper.
    #[test]
    fn a_child_dead_mid_frame_while_a_helper_holds_its_output_is_answered() {
        let mut bytes = Vec::new();
        let mut answer = Vec::new();
        FromChild::Outcomes {
            id: 1,
            outcomes: vec![CallOutcome::Ok],
        }
        .write(&mut answer)
        .expect("frame");
        bytes.extend_from_slice(&answer[..10]);
        let path = frame_file("watch-partial", &bytes);
        let rx = watched(
            &format!("sleep 15 & cat {}; exit 0", path.display()),
            Duration::ZERO,
        );
        let reply = rx.recv_timeout(Duration::from_secs(8));
        let _ = std::fs::remove_file(&path);
        assert!(
            matches!(reply, Ok(Reply::Died(..))),
            "not answered as a death within 8 s"
        );
    }

    /// A child that wrote a large last answer and exited while the reader still takes it in
    /// (a retired child after its last call): the answer is the call's, not a death.
    #[test]
    fn an_answer_still_being_read_when_the_child_exits_is_not_taken_for_a_crash() {
        let n = 2_000;
        let outcomes: Vec<CallOutcome> = (0..n)
            .map(|_| CallOutcome::Retry {
                reason: "\u{1}".repeat(4000),
                retry_after: None,
            })
            .collect();
        let mut frame = Vec::new();
        FromChild::Outcomes { id: 1, outcomes }
            .write(&mut frame)
            .expect("frame");
        let path = frame_file("watch-large", &frame);
        let rx = watched(
            &format!("sleep 15 & cat {}; exit 0", path.display()),
            Duration::ZERO,
        );
        let reply = rx.recv_timeout(Duration::from_secs(30));
        let _ = std::fs::remove_file(&path);
        match reply {
            Ok(Reply::Outcomes(o, _)) => assert_eq!(o.len(), n),
            Ok(Reply::Died(why, _)) => panic!("the answer was taken for a death: {why}"),
            _ => panic!("no answer"),
        }
    }

    /// The reader thread paused after the read that took the child's whole last answer, the
    /// child dead meanwhile and a helper holding the output: the answer is the call's (the
    /// watcher never answers for the reader).
    #[test]
    fn a_reader_paused_after_reading_the_answer_still_gives_it() {
        let mut frame = Vec::new();
        FromChild::Outcomes {
            id: 1,
            outcomes: vec![CallOutcome::Ok],
        }
        .write(&mut frame)
        .expect("frame");
        let path = frame_file("watch-paused", &frame);
        let rx = watched(
            &format!("sleep 15 & cat {}; exit 0", path.display()),
            Duration::from_millis(400),
        );
        let reply = rx.recv_timeout(Duration::from_secs(10));
        let _ = std::fs::remove_file(&path);
        match reply {
            Ok(Reply::Outcomes(o, _)) => assert!(matches!(o.as_slice(), [CallOutcome::Ok])),
            Ok(Reply::Died(why, _)) => panic!("the answer was taken for a death: {why}"),
            _ => panic!("no answer"),
        }
    }
}
