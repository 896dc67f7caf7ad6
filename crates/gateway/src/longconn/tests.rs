//! The connected gauge's guard (`record`, behind `Ctx::set`): a client replaced or stopped by a
//! reload no longer speaks for its app. End to end, a replaced client no longer even tries to
//! write its state once it sees its cancel (`tests/e2e/longconn/handover.rs`); it still can
//! when a connect attempt or a lost connection completes in the instants before, a race no
//! test can schedule from outside. Here the writes come in the order that race can produce.
//! Also: the list of retired clients a shutdown awaits keeps those still acking.

use super::*;

fn gauge(app: &str) -> i64 {
    metrics::get()
        .longconn_connected
        .get_or_create(&metrics::app(app))
        .get()
}

fn client(state: State) -> (SharedState, CancellationToken) {
    (Arc::new(Mutex::new(state)), CancellationToken::new())
}

#[test]
fn a_replaced_client_writes_neither_its_state_nor_the_gauge_after_its_successor() {
    let app = "unit-test-replaced";
    let (old_state, old_cancel) = client(State::Connecting);
    record(app, &old_state, &old_cancel, State::Connected);
    assert_eq!(gauge(app), 1);
    // The handover: the old client is cancelled, then its successor starts, connected.
    old_cancel.cancel();
    let (new_state, new_cancel) = client(State::Connecting);
    record(app, &new_state, &new_cancel, State::Connected);
    // The old client's connection breaks, or its last reconnect attempt fails, just then.
    record(
        app,
        &old_state,
        &old_cancel,
        State::Reconnecting("lost".into()),
    );
    record(
        app,
        &old_state,
        &old_cancel,
        State::Failed("gave up".into()),
    );
    assert_eq!(gauge(app), 1, "the successor's gauge stays");
    assert_eq!(*new_state.lock().expect("state"), State::Connected);
    assert_eq!(
        *old_state.lock().expect("state"),
        State::Connected,
        "a cancelled client's state is left as it was"
    );
}

#[test]
fn a_running_client_writes_its_state_and_the_gauge() {
    let app = "unit-test-running";
    let (state, cancel) = client(State::Connecting);
    record(app, &state, &cancel, State::Connected);
    assert_eq!(gauge(app), 1);
    record(app, &state, &cancel, State::Reconnecting("lost".into()));
    assert_eq!(gauge(app), 0);
    assert_eq!(
        *state.lock().expect("state"),
        State::Reconnecting("lost".into())
    );
}

/// A retired client still acking its in-flight messages stays in the list a shutdown awaits,
/// however many retire after it; the finished ones are pruned.
#[test]
fn retiring_a_client_prunes_only_the_finished_ones() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let done = tokio::spawn(async {});
        while !done.is_finished() {
            tokio::task::yield_now().await;
        }
        let acking = tokio::spawn(std::future::pending::<()>());
        let mut retired = Vec::new();
        add_retired(&mut retired, done);
        add_retired(&mut retired, acking);
        add_retired(&mut retired, tokio::spawn(std::future::pending::<()>()));
        assert_eq!(retired.len(), 2, "the finished task is pruned");
        assert!(
            retired.iter().all(|t| !t.is_finished()),
            "both unfinished tasks stay"
        );
        for t in retired {
            t.abort();
        }
    });
}
