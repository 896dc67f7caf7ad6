//! The host state a plugin's table points to ([`HostCtx`], behind `HostApi::ctx`), the `log`
//! entry the table hands out ([`host_log`]), and the table's strings ([`interned`]). None of it
//! is ever freed (see the invariants in `host.rs`): a plugin may keep its table past
//! `shutdown`. Part of the host FFI module (`unsafe` allowed by `host.rs`).

use std::ffi::c_void;
use std::sync::Arc;

use super::LogSink;
use crate::abi::GwStr;
use crate::sdk::Level;

/// `text`, leaked once per distinct text (the host tables' strings: instance names and config
/// folders, which repeat at each reload and restart).
pub(super) fn interned(text: &str) -> &'static str {
    static TEXTS: std::sync::Mutex<std::collections::BTreeSet<&'static str>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut texts = TEXTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(kept) = texts.get(text) {
        return kept;
    }
    let kept: &'static str = Box::leak(text.to_owned().into_boxed_str());
    texts.insert(kept);
    kept
}

/// Host state behind `HostApi::ctx`: leaked, never freed (see the module invariants), so a
/// plugin that calls `log` with it after its instance's `shutdown` reads no freed memory.
pub(super) struct HostCtx {
    /// The instance name and the sink while the instance lives; `None` once it is retired
    /// (shut down, or its `init` failed): log lines are then dropped.
    live: std::sync::RwLock<Option<(Arc<str>, LogSink)>>,
}

impl HostCtx {
    /// A new context for `instance`, leaked: it lives as long as the process.
    pub(super) fn leak(instance: &str, log: LogSink) -> &'static HostCtx {
        Box::leak(Box::new(HostCtx {
            live: std::sync::RwLock::new(Some((Arc::from(instance), log))),
        }))
    }

    /// Drops the sink and the name: later log lines through this context go nowhere. Waits for
    /// log calls in progress (they hold the lock only to copy the sink out, not while it runs).
    pub(super) fn retire(&self) {
        let taken = self
            .live
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(taken);
    }

    /// The name and the sink, unless retired.
    fn live(&self) -> Option<(Arc<str>, LogSink)> {
        self.live
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

pub(super) unsafe extern "C" fn host_log(ctx: *const c_void, level: u32, message: GwStr) {
    if ctx.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: `ctx` is a `HostCtx` we put in a table, and those are never freed.
        let ctx = unsafe { &*(ctx as *const HostCtx) };
        let Some((instance, log)) = ctx.live() else {
            return; // the instance is gone: nowhere to log to
        };
        if message.len > isize::MAX as usize {
            // No slice can be that long (`from_raw_parts` would be undefined behaviour): a C
            // plugin's bug, e.g. a failed `snprintf`'s -1 cast to `size_t`.
            let said = format!(
                "(the plugin logged a message of impossible length {})",
                message.len
            );
            log(&instance, Level::from_abi(level), &said);
            return;
        }
        let bytes = if message.ptr.is_null() || message.len == 0 {
            &[][..]
        } else {
            // SAFETY: the plugin passes a borrowed, readable buffer for the duration of the
            // call; its length is at most `isize::MAX` (checked above).
            unsafe { std::slice::from_raw_parts(message.ptr, message.len) }
        };
        log(
            &instance,
            Level::from_abi(level),
            &String::from_utf8_lossy(bytes),
        );
    }));
}
