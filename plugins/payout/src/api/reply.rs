//! Reading Lark's answer to one call ([`Reply`]): the HTTP status, the `{code, msg, data}`
//! envelope, each failure classified into an [`ApiError`], and what a withdraw answer says was
//! withdrawn.

use std::time::Duration;

use serde::de::DeserializeOwned;

use super::wire::{sum_cash, Envelope, WithdrawData};
use super::{ApiError, Withdrawal};

pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) body: String,
    pub(super) log_id: Option<String>,
    pub(super) retry_after: Option<Duration>,
}

/// What a successful withdraw answer says was withdrawn. An answer without `data`, without
/// `withdrawal_details`, or whose details hold none of the amounts asked for (`point_bonus` for
/// 1, `cash_bonus` for 2; spec §9 names them) is unreadable, not a withdrawal of nothing: it is
/// retried with the same `external_order_id` (Lark then answers with the original withdrawal),
/// and ends as a dead letter if it stays so, never as a zero payout marked done. With one of
/// them given, a missing (or null) other is zero (as in events: a balance emptied since the
/// snapshot) — unless the details carry other keys that may hold that amount (a name with
/// `bonus`, `point` or `cash` in it: `cashBonus`): then the answer is unreadable too, since
/// recording zero would leave money that left Lark unpaid. An empty `cash_bonus` list is no
/// cash.
pub(super) fn withdrawal(
    data: Option<WithdrawData>,
    requested: &[u8],
    log_id: Option<String>,
) -> Result<Withdrawal, ApiError> {
    const CALL: &str = "withdraw";
    let unreadable = |what: &str| ApiError::Transient {
        call: CALL,
        reason: format!(
            "success without `{what}` (log id {}): what was withdrawn is unknown",
            log_id.as_deref().unwrap_or("-")
        ),
        retry_after: None,
    };
    let data = data.ok_or_else(|| unreadable("data"))?;
    let details = data
        .withdrawal_details
        .ok_or_else(|| unreadable("withdrawal_details"))?;
    // Lark may leave a zero amount out (events do: spec §3), so one type's field missing is
    // zero; none of the types asked for present (`{}`, the fields under other names) is not.
    let points_given = requested.contains(&1) && details.point_bonus.is_some();
    let cash_given = requested.contains(&2) && details.cash_bonus.is_some();
    if !requested.is_empty() && !points_given && !cash_given {
        return Err(unreadable("withdrawal_details.point_bonus or cash_bonus"));
    }
    let missing = [
        (1, "point_bonus", details.point_bonus.is_none()),
        (2, "cash_bonus", details.cash_bonus.is_none()),
    ];
    // Other keys that may hold an amount (`cashBonus`, `points`): a field Lark adds for
    // something else (a time, a note) is no reason to doubt a missing amount.
    let amount_like = |k: &&String| {
        let k = k.to_ascii_lowercase();
        k.contains("bonus") || k.contains("point") || k.contains("cash")
    };
    let others: Vec<&str> = details
        .other
        .keys()
        .filter(amount_like)
        .map(String::as_str)
        .collect();
    if let Some((_, name, _)) = missing
        .iter()
        .find(|(code, _, absent)| *absent && requested.contains(code))
        .filter(|_| !others.is_empty())
    {
        return Err(ApiError::Transient {
            call: CALL,
            reason: format!(
                "success without `withdrawal_details.{name}` but with {others:?} (log id {}): \
                 what was withdrawn is unknown",
                log_id.as_deref().unwrap_or("-")
            ),
            retry_after: None,
        });
    }
    let points = details.point_bonus.unwrap_or(0);
    let cash =
        sum_cash(details.cash_bonus.unwrap_or_default()).ok_or_else(|| ApiError::Transient {
            call: CALL,
            reason: "withdrawn cash overflows".into(),
            retry_after: None,
        })?;
    let trans_time = data.trans_time.and_then(trans_time_text);
    Ok(Withdrawal {
        external_order_id: data.external_order_id,
        trans_time,
        points,
        cash,
        log_id,
    })
}

pub(super) fn check_status(call: &'static str, reply: &Reply) -> Result<(), ApiError> {
    if reply.status == 429 || reply.status >= 500 {
        let mut reason = format!("HTTP {}", reply.status);
        if let Ok(env) = serde_json::from_str::<Envelope<serde_json::Value>>(&reply.body) {
            reason.push_str(&format!(" (code {}, msg {:?})", env.code, env.msg));
        }
        reason.push_str(&format!(
            ", log id {}",
            reply.log_id.as_deref().unwrap_or("-")
        ));
        let retry_after = reply.retry_after;
        return Err(if reply.status == 429 {
            ApiError::Throttled {
                call,
                reason,
                retry_after,
            }
        } else {
            ApiError::Transient {
                call,
                reason,
                retry_after,
            }
        });
    }
    Ok(())
}

/// Lark's `trans_time` as text: documented as a string of Unix milliseconds; a bare number is
/// kept as its digits; anything else is not a time.
pub(super) fn trans_time_text(value: serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(super) fn parse_envelope<T: DeserializeOwned>(
    call: &'static str,
    reply: Reply,
) -> Result<(Option<T>, Option<String>), ApiError> {
    check_status(call, &reply)?;
    let env: Envelope<T> = match serde_json::from_str(&reply.body) {
        Ok(env) => env,
        Err(_) => {
            // A code-0 body whose `data` we cannot read, or no JSON at all.
            return match serde_json::from_str::<Envelope<serde_json::Value>>(&reply.body) {
                Ok(env) if env.code != 0 => Err(lark_error(call, env.code, env.msg, &reply)),
                _ => Err(unreadable(call, &reply)),
            };
        }
    };
    if env.code != 0 {
        return Err(lark_error(call, env.code, env.msg, &reply));
    }
    Ok((env.data, reply.log_id))
}

pub(super) fn lark_error(call: &'static str, code: i64, msg: String, reply: &Reply) -> ApiError {
    ApiError::Lark {
        call,
        code,
        msg,
        log_id: reply.log_id.clone(),
        http_status: reply.status,
        retry_after: reply.retry_after,
        retry: false,
    }
}

/// A body we cannot read: after a 2xx the call may have taken effect, so it is worth retrying
/// (idempotently); after a 4xx it is a configuration problem.
pub(super) fn unreadable(call: &'static str, reply: &Reply) -> ApiError {
    if (200..300).contains(&reply.status) {
        ApiError::Transient {
            call,
            reason: format!(
                "unreadable HTTP {} response (log id {})",
                reply.status,
                reply.log_id.as_deref().unwrap_or("-")
            ),
            retry_after: reply.retry_after,
        }
    } else if reply.status == 408 {
        ApiError::Transient {
            call,
            reason: "HTTP 408 request timeout".into(),
            retry_after: reply.retry_after,
        }
    } else {
        ApiError::Unexpected {
            call,
            status: reply.status,
            log_id: reply.log_id.clone(),
        }
    }
}
