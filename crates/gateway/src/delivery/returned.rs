//! What a plugin call gave back, one outcome per delivery: padded when the plugin returned too
//! few, and `Panicked` for each when the gateway's side of the call panicked — caught on the
//! call's thread, so the call's permit comes back with it and is released only once the
//! outcomes are recorded (see [`super::attempt`]).

use gateway_plugin::host::CallOutcome;

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
pub(super) fn holding<H>(
    held: H,
    call: impl FnOnce() -> Vec<CallOutcome>,
) -> (Result<Vec<CallOutcome>, String>, H) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic with no message".into())
    });
    (result, held)
}

/// The outcomes of a call that returned: one per delivery; a panic on the gateway's side of it
/// makes each `Panicked` (the instance is then restarted).
pub(super) fn outcomes_of(
    returned: Result<Vec<CallOutcome>, String>,
    n: usize,
) -> Vec<Option<CallOutcome>> {
    match returned {
        Ok(outcomes) => pad(outcomes, n),
        Err(message) => vec![
            Some(CallOutcome::Panicked {
                message: format!("the gateway's side of the plugin call panicked: {message}"),
            });
            n
        ],
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
        let (result, permit) = holding(permit, || panic!("host bug"));
        assert_eq!(permits.available_permits(), 0, "still held after the panic");
        let outcomes = outcomes_of(result, 2);
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
        let (result, ()) = holding((), || vec![CallOutcome::Ok]);
        let outcomes = outcomes_of(result, 2);
        assert!(matches!(outcomes[0], Some(CallOutcome::Ok)));
        assert!(matches!(outcomes[1], Some(CallOutcome::Retry { .. })));
    }
}
