//! The SQLite ledger while another copy of the library holds its file open in this process (an
//! upgrade by reload; here a plain descriptor of the file stands for that copy's SQLite): the
//! ledger does not open it, its calls wait for it side by side within 5 s from the first that
//! waited, later calls are retries at once, and once the file is let go the next call opens it.

use std::time::{Duration, Instant};

use payout::ledger::{Ledger, LedgerError};

#[test]
fn calls_wait_side_by_side_for_another_copy_to_let_the_file_go() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("payout.db");
    drop(Ledger::open(&path).expect("create the ledger"));
    let other_copy = std::fs::File::open(&path).expect("hold the file");
    let ledger = Ledger::open(&path).expect("open");
    assert!(ledger.opens_later(), "the file is held in this process");

    let started = Instant::now();
    let waited: Vec<Duration> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let result = ledger.get("d-1");
                    assert!(
                        matches!(result, Err(LedgerError::Handover { .. })),
                        "{result:?}"
                    );
                    started.elapsed()
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().expect("call")).collect()
    });
    for w in &waited {
        assert!(
            *w >= Duration::from_millis(4_900) && *w < Duration::from_secs(9),
            "each call waits within one 5 s window, side by side: {waited:?}"
        );
    }
    let after = Instant::now();
    assert!(matches!(
        ledger.get("d-1"),
        Err(LedgerError::Handover { .. })
    ));
    assert!(
        after.elapsed() < Duration::from_secs(1),
        "after the window, a retry at once: {:?}",
        after.elapsed()
    );

    drop(other_copy);
    assert!(matches!(ledger.get("d-1"), Ok(None)), "opened once let go");
    assert!(!ledger.opens_later());
}
