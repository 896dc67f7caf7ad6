//! Notices a child's end by its pid, not only by the end of its output. A plugin that forked a
//! process without `exec` (a worker pool, a daemonised helper) leaves the protocol pipe's write
//! end open in it: the child can die while its output never ends, and the reader would wait for
//! the helper instead. Its calls would never be answered (a timed-out one would keep its permit
//! for good: SIGKILL does nothing to a dead child) and new calls would be written to it.
//!
//! The watcher waits for the child to exit (`waitid` with `WNOWAIT`: the reader still reaps
//! it), then for every frame the child wrote before it died to be read and answered: the pipe
//! empty (`FIONREAD`), the reader waiting on an empty buffer, and no frame handled for a beat.
//! Only then does it answer the calls still in flight as the child's death (a `Retry` each, as
//! the reader would), so an outcome the child did send is never taken for a crash.

use std::os::fd::OwnedFd;

use rustix::process::{Pid, WaitId, WaitIdOptions};

use super::*;

/// How long the reader must stay idle, on an empty pipe, before the watcher answers for it.
const SETTLE: Duration = Duration::from_millis(50);

/// Starts the watcher of `proc` (process `pid`), which reads `output` (a duplicate of the
/// reader's end of the child's output pipe) only to ask how much is unread.
pub(super) fn watch(name: &str, proc: Arc<ChildProc>, pid: u32, output: OwnedFd) {
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
            let mut seen = None;
            while !proc.dead.load(Ordering::SeqCst) {
                let unread = rustix::io::ioctl_fionread(&output).unwrap_or(1);
                let frames = proc.frames.load(Ordering::SeqCst);
                let idle = unread == 0 && proc.idle.load(Ordering::SeqCst);
                if idle && seen == Some(frames) {
                    answer_as_dead(&plugin, &proc);
                    return;
                }
                seen = idle.then_some(frames);
                std::thread::sleep(SETTLE);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(plugin = %name, error = %e, "cannot start the plugin process's exit watcher: its end is noticed by its output only");
    }
}

/// The child is gone and all it wrote was handled, but its output is held open elsewhere.
fn answer_as_dead(name: &str, proc: &ChildProc) {
    proc.dead.store(true, Ordering::SeqCst);
    // Reaps it (std keeps the status for the reader, which reaps once the output ends).
    let ended = match proc.try_wait() {
        Ok(Some(status)) => super::reader::ended(status),
        _ => "it ended".to_owned(),
    };
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
}
