//! What one plugin call gave back: an outcome per delivery and which of them the plugin had
//! twice in the call (a batch that panicked as a whole, or whose isolated process died, is
//! handed over again one delivery at a time; see [`crate::store::Trace::discarded_run`]).

use std::sync::Arc;

use gateway_plugin::host::CallOutcome;

/// What one call of a batch gave back: an outcome per delivery and, for each delivery the
/// plugin had twice in the call, why ([`Called::again`]).
#[derive(Debug)]
pub struct Called {
    pub outcomes: Vec<CallOutcome>,
    /// Per delivery (when not empty, as long as `outcomes`): `Some` when its batch as a whole
    /// panicked, or its process died, after which each delivery was handed over again on its
    /// own: the plugin may have handled it in that first run, whose outcome is lost (the
    /// history shows it, see [`crate::store::Trace::discarded_run`]).
    pub discarded: Vec<Option<Arc<str>>>,
}

impl Called {
    /// Outcomes of deliveries each handed over once.
    pub fn once(outcomes: Vec<CallOutcome>) -> Called {
        Called {
            outcomes,
            discarded: Vec::new(),
        }
    }

    /// Outcomes of deliveries each handed over a second time, after their batch's first run
    /// ended as `why` says.
    pub fn again(outcomes: Vec<CallOutcome>, why: &str) -> Called {
        let why: Arc<str> = crate::delivery::detail::cap(format!(
            "{why}: the plugin may have handled this delivery before that; handed over again on its own"
        ))
        .into();
        Called {
            discarded: vec![Some(why); outcomes.len()],
            outcomes,
        }
    }

    /// Why the delivery at `i` was handed over twice, if it was.
    pub fn discarded(&self, i: usize) -> Option<Arc<str>> {
        self.discarded.get(i).cloned().flatten()
    }
}
