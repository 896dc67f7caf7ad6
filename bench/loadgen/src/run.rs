//! `loadgen run`: drives a receiver with unique signed + encrypted deliveries over keep-alive
//! HTTP/1.1 connections and measures it.
//!
//! Closed loop (no rate): each connection sends its next request as soon as the previous answer
//! arrived; latency is send → answer. Open loop (`--rate R`): requests are due every 1/R s
//! ([`crate::schedule`]) and whichever connection is free sends the oldest due one; latency is
//! intended send time → answer, so queueing behind a slow receiver counts. With a metrics URL,
//! the run then waits for the gateway to deliver everything it stored (the drain).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use http_body_util::Full;
use hyper::body::Bytes;
use tokio::sync::Semaphore;

use crate::client::{connect, Conn, Target};
use crate::delivery::{unix_millis, unix_secs, Generator};
use crate::metrics::Watch;
use crate::pool::Pool;
use crate::schedule::{spawn_pacer, Schedule};
use crate::stats::{Recorder, Report, Setup};

/// How long the drain may take before the run gives up waiting.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// Everything `loadgen run` needs.
#[derive(Debug)]
pub struct Plan {
    pub target: Target,
    pub key: String,
    pub token: String,
    pub connections: usize,
    pub duration: Duration,
    pub rate: Option<f64>,
    /// Per-request timeout (a timed-out connection is replaced).
    pub timeout: Duration,
    /// Upper bound of requests built before the load starts.
    pub prebuild: u64,
    pub threads: usize,
    pub watch: Option<Watch>,
    /// Keep every request at least this slow (with when it was sent) for `--slow-log`.
    pub slow: Option<Duration>,
}

type Connection = Conn<Full<Bytes>>;

/// What every connection task shares.
#[derive(Debug)]
struct Shared {
    target: Target,
    pool: Pool,
    next: AtomicU64,
    timeout: Duration,
    /// The start of the load and the `--slow-ms` threshold.
    start: Instant,
    slow: Option<Duration>,
}

impl Shared {
    /// Reconnects if needed; `None` (failure recorded) if that fails.
    async fn ready<'a>(
        &self,
        conn: &'a mut Option<Connection>,
        rec: &mut Recorder,
    ) -> Option<&'a mut Connection> {
        if conn.is_none() {
            match connect(&self.target).await {
                Ok(c) => *conn = Some(c),
                Err(label) => {
                    rec.failure(label);
                    return None;
                }
            }
        }
        conn.as_mut()
    }

    /// Keeps a request sent (or due) at `at` that took `latency`, if that is slow.
    fn note(&self, rec: &mut Recorder, at: Instant, latency: Duration) {
        if self.slow.is_some_and(|t| latency >= t) {
            rec.slow(at.saturating_duration_since(self.start), latency);
        }
    }
}

/// Builds the requests, runs the load on a `threads`-worker runtime and returns the report.
pub fn run(plan: Plan) -> anyhow::Result<Report> {
    anyhow::ensure!(plan.connections > 0, "--connections must be at least 1");
    if let Some(rate) = plan.rate {
        anyhow::ensure!(
            rate.is_finite() && rate > 0.0,
            "--rate must be a positive number"
        );
    }
    let generator = Generator::new(
        &plan.key,
        &plan.token,
        unix_secs(),
        format!("run-{}", unix_millis()),
    );
    let wanted = match plan.rate {
        Some(rate) => (plan.duration.as_secs_f64() * rate).ceil() as u64,
        None => u64::MAX,
    };
    let pool = Pool::build(generator, wanted.min(plan.prebuild), plan.threads)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.threads.max(1))
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(drive(plan, pool))
}

async fn drive(plan: Plan, pool: Pool) -> anyhow::Result<Report> {
    let before = match &plan.watch {
        Some(w) => Some(
            w.counts()
                .await
                .context("cannot read the gateway's metrics")?,
        ),
        None => None,
    };
    // All connections are open before the clock starts.
    let mut conns = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        let conn = connect::<Full<Bytes>>(&plan.target)
            .await
            .map_err(|label| anyhow::anyhow!("cannot connect to {}: {label}", plan.target.url))?;
        conns.push(conn);
    }
    let start = Instant::now();
    let start_unix_ms = unix_millis();
    let shared = Arc::new(Shared {
        target: plan.target.clone(),
        pool,
        next: AtomicU64::new(0),
        timeout: plan.timeout,
        start,
        slow: plan.slow,
    });
    let mut tasks = Vec::with_capacity(plan.connections);
    let mut pacer = None;
    match plan.rate {
        None => {
            let end = start + plan.duration;
            for conn in conns {
                tasks.push(tokio::spawn(closed_loop(shared.clone(), conn, end)));
            }
        }
        Some(rate) => {
            let schedule = Schedule::new(start, rate, plan.duration);
            let permits = Arc::new(Semaphore::new(0));
            // Past this, queued requests are dropped (counted as unsent) instead of sent.
            let give_up = start + plan.duration + plan.timeout.max(Duration::from_secs(10));
            for conn in conns {
                let task = open_loop(shared.clone(), conn, schedule, permits.clone(), give_up);
                tasks.push(tokio::spawn(task));
            }
            pacer = Some(spawn_pacer(schedule, permits, plan.connections));
        }
    }
    let mut rec = Recorder::default();
    for task in tasks {
        rec.merge(&task.await.context("a connection task failed")?);
    }
    let elapsed = start.elapsed();
    if let Some(pacer) = pacer {
        pacer
            .join()
            .map_err(|_| anyhow::anyhow!("the pacer thread panicked"))?;
    }
    let load_end = Instant::now();
    let drain = match (&plan.watch, before) {
        (Some(w), Some(before)) => {
            let d = w.drain(load_end, DRAIN_TIMEOUT).await;
            Some((d.last.stored - before.stored, d))
        }
        _ => None,
    };
    Ok(Report {
        setup: Setup {
            url: plan.target.url.clone(),
            connections: plan.connections,
            threads: plan.threads,
            duration: plan.duration,
            rate: plan.rate,
            prebuilt: shared.pool.prebuilt(),
        },
        start_unix_ms,
        elapsed,
        rec,
        drain,
    })
}

/// One connection of the closed loop: send, wait for the answer, repeat until `end`.
async fn closed_loop(shared: Arc<Shared>, conn: Connection, end: Instant) -> Recorder {
    let mut rec = Recorder::default();
    let mut conn = Some(conn);
    while Instant::now() < end {
        let k = shared.next.fetch_add(1, Ordering::Relaxed);
        let req = match shared.pool.request(k, &shared.target) {
            Ok(req) => req,
            Err(e) => {
                rec.failure(format!("build: {e}"));
                continue;
            }
        };
        let Some(c) = shared.ready(&mut conn, &mut rec).await else {
            // The receiver is gone: don't spin on connect errors.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let sent = Instant::now();
        match c.send(req, shared.timeout).await {
            Ok(status) => {
                let latency = sent.elapsed();
                rec.answer(status.as_u16(), latency, None);
                shared.note(&mut rec, sent, latency);
            }
            Err(label) => {
                rec.failure(label);
                conn = None;
            }
        }
    }
    rec
}

/// One connection of the open loop: takes the oldest due slot whenever it is free.
async fn open_loop(
    shared: Arc<Shared>,
    conn: Connection,
    schedule: Schedule,
    permits: Arc<Semaphore>,
    give_up: Instant,
) -> Recorder {
    let mut rec = Recorder::default();
    let mut conn = Some(conn);
    loop {
        match permits.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => break,
        }
        let k = shared.next.fetch_add(1, Ordering::Relaxed);
        if k >= schedule.total() {
            break;
        }
        let intended = schedule.intended(k);
        // A slot never answered (not sent past the grace, or failed) counts in the latency
        // percentiles too, at its time from the intended send to when it was given up (a lower
        // bound of what a client would have waited): percentiles over answers only looked fine
        // while most of the schedule went unanswered.
        if Instant::now() > give_up {
            rec.unsent += 1;
            rec.unanswered(Instant::now() - intended);
            continue;
        }
        let req = match shared.pool.request(k, &shared.target) {
            Ok(req) => req,
            Err(e) => {
                rec.failure(format!("build: {e}"));
                rec.unanswered(Instant::now() - intended);
                continue;
            }
        };
        let Some(c) = shared.ready(&mut conn, &mut rec).await else {
            rec.unanswered(Instant::now() - intended);
            continue;
        };
        let sent = Instant::now();
        match c.send(req, shared.timeout).await {
            Ok(status) => {
                let done = Instant::now();
                rec.answer(status.as_u16(), done - intended, Some(done - sent));
                shared.note(&mut rec, intended, done - intended);
            }
            Err(label) => {
                rec.failure(label);
                rec.unanswered(Instant::now() - intended);
                conn = None;
            }
        }
    }
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A receiver that takes connections and never answers: every slot of an open loop times
    /// out, and each counts in the latency percentiles at its time from the intended send (at
    /// least the timeout). Percentiles over answers only had nothing to show (the review's
    /// stalled receiver: p50 0.27 ms while 69% of the schedule went unanswered).
    #[test]
    fn open_loop_slots_that_time_out_count_in_the_latency() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in listener.incoming().map_while(Result::ok) {
                held.push(s);
            }
        });
        let report = run(Plan {
            target: Target::parse(&format!("http://127.0.0.1:{port}/hook")).expect("url"),
            key: "key".into(),
            token: "token".into(),
            connections: 2,
            duration: Duration::from_secs(1),
            rate: Some(8.0),
            timeout: Duration::from_millis(300),
            prebuild: 100,
            threads: 1,
            watch: None,
            slow: None,
        })
        .expect("run");
        let rec = &report.rec;
        assert!(rec.statuses.is_empty(), "{:?}", rec.statuses);
        assert_eq!(
            rec.latency.len(),
            8,
            "every slot counted: {:?}",
            rec.transport
        );
        assert!(
            rec.latency.value_at_quantile(0.5) >= 300_000,
            "p50 {} µs",
            rec.latency.value_at_quantile(0.5)
        );
    }
}
