//! Why one delivery did not complete ([`HandleError`]), and the outcome each reason is answered
//! with: a passing fault is retried (with Lark's or the platform's wait when given), a bad event,
//! a business error or a ledger row that is not what the ledger writes is rejected at once.

use std::time::Duration;

use gateway_plugin::Outcome;
use lark_core::EventError;

use crate::api::ApiError;
use crate::forward::ForwardError;
use crate::ledger::LedgerError;

/// Why one delivery did not complete; mapped to an [`Outcome`] by [`HandleError::outcome`].
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error("not a valid assets_update event: {0}")]
    Event(#[from] EventError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("account {account_id}, external_order_id {order_id}: {source}")]
    Api {
        account_id: String,
        order_id: String,
        source: Box<ApiError>,
    },
    #[error("account {account_id}: Lark answered with external_order_id {got:?}, expected {expected:?}; not recorded")]
    OrderMismatch {
        account_id: String,
        expected: String,
        got: String,
    },
    #[error("the event's {0} ({1}) is beyond what the ledger holds (at most 9223372036854775807)")]
    OutOfRange(&'static str, u64),
    #[error("the event's account_id {0:?} cannot name an account")]
    BadAccount(String),
    #[error("the event's modify_time {0} is not a time in Unix milliseconds of now or before (kept, it would make every later snapshot of the account look stale)")]
    BadTime(u64),
    #[error("ledger row of delivery {0} has no bonus types to withdraw")]
    NoTypes(String),
    #[error("withdrawal {order_id} is recorded; {source} (a later attempt forwards again, never withdraws again)")]
    Forward {
        order_id: String,
        source: ForwardError,
    },
    #[error("an earlier attempt of this delivery is still running (here or in another gateway sharing the ledger)")]
    Busy,
    #[error("withdrawal {0} is recorded and waits to be forwarded, but no forward_url is configured: set it again, then replay this dead letter (it forwards, never withdraws again)")]
    ForwardUnconfigured(String),
}

impl HandleError {
    /// Transient problems → `Retry` (with Lark's or the platform's wait when given); bad events
    /// and business errors → `Reject`.
    pub fn outcome(&self) -> Outcome {
        let reason = self.to_string();
        let retry = |retry_after| Outcome::Retry {
            reason: reason.clone(),
            retry_after,
        };
        match self {
            // Another copy of the library still holds the SQLite file (an upgrade by reload):
            // at least a second, so a short backoff does not spend the attempts meanwhile.
            HandleError::Ledger(LedgerError::Handover { .. }) => {
                retry(Some(Duration::from_secs(1)))
            }
            // What the ledger holds, or would have to hold, is wrong (a row that is not what
            // the ledger writes; a value past its columns): no later attempt finds it
            // otherwise, so it is a dead letter at once, for an operator to look at.
            HandleError::Ledger(LedgerError::Corrupt { .. } | LedgerError::TooLarge { .. }) => {
                Outcome::reject(reason)
            }
            HandleError::Ledger(_) => retry(None),
            HandleError::Busy => retry(Some(Duration::from_secs(1))),
            HandleError::Api { source, .. } if source.is_transient() => retry(source.retry_after()),
            HandleError::Forward {
                source: ForwardError::Transient { retry_after, .. },
                ..
            } => retry(*retry_after),
            HandleError::Event(_)
            | HandleError::OutOfRange(..)
            | HandleError::BadAccount(_)
            | HandleError::BadTime(_)
            | HandleError::Api { .. }
            | HandleError::OrderMismatch { .. }
            | HandleError::NoTypes(_)
            | HandleError::Forward { .. }
            | HandleError::ForwardUnconfigured(_) => Outcome::reject(reason),
        }
    }
}
