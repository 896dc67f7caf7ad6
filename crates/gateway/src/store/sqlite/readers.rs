//! The embedded store's read connections, one per kind of reader, so that one kind never
//! waits on the other: the engine's (the sweeper's pages of due deliveries, the loading of
//! their events, and the backlog that `/metrics`, `/status` and `/readyz` report) and the
//! operators' (the admin API and console, `store check`, backups: a filter with no index
//! behind it, or an integrity check, may read the whole store for seconds). The operators'
//! connection is opened on first use (an idle gateway does not pay for it). SQLite's WAL lets
//! both read beside the writer.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::Connection;

use super::open::open_connection;
use crate::store::{StoreError, StoreFuture};

/// Which connection a read runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reader {
    /// Delivery and health: short, indexed reads.
    Engine,
    /// Operator queries, whatever they cost.
    Operator,
}

pub(super) struct Readers {
    path: PathBuf,
    engine: Mutex<Connection>,
    operator: Mutex<Option<Connection>>,
}

impl Readers {
    /// Opens the engine's connection; the operators' waits for its first read.
    pub(super) fn open(path: &Path) -> Result<Readers, StoreError> {
        Ok(Readers {
            path: path.to_path_buf(),
            engine: Mutex::new(open_connection(path)?),
            operator: Mutex::new(None),
        })
    }

    /// Runs `f` on `reader`'s connection (blocking: call it off the async workers).
    pub(super) fn with<T>(
        &self,
        reader: Reader,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match reader {
            Reader::Engine => f(&*self.engine.lock().map_err(|_| poisoned())?),
            Reader::Operator => {
                let mut slot = self.operator.lock().map_err(|_| poisoned())?;
                let conn = match slot.take() {
                    Some(c) => c,
                    None => open_connection(&self.path)?,
                };
                let result = f(&conn);
                *slot = Some(conn);
                result
            }
        }
    }
}

impl super::SqliteStore {
    /// A read on the engine's connection (delivery and health).
    pub(super) fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<T> {
        self.read_on(Reader::Engine, f)
    }

    /// A read on the operators' connection (it may scan the store: never beside the engine's).
    pub(super) fn inspect<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<T> {
        self.read_on(Reader::Operator, f)
    }

    fn read_on<T: Send + 'static>(
        &self,
        reader: Reader,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<T> {
        let inner = self.inner.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || inner.readers.with(reader, f))
                .await
                .map_err(|e| StoreError(format!("reader task failed: {e}")))?
        })
    }

    /// Blocking read (for the tests).
    #[cfg(test)]
    pub fn read_blocking<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.inner.readers.with(Reader::Engine, f)
    }
}

fn poisoned() -> StoreError {
    StoreError("reader lock poisoned".into())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::rt;
    use super::super::SqliteStore;
    use super::Reader;
    use crate::store::{EventFilter, Store};

    /// An operator's read that takes long (here: held open) holds up neither the sweeper's
    /// page of due deliveries nor the backlog `/metrics` reports; another operator read waits.
    #[test]
    fn a_long_operator_read_holds_up_no_engine_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let (hold, held) = std::sync::mpsc::channel::<()>();
        let (busy, is_busy) = std::sync::mpsc::channel::<()>();
        let inner = store.inner.clone();
        let scan = std::thread::spawn(move || {
            inner.readers.with(Reader::Operator, |_| {
                let _ = busy.send(());
                let _ = held.recv();
                Ok(())
            })
        });
        is_busy.recv().expect("the operator read started");
        let rt = rt();
        let quick = Duration::from_secs(5);
        // Each result is checked once the operator read is released (a failed check must not
        // leave the runtime waiting on a blocked read).
        let (backlog, due, pending, early) = rt.block_on(async {
            let backlog = tokio::time::timeout(quick, store.backlog()).await;
            let due = tokio::time::timeout(quick, store.due(i64::MAX, (0, 0), 10)).await;
            let pending = tokio::time::timeout(quick, store.pending_plugins()).await;
            // The operators' own queries queue behind it.
            let list = store.list_events(EventFilter::default());
            let early = tokio::time::timeout(Duration::from_millis(200), list).await;
            (backlog, due, pending, early)
        });
        hold.send(()).expect("release");
        assert!(backlog.is_ok_and(|b| b.is_ok()), "backlog waited");
        assert!(due.is_ok_and(|d| d.is_ok()), "due waited");
        assert!(pending.is_ok_and(|p| p.is_ok()), "pending_plugins waited");
        assert!(early.is_err(), "an operator read ran beside another");
        let listed = rt.block_on(store.list_events(EventFilter::default()));
        assert!(listed.is_ok_and(|l| l.is_empty()));
        assert!(scan.join().expect("scan").is_ok());
    }
}
