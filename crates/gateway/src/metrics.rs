//! Prometheus metrics (served on the admin listener's `/metrics`). One process-wide registry;
//! recording is lock-free counter/histogram updates, cheap enough for the request path.

use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub app: String,
    pub status: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    pub app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub plugin: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppKindLabels {
    pub app: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppReasonLabels {
    pub app: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppCodeLabels {
    pub app: String,
    pub code: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginReasonLabels {
    pub plugin: String,
    pub reason: String,
}

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    /// Admin API / console token checks that failed, by `kind` (`login`, `bearer`) or were
    /// refused unchecked (`throttled`: too many failures from one address).
    pub admin_auth_failures: Family<KindLabels, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub events_stored: Family<AppLabels, Counter>,
    pub duplicates: Family<AppLabels, Counter>,
    pub unrouted: Family<AppLabels, Counter>,
    pub deliveries: Family<OutcomeLabels, Counter>,
    pub retries: Family<PluginLabels, Counter>,
    pub dead_letters: Family<PluginLabels, Counter>,
    pub pending: Gauge,
    pub oldest_pending_age: Gauge<f64, AtomicU64>,
    pub request_latency: Histogram,
    pub plugin_latency: Family<PluginLabels, Histogram>,
    pub commit_batch: Histogram,
    pub commits_paced: Counter,
    pub commit_duration: Histogram,
    pub dedup_ids: Gauge,
    pub longconn_connects: Family<AppLabels, Counter>,
    pub longconn_reconnects: Family<AppLabels, Counter>,
    pub longconn_frames: Family<AppKindLabels, Counter>,
    pub longconn_acks: Family<AppCodeLabels, Counter>,
    pub longconn_connected: Family<AppLabels, Gauge>,
    /// Incomplete fragmented messages dropped, by `reason` (`expired`, `evicted`).
    pub longconn_fragments_dropped: Family<AppReasonLabels, Counter>,
    /// Reloads whose new connection settings for the app were refused (the previous stay).
    pub longconn_settings_refused: Family<AppLabels, Counter>,
    pub plugin_process_exits: Family<PluginReasonLabels, Counter>,
    pub dead_letters_now: Gauge,
    /// 1 when the last scrape's read of the store's backlog answered (within 2 s), 0 when
    /// the backlog gauges kept their previous values.
    pub backlog_current: Gauge,
    pub pending_by_plugin: Family<PluginLabels, Gauge>,
    pub queue_depth: Family<PluginLabels, Gauge>,
    pub reloads: Family<ResultLabels, Counter>,
    pub last_reload: Gauge<f64, AtomicU64>,
    pub replays: Family<PluginLabels, Counter>,
    /// Listeners with TLS only (`webhook`, `admin`): the served leaf certificate's notAfter (so
    /// nothing is exported without TLS and an alert on "expires within N days" never fires on
    /// a 0).
    pub tls_cert_expiry: Family<ListenerLabels, Gauge<f64, AtomicU64>>,
    pub tls_handshake_failures: Family<ReasonLabels, Counter>,
    pub tls_reloads: Family<ResultLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: String,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~52 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "gateway_requests",
            "Webhook requests by app, HTTP status and outcome reason",
            requests.clone(),
        );
        let events_stored = Family::<AppLabels, Counter>::default();
        registry.register(
            "gateway_events_stored",
            "Events durably stored",
            events_stored.clone(),
        );
        let duplicates = Family::<AppLabels, Counter>::default();
        registry.register(
            "gateway_duplicate_events",
            "Events already stored (answered 200, not delivered again)",
            duplicates.clone(),
        );
        let unrouted = Family::<AppLabels, Counter>::default();
        registry.register(
            "gateway_unrouted_events",
            "Events stored with no matching route",
            unrouted.clone(),
        );
        let deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "gateway_deliveries",
            "Plugin calls by plugin and outcome (ok, retry, reject, panicked, timeout)",
            deliveries.clone(),
        );
        let retries = Family::<PluginLabels, Counter>::default();
        registry.register(
            "gateway_retries_scheduled",
            "Deliveries scheduled for another attempt",
            retries.clone(),
        );
        let dead_letters = Family::<PluginLabels, Counter>::default();
        registry.register(
            "gateway_dead_letters",
            "Deliveries moved to the dead letters",
            dead_letters.clone(),
        );
        let pending = Gauge::default();
        registry.register(
            "gateway_pending_deliveries",
            "Deliveries not yet done or dead",
            pending.clone(),
        );
        let oldest_pending_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "gateway_oldest_pending_age_seconds",
            "Age of the oldest event with a pending delivery",
            oldest_pending_age.clone(),
        );
        let request_latency = latency_histogram();
        registry.register(
            "gateway_request_duration_seconds",
            "Webhook request handling time, from headers read to response",
            request_latency.clone(),
        );
        let plugin_latency =
            Family::<PluginLabels, Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "gateway_plugin_call_duration_seconds",
            "Plugin handle() call time",
            plugin_latency.clone(),
        );
        let commit_batch = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "gateway_store_commit_batch_size",
            "Writes per store transaction (group commit)",
            commit_batch.clone(),
        );
        let commits_paced = Counter::default();
        registry.register(
            "gateway_store_commits_paced",
            "Embedded store: transactions whose writer waited (at most 400 us) for more writes before committing",
            commits_paced.clone(),
        );
        // 0.5 ms to 1 s: a group commit is one fsync; a slow one stalls every request in it.
        let commit_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 12));
        registry.register(
            "gateway_store_commit_duration_seconds",
            "Embedded store: one group commit (apply, commit, fsync) as the writer thread timed it",
            commit_duration.clone(),
        );
        let dedup_ids = Gauge::default();
        registry.register(
            "gateway_store_dedup_ids",
            "Event ids held in memory by the embedded store's dedup index (the newest; older ones are in runs on disk)",
            dedup_ids.clone(),
        );
        let longconn_connects = Family::<AppLabels, Counter>::default();
        registry.register(
            "gateway_longconn_connects",
            "Long connections established (websocket apps)",
            longconn_connects.clone(),
        );
        let longconn_reconnects = Family::<AppLabels, Counter>::default();
        registry.register(
            "gateway_longconn_reconnects",
            "Reconnect attempts of long connections",
            longconn_reconnects.clone(),
        );
        let longconn_frames = Family::<AppKindLabels, Counter>::default();
        registry.register(
            "gateway_longconn_frames",
            "Frames received on long connections by kind (event, card, pong, other, invalid)",
            longconn_frames.clone(),
        );
        let longconn_acks = Family::<AppCodeLabels, Counter>::default();
        registry.register(
            "gateway_longconn_acks",
            "Acks sent on long connections by code and reason (200: stored or duplicate; 500: refused or not stored, Lark re-sends)",
            longconn_acks.clone(),
        );
        let longconn_connected = Family::<AppLabels, Gauge>::default();
        registry.register(
            "gateway_longconn_connected",
            "1 while the app's long connection is up",
            longconn_connected.clone(),
        );
        let longconn_fragments_dropped = Family::<AppReasonLabels, Counter>::default();
        registry.register(
            "gateway_longconn_fragments_dropped",
            "Incomplete fragmented messages dropped on long connections by reason (expired: no fragment for 5 s; evicted: room needed; inconsistent: another fragment count announced); never acked, Lark re-sends them",
            longconn_fragments_dropped.clone(),
        );
        let longconn_settings_refused = Family::<AppLabels, Counter>::default();
        registry.register(
            "gateway_longconn_settings_refused",
            "Reloads whose new long-connection settings (app_id, app_secret, domain) of the app failed to connect; the running connection kept the previous settings",
            longconn_settings_refused.clone(),
        );
        let plugin_process_exits = Family::<PluginReasonLabels, Counter>::default();
        registry.register(
            "gateway_plugin_process_exits",
            "Ends of isolated plugin processes by plugin and how they ended (signal or exit code)",
            plugin_process_exits.clone(),
        );
        let build_info = Family::<VersionLabels, Gauge>::default();
        registry.register(
            "gateway_build_info",
            "Always 1; the gateway's version as a label",
            build_info.clone(),
        );
        build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        let dead_letters_now = Gauge::default();
        registry.register(
            "gateway_dead_letters_current",
            "Dead letters in the store now (read at scrape time)",
            dead_letters_now.clone(),
        );
        let backlog_current = Gauge::default();
        registry.register(
            "gateway_backlog_current",
            "1 when this scrape read the store's backlog, 0 when that read failed or took over 2 s (the backlog gauges then keep their last values)",
            backlog_current.clone(),
        );
        let pending_by_plugin = Family::<PluginLabels, Gauge>::default();
        registry.register(
            "gateway_pending_deliveries_by_plugin",
            "Pending deliveries per plugin instance (read at scrape time)",
            pending_by_plugin.clone(),
        );
        let queue_depth = Family::<PluginLabels, Gauge>::default();
        registry.register(
            "gateway_queue_depth",
            "Deliveries waiting in a plugin's in-memory queue (read at scrape time)",
            queue_depth.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "gateway_reloads",
            "Config reloads by result (ok, refused)",
            reloads.clone(),
        );
        let last_reload = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "gateway_last_reload_timestamp_seconds",
            "Unix time of the last successful reload (0: none since start)",
            last_reload.clone(),
        );
        let replays = Family::<PluginLabels, Counter>::default();
        registry.register(
            "gateway_replays",
            "Replayed deliveries (a new generation) this process picked up and queued",
            replays.clone(),
        );
        let tls_cert_expiry = Family::<ListenerLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "gateway_tls_certificate_expiry_timestamp_seconds",
            "Unix time at which the served TLS certificate expires (notAfter), per listener",
            tls_cert_expiry.clone(),
        );
        let tls_handshake_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "gateway_tls_handshake_failures",
            "Connections to the TLS listener that never became TLS, by reason (plaintext_http, not_tls, timeout, handshake, io)",
            tls_handshake_failures.clone(),
        );
        let tls_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "gateway_tls_certificate_reloads",
            "New TLS certificate pairs read from disk by result (ok, refused: the previous pair stays)",
            tls_reloads.clone(),
        );
        let admin_auth_failures = Family::<KindLabels, Counter>::default();
        registry.register(
            "gateway_admin_auth_failures",
            "Failed admin token checks by kind (login, bearer) and checks refused as throttled",
            admin_auth_failures.clone(),
        );
        Metrics {
            registry,
            admin_auth_failures,
            requests,
            events_stored,
            duplicates,
            unrouted,
            deliveries,
            retries,
            dead_letters,
            pending,
            oldest_pending_age,
            request_latency,
            plugin_latency,
            commit_batch,
            commits_paced,
            commit_duration,
            dedup_ids,
            longconn_connects,
            longconn_reconnects,
            longconn_frames,
            longconn_acks,
            longconn_connected,
            longconn_fragments_dropped,
            longconn_settings_refused,
            plugin_process_exits,
            dead_letters_now,
            backlog_current,
            pending_by_plugin,
            queue_depth,
            reloads,
            last_reload,
            replays,
            tls_cert_expiry,
            tls_handshake_failures,
            tls_reloads,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Creates, at 0, the counter series that alert rules watch with `increase(...)`: a series
/// that first appears at 1 shows no increase, so the first refused reload, the first dead
/// letters of a plugin and the first failed logins after a start would alert no one. Called at
/// start and after each reload (for the plugins it configures).
pub fn declare<'a>(plugins: impl IntoIterator<Item = &'a str>) {
    let m = get();
    for result in ["ok", "refused"] {
        drop(m.reloads.get_or_create(&ResultLabels {
            result: result.to_owned(),
        }));
    }
    for kind in ["login", "bearer", "throttled"] {
        drop(m.admin_auth_failures.get_or_create(&KindLabels {
            kind: kind.to_owned(),
        }));
    }
    for name in plugins {
        drop(m.dead_letters.get_or_create(&plugin(name)));
    }
}

/// Labels of [`Metrics::admin_auth_failures`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// Counts a failed (or throttled) admin token check.
pub fn admin_auth_failure(kind: &str) {
    get()
        .admin_auth_failures
        .get_or_create(&KindLabels {
            kind: kind.to_owned(),
        })
        .inc();
}

/// One embedded-store transaction: its number of writes, and whether the writer waited for
/// more before committing it.
pub fn observe_commit_batch(size: usize, paced: bool) {
    let m = get();
    m.commit_batch.observe(size as f64);
    if paced {
        m.commits_paced.inc();
    }
}

/// How long one group commit of the embedded store took.
pub fn observe_commit_duration(took: std::time::Duration) {
    get().commit_duration.observe(took.as_secs_f64());
}

/// The number of ids in the embedded store's dedup index.
pub fn set_dedup_ids(n: usize) {
    get().dedup_ids.set(i64::try_from(n).unwrap_or(i64::MAX));
}

pub fn app(app: &str) -> AppLabels {
    AppLabels {
        app: app.to_owned(),
    }
}

pub fn plugin(plugin: &str) -> PluginLabels {
    PluginLabels {
        plugin: plugin.to_owned(),
    }
}
