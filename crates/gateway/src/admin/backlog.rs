//! The backlog that `/metrics`, `/status` and the console's overview report
//! ([`crate::store::Store::backlog`]), read once for many callers.
//!
//! Its cost grows with the pending deliveries (a count over all of them: about 0.6 s for a
//! million on the embedded store), exactly when an incident piles them up, and `/metrics` and
//! `/status` are open to anyone who can connect. So: one read in flight at a time, whose answer
//! every caller that asked before it began takes (however many scrapes come, the store counts
//! once at a time, and no answer is older than its request); and a read, once begun, runs to
//! its end on a task of its own, holding the turn (a client that hangs up does not free it for
//! the next read while its own still runs).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::store::{Backlog, StoreError};

/// A read's number and what it answered.
type Answer = (u64, Result<Backlog, StoreError>);

/// The last answer (the number of its read) and the turn to read.
#[derive(Debug, Default)]
pub(super) struct BacklogReads {
    /// Reads begun so far; a read's number is this count once it began.
    begun: Arc<AtomicU64>,
    /// The last read's answer, a failure too: the callers that waited for it take it (a store
    /// that fails slowly, e.g. a database that stopped answering, must not make each waiting
    /// scrape wait for a failing read of its own, one after another).
    last: Arc<Mutex<Option<Answer>>>,
}

impl BacklogReads {
    /// The backlog from a read that began after this call.
    /// `read` is the store's read ([`crate::store::Store::backlog`]).
    pub(super) async fn get<F>(&self, read: impl FnOnce() -> F) -> Result<Backlog, StoreError>
    where
        F: Future<Output = Result<Backlog, StoreError>> + Send + 'static,
    {
        let seen = self.begun.load(Ordering::SeqCst);
        let mut turn = self.last.clone().lock_owned().await;
        if let Some((number, answer)) = &*turn {
            if *number > seen {
                return answer.clone();
            }
        }
        let number = self.begun.fetch_add(1, Ordering::SeqCst) + 1;
        let read = read();
        let read = tokio::spawn(async move {
            let result = read.await;
            *turn = Some((number, result.clone()));
            result
        });
        read.await
            .map_err(|e| StoreError(format!("backlog read failed: {e}")))?
    }
}

#[cfg(test)]
mod tests;
