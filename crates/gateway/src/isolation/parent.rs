//! The gateway's side of an isolated plugin instance: starts the child, sends it calls, matches
//! answers to callers, notices its death and starts a new one on the next call. Every start
//! (the first and each restart) gives the child the SHA-256 of the file the gateway examined;
//! the child loads nothing else, and reports the descriptor and hash of what it loaded.
//!
//! Calls are blocking (they run on the engine's blocking pool like in-process calls). A reader
//! thread per child reads every frame it writes: outcomes go to the waiting caller, log lines to
//! the gateway's log, and end of stream means the child died: every call in flight gets a
//! `Retry` naming the signal or exit code, and the death is counted in metrics. A watcher
//! thread per child (`watch`) notices its exit by pid too and tells the reader, for a child
//! whose output a process it forked still holds open. A frame that
//! makes no sense means the child cannot be trusted any more: it is killed and handled as a
//! crash. A batch whose child died is run again one delivery at a time, so a poison delivery
//! ends only itself. Consecutive deaths back off the next start (10 ms doubling to 1 s).
//!
//! [`Isolated::kill`] runs when a call outlives its timeout and must never wait: the locks it
//! takes (`Inner::children`, `Inner::restart`, `ChildProc::child`) are only ever held for an
//! instant, never across a child's start, a backoff or a wait for a child to end (a caller
//! waiting for a restart releases `restart` while it waits). A kill ends the calls of this
//! instance in flight: those waiting for a restart and, in a batch whose child died, the
//! deliveries not yet run again one by one (none is started after the kill).

use std::io::BufReader;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use gateway_plugin::host::{CallOutcome, DescriptorSummary, InitError, LogSink};
use gateway_plugin::Level;

use super::wire::{FromChild, InitFailure, Loaded, ToChild};
use crate::plugins::Called;
use child::ChildProc;

mod child;
mod reader;
mod retire;
mod start;
mod watch;
pub(crate) use reader::ended;
pub use retire::{retire_all, set_retire_grace, wait_for_retired};
pub(crate) use start::spawn_host;

/// Why an isolated instance could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    /// The child did not load the library: missing, not the file the gateway examined, or
    /// refused by the loader (ABI, descriptor). The message names the file.
    Load(String),
    /// The library loaded but the instance was not created (its `init`, or the process).
    Init(InitError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Load(message) => f.write_str(message),
            StartError::Init(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for StartError {}

impl StartError {
    /// As an instance error of `instance` (a load refused at a restart makes it unavailable).
    fn into_init_error(self, instance: &str) -> InitError {
        match self {
            StartError::Load(message) => InitError::Unavailable {
                instance: instance.to_owned(),
                message,
            },
            StartError::Init(e) => e,
        }
    }
}

/// How long a child that closed its output gets to end on its own (it normally is ending: its
/// own exit code or signal is then reported) before it is killed.
const EXIT_GRACE: Duration = Duration::from_millis(200);

/// How long the reader waits for a killed child to end before it answers the calls in flight
/// anyway (it keeps waiting afterwards, to reap it).
const KILL_WAIT: Duration = Duration::from_secs(2);

/// What a caller waiting on a child gets.
enum Reply {
    /// The child's answer; the child that sent it.
    Outcomes(Vec<CallOutcome>, Arc<ChildProc>),
    /// The call panicked (caught in the child); the child it ran in.
    Panicked(String, Arc<ChildProc>),
    /// The child ended; `true` when trying the calls again one by one would not help: the
    /// gateway killed it (a timeout or a restart).
    Died(String, bool),
    /// No child could be started: the call was handed to none (nor would the next be).
    Unstarted(String),
}

/// The children of an instance.
#[derive(Default)]
struct Children {
    /// The child serving calls.
    current: Option<Arc<ChildProc>>,
    /// The child being started (until its instance is created), so `kill` reaches it too.
    starting: Option<Arc<ChildProc>>,
    /// Children retired after a panic, or told to leave when the instance closed (a reload
    /// replaced it, or the gateway stops), while they may still run calls (they leave once
    /// those return), so that `kill` (a call past its timeout) reaches them too.
    retired: Vec<Arc<ChildProc>>,
    /// Set when the instance is dropped: a child whose start ends later is killed.
    closed: bool,
}

/// An isolated plugin instance. Dropping it retires its children (see `Drop`).
pub struct Isolated(Arc<Inner>);

/// An isolated instance's state, shared with the thread that restarts its child.
struct Inner {
    /// This very `Inner`, for the thread a restart runs on.
    me: Weak<Inner>,
    name: String,
    library: PathBuf,
    /// The SHA-256 of the file the gateway examined (and, when `pinned`, the config's pin):
    /// every child checks it on the file it opens and loads, so a child restarted after a crash
    /// never loads another file than the one examined.
    sha256: String,
    pinned: bool,
    config: serde_json::Value,
    /// How long a child gets to create its instance (a first start or a restart), in ms: a
    /// reload that keeps the instance may change it.
    init_timeout_ms: AtomicU64,
    config_dir: PathBuf,
    log: LogSink,
    /// Held only for an instant (see the module docs).
    children: Mutex<Children>,
    /// The restart in progress, if any (see `start`); held only for an instant, or by a caller
    /// waiting on `started`.
    restart: Mutex<start::Restart>,
    /// Signalled when a restart ends and when `kill` cancels the waits.
    started: Condvar,
    /// Raised by each `kill`: a caller waiting for a restart since before it gives up.
    cancels: AtomicU64,
    next_id: AtomicU64,
    /// Deaths and failed starts since the last call that returned (for the start backoff).
    deaths: AtomicU32,
    /// The plugin exports the batch entry (ABI 1.1), as its first child reported (every child
    /// loads the same file). Without it, a batch is sent one delivery at a time.
    batch_entry: AtomicBool,
}

impl std::fmt::Debug for Isolated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Isolated")
            .field("name", &self.0.name)
            .field("library", &self.0.library)
            .finish()
    }
}

impl Isolated {
    /// Starts the child, which loads the file that hashes to `sha256` (`pinned`: the config's
    /// pin) and creates the instance; returns the descriptor the child reported.
    pub fn start(
        name: &str,
        library: &Path,
        (sha256, pinned): (&str, bool),
        (config, init_timeout): (&serde_json::Value, Duration),
        config_dir: &Path,
        log: LogSink,
    ) -> Result<(Isolated, DescriptorSummary), StartError> {
        let inner = Arc::new_cyclic(|me| Inner {
            me: me.clone(),
            name: name.to_owned(),
            library: library.to_path_buf(),
            sha256: sha256.to_owned(),
            pinned,
            config: config.clone(),
            init_timeout_ms: AtomicU64::new(
                u64::try_from(init_timeout.as_millis()).unwrap_or(u64::MAX),
            ),
            config_dir: config_dir.to_path_buf(),
            log,
            children: Mutex::new(Children::default()),
            restart: Mutex::new(start::Restart::default()),
            started: Condvar::new(),
            cancels: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            deaths: AtomicU32::new(0),
            batch_entry: AtomicBool::new(true),
        });
        let (_, loaded) = inner.spawn()?;
        inner
            .batch_entry
            .store(loaded.descriptor.batch_entry, Ordering::SeqCst);
        if let Ok(mut live) = retire::LIVE.lock() {
            live.retain(|w| w.strong_count() > 0);
            live.push(Arc::downgrade(&inner));
        }
        Ok((Isolated(inner), loaded.descriptor))
    }

    /// A reload kept the instance with another `init_timeout`: its next starts take it.
    pub fn set_init_timeout(&self, init_timeout: Duration) {
        let ms = u64::try_from(init_timeout.as_millis()).unwrap_or(u64::MAX);
        self.0.init_timeout_ms.store(ms, Ordering::SeqCst);
    }

    /// Handles a batch in the child (blocking): one outcome per delivery. A batch too large
    /// for one frame is sent as several.
    pub fn call_batch(&self, deliveries: &[&[u8]]) -> Called {
        self.0.call_batch(deliveries)
    }

    /// Kills the child (a call past its timeout) and any retired one still running calls;
    /// calls in flight fail as retries, and so do calls waiting for a restart (the restart
    /// itself goes on). The next call starts a new child. Never waits (see the module docs).
    pub fn kill(&self) {
        self.0.kill()
    }
}

impl Inner {
    fn call_batch(&self, deliveries: &[&[u8]]) -> Called {
        // A kill after this (a timeout) ends this call: nothing of it starts afterwards.
        let epoch = self.cancels.load(Ordering::SeqCst);
        // A 1.0 plugin's batch would be `handle` looped in one child: after a delivery that
        // panicked, the next would run on the instance that just panicked. One at a time, a
        // panicked outcome retires the child before the next delivery is sent (as in process).
        if !self.batch_entry.load(Ordering::SeqCst) {
            return Called::once(self.one_by_one(deliveries, epoch).0);
        }
        let groups = super::wire::batch_groups(deliveries);
        if groups.len() == 1 {
            return self.call_group(deliveries, epoch).0;
        }
        let mut all = Called {
            outcomes: Vec::with_capacity(deliveries.len()),
            discarded: Vec::with_capacity(deliveries.len()),
        };
        let mut killed = false;
        for group in groups {
            // Killed (a timeout): the call is over; the rest is not started in a new child.
            if killed {
                all.outcomes.extend(
                    group
                        .iter()
                        .map(|_| died("killed before it started".into())),
                );
                all.discarded.resize(all.outcomes.len(), None);
                continue;
            }
            let (called, was_killed) = self.call_group(group, epoch);
            killed = was_killed;
            // One outcome per delivery of the group, whatever the child sent.
            for i in 0..group.len() {
                all.discarded.push(called.discarded(i));
            }
            let mut answered = called.outcomes;
            answered.truncate(group.len());
            answered.resize_with(group.len(), || died("no outcome".into()));
            all.outcomes.extend(answered);
        }
        all
    }

    /// The outcomes of one frame's batch, and whether the gateway killed its child meanwhile.
    fn call_group(&self, deliveries: &[&[u8]], epoch: u64) -> (Called, bool) {
        let called = match self.run(deliveries, epoch) {
            Reply::Outcomes(outcomes, proc) => {
                self.deaths.store(0, Ordering::SeqCst);
                self.retire_if_panicked(&outcomes, &proc);
                Called::once(outcomes)
            }
            Reply::Panicked(message, proc) if deliveries.len() > 1 => {
                tracing::error!(plugin = %self.name, panic = %message,
                    "plugin panicked in a batch: a new process handles each delivery on its own");
                self.retire(&proc);
                let why = format!(
                    "its batch panicked as a whole ({})",
                    crate::delivery::detail::cap(message)
                );
                Called::again(self.one_by_one(deliveries, epoch), &why)
            }
            Reply::Panicked(message, proc) => {
                self.retire(&proc);
                Called::once(vec![CallOutcome::Panicked { message }])
            }
            Reply::Died(why, false) if deliveries.len() > 1 => {
                tracing::warn!(plugin = %self.name, reason = %why,
                    "plugin process died during a batch: handling each delivery on its own");
                let again = format!("the plugin's process died during its batch ({why})");
                Called::again(self.one_by_one(deliveries, epoch), &again)
            }
            Reply::Died(why, killed) => {
                return (
                    Called::once(deliveries.iter().map(|_| died(why.clone())).collect()),
                    killed,
                )
            }
            // The rest of the call is not tried either: each would fail to start a child.
            Reply::Unstarted(why) => {
                return (
                    Called::once(deliveries.iter().map(|_| died(why.clone())).collect()),
                    true,
                )
            }
        };
        (called, false)
    }

    /// Each delivery in a call of its own, but none after a kill (the engine has recorded the
    /// call's timeout, so a delivery run now would run again at its retry), nor after no child
    /// could be started (each would try, and fail, to start one again): those fail as it did.
    /// Also returns how many were handed over (the first ones).
    fn one_by_one(&self, deliveries: &[&[u8]], epoch: u64) -> (Vec<CallOutcome>, usize) {
        let mut given_up: Option<String> = None;
        let mut ran = 0;
        let outcomes = deliveries
            .iter()
            .map(|d| {
                if let Some(why) = &given_up {
                    died(why.clone())
                } else if self.cancels.load(Ordering::SeqCst) != epoch {
                    given_up = Some("killed before it was run".into());
                    died("killed before it was run".into())
                } else {
                    let (outcome, hopeless, sent) = self.call_one(d, epoch);
                    ran += usize::from(sent);
                    given_up = hopeless;
                    outcome
                }
            })
            .collect();
        (outcomes, ran)
    }

    /// One delivery's outcome, the reason when calling the next would not help (the gateway
    /// killed the child, or none could be started), and whether a child was handed it.
    fn call_one(&self, delivery: &[u8], epoch: u64) -> (CallOutcome, Option<String>, bool) {
        match self.run(&[delivery], epoch) {
            Reply::Outcomes(mut o, proc) => {
                // A call that returned ends a run of deaths (the start backoff), as in a batch.
                self.deaths.store(0, Ordering::SeqCst);
                self.retire_if_panicked(&o, &proc);
                (
                    o.pop().unwrap_or_else(|| died("no outcome".into())),
                    None,
                    true,
                )
            }
            Reply::Panicked(message, proc) => {
                self.retire(&proc);
                (CallOutcome::Panicked { message }, None, true)
            }
            Reply::Died(why, true) => (died(why.clone()), Some(why), true),
            Reply::Died(why, false) => (died(why), None, true),
            Reply::Unstarted(why) => (died(why.clone()), Some(why), false),
        }
    }

    /// An answer with a `Panicked` outcome (a 1.0 plugin's `handle`, looped in the child, or a
    /// batch entry's code for one delivery) retires its child like a batch that panicked.
    fn retire_if_panicked(&self, outcomes: &[CallOutcome], proc: &Arc<ChildProc>) {
        if outcomes
            .iter()
            .any(|o| matches!(o, CallOutcome::Panicked { .. }))
        {
            self.retire(proc);
        }
    }

    /// After a panic (caught in the child, whose process is sound): the next call starts a new
    /// child, as a panicked in-process instance is replaced; this one's input is closed, so it
    /// leaves once its calls in flight have returned (they are not cut short: none of them
    /// panicked) and its instance's `shutdown` ran, within the retire grace (then it is
    /// killed, as a replaced instance's child is). Not a death: no restart backoff.
    fn retire(&self, proc: &Arc<ChildProc>) {
        if let Ok(mut c) = self.children.lock() {
            if c.current.as_ref().is_some_and(|p| Arc::ptr_eq(p, proc)) {
                c.current = None;
            }
            c.retired.retain(|p| !p.dead.load(Ordering::SeqCst));
            if !c.retired.iter().any(|p| Arc::ptr_eq(p, proc)) {
                c.retired.push(proc.clone());
            }
        }
        retire::tell_to_leave(&self.name, proc.clone());
    }

    fn kill(&self) {
        self.cancel_restart_waits();
        let procs: Vec<Arc<ChildProc>> = match self.children.lock() {
            Ok(c) => c
                .current
                .iter()
                .chain(c.retired.iter().filter(|p| !p.dead.load(Ordering::SeqCst)))
                .cloned()
                .collect(),
            Err(_) => Vec::new(),
        };
        for proc in procs {
            proc.kill();
        }
    }

    fn run(&self, deliveries: &[&[u8]], epoch: u64) -> Reply {
        // A child retired (by a panic beside this call), or dead, after `ensure` chose it was
        // sent nothing: the call goes to the next child instead of counting as its death.
        for _ in 0..3 {
            if let Some(reply) = self.run_once(deliveries, epoch) {
                return reply;
            }
        }
        // Handed to none: not run again one by one (each would likely meet the same).
        Reply::Unstarted(
            "the plugin process was retired or died three times in a row before the call was sent"
                .into(),
        )
    }

    /// `None` when the chosen child was retired, or had died, before anything was written to
    /// it.
    fn run_once(&self, deliveries: &[&[u8]], epoch: u64) -> Option<Reply> {
        let proc = match self.ensure(epoch) {
            Ok(p) => p,
            // Not split into single calls: each would try (and fail) to start a child again.
            Err(why) => return Some(Reply::Unstarted(why)),
        };
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel();
        if let Ok(mut p) = proc.pending.lock() {
            p.insert(id, tx);
        }
        if proc.dead.load(Ordering::SeqCst) {
            // Died after `ensure` chose it: nothing was sent, so the call goes to the next
            // child (not a run of the plugin's that may have happened).
            if let Ok(mut p) = proc.pending.lock() {
                p.remove(&id);
            }
            return None;
        }
        let request = ToChild::Batch {
            id,
            deliveries: deliveries.iter().map(|d| d.to_vec()).collect(),
        };
        let written = match proc.stdin.lock() {
            Ok(mut w) => match w.as_mut() {
                Some(w) => request.write(w).map(|_| true),
                None => Ok(false),
            },
            Err(_) => Err(std::io::Error::other("poisoned")),
        };
        match written {
            Ok(true) => Some(
                rx.recv()
                    .unwrap_or_else(|_| Reply::Died("the plugin process went away".into(), false)),
            ),
            // Retired: nothing was sent.
            Ok(false) => {
                if let Ok(mut p) = proc.pending.lock() {
                    p.remove(&id);
                }
                None
            }
            Err(e) => {
                if let Ok(mut p) = proc.pending.lock() {
                    p.remove(&id);
                }
                Some(Reply::Died(
                    format!("cannot write to the plugin process: {e}"),
                    false,
                ))
            }
        }
    }
}

impl Drop for Isolated {
    fn drop(&mut self) {
        self.0.close();
    }
}

fn died(why: String) -> CallOutcome {
    CallOutcome::Retry {
        reason: format!("plugin process died: {why}"),
        retry_after: None,
    }
}
