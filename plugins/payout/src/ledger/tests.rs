use super::*;
use lark_core::CashBonus;

/// Lark's times in these tests: Unix milliseconds of 2023 (a `trans_time` must read as one).
const T: u64 = 1_700_000_000_000;

fn snapshot(modify_time_ms: u64) -> AssetsUpdateV1 {
    AssetsUpdateV1 {
        account_id: "acct".into(),
        points: 10,
        cash: Vec::new(),
        modify_time_ms,
    }
}

#[test]
fn a_row_found_for_a_delivery_id_must_be_of_the_same_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Ledger::open(&dir.path().join("ledger.db")).expect("create");
    let plan = Plan::Withdraw(vec![1]);
    let first = ledger
        .admit("d1", "gw-1", &snapshot(5), &plan, || 1)
        .expect("admit");
    let again = ledger
        .admit("d1", "gw-1", &snapshot(5), &plan, || 2)
        .expect("the same snapshot again");
    assert_eq!(again.modify_time, first.modify_time);
    match ledger.admit("d1", "gw-1", &snapshot(6), &plan, || 3) {
        Err(LedgerError::Corrupt { reason, .. }) => {
            assert!(
                reason.contains("snapshot 5") && reason.contains("snapshot 6"),
                "{reason}"
            )
        }
        other => panic!("another snapshot under the same id: {other:?}"),
    }
}

/// Values past the 64-bit signed columns are refused as `TooLarge` (the delivery is then
/// rejected, as on PostgreSQL): the SQLite backend left them to fail at the bind, which
/// read as a passing fault, and every retry called withdraw again.
#[test]
fn values_past_the_columns_are_too_large_on_a_file_ledger() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Ledger::open(&dir.path().join("ledger.db")).expect("create");
    let plan = Plan::Withdraw(vec![1]);
    let huge = u64::MAX;
    match ledger.admit("d0", "gw-0", &snapshot(huge), &plan, || 1) {
        Err(LedgerError::TooLarge { what, .. }) => assert_eq!(what, "modify_time"),
        other => panic!("{other:?}"),
    }
    ledger
        .admit("d1", "gw-1", &snapshot(5), &plan, || 1)
        .expect("admit");
    let w = Withdrawal {
        external_order_id: Some("gw-1".into()),
        trans_time: None,
        points: huge,
        cash: Vec::new(),
        log_id: None,
    };
    match ledger.record_withdrawn("d1", &w, false, 2) {
        Err(LedgerError::TooLarge { what, value, .. }) => {
            assert_eq!((what, value), ("points", huge))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_ledger_of_a_newer_schema_is_refused_and_left_as_it_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.db");
    drop(Ledger::open(&path).expect("create"));
    let c = rusqlite::Connection::open(&path).expect("open");
    c.pragma_update(None, "user_version", 2).expect("bump");
    drop(c);
    match Ledger::open(&path) {
        Err(LedgerError::NewerSchema {
            found: 2, known: 1, ..
        }) => {}
        other => panic!("{other:?}"),
    }
    let c = rusqlite::Connection::open(&path).expect("open");
    let v: i64 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("read");
    assert_eq!(v, 2, "not set back");
}

#[test]
fn a_snapshot_is_stale_when_older_or_as_old_from_another_delivery() {
    let newest = Some((1_000, "evt-a:payout"));
    assert!(
        !is_stale(None, &snapshot(5), "evt-b:payout"),
        "first for the account"
    );
    assert!(is_stale(newest, &snapshot(999), "evt-b:payout"), "older");
    assert!(
        is_stale(newest, &snapshot(1_000), "evt-b:payout"),
        "as old, another delivery"
    );
    assert!(
        !is_stale(newest, &snapshot(1_000), "evt-a:payout"),
        "as old, the delivery that recorded it (its row deleted by hand): not its own stale copy"
    );
    assert!(!is_stale(newest, &snapshot(1_001), "evt-b:payout"), "newer");
}

#[test]
fn a_file_ledger_is_shown_as_its_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("payouts.db");
    let ledger = Ledger::open(&path).expect("open");
    assert_eq!(ledger.shown(), path.display().to_string());
}

fn withdrawal(points: u64, cash: &[&str]) -> Withdrawal {
    Withdrawal {
        external_order_id: None,
        trans_time: None,
        points,
        cash: cash
            .iter()
            .map(|a| CashBonus {
                currency: "CNY".into(),
                amount: a.parse().expect("amount"),
            })
            .collect(),
        log_id: None,
    }
}

#[test]
fn a_withdrawal_is_forwarded_unless_it_moved_nothing_or_forwarding_is_off() {
    assert_eq!(forward_status_for(&withdrawal(5, &[]), true), "pending");
    assert_eq!(
        forward_status_for(&withdrawal(0, &["0.30"]), true),
        "pending"
    );
    assert_eq!(
        forward_status_for(&withdrawal(5, &["0.00"]), true),
        "pending"
    );
    assert_eq!(
        forward_status_for(&withdrawal(0, &["0.00", "0"]), true),
        "not_needed"
    );
    assert_eq!(forward_status_for(&withdrawal(0, &[]), true), "not_needed");
    assert_eq!(forward_status_for(&withdrawal(5, &["1"]), false), "none");
}

/// The withdrawals made after a snapshot (by `trans_time`) are listed for the covered check,
/// and a covered row is recorded as skipped with its note; a row already withdrawn is never
/// turned into a skip. (The PostgreSQL twin: `tests/e2e/payout_ledger_pg/covered.rs`.)
#[test]
fn withdrawals_after_a_snapshot_and_a_covered_skip_on_a_file_ledger() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Ledger::open(&dir.path().join("ledger.db")).expect("create");
    let plan = Plan::Withdraw(vec![1]);
    ledger
        .admit("d-old", "gw-old", &snapshot(100), &plan, || 1)
        .expect("older");
    ledger
        .admit("d-new", "gw-new", &snapshot(200), &plan, || 2)
        .expect("newer");
    let mut other = snapshot(150);
    other.account_id = "other".into();
    ledger
        .admit("d-other", "gw-other", &other, &plan, || 3)
        .expect("another account");
    let took = |order: &str, trans: u64| Withdrawal {
        external_order_id: Some(order.into()),
        trans_time: Some((T + trans).to_string()),
        points: 10,
        cash: Vec::new(),
        log_id: None,
    };
    ledger
        .record_withdrawn("d-new", &took("gw-new", 300), false, 4)
        .expect("newer withdrawn");
    ledger
        .record_withdrawn("d-other", &took("gw-other", 300), false, 4)
        .expect("other withdrawn");
    let ids = |after: u64| -> Vec<String> {
        ledger
            .withdrawals_after("acct", T + after)
            .expect("list")
            .into_iter()
            .map(|r| r.delivery_id)
            .collect()
    };
    assert_eq!(ids(100), ["d-new"]);
    assert_eq!(ids(299), ["d-new"]);
    assert!(
        ids(300).is_empty(),
        "made at the snapshot's time is not after it"
    );
    // A second withdraw call after one in doubt (an HTTP 500: maybe executed, maybe still
    // running): never covered; after one known to have withdrawn nothing (a 429): covered.
    for (id, order, account, first) in [
        ("d-twice", "gw-twice", "acct-2", None),
        ("d-after-429", "gw-after-429", "acct-3", Some(1)),
    ] {
        let mut elsewhere = snapshot(110);
        elsewhere.account_id = account.into();
        ledger
            .admit(id, order, &elsewhere, &plan, || 4)
            .expect("admit");
        assert_eq!(ledger.count_withdraw_attempt(id).expect("count"), Some(1));
        let failed = Failed {
            rejected: false,
            withdrew_nothing: first,
        };
        ledger
            .record_withdraw_error(id, "withdraw: HTTP 500 or 429", None, failed)
            .expect("noted");
        assert_eq!(ledger.count_withdraw_attempt(id).expect("count"), Some(2));
    }
    let twice = ledger
        .record_covered("d-twice", 2, "covered: by gw-new", 5)
        .expect("not covered");
    assert_eq!(twice.status, Status::Pending);
    let after_429 = ledger
        .record_covered("d-after-429", 2, "covered: by gw-new", 5)
        .expect("covered");
    assert_eq!(after_429.status, Status::Skipped);
    assert!(ledger.count_withdraw_attempt("d-old").expect("count") == Some(1));
    let row = ledger
        .record_covered("d-old", 1, "covered: by gw-new", 5)
        .expect("covered");
    assert_eq!(
        ledger.count_withdraw_attempt("d-old").expect("count"),
        None,
        "no call for a finished row"
    );
    assert_eq!(row.status, Status::Skipped);
    assert_eq!(row.skip_reason.as_deref(), Some("covered"));
    assert_eq!(row.last_error.as_deref(), Some("covered: by gw-new"));
    assert_eq!(row.completed_at, Some(5));
    let kept = ledger
        .record_covered("d-new", 1, "covered: by nothing", 6)
        .expect("a withdrawn row");
    assert_eq!(kept.status, Status::Withdrawn);
    assert_eq!(kept.skip_reason, None);
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
        .record_withdrawn("d-old", &took("gw-old", 400), false, 7)
        .expect("withdrawn after all");
    assert_eq!(paid.status, Status::Withdrawn);
    assert_eq!(paid.skip_reason, None);
    assert_eq!((paid.points, paid.trans_time_ms), (10, Some(T + 400)));
}

/// A ledger file made before `withdraw_nothing_upto` gets the column at open, its rows kept and
/// counting none; opening again changes nothing; the version stays 1.
#[test]
fn a_file_ledger_from_before_refusals_were_counted_gets_the_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ledger.db");
    let old_schema = sqlite::schema::SCHEMA.replace(
        "    withdraw_nothing_upto INTEGER NOT NULL DEFAULT 0,\n",
        "",
    );
    assert_ne!(old_schema, sqlite::schema::SCHEMA, "the column left out");
    {
        let conn = rusqlite::Connection::open(&file).expect("create");
        conn.execute_batch(&old_schema).expect("old schema");
        conn.execute(
            "INSERT INTO payouts (delivery_id, external_order_id, account_id, modify_time,
                 requested_types, status, created_at, withdraw_attempts)
             VALUES ('d-1', 'gw-1', 'acct', 100, '[1]', 'pending', 1, 2)",
            [],
        )
        .expect("an old row");
    }
    for _ in 0..2 {
        let ledger = Ledger::open(&file).expect("open");
        let row = ledger.get("d-1").expect("read").expect("kept");
        assert_eq!(row.withdraw_attempts, 2);
        // Two calls in doubt (none known to have made nothing): not taken as covered.
        let row = ledger
            .record_covered("d-1", 2, "covered: by gw-x", 5)
            .expect("record");
        assert_eq!(row.status, Status::Pending);
    }
    let conn = rusqlite::Connection::open(&file).expect("reopen");
    let (refusals, version): (i64, i64) = conn
        .query_row(
            "SELECT withdraw_nothing_upto, (SELECT user_version FROM pragma_user_version)
             FROM payouts WHERE delivery_id = 'd-1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("the column");
    assert_eq!((refusals, version), (0, 1));
}

/// The withdraw calls known to have made nothing are recorded by number, from the first on:
/// recording one twice (a statement run again) or out of order (concurrent attempts) never
/// counts a call in doubt, and a refusal is taken as covered only when its call is the last and
/// every one before it made nothing.
#[test]
fn withdraw_calls_known_to_have_made_nothing_are_recorded_in_order_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Ledger::open(&dir.path().join("ledger.db")).expect("create");
    ledger
        .admit(
            "d-1",
            "gw-1",
            &snapshot(100),
            &Plan::Withdraw(vec![1]),
            || 1,
        )
        .expect("admit");
    let nothing = |n: u64| Failed {
        rejected: false,
        withdrew_nothing: Some(n),
    };
    let note = |n: u64| {
        ledger
            .record_withdraw_error("d-1", "withdraw: HTTP 429", None, nothing(n))
            .expect("noted")
    };
    let covered = |call: u64| {
        ledger
            .record_covered("d-1", call, "covered: by gw-x", 9)
            .expect("record")
            .status
            == Status::Skipped
    };
    // Calls 1 and 2 run at once; 2 is answered first: 1 is still in doubt.
    assert_eq!(
        ledger.count_withdraw_attempt("d-1").expect("count"),
        Some(1)
    );
    assert_eq!(
        ledger.count_withdraw_attempt("d-1").expect("count"),
        Some(2)
    );
    note(2);
    assert!(!covered(3), "no call 3");
    assert_eq!(
        ledger.count_withdraw_attempt("d-1").expect("count"),
        Some(3)
    );
    assert!(!covered(3), "call 1 in doubt");
    // Call 1 made nothing, recorded twice: calls 1 and 2 are not both known (2's record came
    // too early), so 3 is still not covered.
    note(1);
    note(1);
    assert!(!covered(3), "call 2 not recorded in order");
    note(2);
    note(2);
    assert!(!covered(2), "call 2 is not the last");
    assert!(covered(3), "calls 1 and 2 made nothing");
}

/// Lark's `trans_time` is kept as a time only when it reads as Unix milliseconds: seconds,
/// microseconds, a far future or text keep their text and no time (the row is then placed by
/// when its result was recorded).
#[test]
fn a_trans_time_is_a_time_only_in_unix_milliseconds() {
    assert_eq!(
        trans_time_ms(Some("1717200000000")),
        Some(1_717_200_000_000)
    );
    assert_eq!(
        trans_time_ms(Some(" 1717200000000 ")),
        Some(1_717_200_000_000)
    );
    for odd in [
        "1717200000",
        "1717200000000000",
        "99999999999999",
        "soon",
        "",
    ] {
        assert_eq!(trans_time_ms(Some(odd)), None, "{odd}");
    }
    assert_eq!(trans_time_ms(None), None);
}

/// A new ledger file, and the WAL beside it, are readable by their owner only (who was paid
/// what: they were 0644 under the usual umask).
#[test]
fn a_new_ledger_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.db");
    let ledger = Ledger::open(&path).expect("create");
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    let wal = dir.path().join("ledger.db-wal");
    if wal.exists() {
        assert_eq!(mode(&wal), 0o600);
    }
    drop(ledger);
}
