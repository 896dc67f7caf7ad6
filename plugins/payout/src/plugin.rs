//! The [`Payout`] plugin: for each `hire.referral_account.assets_update_v1` delivery, decide (zero
//! balance, minimums, stale snapshot), record the intent in the ledger, withdraw through Lark with
//! an `external_order_id` derived from the delivery id, record the result, then forward it.
//!
//! Exactly-once in effect: the ledger row keyed by `delivery_id` says how far a delivery got, so
//! a repeated delivery resumes where the previous attempt stopped (withdraw again with the same
//! `external_order_id` if no result was recorded, which Lark answers with the original
//! withdrawal; forward again if forwarding is pending; otherwise nothing).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use gateway_plugin::{Delivery, Host, Level, Outcome, Plugin};
use lark_core::{AssetsUpdateV1, Money};
use sha2::{Digest, Sha256};

use crate::api::{ApiError, LarkClient, WITHDRAW};
use crate::config::{BonusType, Config};
use crate::forward::Forwarder;
use crate::ledger::{
    Failed, ForwardStatus, Ledger, LedgerError, LedgerLocation, PayoutRow, Plan, SkipReason, Status,
};

pub use handle_error::HandleError;

/// The plugin instance.
#[derive(Debug)]
pub struct Payout {
    host: Host,
    config: Config,
    api: LarkClient,
    ledger: Ledger,
    forwarder: Option<Forwarder>,
    in_flight: Mutex<HashSet<String>>,
    /// This instance's claims on its ledger (one `[[plugins]]` name per ledger): by location,
    /// and a PostgreSQL ledger by its identity too.
    _ledger_use: (crate::owners::LedgerUse, Option<crate::owners::LedgerUse>),
}

impl Plugin for Payout {
    fn new(config: serde_json::Value, host: Host) -> Result<Self, String> {
        let config = Config::from_json(&config).map_err(|e| e.to_string())?;
        let location = match &config.ledger {
            LedgerLocation::File(path) => LedgerLocation::File(host.resolve_path(path)),
            url @ LedgerLocation::Postgres(_) => url.clone(),
        };
        let ledger_use = crate::owners::LedgerUse::claim(&location, host.instance_name())?;
        let ledger = Ledger::open_at(&location, false).map_err(|e| format!("payout: {e}"))?;
        // A PostgreSQL ledger again by what it is, whichever URL reached it (the claim above
        // only catches the same URL).
        let identity_use = match ledger.identity().map_err(|e| format!("payout: {e}"))? {
            Some(id) => Some(crate::owners::LedgerUse::claim_identity(
                &id,
                host.instance_name(),
            )?),
            None => None,
        };
        if let Some(why) = ledger.keepalives_refused() {
            host.log(
                Level::Warn,
                &format!(
                    "payout: ledger {}: the server refused the TCP keepalive settings ({why}): \
                     a replica that vanishes without closing its connection holds its delivery \
                     claims until the server notices by its own means",
                    ledger.shown()
                ),
            );
        }
        if ledger.opens_later() {
            host.log(
                Level::Warn,
                &format!(
                    "payout: ledger {} is open in this process by another copy of the payout \
                     library (the instance this reload replaces): it is opened at the first \
                     call after that one is shut down; calls wait for that up to 5 s, then are retried",
                    ledger.shown()
                ),
            );
        }
        let api = LarkClient::new(
            &config.base_url,
            &config.app_id,
            &config.app_secret,
            config.timeout,
        )
        .with_retry_codes(config.retry_codes.clone());
        let forwarder = config
            .forward
            .as_ref()
            .map(|f| Forwarder::new(f, config.timeout));
        host.log(
            Level::Info,
            &format!(
                "payout ready: base_url {}, ledger {}, forwarding {}",
                crate::shown::shown_url(&config.base_url),
                ledger.shown(),
                config
                    .forward
                    .as_ref()
                    .map_or("off".to_owned(), |f| crate::shown::shown_url(&f.url))
            ),
        );
        Ok(Payout {
            host,
            config,
            api,
            ledger,
            forwarder,
            in_flight: Mutex::new(HashSet::new()),
            _ledger_use: (ledger_use, identity_use),
        })
    }

    fn handle(&self, delivery: &Delivery) -> Outcome {
        match self.process(delivery) {
            Ok(()) => Outcome::Ok,
            Err(e) => {
                let outcome = e.outcome();
                self.host.log(level_of(&outcome), &format!("payout: {e}"));
                outcome
            }
        }
    }
}

/// How loudly a failed delivery is logged: an error when it is rejected for good (nothing
/// will pay it unless an operator acts), a warning when it will be retried.
fn level_of(outcome: &Outcome) -> Level {
    match outcome {
        Outcome::Reject { .. } => Level::Error,
        _ => Level::Warn,
    }
}

/// Lark's idempotency key for a delivery: `"gw-"` and the first 32 hex digits of
/// SHA-256(delivery id). Every attempt of a delivery uses the same one.
pub fn external_order_id(delivery_id: &str) -> String {
    let digest = hex::encode(Sha256::digest(delivery_id.as_bytes()));
    format!("gw-{}", &digest[..32])
}

impl Payout {
    fn process(&self, d: &Delivery) -> Result<(), HandleError> {
        if d.event_type != AssetsUpdateV1::EVENT_TYPE {
            self.host.log(
                Level::Debug,
                &format!("payout: ignoring event type {}", d.event_type),
            );
            return Ok(());
        }
        let event = AssetsUpdateV1::from_envelope(d.event_json())?;
        // The ledger's columns are signed 64-bit: a bad event, not a ledger failure to retry.
        for (what, value) in [
            ("modify_time", event.modify_time_ms),
            ("point_bonus", event.points),
        ] {
            if i64::try_from(value).is_err() {
                return Err(HandleError::OutOfRange(what, value));
            }
        }
        // Seconds, microseconds or a far future: taken as the account's newest snapshot, it
        // would skip every real one after it as stale, for good.
        if !crate::timefmt::plausible_unix_ms(event.modify_time_ms, now_ms()) {
            return Err(HandleError::BadTime(event.modify_time_ms));
        }
        // A path step, however encoded (the URL parser resolves `%2E%2E` too).
        if matches!(event.account_id.as_str(), "" | "." | "..") {
            return Err(HandleError::BadAccount(event.account_id.clone()));
        }
        let _claim = Claim::new(&self.in_flight, &d.delivery_id).ok_or(HandleError::Busy)?;
        // Across gateway processes sharing a PostgreSQL ledger (always granted with SQLite).
        let _shared_claim = self
            .ledger
            .claim(&d.delivery_id)?
            .ok_or(HandleError::Busy)?;
        let plan = self.plan(&event);
        let row = self.ledger.admit(
            &d.delivery_id,
            &external_order_id(&d.delivery_id),
            &event,
            &plan,
            now_ms,
        )?;
        let row = match row.status {
            Status::Skipped => {
                self.host.log(
                    Level::Info,
                    &format!(
                        "payout: account {} snapshot {}: nothing withdrawn ({})",
                        row.account_id,
                        row.modify_time,
                        row.skip_reason.as_deref().unwrap_or("skipped")
                    ),
                );
                return Ok(());
            }
            Status::Withdrawn => row,
            Status::Pending | Status::Rejected => self.withdraw(row, &event)?,
        };
        self.forward(&row)
    }

    /// What to do with a fresh snapshot, from the configured types and minimums.
    fn plan(&self, event: &AssetsUpdateV1) -> Plan {
        let mut types = Vec::new();
        let mut something = false;
        if self.config.withdraw.contains(&BonusType::Points) && event.points > 0 {
            something = true;
            if event.points >= self.config.min_points {
                types.push(BonusType::Points.code());
            }
        }
        if self.config.withdraw.contains(&BonusType::Cash) {
            // Per currency, whatever the case of its code, its entries added up (an event may
            // list one currency more than once; the withdraw answer's are added up too).
            let mut per_currency: std::collections::BTreeMap<String, Option<Money>> =
                Default::default();
            for c in event.cash.iter().filter(|c| !c.amount.is_zero()) {
                something = true;
                let total = per_currency
                    .entry(c.currency.to_ascii_uppercase())
                    .or_insert(Some(Money::ZERO));
                // `None`: past what an amount can hold, so past any minimum.
                *total = total.and_then(|t| t.checked_add(c.amount));
            }
            let enough = per_currency.iter().any(|(currency, total)| {
                let min = self
                    .config
                    .min_cash
                    .get(currency)
                    .copied()
                    .unwrap_or(Money::ZERO);
                total.is_none_or(|t| t >= min)
            });
            if enough {
                types.push(BonusType::Cash.code());
            }
        }
        match (something, types.is_empty()) {
            (false, _) => Plan::Skip(SkipReason::ZeroBalance),
            (true, true) => Plan::Skip(SkipReason::BelowMinimum),
            (true, false) => Plan::Withdraw(types),
        }
    }

    /// Calls withdraw for a recorded intent (of `snapshot`) and records the result.
    fn withdraw(
        &self,
        row: PayoutRow,
        snapshot: &AssetsUpdateV1,
    ) -> Result<PayoutRow, HandleError> {
        if row.requested_types.is_empty() {
            return Err(HandleError::NoTypes(row.delivery_id));
        }
        let Some(call) = self.ledger.count_withdraw_attempt(&row.delivery_id)? else {
            // A concurrent attempt finished it meanwhile (withdrawn, or skipped as covered):
            // no call; go on from what it recorded.
            return self.ledger.get(&row.delivery_id)?.ok_or_else(|| {
                HandleError::Ledger(LedgerError::Corrupt {
                    delivery_id: row.delivery_id.clone(),
                    reason: "row vanished while an attempt ran".into(),
                })
            });
        };
        let result = self.api.withdraw(
            &row.account_id,
            &row.requested_types,
            &row.external_order_id,
        );
        let w = match result {
            Ok(w) => w,
            Err(source) => {
                let log_id = match &source {
                    ApiError::Lark { log_id, .. } | ApiError::Unexpected { log_id, .. } => {
                        log_id.clone()
                    }
                    ApiError::Transient { .. } | ApiError::Throttled { .. } => None,
                };
                let rejected = !source.is_transient();
                let withdrew_nothing = source
                    .withdrew_nothing(&self.config.covered_codes)
                    .then_some(call);
                if let ApiError::Lark {
                    call: WITHDRAW,
                    code,
                    ..
                } = &source
                {
                    if rejected && self.config.covered_codes.contains(code) {
                        if let Some(row) = self.covered(&row, call, snapshot, &source)? {
                            return Ok(row);
                        }
                    }
                }
                let err = HandleError::Api {
                    account_id: row.account_id.clone(),
                    order_id: row.external_order_id.clone(),
                    source: Box::new(source),
                };
                let failed = Failed {
                    rejected,
                    withdrew_nothing,
                };
                let noted = self.ledger.record_withdraw_error(
                    &row.delivery_id,
                    &err.to_string(),
                    log_id.as_deref(),
                    failed,
                );
                if let Err(e) = noted {
                    self.host.log(Level::Warn, &format!("payout: {e}"));
                }
                return Err(err);
            }
        };
        if let Some(got) = w.external_order_id.as_ref() {
            if *got != row.external_order_id {
                let err = HandleError::OrderMismatch {
                    account_id: row.account_id.clone(),
                    expected: row.external_order_id.clone(),
                    got: got.clone(),
                };
                // Stays pending: a replay asks Lark again with the same id. Lark answered a
                // withdrawal: not a call known to have withdrawn nothing.
                let failed = Failed {
                    rejected: false,
                    withdrew_nothing: None,
                };
                let _ = self.ledger.record_withdraw_error(
                    &row.delivery_id,
                    &err.to_string(),
                    w.log_id.as_deref(),
                    failed,
                );
                return Err(err);
            }
        }
        let row = self.ledger.record_withdrawn(
            &row.delivery_id,
            &w,
            self.forwarder.is_some(),
            now_ms(),
        )?;
        let cash: Vec<String> = row
            .cash
            .iter()
            .map(|c| format!("{} {}", c.amount, c.currency))
            .collect();
        self.host.log(
            Level::Info,
            &format!(
                "payout: account {} withdrew {} points and [{}], external_order_id {}, trans_time {}, log id {}",
                row.account_id,
                row.points,
                cash.join(", "),
                row.external_order_id,
                row.trans_time.as_deref().unwrap_or("-"),
                row.log_id.as_deref().unwrap_or("-"),
            ),
        );
        Ok(row)
    }

    /// Forwards a recorded withdrawal whose forwarding is pending.
    fn forward(&self, row: &PayoutRow) -> Result<(), HandleError> {
        if row.forward_status != ForwardStatus::Pending {
            return Ok(());
        }
        // Forwarding was configured when this withdrawal was made, and no longer is: never
        // done in silence (the money left Lark and the platform has not heard of it).
        let Some(forwarder) = &self.forwarder else {
            return Err(HandleError::ForwardUnconfigured(
                row.external_order_id.clone(),
            ));
        };
        match forwarder.send(row) {
            Ok(status) => {
                self.ledger
                    .record_forward(&row.delivery_id, Ok(status), now_ms())?;
                Ok(())
            }
            Err(source) => {
                let reason = source.to_string();
                let noted = self.ledger.record_forward(
                    &row.delivery_id,
                    Err((source.status(), &reason)),
                    now_ms(),
                );
                if let Err(e) = noted {
                    self.host.log(Level::Warn, &format!("payout: {e}"));
                }
                Err(HandleError::Forward {
                    order_id: row.external_order_id.clone(),
                    source,
                })
            }
        }
    }
}

/// Marks a delivery as in flight in this instance; released on drop. The host may start a new
/// attempt while a timed-out one is still running: the newcomer is told to retry later.
struct Claim<'a> {
    set: &'a Mutex<HashSet<String>>,
    id: String,
}

impl<'a> Claim<'a> {
    fn new(set: &'a Mutex<HashSet<String>>, id: &str) -> Option<Claim<'a>> {
        let mut guard = set.lock().unwrap_or_else(|p| p.into_inner());
        guard.insert(id.to_owned()).then(|| Claim {
            set,
            id: id.to_owned(),
        })
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut guard = self.set.lock().unwrap_or_else(|p| p.into_inner());
        guard.remove(&self.id);
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

mod covered;
mod handle_error;

#[cfg(test)]
mod tests;
