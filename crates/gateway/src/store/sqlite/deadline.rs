//! How long the embedded store keeps an event waiting for its write lock: Lark gives a push 3 s,
//! so an event the store cannot take is answered 503 (Lark re-sends it) well before that.
//!
//! An accept carries a deadline, [`ACCEPT_WAIT`] after it was handed to the writer. Before a
//! batch's transaction begins, the accepts whose deadline has passed leave the batch and are
//! answered 503; the batch's busy wait for the write lock (held by another process) lasts at most
//! [`BUSY_WAIT`], and no longer than its earliest deadline. So an accept is answered within about
//! [`ACCEPT_WAIT`] (or [`BUSY_WAIT`], the batch ahead's wait, if that is longer), plus the commit
//! of a batch that got the lock in time. It used to wait for the batch ahead's whole busy wait
//! (2 s) and then its own: up to 4 s.
//!
//! Why no event is answered against what the store holds ("nothing answered 200 before it is
//! durable", and a 503 only for what was not and will not be stored):
//! - an accept answered 503 for its deadline was taken out of the batch before the transaction
//!   began; the writer never sees it again, so it is never applied, now or later;
//! - a batch whose busy wait ran out never began its transaction: each of its writes gets the
//!   error, nothing was applied, and the id index is rolled back with it;
//! - a batch whose transaction began is answered with its outcome however late: 200 only after
//!   the commit (and its fsync) returned, the error after a rollback. A write that committed
//!   past its deadline is answered 200, never 503: it is stored.
//!
//! And should a 503 ever be given for an event that was stored, Lark's re-send is a duplicate
//! (answered 200, delivered no second time): the dedup by id holds for the whole retention.

use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::Write;
use crate::store::StoreError;

/// The longest one batch waits for the write lock another process holds (SQLite's busy
/// timeout, also the connections' default for every other statement).
pub(crate) const BUSY_WAIT: Duration = Duration::from_secs(1);

/// The longest one batch of an operator command's writer (no accepts: a replay, a purge step)
/// waits for the write lock, which the running gateway holds most of the time when it is busy:
/// its writer begins the next transaction as soon as one commits, so a waiter polling every
/// 100 ms at most may miss every gap for a second (as [`BUSY_WAIT`] it failed a replay of every
/// dead letter part-way). Waiting holds no lock: the gateway never waits for it.
pub(crate) const OPERATOR_BUSY_WAIT: Duration = Duration::from_secs(30);

/// How long after it was handed to the writer an accept may still begin its transaction.
pub(crate) const ACCEPT_WAIT: Duration = Duration::from_secs(1);

/// The deadline of an accept handed to the writer now.
pub(super) fn accept_deadline() -> Instant {
    Instant::now() + ACCEPT_WAIT
}

/// The writes of `batch` that may still begin: the accepts past their deadline are answered
/// 503 and left out. Sets the connection's busy timeout for this batch: [`BUSY_WAIT`], or the
/// time left to the earliest deadline kept (none left: the lock is tried once); `base` instead
/// of [`BUSY_WAIT`] when given (an operator command's writer: [`OPERATOR_BUSY_WAIT`]).
pub(super) fn keep_due(conn: &Connection, batch: Vec<Write>, base: Option<Duration>) -> Vec<Write> {
    let now = Instant::now();
    let mut wait = base.unwrap_or(BUSY_WAIT);
    let mut kept = Vec::with_capacity(batch.len());
    for write in batch {
        match write {
            Write::Accept(_, deadline, reply) if deadline <= now => {
                // The caller may be gone: fine.
                let _ = reply.send(Err(StoreError(format!(
                    "the store did not take the event within {ACCEPT_WAIT:?} (another process \
                     holds its write lock, or the writer is overloaded); not stored"
                ))));
            }
            Write::Accept(_, deadline, _) => {
                wait = wait.min(deadline - now);
                kept.push(write);
            }
            other => kept.push(other),
        }
    }
    set_busy_timeout(conn, wait);
    kept
}

/// The connection's busy timeout back to [`BUSY_WAIT`] (after a batch that shortened it), or
/// to `base` when given.
pub(super) fn restore(conn: &Connection, base: Option<Duration>) {
    set_busy_timeout(conn, base.unwrap_or(BUSY_WAIT));
}

fn set_busy_timeout(conn: &Connection, wait: Duration) {
    if let Err(e) = conn.busy_timeout(wait) {
        tracing::error!(error = %e, "cannot set the store's busy timeout");
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{event, locked, rt};
    use super::super::*;
    use super::*;

    #[test]
    fn a_batch_leaves_out_the_accepts_past_their_deadline_and_waits_no_longer_than_the_rest() {
        let conn = Connection::open_in_memory().expect("conn");
        let busy = || -> i64 {
            conn.query_row("PRAGMA busy_timeout", [], |r| r.get(0))
                .expect("busy timeout")
        };
        let now = Instant::now();
        let (late_tx, mut late_rx) = tokio::sync::oneshot::channel();
        let (due_tx, mut due_rx) = tokio::sync::oneshot::channel();
        let batch = vec![
            Write::Accept(
                event("late", &["a"]),
                now - Duration::from_millis(1),
                late_tx,
            ),
            Write::Accept(
                event("due", &["a"]),
                now + Duration::from_millis(400),
                due_tx,
            ),
        ];
        let kept = keep_due(&conn, batch, None);
        assert_eq!(kept.len(), 1);
        assert!(matches!(&kept[0], Write::Accept(e, ..) if e.id == "due"));
        let refused = late_rx.try_recv().expect("answered").expect_err("refused");
        assert!(
            refused.0.contains("did not take the event within"),
            "{refused}"
        );
        assert!(
            due_rx.try_recv().is_err(),
            "the kept one is not answered yet"
        );
        let wait = busy();
        assert!((1..=400).contains(&wait), "busy timeout {wait} ms");
        restore(&conn, None);
        assert_eq!(busy(), BUSY_WAIT.as_millis() as i64);
        // An operator command's writer: its own base, which no accept shortens.
        let kept = keep_due(&conn, Vec::new(), Some(OPERATOR_BUSY_WAIT));
        assert!(kept.is_empty());
        assert_eq!(busy(), OPERATOR_BUSY_WAIT.as_millis() as i64);
        keep_due(&conn, Vec::new(), None);
        restore(&conn, Some(OPERATOR_BUSY_WAIT));
        assert_eq!(busy(), OPERATOR_BUSY_WAIT.as_millis() as i64);
    }

    #[test]
    fn an_accept_past_its_deadline_is_refused_and_never_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        rt().block_on(async {
            let (store, other) = locked(&path);
            let started = Instant::now();
            // Two waves: the second is handed over while the first waits for the lock.
            let first = store.accept(event("one", &["a"]));
            tokio::time::sleep(Duration::from_millis(600)).await;
            let second = store.accept(event("two", &["a"]));
            let second_at = Instant::now();
            assert!(first.await.is_err(), "stored under a held lock");
            let refused = second.await.expect_err("stored under a held lock");
            let waited = second_at.elapsed();
            assert!(
                waited < ACCEPT_WAIT + Duration::from_millis(800),
                "waited {waited:?}: {refused}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{:?}",
                started.elapsed()
            );
            other.execute_batch("ROLLBACK").expect("unlock");
            // Neither was stored: both are new now.
            for id in ["one", "two"] {
                let again = store.accept(event(id, &["a"])).await.expect("accept");
                assert!(matches!(again, Accepted::New { .. }), "{id} was stored");
            }
            store.close();
        });
    }
}
