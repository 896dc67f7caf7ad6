//! `created_at` is read once the admission holds the ledger: rows carry their times in the
//! order admissions took (a time read before waiting for the lock put rows up to the wait out
//! of order). The PostgreSQL ledger's account lock: `tests/e2e/payout_ledger_pg.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::*;

#[test]
fn an_admission_that_waited_for_the_file_lock_is_timed_when_it_got_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.db");
    let ledger = Ledger::open(&path).expect("create");
    // Another process's write transaction on the same file (a second entry, or a report tool).
    let holder = rusqlite::Connection::open(&path).expect("open");
    holder.execute_batch("BEGIN IMMEDIATE").expect("lock");
    let clock = AtomicU64::new(1_000);
    let event = AssetsUpdateV1 {
        account_id: "acct".into(),
        points: 10,
        cash: Vec::new(),
        modify_time_ms: 5,
    };
    let row = std::thread::scope(|s| {
        let admission = s.spawn(|| {
            ledger.admit("d1", "gw-1", &event, &Plan::Withdraw(vec![1]), || {
                clock.load(Ordering::SeqCst)
            })
        });
        // Long enough for the admission to be waiting on the lock (it passes either way once
        // the time is read under the lock; read before, it would be 1,000).
        std::thread::sleep(Duration::from_millis(300));
        clock.store(2_000, Ordering::SeqCst);
        holder.execute_batch("COMMIT").expect("unlock");
        admission.join().expect("thread")
    })
    .expect("admit");
    assert_eq!(row.status, Status::Pending);
    assert_eq!(row.created_at, 2_000);
}
