//! Panics inside an entry point: caught with the message kept for the host ([`caught`],
//! [`take_panic`]), and said in one line of the instance's log by a quiet panic hook instead of
//! std's raw text on the gateway's stderr.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::{AbiLog, HostLogger};
#[cfg(panic = "unwind")]
use crate::sdk::Level;

pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// The message of a panic [`caught`] in an entry, its payload dropped. The payload is the
/// plugin's (`panic_any` takes any value), and its `Drop` may panic too: dropped after
/// `catch_unwind` returned, that panic would unwind out of the `extern "C"` entry, which aborts
/// the process (the gateway's, in process). So it is dropped inside [`caught`] as well, and a
/// payload whose drop panicked is leaked (dropping the second payload could panic again).
pub(super) fn take_panic(
    log: Option<HostLogger>,
    payload: Box<dyn std::any::Any + Send>,
) -> String {
    let message = panic_message(&*payload);
    if let Err(again) = caught(log, move || drop(payload)) {
        std::mem::forget(again);
    }
    message
}

thread_local! {
    /// While an entry point runs on this thread: `Some`, with the instance's log once there
    /// is one (see [`caught`]).
    static IN_ENTRY: RefCell<Option<Option<HostLogger>>> = const { RefCell::new(None) };
}

/// `catch_unwind(f)` for an entry point's body. Its panic is reported to the host (as the
/// outcome, or the init error), which logs it; std's default hook would also print `thread
/// '<unnamed>' panicked at ...` as raw text into the gateway's stderr, between its log lines (a
/// JSON log breaks on it). So while an entry runs, the hook says where it panicked in one line
/// of the instance's log instead; a panic elsewhere (a thread the plugin started) goes to the
/// hook it replaced. Built with `panic = "abort"`, the hook is left alone: the process ends, and
/// std's words are all there is.
pub(super) fn caught<R>(log: Option<HostLogger>, f: impl FnOnce() -> R) -> std::thread::Result<R> {
    #[cfg(panic = "unwind")]
    quiet_hook();
    // `try_with`, never `with`: outside `catch_unwind`, a panic here (an entry called while
    // this thread's locals are being destroyed, `shutdown` from a host's own thread-local
    // destructor) would unwind into the host. The hook then simply has no log.
    // `before`: `None` when this thread's slot could not be set (nothing to restore then).
    let before: Option<Option<Option<HostLogger>>> = IN_ENTRY
        .try_with(|e| e.try_borrow_mut().ok().map(|mut e| e.replace(log)))
        .ok()
        .flatten();
    let result = catch_unwind(AssertUnwindSafe(f));
    if let Some(before) = before {
        let _ = IN_ENTRY.try_with(|e| {
            if let Ok(mut e) = e.try_borrow_mut() {
                *e = before;
            }
        });
    }
    result
}

/// Gives the instance's log to [`caught`]'s hook, once `init` has made it.
pub(super) fn entry_log(log: &AbiLog) {
    IN_ENTRY.with(|e| *e.borrow_mut() = Some(Some(HostLogger::Abi(log.clone()))));
}

#[cfg(panic = "unwind")]
fn quiet_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let before = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let entry = IN_ENTRY
                .try_with(|e| e.try_borrow().ok().and_then(|l| l.clone()))
                .ok()
                .flatten();
            match entry {
                Some(Some(log)) => {
                    let at = info
                        .location()
                        .map_or_else(String::new, |l| format!(" at {l}"));
                    log.log(
                        Level::Warn,
                        &format!("panicked{at}: {}", panic_message(info.payload())),
                    );
                }
                // In `init` before its log exists: the init error carries the message.
                Some(None) => {}
                None => before(info),
            }
        }));
    });
}
