//! One long connection: bootstrap + dial ([`connect`]), then [`run`] until it is lost or the
//! client is cancelled.
//!
//! The run loop owns the socket. It pings every `PingInterval` (the first at once), applies the
//! `ClientConfig` a pong may carry, declares the connection dead when no pong came for
//! [`DEAD_AFTER_PINGS`] ping intervals, reassembles fragmented messages and hands each complete
//! event to a task of its own, which stores it through the [`crate::intake::Intake`] and sends
//! the ack back through a channel: `{"code":200}` only once the event is durable (or already
//! was), `{"code":500}` otherwise (any refusal or a store failure) so Lark re-sends. Cards are not
//! served and not acked. At most [`MAX_IN_FLIGHT`] messages are handled at once; past that the
//! loop stops reading (backpressure on Lark, not memory growth). Time spent not reading for
//! that reason counts neither towards the pong silence nor against the fragment timers: pongs
//! and fragments wait unread in the socket meanwhile.
//! Every write (ack, ping) is bounded by [`DEAD_AFTER_PINGS`] ping intervals and gives way to a
//! cancellation: a peer that reads nothing loses its connection as a silent one does, and
//! never holds a stop or a reload past [`DRAIN`].
//!
//! A reload that changes `[server] max_body_bytes` needs a new connection (the frame bound is
//! fixed at dial time): the loop dials one beside the running connection, which serves on
//! meanwhile; once the new one is up, the old one stops reading, acks what it has in flight and
//! closes, and the client goes on with the new one ([`Ended::Redialled`]; read from then on,
//! what Lark sends it meanwhile waits in its socket). A failed dial changes nothing: the
//! running connection stays, and the dial is tried again `ReconnectInterval` later (at least
//! [`REDIAL_RETRY_MIN`]). A limit change never leaves the app without a connection, whatever
//! `ReconnectCount` says.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use lark_longconn::bootstrap::redact_url;
use lark_longconn::frame::headers;
use lark_longconn::{
    Applied, ClientConfig, ClientConfigUpdate, FragmentError, Frame, MessageType, Method,
    Reassembler,
};
use prost::Message as _;
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use super::bootstrap::{bootstrap, ConnectError};
use super::dial::{dial, WsStream};
use super::Ctx;
use crate::intake::Stored;
use crate::metrics;

/// A connection is dead when no pong arrived for more than this many ping intervals. Checked
/// at each ping, so a dead connection is found about one interval later than that.
pub const DEAD_AFTER_PINGS: u32 = 3;
/// Messages handled at once on one connection.
pub const MAX_IN_FLIGHT: usize = 256;
/// An incomplete fragmented message is dropped this long after its last fragment.
const FRAGMENT_TTL: Duration = Duration::from_secs(5);
/// Incomplete messages held at once.
const MAX_FRAGMENTED: usize = 64;
/// The ack code of a message stored (or already stored).
const ACK_OK: u16 = 200;
/// The ack code of a message refused or not stored, whatever the reason: the only failure
/// code of the protocol (spec §11); Lark re-sends the message. The reason is in the log line
/// and the acks metric.
const ACK_FAILED: u16 = 500;
/// After cancellation (or once a re-dialled connection is up), in-flight messages get this
/// long to be acked.
const DRAIN: Duration = Duration::from_secs(5);
/// A failed re-dial for a new `max_body_bytes` is tried again no sooner than this.
const REDIAL_RETRY_MIN: Duration = Duration::from_secs(1);

/// A dial for a new frame bound in progress: the config its bootstrap gave, and the connection.
type Redial<'a> = futures_util::future::BoxFuture<'a, (ClientConfig, Result<Conn, ConnectError>)>;

/// An established connection.
pub struct Conn {
    ws: WsStream,
    service_id: i32,
    max_event_bytes: usize,
}

/// Bootstraps (applying the `ClientConfig` it carries) and dials.
pub async fn connect(ctx: &Ctx, cc: &mut ClientConfig) -> Result<Conn, ConnectError> {
    let endpoint = bootstrap(&ctx.app).await?;
    if let Some(update) = &endpoint.client_config {
        warn_clamped(&cc.apply(update), "the bootstrap answer");
    }
    let max_body = max_body_bytes(ctx);
    let ws = dial(&endpoint.url, max_body).await?;
    let shown = redact_url(&endpoint.url);
    tracing::info!(
        url = %shown,
        service_id = endpoint.service_id,
        ping_interval_s = cc.ping_interval.as_secs(),
        "long connection established"
    );
    Ok(Conn {
        ws,
        service_id: endpoint.service_id,
        max_event_bytes: max_body,
    })
}

/// `[server] max_body_bytes` of the config running now (a reload changes it).
fn max_body_bytes(ctx: &Ctx) -> usize {
    ctx.intake
        .routes()
        .map_or(1024 * 1024, |r| r.max_body_bytes)
}

/// How a connection's run ended.
pub enum Ended {
    /// The client was cancelled; in-flight messages were acked (up to [`DRAIN`]).
    Cancelled,
    /// The connection broke or went silent; the reason.
    Lost(String),
    /// `[server] max_body_bytes` changed and this new connection, dialled with the new limit's
    /// frame bound (a dialled connection's bound cannot change), is up: the old one acked its
    /// in-flight messages (up to [`DRAIN`]) and closed. The client config is the new one's.
    Redialled(Box<Conn>),
}

/// Runs a connection until it is lost, cancelled or needs dialling again.
pub async fn run(ctx: &Ctx, conn: Conn, cc: &mut ClientConfig) -> Ended {
    let Conn {
        mut ws,
        service_id,
        max_event_bytes,
    } = conn;
    let m = metrics::get();
    let frames = |kind: &str| {
        m.longconn_frames.get_or_create(&metrics::AppKindLabels {
            app: ctx.name.clone(),
            kind: kind.to_owned(),
        })
    };
    let mut fragments = Reassembler::new(
        FRAGMENT_TTL,
        MAX_FRAGMENTED,
        max_event_bytes,
        max_event_bytes.saturating_mul(8),
    );
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let (ack_tx, mut ack_rx) = mpsc::channel::<Frame>(MAX_IN_FLIGHT);
    let mut ping = new_ticker(cc.ping_interval, true);
    let mut housekeeping = new_ticker(Duration::from_secs(1), false);
    let mut last_pong = Instant::now();
    // A complete message waiting for an in-flight slot. Meanwhile the loop reads nothing more
    // (backpressure) but goes on sending acks and pings: the tasks holding the slots give
    // them back only once their acks are queued, so a loop that stopped draining acks while
    // it waited for a slot could wait forever.
    let mut waiting: Option<(Frame, Vec<u8>)> = None;
    // Since when the loop has not been reading because of that (backpressure). Pongs and
    // fragments then wait unread in the socket: that time counts neither as silence nor
    // against the fragment timers; both clocks are moved on by it when reading resumes.
    let mut stalled_since: Option<Instant> = None;
    // The dial for a new `max_body_bytes`, while it runs; the earliest next one after a failure.
    let mut redial: Option<Redial<'_>> = None;
    let mut redial_after = Instant::now();

    let ended = loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => break Ended::Cancelled,
            _ = ping.tick() => {
                let silence = last_pong.elapsed();
                if stalled_since.is_none() && silence > cc.ping_interval * DEAD_AFTER_PINGS {
                    break Ended::Lost(format!("no pong for {}s", silence.as_secs()));
                }
                if let Err(end) = send(&mut ws, &Frame::ping(service_id), cc, ctx, "a ping").await {
                    break end;
                }
            }
            _ = housekeeping.tick(), if stalled_since.is_none() => {
                fragments.expire(Instant::now());
                report_dropped(&ctx.name, &mut fragments);
                let limit = max_body_bytes(ctx);
                if limit != max_event_bytes && redial.is_none() && Instant::now() >= redial_after {
                    tracing::info!(
                        from = max_event_bytes,
                        to = limit,
                        "[server] max_body_bytes changed: dialling a new connection for its frame bound (this one serves until it is up)"
                    );
                    let mut next_cc = *cc;
                    redial = Some(Box::pin(async move {
                        let dialled = connect(ctx, &mut next_cc).await;
                        (next_cc, dialled)
                    }));
                }
            }
            (next_cc, dialled) = async {
                match redial.as_mut() {
                    Some(dialling) => dialling.await,
                    None => std::future::pending().await,
                }
            }, if redial.is_some() => {
                redial = None;
                match dialled {
                    Ok(new) => {
                        *cc = next_cc;
                        break Ended::Redialled(Box::new(new));
                    }
                    Err(e) => {
                        let retry = cc.reconnect_interval.max(REDIAL_RETRY_MIN);
                        redial_after = Instant::now() + retry;
                        tracing::warn!(error = %e, retry_in_s = retry.as_secs(), "dialling a new connection for the new max_body_bytes failed; the running connection stays (with its previous frame bound)");
                    }
                }
            }
            Some(ack) = ack_rx.recv() => {
                if let Err(end) = send(&mut ws, &ack, cc, ctx, "an ack").await {
                    break end;
                }
            }
            permit = in_flight.clone().acquire_owned(), if waiting.is_some() => {
                let (Ok(permit), Some((frame, whole))) = (permit, waiting.take()) else {
                    break Ended::Lost("in-flight limiter closed".into());
                };
                if let Some(since) = stalled_since.take() {
                    let unread = since.elapsed();
                    last_pong += unread;
                    fragments.postpone(unread);
                }
                tokio::spawn(handle(ctx.name.clone(), ctx.intake.clone(), frame, whole, ack_tx.clone(), permit));
            }
            incoming = ws.next(), if waiting.is_none() => {
                let bytes = match incoming {
                    None => break Ended::Lost("the server closed the connection".into()),
                    Some(Err(e)) => break Ended::Lost(format!("reading: {e}")),
                    Some(Ok(Message::Binary(b))) => b,
                    Some(Ok(Message::Close(_))) => break Ended::Lost("the server closed the connection".into()),
                    Some(Ok(_)) => continue, // WebSocket pings are answered by tungstenite.
                };
                let mut frame = match Frame::decode_bytes(&bytes) {
                    Ok(f) => f,
                    Err(e) => {
                        frames("invalid").inc();
                        tracing::warn!(error = %e, "ignoring an undecodable message");
                        continue;
                    }
                };
                match (frame.method(), frame.message_type()) {
                    (Method::Control, MessageType::Pong) => {
                        frames("pong").inc();
                        last_pong = Instant::now();
                        let update = frame.payload.as_deref().and_then(ClientConfigUpdate::from_payload);
                        if let Some(update) = update {
                            let before = cc.ping_interval;
                            let applied = cc.apply_pong(&update);
                            warn_clamped(&applied, "a pong");
                            if applied.changed {
                                tracing::info!(
                                    ping_interval_s = cc.ping_interval.as_secs(),
                                    reconnect_count = cc.reconnect_count,
                                    reconnect_interval_s = cc.reconnect_interval.as_secs(),
                                    reconnect_nonce_s = cc.reconnect_nonce.as_secs(),
                                    "client config updated by Lark"
                                );
                            }
                            if cc.ping_interval != before {
                                ping = new_ticker(cc.ping_interval, false);
                            }
                        }
                    }
                    (Method::Data, MessageType::Event) => {
                        frames("event").inc();
                        // A reload's limit applies from this message on (the frame bound
                        // follows at the next housekeeping tick, by dialling again).
                        let limit = max_body_bytes(ctx);
                        if limit != fragments.max_message_bytes() {
                            fragments.set_limits(limit, limit.saturating_mul(8));
                        }
                        let message_id = frame.header(headers::MESSAGE_ID).unwrap_or("").to_owned();
                        // Absent: a whole message. Present but no number: not taken for a
                        // whole message (its payload may be a part of one): dropped, unacked.
                        let number = |key: &str, absent: u32| match frame.header(key) {
                            None => Some(absent),
                            Some(_) => frame.header_u32(key),
                        };
                        let (Some(sum), Some(seq)) = (number(headers::SUM, 1), number(headers::SEQ, 0)) else {
                            tracing::warn!(message_id = %truncate(&message_id), sum = %truncate(frame.header(headers::SUM).unwrap_or("")), seq = %truncate(frame.header(headers::SEQ).unwrap_or("")), "fragment dropped: its sum or seq is not a number; Lark re-sends unacked messages");
                            continue;
                        };
                        let payload = frame.payload.take().unwrap_or_default();
                        let pushed = fragments.push(&message_id, sum, seq, payload, Instant::now());
                        report_dropped(&ctx.name, &mut fragments);
                        match pushed {
                            Ok(None) => {}
                            Ok(Some(whole)) => {
                                waiting = Some((frame, whole));
                                stalled_since = Some(Instant::now());
                            }
                            Err(e @ FragmentError::TooLarge { .. }) => {
                                // Refused like any other message: acked 500 once (the
                                // reassembler ignores its other fragments).
                                tracing::warn!(app = %ctx.name, message_id = %truncate(&message_id), error = %e, code = ACK_FAILED, reason = "too_large", "message refused; Lark will re-send it");
                                count_ack(&ctx.name, ACK_FAILED, "too_large");
                                if let Err(end) = send(&mut ws, &frame.into_ack(ACK_FAILED, 0), cc, ctx, "an ack").await {
                                    break end;
                                }
                            }
                            Err(e) => {
                                tracing::warn!(message_id = %truncate(&message_id), error = %e, "fragment dropped; Lark re-sends unacked messages");
                            }
                        }
                    }
                    (Method::Data, MessageType::Card) => {
                        frames("card").inc();
                        tracing::debug!("card callback frame ignored (cards are not served; not acked)");
                    }
                    _ => {
                        frames("other").inc();
                        tracing::debug!(method = frame.method, kind = ?frame.message_type(), "ignoring a frame");
                    }
                }
            }
        }
    };
    // A dial still running is abandoned (stopping, or the connection it was to replace is lost).
    drop(redial);
    if let Ended::Lost(_) = ended {
        return ended;
    }
    // Cancelled or re-dialled: read nothing more, but ack what is in flight, then close, all
    // within DRAIN (a peer that reads nothing holds none of it longer).
    drop(ack_tx);
    let deadline = tokio::time::Instant::now() + DRAIN;
    let _ = tokio::time::timeout_at(deadline, async {
        while let Some(ack) = ack_rx.recv().await {
            if ws.send(binary(&ack)).await.is_err() {
                break;
            }
        }
        let _ = ws.close(None).await;
    })
    .await;
    ended
}

/// Stores one complete message and queues its ack.
async fn handle(
    app: String,
    intake: Arc<crate::intake::Intake>,
    frame: Frame,
    payload: Vec<u8>,
    acks: mpsc::Sender<Frame>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let started = Instant::now();
    let message_id = truncate(frame.header(headers::MESSAGE_ID).unwrap_or(""));
    // Lark's trace id, for Lark support: on every line of the message (a refusal's included).
    let trace_id = truncate(frame.header(headers::TRACE_ID).unwrap_or(""));
    let span = tracing::info_span!("message", app = %app, message_id = %message_id, trace_id = %trace_id, event_id = tracing::field::Empty);
    let result =
        tracing::Instrument::instrument(intake.payload(&app, &payload), span.clone()).await;
    let (code, reason) = match &result {
        Ok(Stored::New) => (ACK_OK, "stored"),
        Ok(Stored::Duplicate) => (ACK_OK, "duplicate"),
        Err(rejection) => {
            // A store that fails every event (a full disk) refuses every message Lark sends: at
            // most 10 lines a second, the next one counting those not logged (the acks metric
            // counts every one).
            static REFUSALS: std::sync::LazyLock<crate::ingress::log_limit::RefusalLog> =
                std::sync::LazyLock::new(Default::default);
            if let Some(skipped) = REFUSALS.admit(Instant::now()) {
                span.in_scope(|| {
                    tracing::warn!(code = ACK_FAILED, status = rejection.status().as_u16(), reason = rejection.reason(), detail = %rejection.message(), skipped, "message refused; Lark will re-send it")
                });
            }
            (ACK_FAILED, rejection.reason())
        }
    };
    count_ack(&app, code, reason);
    let biz_rt = started.elapsed().as_millis() as u64;
    let _ = acks.send(frame.into_ack(code, biz_rt)).await;
    drop(permit);
}

/// Logs each `ClientConfig` value Lark sent above its cap (`from`: where it came from).
fn warn_clamped(applied: &Applied, from: &str) {
    for c in &applied.clamped {
        tracing::warn!(
            key = c.key,
            sent_s = c.sent,
            used_s = c.used.as_secs(),
            "{from} asked for a {} above the gateway's cap; using the cap",
            c.key
        );
    }
}

/// Counts and logs (once per message) the incomplete messages the reassembler dropped.
fn report_dropped(app: &str, fragments: &mut Reassembler) {
    for d in fragments.take_dropped() {
        metrics::get()
            .longconn_fragments_dropped
            .get_or_create(&metrics::AppReasonLabels {
                app: app.to_owned(),
                reason: d.reason.as_str().to_owned(),
            })
            .inc();
        tracing::warn!(
            message_id = %truncate(&d.message_id),
            reason = d.reason.as_str(),
            received = d.received,
            sum = d.sum,
            "incomplete message dropped (never dispatched nor acked; Lark re-sends it)"
        );
    }
}

fn count_ack(app: &str, code: u16, reason: &str) {
    metrics::get()
        .longconn_acks
        .get_or_create(&metrics::AppCodeLabels {
            app: app.to_owned(),
            code: code.to_string(),
            reason: reason.to_owned(),
        })
        .inc();
}

/// Sends `frame`. A send that has not completed within [`DEAD_AFTER_PINGS`] ping intervals
/// (a peer that reads nothing: its receive window full, the write never ends) loses the
/// connection, as that long a silence would; a cancellation ends the wait. Without that bound a
/// blocked write held the whole loop: no ping, no dead-connection check, no stop.
async fn send(
    ws: &mut WsStream,
    frame: &Frame,
    cc: &ClientConfig,
    ctx: &Ctx,
    what: &str,
) -> Result<(), Ended> {
    let limit = cc.ping_interval.max(Duration::from_millis(100)) * DEAD_AFTER_PINGS;
    tokio::select! {
        sent = tokio::time::timeout(limit, ws.send(binary(frame))) => match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Ended::Lost(format!("sending {what}: {e}"))),
            Err(_) => Err(Ended::Lost(format!(
                "sending {what}: not written within {}s (the server reads nothing)",
                limit.as_secs()
            ))),
        },
        _ = ctx.cancel.cancelled() => Err(Ended::Cancelled),
    }
}

fn binary(frame: &Frame) -> Message {
    Message::Binary(frame.encode_to_vec().into())
}

fn new_ticker(period: Duration, immediately: bool) -> tokio::time::Interval {
    let period = period.max(Duration::from_millis(100));
    let start = if immediately {
        tokio::time::Instant::now()
    } else {
        tokio::time::Instant::now() + period
    };
    let mut t = tokio::time::interval_at(start, period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

fn truncate(id: &str) -> String {
    id.chars().take(128).collect()
}
