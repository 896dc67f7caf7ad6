//! The covered check on the PostgreSQL ledger (the embedded twin: the payout crate's
//! `ledger/tests.rs`): the withdrawals of an account made after a snapshot are listed, a
//! covered row is recorded as skipped with its note (the `covered` reason the schema's
//! version 2 allows) only when every earlier withdraw call is known to have withdrawn nothing
//! (version 3's `withdraw_nothing_upto`), a withdrawn row is never turned into a skip; and a
//! version 1 database (its check without `covered`, no `withdraw_nothing_upto`) is migrated to
//! version 3 when a ledger connects.

use gateway_e2e::pgkit::PgCluster;
use payout::api::Withdrawal;
use payout::ledger::{Failed, Plan, Status};

use super::{connect, snapshot, T0};

fn took(order: &str, trans: u64) -> Withdrawal {
    Withdrawal {
        external_order_id: Some(order.into()),
        trans_time: Some(trans.to_string()),
        points: 100,
        cash: Vec::new(),
        log_id: None,
    }
}

#[test]
fn withdrawals_after_a_snapshot_and_a_covered_skip_on_a_postgres_ledger() {
    let pg = PgCluster::start();
    let url = pg.create_database("covered");
    let ledger = connect(&url);
    // A database made by a plugin before version 2.
    pg.sql(
        "covered",
        "DELETE FROM payout_schema WHERE version IN (2, 3);
         ALTER TABLE payout_ledger DROP COLUMN withdraw_nothing_upto;
         ALTER TABLE payout_ledger DROP CONSTRAINT payout_ledger_skip_reason_check,
             ADD CONSTRAINT payout_ledger_skip_reason_check
                 CHECK (skip_reason IN ('zero_balance', 'below_minimum', 'stale'))",
    );
    drop(ledger);
    let ledger = connect(&url);
    assert_eq!(
        pg.sql(
            "covered",
            "SELECT count(*), max(version) FROM payout_schema"
        ),
        "3|3"
    );
    let plan = Plan::Withdraw(vec![1]);
    ledger
        .admit("d-old", "gw-old", &snapshot("acct", T0 + 100), &plan, || T0)
        .expect("older");
    ledger
        .admit("d-new", "gw-new", &snapshot("acct", T0 + 200), &plan, || T0)
        .expect("newer");
    ledger
        .admit(
            "d-other",
            "gw-other",
            &snapshot("other", T0 + 150),
            &plan,
            || T0,
        )
        .expect("another account");
    ledger
        .record_withdrawn("d-new", &took("gw-new", T0 + 300), false, T0 + 1)
        .expect("newer withdrawn");
    ledger
        .record_withdrawn("d-other", &took("gw-other", T0 + 300), false, T0 + 1)
        .expect("other withdrawn");
    let ids = |after: u64| -> Vec<String> {
        ledger
            .withdrawals_after("acct", after)
            .expect("list")
            .into_iter()
            .map(|r| r.delivery_id)
            .collect()
    };
    assert_eq!(ids(T0 + 100), ["d-new"]);
    assert!(ids(T0 + 300).is_empty());
    // A second withdraw call after one in doubt (an HTTP 500): never covered; after one known
    // to have withdrawn nothing (a 429): covered.
    for (id, order, account, withdrew_nothing) in [
        ("d-twice", "gw-twice", "acct-2", None),
        ("d-after-429", "gw-after-429", "acct-3", Some(1)),
    ] {
        ledger
            .admit(id, order, &snapshot(account, T0 + 110), &plan, || T0)
            .expect("admit");
        assert_eq!(ledger.count_withdraw_attempt(id).expect("count"), Some(1));
        let first = Failed {
            rejected: false,
            withdrew_nothing,
        };
        ledger
            .record_withdraw_error(id, "withdraw: HTTP 500 or 429", None, first)
            .expect("noted");
        // Recorded again (a statement run again on a new connection): still call 1 only.
        ledger
            .record_withdraw_error(id, "withdraw: HTTP 500 or 429", None, first)
            .expect("noted");
        assert_eq!(ledger.count_withdraw_attempt(id).expect("count"), Some(2));
    }
    let twice = ledger
        .record_covered("d-twice", 2, "covered: by gw-new", T0 + 2)
        .expect("not covered");
    assert_eq!(twice.status, Status::Pending);
    let after_429 = ledger
        .record_covered("d-after-429", 2, "covered: by gw-new", T0 + 2)
        .expect("covered");
    assert_eq!(after_429.status, Status::Skipped);
    assert_eq!(
        ledger.count_withdraw_attempt("d-old").expect("count"),
        Some(1)
    );
    let row = ledger
        .record_covered("d-old", 1, "covered: by gw-new", T0 + 2)
        .expect("covered");
    assert_eq!(
        ledger.count_withdraw_attempt("d-old").expect("count"),
        None,
        "no call for a finished row"
    );
    assert_eq!(row.status, Status::Skipped);
    assert_eq!(row.skip_reason.as_deref(), Some("covered"));
    assert_eq!(row.last_error.as_deref(), Some("covered: by gw-new"));
    assert_eq!(row.completed_at, Some(T0 + 2));
    let kept = ledger
        .record_covered("d-new", 1, "covered: by nothing", T0 + 3)
        .expect("a withdrawn row");
    assert_eq!(kept.status, Status::Withdrawn);
    let unfinished: Vec<String> = ledger
        .unfinished(u64::MAX)
        .expect("unfinished")
        .into_iter()
        .map(|r| r.delivery_id)
        .collect();
    assert_eq!(unfinished, ["d-twice"]);
    // A concurrent attempt of the covered delivery whose id Lark did execute: its withdrawal
    // is recorded over the skip, never lost.
    let paid = ledger
        .record_withdrawn("d-old", &took("gw-old", T0 + 400), false, T0 + 4)
        .expect("withdrawn after all");
    assert_eq!(paid.status, Status::Withdrawn);
    assert_eq!(paid.skip_reason, None);
    assert_eq!(paid.trans_time_ms, Some(T0 + 400));
}
