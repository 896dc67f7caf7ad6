//! Notices a child's end by its pid, not only by the end of its output. A plugin that forked a
//! process without `exec` (a worker pool, a daemonised helper) leaves the protocol pipe's write
//! end open in it: the child can die while its output never ends, and the reader would wait for
//! the helper instead. Its calls would never be answered (a timed-out one would keep its permit
//! for good: SIGKILL does nothing to a dead child) and new calls would be written to it.
//!
//! The watcher waits for the child to exit (`waitid` with `WNOWAIT`: the reader still reaps
//! it), then for the reader to be stuck: inside a `read` of the pipe, the pipe empty
//! (`FIONREAD`), and no byte taken across a beat. Everything the child wrote before it died has
//! then been read, and every whole frame handled (a frame being parsed is not inside a
//! `read`); a frame cut off by the death never completes. Only then does it answer the calls
//! still in flight as the child's death (a `Retry` each, as the reader would), so an outcome
//! the child did send is never taken for a crash.

use std::os::fd::OwnedFd;

use rustix::process::{Pid, WaitId, WaitIdOptions};

use super::*;

/// How long the reader must stay stuck before the watcher answers for it.
const SETTLE: Duration = Duration::from_millis(50);

/// The start waiting for a child's `InitOk` (the reader's own sender, cloned): a child that dies
/// in `init` while its output is held open fails its start at once instead of at the start's
/// time limit. Once the start was answered, a second answer is never read.
pub(super) type InitWait = mpsc::Sender<Result<Loaded, StartError>>;

/// Starts the watcher of `proc` (process `pid`), which reads `output` (a duplicate of the
/// reader's end of the child's output pipe) only to ask how much is unread.
pub(super) fn watch(
    name: &str,
    proc: Arc<ChildProc>,
    pid: u32,
    output: OwnedFd,
    init: Option<InitWait>,
) {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    let plugin = name.to_owned();
    let spawned = std::thread::Builder::new()
        .name(format!("plugin-{name}-exit"))
        .spawn(move || {
            loop {
                match rustix::process::waitid(
                    WaitId::Pid(pid),
                    WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
                ) {
                    Ok(_) => break,
                    Err(rustix::io::Errno::INTR) => continue,
                    // Already reaped: the reader saw its end first.
                    Err(_) => return,
                }
            }
            // Stuck: the reader waits inside a `read` of an empty pipe whose writer is dead,
            // and has taken nothing since the last look (a read that returned would have
            // counted its bytes; a frame still being parsed is not inside a `read`).
            let mut seen = None;
            while !proc.dead.load(Ordering::SeqCst) {
                let unread = rustix::io::ioctl_fionread(&output).unwrap_or(1);
                let taken = proc.bytes_read.load(Ordering::SeqCst);
                let waiting = unread == 0 && proc.in_read.load(Ordering::SeqCst);
                if waiting && seen == Some(taken) {
                    answer_as_dead(&plugin, &proc, pid, init);
                    return;
                }
                seen = waiting.then_some(taken);
                std::thread::sleep(SETTLE);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(plugin = %name, error = %e, "cannot start the plugin process's exit watcher: its end is noticed by its output only");
    }
}

/// The child is gone and all it wrote was handled, but its output is held open elsewhere.
/// `group`: the child's pid, which is its process group's id.
fn answer_as_dead(name: &str, proc: &ChildProc, group: Pid, init: Option<InitWait>) {
    proc.dead.store(true, Ordering::SeqCst);
    // What holds the output is a process the child forked, still in its group: ended with it
    // (each start that dies so would otherwise leave one behind, holding a reader thread and
    // the pipe). Before the child is reaped, so its pid, the group's id, cannot have been
    // given to another process. One that moved to a group of its own is out of reach.
    if group != Pid::INIT {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    }
    // Reaps it (std keeps the status for the reader, which reaps once the output ends).
    let ended = match proc.try_wait() {
        Ok(Some(status)) => super::reader::ended(status),
        _ => "it ended".to_owned(),
    };
    proc.count_exit(name, &ended);
    let why = format!("{ended} (its output is still held open, by a process it started)");
    let pending: Vec<_> = proc
        .pending
        .lock()
        .map(|mut p| p.drain().collect())
        .unwrap_or_default();
    tracing::error!(plugin = %name, reason = %why, calls = pending.len(),
        "plugin process died; its calls in flight will be retried");
    let killed = proc.killed.load(Ordering::SeqCst);
    for (_, tx) in pending {
        let _ = tx.send(Reply::Died(why.clone(), killed));
    }
    // Everything the child wrote was handled: an `InitOk` would have answered the start first.
    if let Some(tx) = init {
        let _ = tx.send(Err(StartError::Init(InitError::Unavailable {
            instance: name.to_owned(),
            message: format!("the plugin process died while starting: {why}"),
        })));
    }
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::super::reader::{Reader, Watched};
    use super::*;

    /// A reader on the output of `sh -c script` (writing `frame_file`), with call 1 pending,
    /// and the watcher on it.
    fn watched(script: &str) -> mpsc::Receiver<Reply> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
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
        let output = std::os::fd::AsFd::as_fd(&stdout)
            .try_clone_to_owned()
            .expect("dup");
        let out = Watched {
            inner: stdout,
            proc: proc.clone(),
        };
        std::thread::spawn(move || reader.run(BufReader::new(out)));
        watch("t", proc, pid, output, None);
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
        let rx = watched(&format!("sleep 15 & cat {}; exit 0", path.display()));
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
        let rx = watched(&format!("sleep 15 & cat {}; exit 0", path.display()));
        let reply = rx.recv_timeout(Duration::from_secs(30));
        let _ = std::fs::remove_file(&path);
        match reply {
            Ok(Reply::Outcomes(o, _)) => assert_eq!(o.len(), n),
            Ok(Reply::Died(why, _)) => panic!("the answer was taken for a death: {why}"),
            _ => panic!("no answer"),
        }
    }
}
