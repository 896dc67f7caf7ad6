//! Starting an instance's child: the first start (on the caller's thread, at gateway start or
//! reload) and restarts after a death or a retirement, each on a thread of its own.
//!
//! A restart is shared: every call that finds no live child waits for the one restart in
//! progress (the first such call launches it, after the backoff of consecutive deaths). A
//! call's timeout (`Inner::kill`) ends that call's wait and not the restart, which has the same
//! limit as a first start (`[[plugins]] init_timeout`): a child whose `init` takes longer than
//! `[delivery] timeout` still comes up and serves the calls after it (when the timeout killed
//! the starting child, every attempt started one more and killed it, and the plugin stayed down
//! until a reload), and a hung `init` holds no call past its timeout.

use std::io::{BufReader, BufWriter};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, PoisonError};
use std::time::Duration;

use gateway_plugin::host::InitError;

use super::reader::{self, Reader};
use super::{watch, ChildProc, Inner, StartError};
use crate::isolation::wire::{InitRequest, Loaded, ToChild};
use crate::isolation::SUBCOMMAND;

/// The restart in progress, shared by the calls waiting for it.
#[derive(Debug, Default)]
pub(super) struct Restart {
    /// A restart thread is running.
    running: bool,
    /// Restarts ended so far (a waiter knows its restart ended when this moves).
    ended: u64,
    /// Why the last restart failed (`None`: it started a child).
    failure: Option<String>,
}

/// Starts `gateway plugin-host --library PATH` (this very binary, through `/proc/self/exe`)
/// with piped stdin and stdout (its stderr is the gateway's), in a process group of its own:
/// the processes it forks (and does not move elsewhere) can be ended with it (`watch`).
pub(crate) fn spawn_host(library: &Path) -> Result<Child, String> {
    use std::os::unix::process::CommandExt;
    // The binary this process runs, even once an upgrade has renamed another over its path
    // (`current_exe` would then name a deleted file): parent and child always speak the same
    // protocol.
    let mut command = Command::new("/proc/self/exe");
    // The config's `${NAME}` variables are secrets (the app's keys, other plugins' passwords):
    // the plugin gets what it needs through its own expanded config.
    for name in crate::config::env::config_variables() {
        command.env_remove(name);
    }
    command
        .process_group(0)
        .arg(SUBCOMMAND)
        .arg("--library")
        .arg(library)
        // So the instance can tell (`Host::isolated`): its stdout is not the gateway's.
        .env(gateway_plugin::ISOLATED_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start the plugin process: {e}"))
}

impl Inner {
    /// The live child, or the one the restart in progress (launched if none is) starts. Gives
    /// up when a `kill` came after the call began (`epoch`: `cancels` then), its own timeout or
    /// another call's: every wait ends, the restart goes on.
    pub(super) fn ensure(&self, epoch: u64) -> Result<Arc<ChildProc>, String> {
        let cancelled = || self.cancels.load(Ordering::SeqCst) != epoch;
        let timed_out = || "the call timed out while the plugin process was starting".to_owned();
        if cancelled() {
            return Err(timed_out());
        }
        if let Some(p) = self.live()? {
            return Ok(p);
        }
        let poisoned = |_| "poisoned".to_owned();
        let mut restart = self.restart.lock().map_err(poisoned)?;
        // The restart this call waits for: the count of restarts ended before it.
        let mut waits_for: Option<u64> = None;
        loop {
            if let Some(p) = self.live()? {
                return Ok(p);
            }
            match waits_for {
                Some(before) if restart.ended != before => {
                    return Err(restart.failure.clone().unwrap_or_else(|| {
                        "the plugin process ended as soon as it started".into()
                    }))
                }
                Some(_) => {}
                None if restart.running => waits_for = Some(restart.ended),
                None => {
                    self.launch_restart()?;
                    restart.running = true;
                    waits_for = Some(restart.ended);
                }
            }
            if cancelled() {
                return Err(timed_out());
            }
            restart = self.started.wait(restart).map_err(poisoned)?;
        }
    }

    /// Wakes the calls waiting for a restart: those that began before this give up.
    pub(super) fn cancel_restart_waits(&self) {
        self.cancels.fetch_add(1, Ordering::SeqCst);
        // Taken so that a caller between its check and its wait is not missed.
        drop(self.restart.lock());
        self.started.notify_all();
    }

    fn launch_restart(&self) -> Result<(), String> {
        let me = self
            .me
            .upgrade()
            .ok_or_else(|| "the instance is being closed".to_owned())?;
        std::thread::Builder::new()
            .name(format!("restart-{}", self.name))
            .spawn(move || me.restart())
            .map(|_| ())
            .map_err(|e| format!("cannot start the plugin process's restart thread: {e}"))
    }

    /// The restart thread: backoff, start, tell the waiting calls (even if it panics: a restart
    /// left "running" would hold every later call to its timeout until a reload).
    fn restart(&self) {
        struct Ended<'i> {
            inner: &'i Inner,
            failure: Option<String>,
        }
        impl Drop for Ended<'_> {
            fn drop(&mut self) {
                let mut restart = self
                    .inner
                    .restart
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                restart.running = false;
                restart.ended += 1;
                restart.failure = self.failure.take();
                drop(restart);
                self.inner.started.notify_all();
            }
        }
        let mut ended = Ended {
            inner: self,
            failure: Some("the restart of the plugin process failed".into()),
        };
        let deaths = self.deaths.load(Ordering::SeqCst);
        if deaths > 0 {
            std::thread::sleep(restart_backoff(deaths));
        }
        ended.failure = match self.spawn() {
            Ok(_) => None,
            Err(e) => {
                self.deaths.fetch_add(1, Ordering::SeqCst);
                Some(e.into_init_error(&self.name).to_string())
            }
        };
    }

    /// The current child if it can take a call; one that cannot is let go (and its death
    /// counted): see [`take_live`].
    fn live(&self) -> Result<Option<Arc<ChildProc>>, String> {
        let mut c = self.children.lock().map_err(|_| "poisoned".to_owned())?;
        let (live, gone) = take_live(&mut c);
        if gone {
            self.deaths.fetch_add(1, Ordering::SeqCst);
        }
        Ok(live)
    }

    /// Starts a child and, once its instance is created, makes it the current one.
    /// Installs nothing once the instance is dropped (the child is killed).
    pub(super) fn spawn(&self) -> Result<(Arc<ChildProc>, Loaded), StartError> {
        let started = self.start_child();
        let mut c = self
            .children
            .lock()
            .map_err(|_| self.unavailable("poisoned".into()))?;
        c.starting = None;
        match started {
            Ok((proc, _)) if c.closed => {
                proc.kill();
                Err(self.unavailable("the instance was closed while its process started".into()))
            }
            Ok((proc, loaded)) => {
                c.current = Some(proc.clone());
                Ok((proc, loaded))
            }
            Err(e) => Err(e),
        }
    }

    fn unavailable(&self, message: String) -> StartError {
        StartError::Init(InitError::Unavailable {
            instance: self.name.clone(),
            message,
        })
    }

    fn start_child(&self) -> Result<(Arc<ChildProc>, Loaded), StartError> {
        let unavailable = |message: String| self.unavailable(message);
        // Dropped (a reload, the stop) during the backoff: no process is started at all.
        if self.children.lock().map_or(true, |c| c.closed) {
            return Err(unavailable("the instance was closed".into()));
        }
        // Checked before a process starts: it gets the folder as text (`InitRequest`).
        let config_dir = gateway_plugin::host::config_dir_text(&self.name, &self.config_dir)
            .map_err(StartError::Init)?
            .to_owned();
        let mut child = spawn_host(&self.library).map_err(unavailable)?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            // Killed and reaped (no reader thread will): no zombie is left behind.
            let _ = child.kill();
            let _ = child.wait();
            return Err(unavailable("the plugin process has no pipes".into()));
        };
        let mut stdin = BufWriter::new(stdin);
        let init = ToChild::Init(InitRequest {
            name: self.name.clone(),
            config: self.config.clone(),
            config_dir,
            sha256: self.sha256.clone(),
            pinned: self.pinned,
        });
        if let Err(e) = init.write(&mut stdin) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(unavailable(format!(
                "cannot talk to the plugin process: {e}"
            )));
        }
        let pid = child.id();
        let proc = ChildProc::new(child, stdin);
        match self.children.lock() {
            Ok(mut c) if !c.closed => c.starting = Some(proc.clone()),
            // Dropped meanwhile (nothing else would kill it) or poisoned: killed, and reaped by
            // the reader started below.
            _ => proc.kill(),
        }
        let (init_tx, init_rx) = mpsc::channel();
        let reader = Reader {
            name: self.name.clone(),
            library: self.library.clone(),
            proc: proc.clone(),
            log: self.log.clone(),
            init: Some(init_tx),
        };
        // The exit watcher's word to the reader (see `watch`); without it, the reader reads the
        // output alone.
        let exited = match std::io::pipe() {
            Ok((exited, tell)) => watch::watch(&self.name, pid, tell).then_some(exited),
            Err(e) => {
                tracing::warn!(plugin = %self.name, error = %e,
                    "cannot watch the plugin process's exit: its end is noticed by its output only");
                None
            }
        };
        let spawned = std::thread::Builder::new()
            .name(format!("plugin-{}", self.name))
            .spawn(move || {
                let out = reader::ExitAware {
                    inner: stdout,
                    exited,
                    proc: reader.proc.clone(),
                };
                reader.run(BufReader::new(out))
            });
        if let Err(e) = spawned {
            // No reader to reap it: killed and reaped here.
            proc.kill();
            if let Ok(mut child) = proc.child.lock() {
                let _ = child.wait();
            }
            if let Ok(mut c) = self.children.lock() {
                c.starting = None;
            }
            return Err(unavailable(format!("cannot start the reader thread: {e}")));
        }
        let init_timeout = Duration::from_millis(self.init_timeout_ms.load(Ordering::SeqCst));
        match init_rx.recv_timeout(init_timeout) {
            // The child checked the hash itself; a child that says it loaded something else is
            // not trusted with calls.
            Ok(Ok(loaded)) if loaded.sha256 != self.sha256 => {
                proc.kill();
                Err(StartError::Load(format!(
                    "{}: the plugin process loaded a file with sha256 {}, not the {} the gateway \
                     examined",
                    self.library.display(),
                    loaded.sha256,
                    self.sha256
                )))
            }
            Ok(Ok(loaded)) => {
                tracing::info!(plugin = %self.name, pid, "plugin process started");
                Ok((proc, loaded))
            }
            Ok(Err(e)) => {
                proc.kill();
                Err(e)
            }
            Err(_) => {
                tracing::warn!(plugin = %self.name, ?init_timeout,
                    "the plugin process did not create its instance within init_timeout: killed");
                proc.kill();
                Err(unavailable(format!(
                    "the plugin process did not start in time (its init outlived init_timeout, \
                     {init_timeout:?})"
                )))
            }
        }
    }
}

/// The wait before starting a child after `deaths` deaths or failed starts in a row (reset by a
/// call that returns): 10 ms doubling to 1 s (calls wait for it within their timeout). The engine's retry backoff paces the
/// deliveries; this only keeps a child that dies at once from being restarted in a tight loop.
fn restart_backoff(deaths: u32) -> Duration {
    Duration::from_millis(10u64 << deaths.saturating_sub(1).min(7)).min(Duration::from_secs(1))
}

/// The current child of `c` if it can take a call: neither dead nor killed by the gateway. A
/// killed child is dead to calls at once, not only once its reader sees its output end: that
/// takes until the process has exited (a process stuck in the kernel exits only when its call
/// there returns), and a call written to it meanwhile would only die with it, an attempt lost
/// (or block, once the pipe is full). One that cannot take a call is no longer current (a new
/// one starts); true when one was so let go.
fn take_live(c: &mut super::Children) -> (Option<Arc<ChildProc>>, bool) {
    match c.current.as_ref() {
        Some(p) if !p.dead.load(Ordering::SeqCst) && !p.killed.load(Ordering::SeqCst) => {
            (Some(p.clone()), false)
        }
        Some(_) => {
            c.current = None;
            (None, true)
        }
        None => (None, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper() -> Arc<ChildProc> {
        let mut child = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::piped())
            .spawn()
            .expect("sleep");
        let stdin = child.stdin.take().expect("stdin");
        ChildProc::new(child, BufWriter::new(stdin))
    }

    #[test]
    fn a_child_the_gateway_killed_is_handed_no_call_before_its_end_is_seen() {
        let proc = sleeper();
        let mut c = super::super::Children {
            current: Some(proc.clone()),
            ..Default::default()
        };
        let (live, gone) = take_live(&mut c);
        assert!(live.is_some_and(|p| Arc::ptr_eq(&p, &proc)) && !gone);
        // Killed (a call's timeout), its reader not yet at the end of its output.
        proc.killed.store(true, Ordering::SeqCst);
        assert!(!proc.dead.load(Ordering::SeqCst));
        let (live, gone) = take_live(&mut c);
        assert!(live.is_none() && gone);
        assert!(c.current.is_none(), "a new child starts for the next call");
        assert!(matches!(take_live(&mut c), (None, false)));
        proc.sigkill();
        let _ = proc.try_wait();
    }

    #[test]
    fn a_dead_child_is_let_go_and_counted_once() {
        let proc = sleeper();
        let mut c = super::super::Children {
            current: Some(proc.clone()),
            ..Default::default()
        };
        proc.dead.store(true, Ordering::SeqCst);
        let (live, gone) = take_live(&mut c);
        assert!(live.is_none() && gone);
        let (live, gone) = take_live(&mut c);
        assert!(live.is_none() && !gone);
        proc.sigkill();
        let _ = proc.try_wait();
    }
}
