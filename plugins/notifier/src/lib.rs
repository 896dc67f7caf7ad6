//! `notifier`: posts one message per delivery to a Feishu/Lark custom group bot (text or card,
//! optionally signed, spec §10) or to any HTTP endpoint (a JSON object, optionally signed the
//! Standard Webhooks way). Messages come from a template with the event's fields; sends are paced
//! by a client-side rate limit per target URL (shared by the process's instances); results are
//! classified into `Ok`, `Retry` (network, timeout, 429, 5xx, bot rate limit) or `Reject` (other
//! 4xx, bot error codes).
//!
//! Invariant: the webhook URL (its last segment is a bearer token) and the signing secret never
//! appear in a log line, an error message or an `Outcome` reason; only `scheme://host/…/<redacted>`
//! is ever shown. Invariant: a template value (text from the event, or the app name) never
//! becomes markup in a bot message: `escape` writes it for the text message or the card Markdown
//! it lands in; only the operator's template text is markup. See `README.md` for the
//! configuration reference.
//!
//! Modules: `config` (raw → validated), `template` (placeholders, time formatting), `escape`
//! (values written so that the message language shows them literally), `sign`
//! (bot and Standard Webhooks signatures), `payload` (the bytes each target receives),
//! `ratelimit` (sliding windows), `send` (HTTP and classification), `redact` (keeping secrets out
//! of sight). Only [`Notifier`] is public: the host talks to it through the plugin ABI.

mod config;
mod escape;
mod payload;
mod ratelimit;
mod redact;
mod send;
mod sign;
mod template;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gateway_plugin::{Delivery, Host, Level, Outcome, Plugin};
use lark_core::AssetsUpdateV1;

use config::{Config, Format, Signing, TargetKind};
use escape::Markup;
use ratelimit::RateLimiter;
use template::{Fields, Template};

/// One configured notifier instance. `handle` may run concurrently: the agent (connection pool)
/// and the limiter are shared and internally synchronised.
pub struct Notifier {
    host: Host,
    config: Config,
    agent: ureq::Agent,
    limiter: RateLimiter,
    /// The per-event-type defaults, compiled once.
    defaults: Defaults,
}

#[derive(Debug)]
struct Defaults {
    assets_text: Template,
    generic_text: Template,
    assets_title: Template,
    generic_title: Template,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("instance", &self.host.instance_name())
            .field("target", &self.config.target)
            .field("url", &self.config.url_shown)
            .finish_non_exhaustive()
    }
}

impl Plugin for Notifier {
    fn new(config: serde_json::Value, host: Host) -> Result<Self, String> {
        let config = Config::from_json(config).map_err(|e| format!("notifier config: {e}"))?;
        let defaults = Defaults::compile().map_err(|e| format!("notifier defaults: {e}"))?;
        let agent = ureq::AgentBuilder::new()
            .timeout(config.timeout)
            .redirects(0)
            .user_agent(concat!("gateway-notifier/", env!("CARGO_PKG_VERSION")))
            .build();
        let limiter =
            RateLimiter::for_target(&config.url, config.rate_per_second, config.rate_per_minute);
        host.log(
            Level::Info,
            &format!(
                "notifier ready: {:?} target {}, {}/s and {}/min",
                config.target, config.url_shown, config.rate_per_second, config.rate_per_minute
            ),
        );
        Ok(Notifier {
            host,
            config,
            agent,
            limiter,
            defaults,
        })
    }

    fn handle(&self, d: &Delivery) -> Outcome {
        self.handle_by(d, self.budget_from_now())
    }

    /// One delivery after the other, within `timeout + max_wait` for the whole batch (what the
    /// README tells operators to keep under `[delivery] timeout`): each delivery's wait for a
    /// rate-limit slot and its request get only what is left of it; once it is spent, or once
    /// the target failed in a way the next delivery would too (a network error, 5xx, 429),
    /// the rest are answered `Retry` without being sent. (Past the gateway's timeout an
    /// isolated instance is killed and every delivery of the batch retried, the sent ones too.)
    fn handle_batch(&self, deliveries: &[Delivery]) -> Vec<Outcome> {
        let deadline = self.budget_from_now();
        let mut outcomes = Vec::with_capacity(deliveries.len());
        let mut stop: Option<(String, Option<Duration>)> = None;
        for d in deliveries {
            if stop.is_none() && Instant::now() >= deadline {
                stop = Some((SPENT.into(), None));
            }
            if let Some((why, retry_after)) = &stop {
                outcomes.push(Outcome::Retry {
                    reason: format!("not sent: {why}"),
                    retry_after: *retry_after,
                });
                continue;
            }
            let outcome = self.handle_by(d, deadline);
            if let Outcome::Retry {
                reason,
                retry_after,
            } = &outcome
            {
                stop = Some((
                    format!("an earlier delivery of the batch: {reason}"),
                    *retry_after,
                ));
            }
            outcomes.push(outcome);
        }
        outcomes
    }
}

/// Why a delivery is not sent once its call's time is spent.
const SPENT: &str = "the batch's time (timeout + max_wait) was spent";

impl Notifier {
    /// The end of a call's time: `timeout + max_wait` from now.
    fn budget_from_now(&self) -> Instant {
        Instant::now() + self.config.timeout + self.config.max_wait
    }

    /// One delivery, its rate-limit wait and its request ending by `deadline`.
    fn handle_by(&self, d: &Delivery, deadline: Instant) -> Outcome {
        let outcome = match self.deliver(d, deadline) {
            Outcome::Ok => Outcome::Ok,
            Outcome::Retry {
                reason,
                retry_after,
            } => Outcome::Retry {
                reason: self.shown(&reason),
                retry_after,
            },
            Outcome::Reject { reason } => Outcome::Reject {
                reason: self.shown(&reason),
            },
        };
        match &outcome {
            Outcome::Ok => self.host.log(
                Level::Debug,
                &format!("notified {} (event {})", self.config.url_shown, d.event_id),
            ),
            Outcome::Retry { reason, .. } => self.host.log(
                Level::Warn,
                &format!("event {}: will retry: {reason}", d.event_id),
            ),
            Outcome::Reject { reason } => self.host.log(
                Level::Warn,
                &format!("event {}: rejected: {reason}", d.event_id),
            ),
        }
        outcome
    }
}

impl Defaults {
    fn compile() -> Result<Defaults, template::TemplateError> {
        Ok(Defaults {
            assets_text: Template::parse(template::DEFAULT_ASSETS_TEXT)?,
            generic_text: Template::parse(template::DEFAULT_GENERIC_TEXT)?,
            assets_title: Template::parse(template::DEFAULT_ASSETS_TITLE)?,
            generic_title: Template::parse(template::DEFAULT_GENERIC_TITLE)?,
        })
    }
}

impl Notifier {
    /// A reason as it may be shown: prefixed with the redacted target, secrets scrubbed.
    fn shown(&self, reason: &str) -> String {
        self.config
            .scrubber
            .scrub(&format!("{}: {reason}", self.config.url_shown))
    }

    /// `configured` (else `default`) rendered for this delivery. A configured template that
    /// renders nothing but blanks (its placeholders are all asset fields, and the event is of
    /// another type) gives way to the default for the event's type, which says what it was:
    /// an empty message tells no one anything.
    fn render(
        &self,
        configured: Option<&Template>,
        default: &Template,
        fields: &Fields<'_>,
        markup: Markup,
    ) -> String {
        let offset = self.config.utc_offset;
        let text = configured.unwrap_or(default).render(fields, offset, markup);
        if configured.is_none() || !text.trim().is_empty() {
            return text;
        }
        self.host.log(
            Level::Warn,
            &format!(
                "the configured template rendered nothing for this {} event: sent the default",
                fields.event_type
            ),
        );
        default.render(fields, offset, markup)
    }

    fn deliver(&self, d: &Delivery, deadline: Instant) -> Outcome {
        let assets = if d.event_type == AssetsUpdateV1::EVENT_TYPE {
            match AssetsUpdateV1::from_envelope(d.event_json()) {
                Ok(a) => Some(a),
                Err(e) => return Outcome::reject(format!("malformed {}: {e}", d.event_type)),
            }
        } else {
            None
        };
        let fields = Fields {
            app: &d.app,
            event_id: &d.event_id,
            event_type: &d.event_type,
            assets: assets.as_ref(),
        };
        let (default_text, default_title) = match assets {
            Some(_) => (&self.defaults.assets_text, &self.defaults.assets_title),
            None => (&self.defaults.generic_text, &self.defaults.generic_title),
        };
        // The language the message text is read in decides how values are written into it.
        let markup = match (self.config.target, self.config.format) {
            (TargetKind::LarkBot, Format::Text) => Markup::LarkText,
            (TargetKind::LarkBot, Format::Card) => Markup::LarkMd,
            (TargetKind::Http, _) => Markup::Raw,
        };
        let text = self.render(self.config.template.as_ref(), default_text, &fields, markup);

        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(wait) = self.limiter.acquire(self.config.max_wait.min(left)) {
            return Outcome::Retry {
                reason: format!(
                    "client-side rate limit ({}/s, {}/min): no send slot within max_wait {:?}",
                    self.config.rate_per_second, self.config.rate_per_minute, self.config.max_wait
                ),
                retry_after: Some(wait),
            };
        }
        // What is left for the request once the slot is there.
        let timeout = self
            .config
            .timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        if timeout.is_zero() {
            return Outcome::retry(format!("not sent: {SPENT}"));
        }
        // The clock is read after waiting for the slot: the signature must be fresh.
        let timestamp = unix_seconds().to_string();
        let (headers, body) = match self.config.target {
            TargetKind::LarkBot => {
                let title = match self.config.format {
                    Format::Card => self.render(
                        self.config.title.as_ref(),
                        default_title,
                        &fields,
                        Markup::PlainText,
                    ),
                    Format::Text => String::new(),
                };
                let signing = match &self.config.signing {
                    Signing::LarkBot(secret) => Some((timestamp.as_str(), secret.as_str())),
                    _ => None,
                };
                let body = payload::bot_body(self.config.format, &title, &text, signing);
                (Vec::new(), body)
            }
            TargetKind::Http => {
                let key = match &self.config.signing {
                    Signing::Webhook(key) => Some(key.as_slice()),
                    _ => None,
                };
                let body = payload::http_body(d, &text);
                let headers = match &body {
                    Ok(b) => payload::http_headers(&d.delivery_id, &timestamp, key, b),
                    Err(_) => Vec::new(),
                };
                (headers, body)
            }
        };
        let body = match body {
            Ok(body) => body,
            Err(e) => return Outcome::reject(format!("cannot serialise the message: {e}")),
        };
        send::post(
            &self.agent,
            self.config.target,
            &self.config.url,
            &headers,
            &body,
            timeout,
            &self.config.scrubber,
        )
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

gateway_plugin::export_plugin!(Notifier);
