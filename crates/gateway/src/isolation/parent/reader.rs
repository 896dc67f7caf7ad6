//! The reader thread of one child: reads its frames until it ends, hands each answer to the
//! call waiting for it and each log line to the sink, and, when the child dies, breaks the frame
//! protocol or closes its output, kills and reaps it and answers the calls in flight as crashes.

use std::os::fd::AsFd;

use super::*;

/// Reads a child's frames until it ends.
pub(super) struct Reader {
    pub(super) name: String,
    /// The library the child loads (for the messages).
    pub(super) library: PathBuf,
    pub(super) proc: Arc<ChildProc>,
    pub(super) log: LogSink,
    /// Answered once, when the child has loaded the library and created the instance (or
    /// failed to).
    pub(super) init: Option<mpsc::Sender<Result<Loaded, StartError>>>,
}

/// The child's output as the reader reads it, with the exit watcher's pipe (`watch`): a read
/// that finds the output empty once the child has exited is the end of the output, though a
/// process the child started still holds it open (`ChildProc::held_open` says so).
pub(super) struct ExitAware<R> {
    pub(super) inner: R,
    /// Readable once the watcher saw the child exit; `None` once the watcher is gone without
    /// a word (its thread could not start), or when there is none.
    pub(super) exited: Option<std::io::PipeReader>,
    pub(super) proc: Arc<ChildProc>,
}

impl<R: std::io::Read + AsFd> std::io::Read for ExitAware<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use rustix::event::{poll, PollFd, PollFlags};
        loop {
            let Some(exited) = &self.exited else {
                return self.inner.read(buf);
            };
            let mut fds = [
                PollFd::new(&self.inner, PollFlags::IN),
                PollFd::new(exited, PollFlags::IN),
            ];
            match poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let (output, exit) = (fds[0].revents(), fds[1].revents());
            // Anything to read (or the output's end, or an error) first: the read tells.
            if !output.is_empty() {
                return self.inner.read(buf);
            }
            if exit.contains(PollFlags::IN) {
                // `poll` looks at the descriptors one after the other: the child may have
                // written its last bytes and exited between the look at the output and the
                // look at the exit. Looked at again now that the exit is known, the output
                // holds all the child ever wrote.
                let mut again = [PollFd::new(&self.inner, PollFlags::IN)];
                match poll(&mut again, Some(&rustix::event::Timespec::default())) {
                    Ok(_) => {}
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(e.into()),
                }
                if !again[0].revents().is_empty() {
                    return self.inner.read(buf);
                }
                // The child has exited and nothing it wrote is unread.
                self.proc.held_open.store(true, Ordering::SeqCst);
                return Ok(0);
            }
            if !exit.is_empty() {
                // The watcher is gone without a word: read the output alone.
                self.exited = None;
            }
        }
    }
}

impl Reader {
    pub(super) fn run(mut self, mut out: BufReader<impl std::io::Read>) {
        // A child whose instance failed to start reports it, then exits (3): as it should.
        let mut init_failed = false;
        let broken = loop {
            match FromChild::read(&mut out) {
                Ok(Some(FromChild::InitOk(loaded))) => {
                    if let Some(tx) = self.init.take() {
                        let _ = tx.send(Ok(loaded));
                    }
                }
                Ok(Some(FromChild::InitErr { kind, message })) => {
                    init_failed = true;
                    let instance = self.name.clone();
                    let err = match kind {
                        InitFailure::Load => StartError::Load(message),
                        InitFailure::Panicked => {
                            StartError::Init(InitError::Panicked { instance, message })
                        }
                        InitFailure::Refused => {
                            StartError::Init(InitError::Refused { instance, message })
                        }
                    };
                    if let Some(tx) = self.init.take() {
                        let _ = tx.send(Err(err));
                    }
                }
                // Only a `Describe` request is answered so.
                Ok(Some(FromChild::Described(_))) => {
                    break Some(std::io::Error::other("an unasked Described frame"))
                }
                Ok(Some(FromChild::Outcomes { id, outcomes })) => {
                    self.answer(id, Reply::Outcomes(outcomes, self.proc.clone()))
                }
                Ok(Some(FromChild::BatchPanicked { id, message })) => {
                    self.answer(id, Reply::Panicked(message, self.proc.clone()))
                }
                Ok(Some(FromChild::Log { level, message })) => {
                    (self.log)(&self.name, Level::from_abi(level), &message)
                }
                // The end of the stream, possibly in the middle of a frame: the child is ending.
                Ok(None) => break None,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break None,
                // Anything else is not a frame: the child cannot be trusted any more.
                Err(e) => break Some(e),
            }
        };
        self.proc.dead.store(true, Ordering::SeqCst);
        let held_open = self.proc.held_open.load(Ordering::SeqCst);
        // The processes the child started that stayed in its group end with it (a helper
        // program a call ran would otherwise go on beside that call's retry, and one holding
        // the output would keep the pipe), as its crash, its kill or its exit ends it. Before
        // the child is reaped, so its pid, the group's id, cannot have been given to another
        // process. One that moved to a group of its own is out of reach.
        self.proc.kill_group();
        if let Some(e) = &broken {
            tracing::error!(plugin = %self.name, error = %e,
                "the plugin process sent something that is not a frame: killing it");
        }
        let status = self.reap(broken.is_some());
        let ended = status
            .clone()
            .unwrap_or_else(|| "killed, but it has not ended yet".into());
        let (why, reason) = match &broken {
            Some(e) => (
                format!("it broke the frame protocol ({e}); {ended}"),
                "protocol error".to_owned(),
            ),
            None if held_open => (
                format!("{ended} (its output is still held open, by a process it started)"),
                ended,
            ),
            None => (ended.clone(), ended),
        };
        let killed = self.proc.killed.load(Ordering::SeqCst);
        // Said, so a call the kill ended beside a hung one is not taken for an outside kill.
        let why = if killed {
            format!(
                "{why}, by the gateway (a call in this process outlived [delivery] timeout, \
                 its init outlived init_timeout, or the process was being replaced)"
            )
        } else {
            why
        };
        self.proc.count_exit(&self.name, &reason);
        let pending: Vec<_> = self
            .proc
            .pending
            .lock()
            .map(|mut p| p.drain().collect())
            .unwrap_or_default();
        // Not asked to leave: the gateway closes the pipe of a child it ends in order.
        let unasked = self.proc.stdin.lock().is_ok_and(|w| w.is_some());
        // A start the gateway gave up on (its init outlived init_timeout) was said there.
        if !pending.is_empty() || (self.init.is_some() && !killed) {
            tracing::error!(plugin = %self.name, reason = %why, calls = pending.len(), "plugin process died; its calls in flight will be retried");
        } else if unasked && !killed && !init_failed {
            tracing::warn!(plugin = %self.name, reason = %why, "plugin process died while no call was running; a new one starts on the next call");
        }
        for (_, tx) in pending {
            let _ = tx.send(Reply::Died(why.clone(), killed));
        }
        if let Some(tx) = self.init.take() {
            let _ = tx.send(Err(StartError::Init(InitError::Unavailable {
                instance: self.name.clone(),
                message: format!(
                    "the plugin process for {} died while starting: {why}",
                    self.library.display()
                ),
            })));
        }
        if status.is_none() {
            // Stuck in the kernel after SIGKILL: reap it whenever it ends (no zombie left).
            while matches!(self.proc.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn answer(&self, id: u64, reply: Reply) {
        let tx = self
            .proc
            .pending
            .lock()
            .ok()
            .and_then(|mut p| p.remove(&id));
        if let Some(tx) = tx {
            let _ = tx.send(reply);
        }
    }

    /// Reaps the child and says how it ended ("killed by signal 11", "exited with code 3").
    /// A child that broke the protocol (`kill_now`), or that closed its output but lives on
    /// past [`EXIT_GRACE`], is killed first. Polls: the `child` lock is held only for each
    /// `try_wait`, so `kill` never waits behind this. `None` when a killed child has not ended
    /// after [`KILL_WAIT`].
    fn reap(&self, kill_now: bool) -> Option<String> {
        let started = Instant::now();
        let mut killed_at = None;
        if kill_now {
            self.proc.sigkill();
            killed_at = Some(started);
        }
        loop {
            match self.proc.try_wait() {
                Ok(Some(status)) => return Some(ended(status)),
                Ok(None) => {}
                Err(e) => return Some(format!("cannot tell how it ended: {e}")),
            }
            match killed_at {
                None if started.elapsed() >= EXIT_GRACE => {
                    self.proc.sigkill();
                    killed_at = Some(Instant::now());
                }
                Some(at) if at.elapsed() >= KILL_WAIT => return None,
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// How a child ended: "killed by signal 11 (SIGSEGV)", "exited with code 3".
pub(crate) fn ended(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (_, Some(sig)) => format!("killed by signal {sig}{}", signal_name(sig)),
        (Some(code), _) => format!("exited with code {code}"),
        _ => "ended".into(),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        4 => " (SIGILL)",
        6 => " (SIGABRT)",
        7 => " (SIGBUS)",
        9 => " (SIGKILL)",
        11 => " (SIGSEGV)",
        15 => " (SIGTERM)",
        _ => "",
    }
}
