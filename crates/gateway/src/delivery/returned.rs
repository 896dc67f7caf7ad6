//! What a plugin call gave back, one outcome per delivery: padded when the plugin returned too
//! few, and `Panicked` for each when the gateway's side of the call panicked — caught on the
//! call's thread, so the call's permit comes back with it and is released only once the
//! outcomes are recorded (see [`super::attempt`]).

use std::sync::Arc;

use gateway_plugin::host::CallOutcome;

use crate::plugins::Called;

/// One outcome per delivery: a plugin that returned fewer gets `Retry` for the rest.
pub(super) fn pad(outcomes: Vec<CallOutcome>, n: usize) -> Vec<Option<CallOutcome>> {
    let mut out: Vec<Option<CallOutcome>> = outcomes.into_iter().take(n).map(Some).collect();
    while out.len() < n {
        out.push(Some(CallOutcome::Retry {
            reason: "the plugin returned no outcome for this delivery".into(),
            retry_after: None,
        }));
    }
    out
}

/// Runs `call` (a plugin call, on a blocking thread) and gives `held` (its permit) back with
/// the result, also when `call` panics: a panic on the gateway's side of the call (the plugin's
/// own panics are caught in the plugin) must not release the permit by unwinding before the
/// call's outcomes are recorded.
pub(super) fn holding<H, R>(held: H, call: impl FnOnce() -> R) -> (Result<R, String>, H) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic with no message".into())
    });
    (result, held)
}

/// The outcomes of a call that returned: one per delivery, with why the plugin had it twice
/// in the call if it did ([`Called::discarded`]); a panic on the gateway's side of it makes
/// each `Panicked` (the instance is then restarted).
pub(super) fn outcomes_of(returned: Result<Called, String>, n: usize) -> Returned {
    match returned {
        Ok(called) => Returned {
            discarded: (0..n).map(|i| called.discarded(i)).collect(),
            outcomes: pad(called.outcomes, n),
        },
        Err(message) => Returned {
            outcomes: vec![
                Some(CallOutcome::Panicked {
                    message: format!("the gateway's side of the plugin call panicked: {message}"),
                });
                n
            ],
            discarded: vec![None; n],
        },
    }
}

/// A call's outcomes as the engine decides on them: one per delivery (`None`: none came
/// back), and per delivery why the plugin had it twice, if it did.
pub(super) struct Returned {
    pub outcomes: Vec<Option<CallOutcome>>,
    pub discarded: Vec<Option<Arc<str>>>,
}

impl Returned {
    /// `n` deliveries with no outcome (a call past its timeout) or all `outcome`.
    pub(super) fn all(outcome: Option<CallOutcome>, n: usize) -> Returned {
        Returned {
            outcomes: vec![outcome; n],
            discarded: vec![None; n],
        }
    }
}

pub(super) fn panicked(e: &tokio::task::JoinError) -> CallOutcome {
    CallOutcome::Panicked {
        message: format!("plugin call failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_panic_on_the_gateways_side_of_a_call_keeps_its_permit_until_it_is_given_back() {
        let permits = Arc::new(tokio::sync::Semaphore::new(1));
        let permit = permits.clone().try_acquire_owned().expect("permit");
        let (result, permit) = holding(permit, || -> Called { panic!("host bug") });
        assert_eq!(permits.available_permits(), 0, "still held after the panic");
        let outcomes = outcomes_of(result, 2).outcomes;
        assert_eq!(outcomes.len(), 2);
        for o in &outcomes {
            match o {
                Some(CallOutcome::Panicked { message }) => assert!(message.contains("host bug")),
                other => panic!("expected a panic outcome, got {other:?}"),
            }
        }
        drop(permit);
        assert_eq!(permits.available_permits(), 1);
    }

    #[test]
    fn a_call_that_returns_gives_its_outcomes_padded() {
        let (result, ()) = holding((), || Called::once(vec![CallOutcome::Ok]));
        let returned = outcomes_of(result, 2);
        assert_eq!(returned.outcomes.len(), 2, "one outcome per delivery");
        assert!(matches!(returned.outcomes[0], Some(CallOutcome::Ok)));
        assert!(matches!(
            returned.outcomes[1],
            Some(CallOutcome::Retry { .. })
        ));
        assert_eq!(returned.discarded, vec![None, None]);
    }

    #[test]
    fn outcomes_beyond_the_deliveries_are_dropped() {
        let outcomes = pad(vec![CallOutcome::Ok; 3], 2);
        assert_eq!(outcomes.len(), 2);
        assert!(pad(Vec::new(), 0).is_empty());
        assert_eq!(pad(Vec::new(), 1).len(), 1);
    }

    #[test]
    fn deliveries_handed_over_again_carry_why() {
        let again = Called::again(
            (vec![CallOutcome::Ok; 2], 2),
            "its batch panicked as a whole (x)",
        );
        let returned = outcomes_of(Ok(again), 2);
        for why in &returned.discarded {
            let why = why.as_deref().expect("said why");
            assert!(
                why.starts_with("its batch panicked as a whole (x): "),
                "{why}"
            );
        }
    }
}
