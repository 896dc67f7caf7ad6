//! A live plugin instance ([`Instance`]): its calls (`handle`, `handle_batch`) and its
//! `shutdown`, once, when the last reference drops. Part of the host FFI module (`unsafe`
//! allowed by `host.rs`).

use super::*;

/// A live plugin instance. Clone it to share; `shutdown` runs when the last clone drops.
#[derive(Clone)]
pub struct Instance {
    pub(super) inner: Arc<InstanceInner>,
}

pub(super) struct InstanceInner {
    pub(super) library: Library,
    pub(super) ptr: *mut c_void,
    pub(super) name: String,
    pub(super) log: LogSink,
    /// Retired once `shutdown` returned; never freed.
    pub(super) ctx: &'static HostCtx,
    /// Set once a wrong `retry_after_ms` was reported: the warning is logged once per instance.
    pub(super) warned_retry_after: std::sync::atomic::AtomicBool,
}

// SAFETY: plugins built with the SDK are `Send + Sync` (the trait requires it) and the ABI allows
// concurrent `handle` calls; the host tables are immutable after init.
unsafe impl Send for InstanceInner {}
// SAFETY: as above.
unsafe impl Sync for InstanceInner {}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("name", &self.inner.name)
            .field("library", &self.inner.library)
            .finish()
    }
}

impl Instance {
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn library(&self) -> &Library {
        &self.inner.library
    }

    /// Calls `handle` with one delivery (the JSON of [`crate::Delivery`]). Blocking: call it from
    /// a blocking thread.
    pub fn handle(&self, delivery_json: &[u8]) -> CallOutcome {
        let mut detail = GwBuf::EMPTY;
        let lib = &self.inner.library;
        let inside = Inside::enter();
        // SAFETY: `ptr` is the live instance from `init` (shutdown only runs on drop of the last
        // reference, and we hold one); the input buffer is borrowed for the call.
        let code = unsafe { (lib.fns.handle)(self.inner.ptr, gw_str(delivery_json), &mut detail) };
        drop(inside);
        self.outcome(code, detail)
    }

    /// Whether the plugin has a batch entry (ABI 1.1); without one, [`Instance::handle_batch`]
    /// calls `handle` once per delivery.
    pub fn has_batch(&self) -> bool {
        self.inner.library.fns.handle_batch.is_some()
    }

    /// Handles several deliveries: one outcome per delivery, in order. `Err(message)` when the
    /// plugin's batch entry reported a panic (the outcomes are then unknown: replace the
    /// instance and hand the deliveries to [`Instance::handle`] one by one). Blocking.
    pub fn handle_batch(&self, deliveries: &[&[u8]]) -> Result<Vec<CallOutcome>, String> {
        let lib = &self.inner.library;
        let Some(batch) = lib.fns.handle_batch else {
            return Ok(deliveries.iter().map(|d| self.handle(d)).collect());
        };
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        let inputs: Vec<GwStr> = deliveries.iter().map(|d| gw_str(d)).collect();
        let mut codes = vec![UNWRITTEN; deliveries.len()];
        let mut details: Vec<GwBuf> = (0..deliveries.len()).map(|_| GwBuf::EMPTY).collect();
        let inside = Inside::enter();
        // SAFETY: `ptr` is the live instance (see `handle`); `inputs` borrow `deliveries` for
        // the call; `codes` and `details` are `count` writable, initialised slots we own.
        let code = unsafe {
            batch(
                self.inner.ptr,
                inputs.as_ptr(),
                inputs.len(),
                codes.as_mut_ptr(),
                details.as_mut_ptr(),
            )
        };
        drop(inside);
        if code != abi::OUTCOME_OK {
            // The batch failed as a whole: the codes mean nothing, and `out_details[0]` holds
            // the message whatever the plugin wrote to `out_codes[0]` (an `OK`, or a code that
            // is no outcome, included). Every slot's buffer is released all the same.
            let mut details = details.into_iter();
            let message = details
                .next()
                .map(|d| Detail::parse(lib.take_buf(d)).reason)
                .unwrap_or_default();
            for d in details {
                lib.take_buf(d);
            }
            return Err(if message.is_empty() {
                format!("handle_batch returned code {code}")
            } else {
                message
            });
        }
        Ok(codes
            .into_iter()
            .zip(details)
            .map(|(c, d)| match c {
                // Retried like a `Retry`, said so: else it dies unexplained after max_attempts.
                UNWRITTEN => {
                    lib.take_buf(d);
                    CallOutcome::Retry {
                        reason: "the plugin's handle_batch returned OK without writing this \
                                 delivery's outcome code (a bug in the plugin)"
                            .to_owned(),
                        retry_after: None,
                    }
                }
                c => self.outcome(c, d),
            })
            .collect())
    }
}

/// What `out_codes` slots hold before `handle_batch` runs (no `OUTCOME_*` code): a slot still
/// holding it after an `OK` batch is one the plugin did not write.
const UNWRITTEN: u32 = u32::MAX;

impl Instance {
    /// Turns an outcome code and its detail buffer (released here) into a [`CallOutcome`]. A
    /// `retry_after_ms` that is not a whole number of milliseconds is ignored with a warning in
    /// the instance's log (once per instance: a plugin that gets it wrong gets it wrong on every
    /// call).
    fn outcome(&self, code: u32, detail: GwBuf) -> CallOutcome {
        let lib = &self.inner.library;
        let detail = Detail::parse(lib.take_buf(detail));
        if let Some(wrong) = &detail.bad_retry_after {
            if !self
                .inner
                .warned_retry_after
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                (self.inner.log)(
                    &self.inner.name,
                    Level::Warn,
                    &format!(
                        "plugin {} ({}) returned an outcome detail whose `retry_after_ms` is \
                         {wrong}, not a whole number of milliseconds (an integer, 0 or more): \
                         ignored, the gateway's own backoff applies; fix the plugin (this \
                         warning is logged once per instance)",
                        lib.name,
                        lib.path.display()
                    ),
                );
            }
        }
        let Detail {
            reason,
            retry_after_ms,
            ..
        } = detail;
        match code {
            abi::OUTCOME_OK => CallOutcome::Ok,
            abi::OUTCOME_RETRY => CallOutcome::Retry {
                reason,
                retry_after: retry_after_ms.map(Duration::from_millis),
            },
            abi::OUTCOME_REJECT => CallOutcome::Reject { reason },
            abi::OUTCOME_PANICKED => CallOutcome::Panicked { message: reason },
            other => CallOutcome::Reject {
                reason: format!("plugin returned unknown outcome code {other}: {reason}"),
            },
        }
    }
}

impl Drop for InstanceInner {
    fn drop(&mut self) {
        let inside = Inside::enter();
        // SAFETY: last reference: no `handle` call can be running; called exactly once.
        unsafe { (self.library.fns.shutdown)(self.ptr) };
        drop(inside);
        // The plugin may still hold the table's `ctx` (an SDK `Host` kept in a static or a
        // thread): from now on its log lines are dropped.
        self.ctx.retire();
    }
}
