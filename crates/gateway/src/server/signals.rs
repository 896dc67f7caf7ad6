//! The stop signals (SIGTERM and SIGINT as one stream), and what a signal does while the gateway
//! starts: the first is kept for the stop once started (the main loop sees it at once), a
//! second ends the process at once. Start-up (a store migration, plugins' `init`, up to each
//! `init_timeout`) can take minutes, and an operator's second Ctrl-C, or a stop that must not
//! wait for it, would otherwise wait for all of it. Nothing has been acknowledged before the
//! listeners serve, and a migration cut off resumes at the next start.

/// SIGTERM and SIGINT as one stream.
pub(super) struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub(super) fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    pub(super) async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM received"),
            _ = self.int.recv() => tracing::info!("SIGINT received"),
        }
    }
}

/// Watches for signals while the gateway starts (see the module docs); abort the returned task
/// once started, when the main loop's own [`Signals`] take over. `None` when the handlers
/// cannot be installed (the main loop's still work: a signal then waits for the start-up).
pub(super) fn watch_start_up() -> Option<tokio::task::JoinHandle<()>> {
    let mut signals = Signals::new().ok()?;
    Some(tokio::spawn(async move {
        signals.next().await;
        tracing::info!("stopping as soon as the start-up ends (a second signal exits now)");
        signals.next().await;
        tracing::warn!(
            "second signal during start-up: exiting now (nothing was acknowledged yet; a store migration cut off resumes at the next start)"
        );
        gateway_plugin::host::exit_process(1);
    }))
}
