//! The embedded store's read connections, one per kind of reader, so that one kind never
//! waits on another: the engine's (the sweeper's pages of due deliveries and the loading of
//! their events: short, indexed reads), the monitor's (the backlog that `/metrics`, `/status`
//! and the console report: a count over every pending delivery, about 0.6 s for a million) and
//! the operators' (the admin API and console, `store check`, backups: a filter with no index
//! behind it, or an integrity check, may read the whole store for seconds). The monitor's and
//! the operators' connections are opened on first use (an idle gateway does not pay for them).
//! SQLite's WAL lets all of them read beside the writer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;

use super::open::open_connection;
use crate::store::{StoreError, StoreFuture};

/// Which connection a read runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reader {
    /// Delivery and health: short, indexed reads.
    Engine,
    /// The backlog's counts, for metrics and status.
    Monitor,
    /// Operator queries, whatever they cost.
    Operator,
}

pub(super) struct Readers {
    path: PathBuf,
    engine: Mutex<Connection>,
    monitor: Mutex<Option<Connection>>,
    operator: Mutex<Option<Connection>>,
}

impl Readers {
    /// Opens the engine's connection; the monitor's and the operators' wait for their first
    /// read. A read that panicked leaves its lock poisoned and (monitor, operators) its slot
    /// empty: the next read takes the lock all the same and opens the connection again, so one
    /// panic never turns a kind of read off for good.
    pub(super) fn open(path: &Path) -> Result<Readers, StoreError> {
        Ok(Readers {
            path: path.to_path_buf(),
            engine: Mutex::new(open_connection(path)?),
            monitor: Mutex::new(None),
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
            Reader::Engine => f(&self.engine.lock().unwrap_or_else(PoisonError::into_inner)),
            Reader::Monitor => {
                let mut slot = self.monitor.lock().unwrap_or_else(PoisonError::into_inner);
                let conn = self.take_or_open(&mut slot)?;
                let result = f(&conn);
                *slot = Some(conn);
                result
            }
            Reader::Operator => self.for_operator(&Arc::new(AtomicBool::new(true)), f),
        }
    }

    /// The connection in a lazily opened `slot`, opened now if it was not (or a read that
    /// panicked lost it); the caller puts it back.
    fn take_or_open(&self, slot: &mut Option<Connection>) -> Result<Connection, StoreError> {
        match slot.take() {
            Some(c) => Ok(c),
            None => open_connection(&self.path),
        }
    }

    /// Runs `f` on the operators' connection while `wanted` holds: not at all if the caller
    /// went away while it waited for the connection (an operator's request dropped: its
    /// client closed the connection), and interrupted (SQLite's progress handler, every
    /// [`PROGRESS_STEPS`] steps of its bytecode) if it goes away while `f` runs, so that
    /// abandoned scans of the whole store neither run on nor queue up behind each other.
    fn for_operator<T>(
        &self,
        wanted: &Arc<AtomicBool>,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut slot = self.operator.lock().unwrap_or_else(PoisonError::into_inner);
        if !wanted.load(Ordering::Relaxed) {
            return Err(StoreError(GONE.into()));
        }
        let conn = self.take_or_open(&mut slot)?;
        let watched = wanted.clone();
        conn.progress_handler(
            PROGRESS_STEPS,
            Some(move || !watched.load(Ordering::Relaxed)),
        );
        let result = f(&conn);
        conn.progress_handler(0, None::<fn() -> bool>);
        *slot = Some(conn);
        result
    }
}

/// How many of SQLite's bytecode steps run between two looks at whether an operator's read is
/// still wanted (a few hundred microseconds' work).
const PROGRESS_STEPS: std::os::raw::c_int = 10_000;

/// Why an operator's read did not run, or stopped.
const GONE: &str = "the request was abandoned";

/// Sets its flag to false when dropped: the future of an operator's read, dropped before its
/// read ended.
struct Wanted(Arc<AtomicBool>);

impl Drop for Wanted {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
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

    /// A read on the monitor's connection (the backlog: never beside the engine's).
    pub(super) fn monitor<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<T> {
        self.read_on(Reader::Monitor, f)
    }

    fn read_on<T: Send + 'static>(
        &self,
        reader: Reader,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<T> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let wanted = Wanted(Arc::new(AtomicBool::new(true)));
            let flag = wanted.0.clone();
            let read = tokio::task::spawn_blocking(move || match reader {
                Reader::Engine | Reader::Monitor => inner.readers.with(reader, f),
                Reader::Operator => inner.readers.for_operator(&flag, f),
            });
            let result = read
                .await
                .map_err(|e| StoreError(format!("reader task failed: {e}")))?;
            drop(wanted);
            result
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
    /// The backlog (a count over every pending delivery: long on a big backlog, and asked for by
    /// every `/metrics` scrape) and the engine's reads hold up neither each other.
    #[test]
    fn the_backlog_and_the_engine_hold_up_neither_each_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let rt = rt();
        let quick = Duration::from_secs(5);
        for held in [Reader::Monitor, Reader::Engine] {
            let (hold, release) = std::sync::mpsc::channel::<()>();
            let (busy, is_busy) = std::sync::mpsc::channel::<()>();
            let inner = store.inner.clone();
            let holder = std::thread::spawn(move || {
                inner.readers.with(held, |_| {
                    let _ = busy.send(());
                    let _ = release.recv();
                    Ok(())
                })
            });
            is_busy.recv().expect("the held read started");
            // The other kind's read, checked once the held one is released (a failed check
            // must not leave the runtime waiting on a blocked read).
            let answered = rt.block_on(async {
                match held {
                    Reader::Monitor => tokio::time::timeout(quick, store.due(i64::MAX, (0, 0), 10))
                        .await
                        .is_ok_and(|d| d.is_ok()),
                    _ => tokio::time::timeout(quick, store.backlog())
                        .await
                        .is_ok_and(|b| b.is_ok()),
                }
            });
            hold.send(()).expect("release");
            assert!(holder.join().expect("holder").is_ok());
            assert!(answered, "a read waited behind a held {held:?} read");
        }
    }
    /// A read that panics on any connection does not turn that kind of read off: the next one
    /// runs (its lock was poisoned; the monitor's and operators' connections are opened again).
    #[test]
    fn a_read_that_panicked_leaves_every_reader_usable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        for reader in [Reader::Engine, Reader::Monitor, Reader::Operator] {
            let inner = store.inner.clone();
            let panicked = std::thread::spawn(move || {
                inner
                    .readers
                    .with(reader, |_| -> Result<(), _> { panic!("a read panics") })
            })
            .join();
            assert!(panicked.is_err(), "{reader:?}: the read did not panic");
            let next = store.inner.readers.with(reader, |c| {
                Ok(c.query_row("SELECT 7", [], |r| r.get::<_, i64>(0))?)
            });
            assert_eq!(next.ok(), Some(7), "{reader:?}: the next read failed");
        }
        assert!(rt().block_on(store.backlog()).is_ok());
    }
}

#[cfg(test)]
mod abandon_tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::tests::rt;
    use super::super::SqliteStore;
    use super::Reader;

    /// An operator's read whose caller went away (its future dropped) while it waited for the
    /// connection does not run; one that runs is interrupted (a query that would never end
    /// here), and the next read gets the connection.
    #[test]
    fn an_abandoned_operator_read_neither_runs_on_nor_waits_to_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let rt = rt();

        // Queued behind a held read, then abandoned: never runs.
        let (hold, held) = std::sync::mpsc::channel::<()>();
        let (busy, is_busy) = std::sync::mpsc::channel::<()>();
        let inner = store.inner.clone();
        let holder = std::thread::spawn(move || {
            inner.readers.with(Reader::Operator, |_| {
                let _ = busy.send(());
                let _ = held.recv();
                Ok(())
            })
        });
        is_busy.recv().expect("held");
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        let queued = store.inspect(move |_| {
            flag.store(true, Ordering::Relaxed);
            Ok(())
        });
        let gone =
            rt.block_on(async { tokio::time::timeout(Duration::from_millis(100), queued).await });
        assert!(gone.is_err(), "it ran beside the held read");
        hold.send(()).expect("release");
        assert!(holder.join().expect("holder").is_ok());

        // Running, then abandoned: interrupted (this query counts for ever).
        let endless = store.inspect(|c| {
            c.query_row(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n)
                 SELECT count(*) FROM n",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(Into::into)
        });
        let gone =
            rt.block_on(async { tokio::time::timeout(Duration::from_millis(300), endless).await });
        assert!(gone.is_err(), "the endless query ended");
        let next = store.inspect(|c| Ok(c.query_row("SELECT 7", [], |r| r.get::<_, i64>(0))?));
        let next = rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), next).await });
        // (A failure must not leave the runtime waiting for the endless query.)
        rt.shutdown_timeout(Duration::from_secs(1));
        assert!(
            next.is_ok_and(|n| n.is_ok_and(|n| n == 7)),
            "the next read waited for the abandoned one"
        );
        assert!(!ran.load(Ordering::Relaxed), "the abandoned read ran");
    }
}
