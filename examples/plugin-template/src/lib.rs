//! `plugin-template`: a gateway plugin written outside the gateway's repository, to copy and
//! rename. It reads `hire.referral_account.assets_update_v1` typed, with exact money, and writes
//! one line to the gateway's log for every cash balance at or above a threshold; every other event
//! type routed to it is acknowledged untouched. Replace the body of [`Template::handle`] with your
//! own work.
//!
//! Config (`[[plugins]] config`, unknown keys refused):
//! - `min_cash` — a decimal string (`"100.00"`, exact: never a float); balances below it are not
//!   reported. Default `"0.00"`.
//!
//! Rules every plugin follows (see the SDK's docs and `docs/plugins.md` in the gateway):
//! - `handle` runs on the gateway's blocking threads, possibly several at once on one instance:
//!   the plugin is `Send + Sync`, shared state needs a lock or atomics.
//! - Classify, don't retry: return `Outcome::Ok` when done, `Outcome::retry(..)` when trying again
//!   later may work (a network error, a 5xx), `Outcome::reject(..)` when it never will (the
//!   event is malformed). The gateway owns backoff, attempts and dead letters.
//! - Delivery is at least once: a crash may repeat a call. Use `delivery.delivery_id` as the
//!   idempotency key of any side effect.

use gateway_plugin::events::{AssetsUpdateV1, EventError, Money};
use gateway_plugin::{serde_json, Delivery, Host, Level, Outcome, Plugin};
use serde::Deserialize;

/// The instance's settings, read once by [`Template::new`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Cash balances below this amount are not reported.
    #[serde(default)]
    min_cash: Money,
}

/// One instance per `[[plugins]]` entry that names this library.
#[derive(Debug)]
pub struct Template {
    host: Host,
    min_cash: Money,
}

impl Plugin for Template {
    fn new(config: serde_json::Value, host: Host) -> Result<Self, String> {
        // Through the JSON text, so `Money` reads an amount from its digits, never an f64; an
        // error names the field, with no position in JSON the user never wrote.
        let config: Config = gateway_plugin::config::from_config(&config)
            .map_err(|e| format!("{} config: {e}", env!("CARGO_PKG_NAME")))?;
        host.log(
            Level::Info,
            &format!(
                "{}: reporting cash balances of at least {}",
                env!("CARGO_PKG_NAME"),
                config.min_cash
            ),
        );
        Ok(Template {
            host,
            min_cash: config.min_cash,
        })
    }

    fn handle(&self, d: &Delivery) -> Outcome {
        let event = match d.event::<AssetsUpdateV1>() {
            Ok(event) => event,
            // Another event type routed here: nothing for this plugin to do.
            Err(EventError::WrongType { .. }) => return Outcome::Ok,
            // The right type with the wrong shape (a missing field, an amount with three
            // decimals): retrying cannot fix it, so it becomes a dead letter at once.
            Err(e) => return Outcome::reject(format!("{}: {e}", d.event_id)),
        };
        for cash in event.cash.iter().filter(|c| c.amount >= self.min_cash) {
            self.host.log(
                Level::Info,
                &format!(
                    "referral account {}: {} {} ({} points) as of {}",
                    event.account_id,
                    cash.amount,
                    cash.currency,
                    event.points,
                    event.modify_time_ms
                ),
            );
        }
        Outcome::Ok
    }
}

gateway_plugin::export_plugin!(Template);

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(event_type: &str, event: serde_json::Value) -> Delivery {
        serde_json::from_value(serde_json::json!({
            "delivery_id": "ev-1:template", "attempt": 1, "plugin": "template", "app": "hire",
            "event_id": "ev-1", "event_type": event_type, "received_at": 1,
            "event": {"schema": "2.0", "header": {"event_id": "ev-1", "event_type": event_type},
                      "event": event},
        }))
        .expect("a delivery")
    }

    fn template(config: serde_json::Value) -> Result<Template, String> {
        Template::new(config, Host::for_tests(".", "template"))
    }

    #[test]
    fn an_assets_update_is_handled_and_a_malformed_one_rejected() {
        let t = template(serde_json::json!({"min_cash": "50.00"})).expect("config accepted");
        let ok = delivery(
            AssetsUpdateV1::EVENT_TYPE,
            serde_json::json!({"account_id": "a", "modify_time": "1",
                "assets": {"confirmed_bonus": {"cash_bonus": [{"currency_type": "CNY", "amount": 100.1}]}}}),
        );
        assert_eq!(t.handle(&ok), Outcome::Ok);
        let bad = delivery(
            AssetsUpdateV1::EVENT_TYPE,
            serde_json::json!({"account_id": "a", "modify_time": "1",
                "assets": {"confirmed_bonus": {"cash_bonus": [{"currency_type": "CNY", "amount": 1.005}]}}}),
        );
        assert!(matches!(t.handle(&bad), Outcome::Reject { .. }));
        let other = delivery("im.message.receive_v1", serde_json::json!({}));
        assert_eq!(t.handle(&other), Outcome::Ok);
    }

    #[test]
    fn config_is_checked() {
        assert_eq!(
            template(serde_json::json!({})).expect("defaults").min_cash,
            Money::ZERO
        );
        assert!(template(serde_json::json!({"min_cash": "1.005"})).is_err());
        let e = template(serde_json::json!({"colour": "blue"})).expect_err("unknown key");
        // The field named; no position in the JSON made of the `[[plugins]] config` table.
        // The package's name, whatever it was renamed to.
        let expected = format!("{} config: unknown field `colour`", env!("CARGO_PKG_NAME"));
        assert!(e.starts_with(&expected) && !e.contains("line"), "{e}");
    }
}
