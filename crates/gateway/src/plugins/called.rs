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

    /// Outcomes of deliveries after their batch's first run ended as `why` says: the first
    /// `ran` of them each handed over a second time, on its own; the rest not (the call ended
    /// first: a kill, or no instance to take them), their outcomes saying why.
    pub fn again((outcomes, ran): (Vec<CallOutcome>, usize), why: &str) -> Called {
        let entry = |then: &str| -> Arc<str> {
            crate::delivery::detail::cap(format!(
                "{why}: the plugin may have handled this delivery before that; {then}"
            ))
            .into()
        };
        let again = entry("handed over again on its own");
        let not = entry("not handed over again (the call ended first)");
        Called {
            discarded: (0..outcomes.len())
                .map(|i| Some(if i < ran { again.clone() } else { not.clone() }))
                .collect(),
            outcomes,
        }
    }

    /// Why the delivery at `i` was handed over twice, if it was.
    pub fn discarded(&self, i: usize) -> Option<Arc<str>> {
        self.discarded.get(i).cloned().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_deliveries_run_again_are_said_to_be() {
        let ok = || CallOutcome::Ok;
        let called = Called::again(
            (vec![ok(), ok(), ok()], 1),
            "its batch panicked as a whole (x)",
        );
        let said: Vec<String> = (0..3)
            .map(|i| {
                called
                    .discarded(i)
                    .map(|w| w.to_string())
                    .unwrap_or_default()
            })
            .collect();
        assert!(
            said[0].ends_with("; handed over again on its own"),
            "{said:?}"
        );
        for s in &said[1..] {
            assert!(
                s.starts_with("its batch panicked as a whole (x): the plugin may have handled")
                    && s.ends_with("; not handed over again (the call ended first)"),
                "{said:?}"
            );
        }
        assert_eq!(called.discarded(3), None);
    }
}
