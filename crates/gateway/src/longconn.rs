//! The long-connection transport (spec §11): for every `mode = "websocket"` app, a client task
//! that bootstraps, dials Lark, keeps the connection alive and feeds each event to the shared
//! [`Intake`], acking it only once it is durably stored.
//!
//! [`LongConns`] supervises those tasks: started with the gateway, reconciled on reload (added
//! apps start, removed ones stop, changed credentials or domain are tried beside the running
//! connection and replace it only once connected (`handover`), a client that gave up gets a
//! fresh start), stopped on shutdown after in-flight messages are acked (a bootstrap or
//! dial in progress, or a wait before a reconnect, is abandoned at once). A client a reload
//! stopped or replaced still acks what it had in flight (up to 5 s): a shutdown meanwhile
//! waits for it too (`retired`), within the same grace. Each task's state is visible on
//! `/readyz`.
//!
//! Reconnect policy (spec §11, Lark's `ClientConfig`): a bootstrap answering a fatal code or a
//! fatal handshake refusal stops the client with an error naming what to check; otherwise the
//! first retry waits a random time in `[0, ReconnectNonce)`, later ones `ReconnectInterval`, at
//! most `ReconnectCount` attempts (< 0: forever). Every attempt bootstraps again. Whatever
//! those values say (a `ReconnectNonce` of 0 included), a reconnect starts at least 1 s after
//! the app's previous attempt (a reload's trial and a redial count as attempts), and that gap
//! doubles, up to 64 s, for each further connection in a row lost within 10 s of being made (a
//! server closing every connection at once is not hammered; see [`pacing`]).
//!
//! Never logged: the app secret and the connection URL's query (it carries credentials).

mod bootstrap;
mod dial;
mod handover;
mod pacing;
mod session;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lark_longconn::ClientConfig;
use rand::Rng;
use tokio_util::sync::CancellationToken;

pub use bootstrap::{bootstrap_blocking, ConnectError};
pub use dial::dial_and_close_blocking;

use crate::config::{Config, LongConnApp};
use crate::intake::Intake;
use crate::metrics;
use pacing::Pacing;

/// What a websocket app's client is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Connecting,
    Connected,
    /// Lost or not yet reached; retrying. Holds the last error.
    Reconnecting(String),
    /// Stopped for good (until a reload): a fatal refusal or the reconnect budget spent.
    Failed(String),
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            State::Connecting => f.write_str("connecting"),
            State::Connected => f.write_str("connected"),
            State::Reconnecting(why) => write!(f, "reconnecting ({why})"),
            State::Failed(why) => write!(f, "failed ({why})"),
        }
    }
}

type SharedState = Arc<Mutex<State>>;

struct Client {
    /// Tells this client apart from a successor under the same name (see `handover`).
    id: u64,
    app: LongConnApp,
    state: SharedState,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// The supervisor of every websocket app's client.
pub struct LongConns {
    intake: Arc<Intake>,
    runtime: tokio::runtime::Handle,
    clients: Mutex<HashMap<String, Client>>,
    /// The tasks of clients a reload stopped or replaced, still acking their in-flight
    /// messages: awaited by [`LongConns::shutdown`] like the running ones. Finished ones are
    /// pruned whenever one is added. Locked only while `clients` is (the one lock order).
    retired: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Parent of every client's token (and of a new settings' trial): cancelled by shutdown.
    root: CancellationToken,
    next_id: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for LongConns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LongConns").finish_non_exhaustive()
    }
}

impl LongConns {
    /// Starts a client for every websocket app of `config`. Call from within the runtime.
    pub fn start(config: &Config, intake: Arc<Intake>) -> Arc<LongConns> {
        let conns = Arc::new(LongConns {
            intake,
            runtime: tokio::runtime::Handle::current(),
            clients: Mutex::new(HashMap::new()),
            retired: Mutex::new(Vec::new()),
            root: CancellationToken::new(),
            next_id: std::sync::atomic::AtomicU64::new(1),
        });
        // No app runs yet, so none has new settings to try: this does not block.
        conns.reconcile(config);
        conns
    }

    /// Brings the clients in line with `config`: added apps start, removed ones stop, failed
    /// ones start afresh, and so does an app whose `app_id` changed (another Lark app). An app
    /// whose `app_secret` or `domain` changed gets a connection with the new settings *before*
    /// its running client is let go (see `handover`); if that fails, the running client stays
    /// on the previous settings and the returned list says so (one line per app). Each such app
    /// is settled as soon as its own trial ends; the call returns once all have (up to a
    /// bootstrap and a dial, 25 s): call it from a blocking thread when apps may change.
    pub fn reconcile(&self, config: &Config) -> Vec<String> {
        let wanted: HashMap<&str, &LongConnApp> = config
            .apps
            .iter()
            .filter_map(|a| Some((a.name.as_str(), a.long_connection()?)))
            .collect();
        let mut changed = Vec::new();
        {
            let Ok(mut clients) = self.clients.lock() else {
                return Vec::new();
            };
            let stopped: Vec<Client> = clients
                .extract_if(|name, client| {
                    let state = client.state.lock().unwrap_or_else(|p| p.into_inner());
                    let wanted_app = wanted.get(name.as_str());
                    let stop = match wanted_app {
                        None => Some("app removed"),
                        Some(_) if matches!(*state, State::Failed(_)) => {
                            Some("restarting after a failure")
                        }
                        // Another Lark app: the running connection's events would meet the new
                        // config's pin and token (refused, every one), so it is no previous
                        // setting to keep. Replaced outright; a refusal shows the app failed.
                        Some(app) if app.app_id != client.app.app_id => Some("app_id changed"),
                        Some(app) if **app != client.app => {
                            changed.push(handover::Trial {
                                name: name.clone(),
                                app: (*app).clone(),
                                replaces: client.id,
                            });
                            None
                        }
                        Some(_) => None,
                    };
                    let Some(why) = stop else {
                        return false;
                    };
                    tracing::info!(app = %name, "stopping the long connection ({why})");
                    // Under the state's lock: see `Ctx::set`.
                    client.cancel.cancel();
                    if wanted_app.is_none() {
                        // Removed: no client speaks for it any more.
                        metrics::get()
                            .longconn_connected
                            .remove(&metrics::app(name));
                    } else {
                        // Started afresh below: not connected until its client says so (the
                        // stopped one's later states are not recorded, and a new client says
                        // nothing before its first connect ends: up to a bootstrap's 10 s).
                        metrics::get()
                            .longconn_connected
                            .get_or_create(&metrics::app(name))
                            .set(0);
                    }
                    true
                })
                .map(|(_, client)| client)
                .collect();
            for client in stopped {
                // It acks what it has in flight first: a shutdown waits for that too.
                self.retire(client.task);
            }
            for (name, app) in wanted {
                if !clients.contains_key(name) {
                    let ctx = self.new_ctx(name, app);
                    clients.insert(
                        name.to_owned(),
                        self.launch(ctx, ClientConfig::default(), None),
                    );
                }
            }
        }
        handover::apply(self, changed)
    }

    /// Keeps the task of a client that was stopped or replaced, for [`LongConns::shutdown`] to
    /// await. Call with `clients` locked (so that a shutdown, which takes both under that lock,
    /// finds it either running or here).
    fn retire(&self, task: tokio::task::JoinHandle<()>) {
        if let Ok(mut retired) = self.retired.lock() {
            add_retired(&mut retired, task);
        }
    }

    /// A fresh client context for `app` (its own state and token, under the root token).
    fn new_ctx(&self, name: &str, app: &LongConnApp) -> Ctx {
        Ctx {
            name: name.to_owned(),
            app: app.clone(),
            intake: self.intake.clone(),
            state: Arc::new(Mutex::new(State::Connecting)),
            cancel: self.root.child_token(),
        }
    }

    /// Starts the client task of `ctx`, from `first` when a connection is already made.
    fn launch(&self, ctx: Ctx, cc: ClientConfig, first: Option<session::Conn>) -> Client {
        let (app, state, cancel) = (ctx.app.clone(), ctx.state.clone(), ctx.cancel.clone());
        let task = self.runtime.spawn(supervise(ctx, cc, first));
        Client {
            id: self
                .next_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            app,
            state,
            cancel,
            task,
        }
    }

    /// Each websocket app and its state, by name.
    pub fn states(&self) -> Vec<(String, State)> {
        let Ok(clients) = self.clients.lock() else {
            return Vec::new();
        };
        let mut out: Vec<(String, State)> = clients
            .iter()
            .map(|(name, c)| {
                let state = c
                    .state
                    .lock()
                    .map(|s| s.clone())
                    .unwrap_or(State::Connecting);
                (name.clone(), state)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Stops every client: no new messages are read, in-flight ones are acked (up to `grace`),
    /// then the connections close. Clients a reload stopped or replaced, still acking, are
    /// waited for too.
    pub async fn shutdown(&self, grace: Duration) {
        let tasks: Vec<_> = match self.clients.lock() {
            Ok(mut clients) => {
                let mut tasks: Vec<_> = clients
                    .drain()
                    .map(|(_, c)| {
                        c.cancel.cancel();
                        c.task
                    })
                    .collect();
                // Under the `clients` lock: a handover either retired its client already or
                // finds no client left to replace.
                if let Ok(mut retired) = self.retired.lock() {
                    tasks.append(&mut retired);
                }
                tasks
            }
            Err(_) => return,
        };
        // New settings being tried (a reload) stop too.
        self.root.cancel();
        let all = async {
            for t in tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("long connections did not close within the grace period");
        } else {
            tracing::info!("long connections closed");
        }
    }
}

/// Adds a retired client's task to `retired`, pruning the tasks that have finished (those still
/// acking stay, for a shutdown to await).
fn add_retired(retired: &mut Vec<tokio::task::JoinHandle<()>>, task: tokio::task::JoinHandle<()>) {
    retired.retain(|t| !t.is_finished());
    retired.push(task);
}

/// Everything one client task works with.
struct Ctx {
    name: String,
    app: LongConnApp,
    intake: Arc<Intake>,
    state: SharedState,
    cancel: CancellationToken,
}

impl Ctx {
    /// Records the client's state and the app's `gateway_longconn_connected` gauge, unless the
    /// client was cancelled: a stopped or replaced client no longer speaks for the app (its
    /// successor may already have set the gauge). The check and the write happen under the
    /// state's lock, which [`LongConns::reconcile`] holds while it cancels, so a write that
    /// passed the check lands before the successor starts.
    fn set(&self, state: State) {
        record(&self.name, &self.state, &self.cancel, state);
    }

    /// Runs `work` unless the client is cancelled first (`None`): a connect attempt (up to 10 s
    /// of bootstrap and 15 s of dialling) must not hold up a shutdown or a reload.
    async fn unless_cancelled<T>(&self, work: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => None,
            done = work => Some(done),
        }
    }

    /// Sleeps unless cancelled first; false when cancelled.
    async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.cancel.cancelled() => false,
        }
    }
}

/// [`Ctx::set`]: `state` becomes the client's state and sets the app's connected gauge,
/// unless `cancel` (the client's token) is cancelled; checked and written under the state's
/// lock.
fn record(app: &str, client_state: &SharedState, cancel: &CancellationToken, state: State) {
    let Ok(mut s) = client_state.lock() else {
        return;
    };
    if cancel.is_cancelled() {
        return;
    }
    metrics::get()
        .longconn_connected
        .get_or_create(&metrics::app(app))
        .set(i64::from(state == State::Connected));
    *s = state;
}

/// One app's client: connect (unless `first` is a connection already made), run, reconnect
/// per policy, until cancelled or failed.
async fn supervise(ctx: Ctx, cc: ClientConfig, first: Option<session::Conn>) {
    let span = tracing::info_span!("longconn", app = %ctx.name);
    tracing::Instrument::instrument(
        async {
            supervise_inner(&ctx, cc, first).await;
            tracing::info!("long connection client finished");
        },
        span,
    )
    .await;
}

async fn supervise_inner(ctx: &Ctx, mut cc: ClientConfig, first: Option<session::Conn>) {
    let mut pacing = Pacing::new();
    let mut next = match first {
        // Dialled just before (a reload's trial of new settings): an attempt of this app's.
        Some(conn) => {
            pacing.attempt();
            Ok(conn)
        }
        None => {
            pacing.attempt();
            match ctx.unless_cancelled(session::connect(ctx, &mut cc)).await {
                Some(attempt) => attempt,
                None => return,
            }
        }
    };
    loop {
        if ctx.cancel.is_cancelled() {
            return;
        }
        let conn = match next {
            Ok(conn) => conn,
            Err(e) if e.is_fatal() => return fail(ctx, e.to_string()),
            Err(e) => {
                tracing::warn!(error = %e, "long connection not established");
                ctx.set(State::Reconnecting(e.to_string()));
                match reconnect(ctx, &mut cc, &mut pacing).await {
                    Some(Ok(conn)) => conn,
                    Some(Err(why)) => return fail(ctx, why),
                    None => return,
                }
            }
        };
        metrics::get()
            .longconn_connects
            .get_or_create(&metrics::app(&ctx.name))
            .inc();
        ctx.set(State::Connected);
        let made = Instant::now();
        let why = match session::run(ctx, conn, &mut cc).await {
            session::Ended::Cancelled => return,
            session::Ended::Redialled(conn) => {
                tracing::info!("now on the connection dialled for the new max_body_bytes");
                // Dialled just before: an attempt of this app's.
                pacing.attempt();
                next = Ok(*conn);
                continue;
            }
            session::Ended::Lost(why) => why,
        };
        tracing::warn!(reason = %why, "long connection lost; reconnecting");
        ctx.set(State::Reconnecting(why));
        pacing.lost(made.elapsed());
        next = match reconnect(ctx, &mut cc, &mut pacing).await {
            Some(r) => r.map_err(ConnectError::Fatal),
            None => return,
        };
    }
}

fn fail(ctx: &Ctx, why: String) {
    tracing::error!("long connection stopped: {why}");
    ctx.set(State::Failed(why));
}

/// The reconnect loop of spec §11, each wait at least what `pacing` asks. `None` when
/// cancelled; `Some(Err)` when it gave up.
async fn reconnect(
    ctx: &Ctx,
    cc: &mut ClientConfig,
    pacing: &mut Pacing,
) -> Option<Result<session::Conn, String>> {
    if cc.reconnect_count == 0 {
        return Some(Err(
            "the connection is down and Lark's ReconnectCount is 0 (no reconnect)".into(),
        ));
    }
    let nonce = cc.reconnect_nonce.as_millis() as u64;
    let first = if nonce == 0 {
        0
    } else {
        rand::thread_rng().gen_range(0..nonce)
    };
    if !ctx.sleep(pacing.wait(Duration::from_millis(first))).await {
        return None;
    }
    let mut tries: i64 = 0;
    loop {
        tries += 1;
        metrics::get()
            .longconn_reconnects
            .get_or_create(&metrics::app(&ctx.name))
            .inc();
        // `None`: cancelled.
        pacing.attempt();
        let attempt = ctx.unless_cancelled(session::connect(ctx, cc)).await?;
        match attempt {
            Ok(conn) => return Some(Ok(conn)),
            Err(e) if e.is_fatal() => return Some(Err(e.to_string())),
            Err(e) => {
                tracing::warn!(attempt = tries, error = %e, "reconnect failed");
                ctx.set(State::Reconnecting(e.to_string()));
                if cc.reconnect_count >= 0 && tries >= cc.reconnect_count {
                    return Some(Err(format!(
                        "gave up after {tries} reconnect attempt(s) (Lark's ReconnectCount); last error: {e}"
                    )));
                }
            }
        }
        if ctx.cancel.is_cancelled() || !ctx.sleep(pacing.wait(cc.reconnect_interval)).await {
            return None;
        }
    }
}
