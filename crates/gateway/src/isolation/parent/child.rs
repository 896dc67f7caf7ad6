//! One running child process of an isolated instance ([`ChildProc`]): its pipe, the calls
//! waiting on its answers, whether it died or was killed, and the ways to end it.

use std::collections::HashMap;
use std::io::BufWriter;
use std::process::{Child, ChildStdin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::Reply;
use crate::metrics;

/// One running child.
pub(super) struct ChildProc {
    /// Held only for an instant (`kill`, `try_wait`), never across a wait.
    pub(super) child: Mutex<Child>,
    /// `None` once the child is retired (closing the pipe tells it to leave).
    pub(super) stdin: Mutex<Option<BufWriter<ChildStdin>>>,
    pub(super) pending: Mutex<HashMap<u64, mpsc::Sender<Reply>>>,
    pub(super) dead: AtomicBool,
    /// Set when the gateway itself killed the child.
    pub(super) killed: AtomicBool,
    /// The child exited while a process it started held its output open (the reader ended
    /// on the exit watcher's word, `watch`).
    pub(super) held_open: AtomicBool,
    /// The child's end is counted in metrics (once).
    exit_counted: AtomicBool,
    /// The child was reaped (set under `child`'s lock): its pid, its group's id, may belong to
    /// another process now.
    reaped: AtomicBool,
}

impl ChildProc {
    /// A child just started, writing to `stdin`.
    pub(super) fn new(child: Child, stdin: BufWriter<ChildStdin>) -> Arc<ChildProc> {
        Arc::new(ChildProc {
            child: Mutex::new(child),
            stdin: Mutex::new(Some(stdin)),
            pending: Mutex::new(HashMap::new()),
            dead: AtomicBool::new(false),
            killed: AtomicBool::new(false),
            held_open: AtomicBool::new(false),
            exit_counted: AtomicBool::new(false),
            reaped: AtomicBool::new(false),
        })
    }

    /// Counts the child's end in `gateway_plugin_process_exits_total`, unless already counted.
    pub(super) fn count_exit(&self, plugin: &str, reason: &str) {
        if !self.exit_counted.swap(true, Ordering::SeqCst) {
            metrics::get()
                .plugin_process_exits
                .get_or_create(&metrics::PluginReasonLabels {
                    plugin: plugin.to_owned(),
                    reason: reason.to_owned(),
                })
                .inc();
        }
    }

    /// Kills the child on the gateway's behalf (a timeout, a restart), and the processes it
    /// started that stayed in its group: its calls in flight are not run again one by one, and
    /// no work of theirs goes on beside their retries.
    pub(super) fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        self.kill_group();
        // One that left its group is still the child.
        self.sigkill();
    }

    /// Sends SIGKILL (nothing once the child is reaped, so never to a recycled pid).
    pub(super) fn sigkill(&self) {
        if let Ok(mut c) = self.child.lock() {
            let _ = c.kill();
        }
    }

    /// SIGKILL to the child's process group (its pid: each child leads a group of its own),
    /// only while the child is not reaped yet, so the id cannot belong to anyone else.
    pub(super) fn kill_group(&self) {
        let Ok(c) = self.child.lock() else { return };
        if self.reaped.load(Ordering::SeqCst) {
            return;
        }
        let Some(group) = i32::try_from(c.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        else {
            return;
        };
        if group != rustix::process::Pid::INIT {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }

    /// How the child ended, if it has (reaping it), without waiting.
    pub(super) fn try_wait(&self) -> Result<Option<std::process::ExitStatus>, String> {
        let mut c = self.child.lock().map_err(|_| "poisoned".to_owned())?;
        let status = c.try_wait().map_err(|e| e.to_string())?;
        if status.is_some() {
            self.reaped.store(true, Ordering::SeqCst);
        }
        Ok(status)
    }
}
