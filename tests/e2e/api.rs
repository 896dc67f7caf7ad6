//! The admin JSON API (`/api/v1`) against the real binary, with no token (the app's
//! verification token or the admin token) in any answer. One submodule per topic of this target:
//! `events` (filters and cursor pagination, one event with its deliveries), `replay` (replay
//! with and without `force`, bounded bodies, reload with its result), `security` (a token off
//! loopback, bearer and cookie logins, CSRF, cross-site posts, failed logins throttled and
//! counted, `/metrics` `/healthz` `/readyz` open), `monitoring` (the shipped dashboard and alert
//! rules against the metrics the gateway exports) and `hardening` (`nosniff` on every answer, a
//! basic-auth proxy's header ignored, cross-site GETs refused without a token, NUL bytes in ids
//! and names refused). The client and config they share:
//! `admin_client.rs`. The listener's limits, loopback names and token reloads: `admin_limits.rs`.

#[path = "admin_client.rs"]
mod admin_client;

#[path = "api/events.rs"]
mod events;

#[path = "api/replay.rs"]
mod replay;

#[path = "api/security.rs"]
mod security;

#[path = "api/monitoring.rs"]
mod monitoring;

#[path = "api/hardening.rs"]
mod hardening;
