//! How many threads are running a plugin's own code (its `init`, `handle`, `handle_batch` or
//! `shutdown`) right now, in this process: a process that ends while one is (a call hung past
//! its timeout, a `shutdown` or an `init` that outlived the stop's grace) must not run the C
//! runtime's exit handlers and the libraries' destructors beside it ([`plugin_code_running`]).

use std::sync::atomic::{AtomicUsize, Ordering};

static INSIDE: AtomicUsize = AtomicUsize::new(0);

/// Held while a thread runs a plugin's code; counted in [`plugin_code_running`].
pub(super) struct Inside(());

impl Inside {
    pub(super) fn enter() -> Inside {
        INSIDE.fetch_add(1, Ordering::SeqCst);
        Inside(())
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        INSIDE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether a plugin's code runs on some thread of this process now.
pub fn plugin_code_running() -> bool {
    INSIDE.load(Ordering::SeqCst) > 0
}

/// Ends the process with `code`: a normal exit, unless a plugin's code still runs
/// ([`plugin_code_running`]), then without the C runtime's exit handlers and the loaded
/// libraries' destructors ([`exit_beside_plugins`]), which would run beside it.
pub fn exit_process(code: i32) -> ! {
    if plugin_code_running() {
        exit_beside_plugins(code)
    }
    std::process::exit(code)
}

/// Ends the process with `code` without the C runtime's exit handlers and the loaded
/// libraries' destructors (`_exit`), for a process ending while a plugin's code runs
/// ([`plugin_code_running`]): those would run beside it, freeing what it uses or waiting for a
/// lock it holds. Buffered output is not flushed (the gateway's log goes to stderr unbuffered).
pub fn exit_beside_plugins(code: i32) -> ! {
    // SAFETY: `_exit` takes any status and never returns; it touches no memory of this
    // process (the kernel ends every thread).
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_while_held() {
        // Other tests of this binary enter plugin code beside this one: while this guard is
        // held the count is at least one; its drop takes exactly one off (checked with a guard
        // of our own held across, so the count cannot reach zero meanwhile).
        let held = Inside::enter();
        assert!(plugin_code_running());
        let other = Inside::enter();
        drop(other);
        assert!(
            plugin_code_running(),
            "the other guard took off only its own"
        );
        drop(held);
    }
}
