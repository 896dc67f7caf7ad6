//! `created_at` on the PostgreSQL ledger is read once the admission holds its account's lock:
//! rows carry their times in the order admissions took (a soak saw rows up to 122 ms out of
//! order when the time was read before waiting for the connection and the lock).

use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use gateway_e2e::pgkit::PgCluster;
use payout::ledger::{Ledger, PayoutRow, Plan, Status};

use super::{connect, snapshot, T0};

/// Admits `id` (a newer snapshot of `account`) while another session holds what the admission
/// must wait for; the clock moves from T0 + 1,000 to T0 + 2,000 just before `release` lets it
/// go. Long enough a wait for the admission to be blocked (the row's time is right either way
/// once it is read under the lock; read before, it would be T0 + 1,000).
fn admitted_across_a_wait(
    ledger: &Ledger,
    id: &str,
    account: &str,
    release: impl FnOnce(),
) -> PayoutRow {
    let clock = AtomicU64::new(T0 + 1_000);
    let order_id = format!("gw-{id}");
    thread::scope(|s| {
        let admission = s.spawn(|| {
            let event = snapshot(account, T0 + 1);
            ledger.admit(id, &order_id, &event, &Plan::Withdraw(vec![1]), || {
                clock.load(Ordering::SeqCst)
            })
        });
        thread::sleep(Duration::from_millis(300));
        clock.store(T0 + 2_000, Ordering::SeqCst);
        release();
        admission.join().expect("thread")
    })
    .expect("admit")
}

#[test]
fn an_admission_that_waited_for_its_account_is_timed_when_it_got_it() {
    let pg = PgCluster::start();
    let url = pg.create_database("clock");
    let ledger = connect(&url);
    let plan = Plan::Withdraw(vec![1]);
    ledger
        .admit(
            "ev-first:payout",
            "gw-first",
            &snapshot("acct-c", T0),
            &plan,
            || T0,
        )
        .expect("first");
    // Another replica's admission of the same account, in progress.
    let mut holder = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    let mut tx = holder.transaction().expect("begin");
    tx.execute(
        "SELECT 1 FROM payout_accounts WHERE account_id = 'acct-c' FOR UPDATE",
        &[],
    )
    .expect("lock the account");
    let row = admitted_across_a_wait(&ledger, "ev-second:payout", "acct-c", || {
        tx.commit().expect("unlock")
    });
    assert_eq!(row.status, Status::Pending);
    assert_eq!(row.created_at, T0 + 2_000);
}

/// The first admission of an account takes its lock by inserting the account's row; when that
/// insert waited for another replica's insert of the same account, which then rolled back, the
/// row's time is still the one read once it held the lock.
#[test]
fn a_first_admission_that_waited_for_a_rolled_back_insert_is_timed_when_it_got_the_lock() {
    let pg = PgCluster::start();
    let url = pg.create_database("clock_first");
    let ledger = connect(&url);
    // Creates the schema (and an unrelated account).
    ledger
        .admit(
            "ev-other:payout",
            "gw-other",
            &snapshot("acct-o", T0),
            &Plan::Withdraw(vec![1]),
            || T0,
        )
        .expect("schema");
    let mut holder = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    let mut tx = holder.transaction().expect("begin");
    tx.execute(
        "INSERT INTO payout_accounts
             (account_id, newest_modify_time, newest_delivery_id, updated_at)
         VALUES ('acct-n', 1, 'ev-elsewhere:payout', 1)",
        &[],
    )
    .expect("an insert in progress");
    let row = admitted_across_a_wait(&ledger, "ev-new:payout", "acct-n", || {
        tx.rollback().expect("roll back")
    });
    assert_eq!(row.status, Status::Pending);
    assert_eq!(row.created_at, T0 + 2_000);
}
