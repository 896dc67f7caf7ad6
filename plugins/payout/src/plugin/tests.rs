use std::time::Duration;

use super::*;

#[test]
fn a_rejection_is_logged_as_an_error_and_a_retry_as_a_warning() {
    assert_eq!(level_of(&Outcome::reject("code 1002")), Level::Error);
    let retry = Outcome::Retry {
        reason: "HTTP 500".into(),
        retry_after: None,
    };
    assert_eq!(level_of(&retry), Level::Warn);
}

#[test]
fn a_ledger_that_holds_something_wrong_is_a_rejection_and_one_that_is_away_a_retry() {
    let corrupt = HandleError::Ledger(LedgerError::Corrupt {
        delivery_id: "d".into(),
        reason: "r".into(),
    });
    assert!(matches!(corrupt.outcome(), Outcome::Reject { .. }));
    let too_large = HandleError::Ledger(LedgerError::TooLarge {
        delivery_id: "d".into(),
        what: "points",
        value: u64::MAX,
    });
    assert!(matches!(too_large.outcome(), Outcome::Reject { .. }));
    let down = HandleError::Ledger(LedgerError::Postgres {
        url: "postgres://h/db".into(),
        what: "cannot connect",
        message: "refused".into(),
    });
    assert!(matches!(
        down.outcome(),
        Outcome::Retry {
            retry_after: None,
            ..
        }
    ));
    let held = HandleError::Ledger(LedgerError::Handover {
        path: "p".into(),
        reason: "r".into(),
    });
    assert!(matches!(
        held.outcome(),
        Outcome::Retry {
            retry_after: Some(d),
            ..
        } if d == Duration::from_secs(1)
    ));
}

#[test]
fn now_is_the_wall_clock_in_milliseconds() {
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    let now = u128::from(now_ms());
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    assert!(
        before <= now && now <= after,
        "{before} <= {now} <= {after}"
    );
}

#[test]
fn order_id_is_deterministic_and_short() {
    let a = external_order_id("evt-1:payout");
    assert_eq!(a, external_order_id("evt-1:payout"));
    assert_ne!(a, external_order_id("evt-2:payout"));
    assert_eq!(a.len(), 35);
    assert!(a.starts_with("gw-"));
}
