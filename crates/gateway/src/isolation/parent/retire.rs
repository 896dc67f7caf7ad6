//! Children told to leave: an instance dropped (a reload replaced it, or the gateway stops)
//! closes its children's input, and a child retired after a panic has its input closed too; each then finishes its calls and its instance's `shutdown`
//! and exits. One that has not ended within the retire grace (`[server] shutdown_grace`) is
//! killed, said in a warning. At the stop, [`retire_all`] retires every instance still held
//! (tasks may outlive the stop) and [`wait_for_retired`] waits for them within what is left of
//! the grace.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::child::ChildProc;
use super::Inner;

/// Every isolated instance started (those dropped since are dead references), for the stop
/// to retire them all ([`retire_all`]): tasks still holding one may outlive the stop.
pub(super) static LIVE: Mutex<Vec<Weak<Inner>>> = Mutex::new(Vec::new());

/// At the stop: retires every isolated instance's children as dropping it would (tasks of the
/// engine may still hold instances until the runtime ends); [`wait_for_retired`] then waits
/// for them.
pub fn retire_all() {
    let live: Vec<Arc<Inner>> = match LIVE.lock() {
        Ok(live) => live.iter().filter_map(Weak::upgrade).collect(),
        Err(_) => Vec::new(),
    };
    for inner in live {
        inner.close();
    }
}

impl Inner {
    /// Closing stdin retires the child: it lets its calls finish, shuts the instance down and
    /// exits. A child that does not within the retire grace is killed. A child being started is
    /// killed, and a restart that ends later installs nothing. Once only (closing again does
    /// nothing); the children stay where `kill` reaches them until they end.
    pub(super) fn close(&self) {
        let (procs, starting): (Vec<Arc<ChildProc>>, _) = match self.children.lock() {
            Ok(mut c) if !c.closed => {
                c.closed = true;
                let procs: Vec<Arc<ChildProc>> = c
                    .current
                    .take()
                    .into_iter()
                    .chain(c.retired.drain(..))
                    .collect();
                // Still reachable by `kill`: a call of theirs that outlives `[delivery] timeout`
                // while they leave (a stop retires every child while its calls still run) is
                // killed at the timeout, as before the close, not only when the retire grace
                // ends (the stop would wait the whole `shutdown_grace` for it, and the next
                // start count its delivery as crashed).
                c.retired = procs.clone();
                (procs, c.starting.take())
            }
            _ => (Vec::new(), None),
        };
        if let Some(proc) = starting {
            proc.kill();
        }
        for proc in procs {
            tell_to_leave(&self.name, proc);
        }
    }
}

/// Closes `proc`'s input (it finishes its calls, shuts its instance down and exits), lists it
/// for the stop's [`wait_for_retired`], and kills it if it has not ended within the retire
/// grace (said in a warning). A child closed twice (a panic's retirement, then its instance's
/// close) is watched twice: the second watch finds it ended, or kills it once.
pub(super) fn tell_to_leave(name: &str, proc: Arc<ChildProc>) {
    if let Ok(mut w) = proc.stdin.lock() {
        w.take();
    }
    if let Ok(mut r) = RETIRING.lock() {
        r.retain(|(_, p)| !p.dead.load(Ordering::SeqCst));
        if !r.iter().any(|(_, p)| Arc::ptr_eq(p, &proc)) {
            r.push((name.to_owned(), proc.clone()));
        }
    }
    let grace = Duration::from_millis(RETIRE_GRACE_MS.load(Ordering::SeqCst));
    let name = name.to_owned();
    std::thread::spawn(move || {
        let until = Instant::now() + grace;
        while !proc.dead.load(Ordering::SeqCst) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        kill_overdue(&name, &proc);
    });
}

/// Kills a child told to leave that has not ended within the retire grace (its instance
/// replaced, or the gateway stopping), said once.
fn kill_overdue(name: &str, proc: &ChildProc) {
    if proc.dead.load(Ordering::SeqCst) || proc.killed.swap(true, Ordering::SeqCst) {
        return;
    }
    tracing::warn!(plugin = %name,
        "a plugin process told to leave (its instance replaced, the gateway stopping, or a call in it panicked) had not ended within shutdown_grace (its calls, then its shutdown): killed");
    proc.kill();
}

/// How long a retired child gets to end on its own (its calls, then the instance's shutdown)
/// before it is killed: `[server] shutdown_grace` ([`set_retire_grace`]).
static RETIRE_GRACE_MS: AtomicU64 = AtomicU64::new(10_000);

/// Children told to leave (their instance dropped) that may not have ended yet, for the stop
/// to wait on ([`wait_for_retired`]).
static RETIRING: Mutex<Vec<(String, Arc<ChildProc>)>> = Mutex::new(Vec::new());

/// Sets how long a retired child gets before it is killed (`[server] shutdown_grace`, at start
/// and at each reload).
pub fn set_retire_grace(grace: Duration) {
    let ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
    RETIRE_GRACE_MS.store(ms, Ordering::SeqCst);
}

/// At the stop, once every instance is dropped: waits until each child told to leave has
/// ended (its calls, then its instance's `shutdown`), at most `within`; those still running
/// then are killed, each said in a warning. How many were killed.
pub async fn wait_for_retired(within: Duration) -> usize {
    let until = tokio::time::Instant::now() + within;
    loop {
        let left: Vec<(String, Arc<ChildProc>)> = match RETIRING.lock() {
            Ok(mut r) => {
                r.retain(|(_, p)| !p.dead.load(Ordering::SeqCst));
                r.clone()
            }
            Err(_) => return 0,
        };
        if left.is_empty() {
            return 0;
        }
        if tokio::time::Instant::now() >= until {
            for (name, proc) in &left {
                kill_overdue(name, proc);
            }
            return left.len();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
