//! The writer's dedup index in two tiers, so every id kept stays deduplicated while memory
//! grows by only about 1.3 bytes per id: the newest ids in memory ([`IdIndex`], bounded), the
//! older ones in sorted runs on disk ([`Run`]), each with a Bloom filter in memory.
//!
//! When the memory tier holds [`SPILL_AT`] ids, a builder thread reads the `event_ids` rows
//! past the runs (committed rows: `event_ids` stays the truth) into a new level-0 run, merges
//! the newest runs while two have the same level (a binary counter: at most one run per level,
//! each id rewritten once per level), drops the oldest run once retention removed all its
//! events, and hands the new chain back. The writer records the chain in the `id_runs` table in
//! a transaction of its own (the store names the runs it uses), then drops the covered ids from
//! memory a few shards per batch (or per 100 ms tick while no write comes) and has the builder
//! delete the files no chain uses and, once the ids are dropped, hand the freed pages back to
//! the OS (`gateway_memtune`). A failed spill keeps the ids in memory and is tried again
//! 30 s later; closing the store stops the builder and waits for it.
//!
//! Seqs only grow (the writer assigns them past everything stored and covered), so an event is
//! always either in a run's range or in memory. A run at start that is missing, damaged or
//! not contiguous with the chain is dropped, with every run after it: their events are read
//! back into memory (and spilled again later).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use rusqlite::Connection;

mod builder;
mod chain;

use builder::Thread;
pub(super) use chain::check_runs;
use chain::{install, open_chain, remove_unused};

use super::floors::{self, Keys};
use super::ids::IdIndex;
use super::runs::Run;
use crate::store::StoreError;

/// Ids in memory that start a spill to disk: about 3–5 MB of index, and 4 MB kept by the
/// builder to sort them.
pub(super) const SPILL_AT: usize = 1 << 18;
/// Memory shards freed after each batch once a run took their ids over.
const EVICT_SHARDS_PER_BATCH: usize = 16;

/// A chain of runs built by the builder thread, or why not.
type Built = Result<Vec<Arc<Run>>, StoreError>;

/// Work for the builder thread.
enum Job {
    /// A level-0 run of the ids past `chain` up to this seq, then the merges it allows.
    Build(Vec<Arc<Run>>, i64),
    /// Files no chain uses any more (deleted off the writer thread: unlinking a large file
    /// takes a while).
    Remove(Vec<PathBuf>),
    /// The replaced runs' filters and the evicted ids are freed: their pages go back to the OS
    /// (the allocator would keep them resident), off the writer thread.
    Trim,
    /// Answers once every job before it is done (for the tests).
    #[cfg(test)]
    Sync(mpsc::Sender<()>),
    /// Panics (for the tests: a builder that dies).
    #[cfg(test)]
    Panic,
}

/// Both tiers and the spill machinery.
pub(super) struct Dedup {
    mem: IdIndex,
    /// Oldest first; each run's `lo` is the previous one's `hi`.
    runs: Vec<Arc<Run>>,
    /// Every seq at or below this is in the runs' ranges (0: no runs).
    covered: i64,
    /// The next memory shard to drop covered ids from, until all are done.
    evicting: Option<usize>,
    next_seq: i64,
    /// The numbering of new deliveries (kept here, beside the seqs: both are the accept's).
    keys: Keys,
    spill: Option<Spill>,
}

/// The builder thread and its state; none for an operator command (memory only, never spills).
struct Spill {
    at: usize,
    jobs: mpsc::Sender<Job>,
    done: mpsc::Receiver<Built>,
    busy: bool,
    /// After a failed spill (a full disk, say), the next try waits until then.
    pause_until: Option<std::time::Instant>,
    /// Set when the store closes: a build under way gives up.
    stop: Arc<AtomicBool>,
    /// How many times the builder handed freed pages back (a [`Job::Trim`] each).
    #[cfg(test)]
    trims: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Spill {
    /// Whether a failed spill's wait is still on.
    fn paused(&self) -> bool {
        self.pause_until
            .is_some_and(|t| std::time::Instant::now() < t)
    }
}

impl Drop for Dedup {
    /// Stops the builder and waits for it, so its connection is closed before the writer's (the
    /// last connection to close checkpoints the WAL).
    fn drop(&mut self) {
        if let Some(spill) = self.spill.take() {
            let Spill {
                jobs, stop, thread, ..
            } = spill;
            stop.store(true, Ordering::Relaxed);
            drop(jobs);
            if let Some(thread) = thread {
                let _ = thread.join();
            }
        }
    }
}

/// How long to wait after a failed spill before the next try.
const RETRY_SPILL_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// Where a store keeps its runs: `<store>.ids/` beside it.
pub(super) fn runs_dir(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(".ids");
    PathBuf::from(name)
}

impl Dedup {
    /// Memory only, from all of `event_ids` (an operator command's view; never spills).
    pub(super) fn in_memory(conn: &Connection) -> Result<Dedup, StoreError> {
        let mem = IdIndex::load_after(conn, i64::MIN)?;
        Ok(Dedup {
            mem,
            runs: Vec::new(),
            covered: 0,
            evicting: None,
            next_seq: next_seq(conn, 0)?,
            keys: Keys::load(conn)?,
            spill: None,
        })
    }

    /// An operator command's view of the store at `store` (never spills, never touches the
    /// runs' files): the runs the store names, as the gateway reads them, and the ids past them
    /// in memory; with no runs (or none that can be read), every id in memory. (Memory only,
    /// a replay by id on a store of millions of events read them all, gigabytes, first.) Ids
    /// the gateway accepts meanwhile are not here: a replay looks those up in the table.
    pub(super) fn for_operator(conn: &Connection, store: &Path) -> Result<Dedup, StoreError> {
        let dir = runs_dir(store);
        let runs = if dir.is_dir() {
            open_chain(conn, &dir)?
        } else {
            Vec::new()
        };
        let covered = runs.last().map_or(0, |r| r.hi);
        Ok(Dedup {
            mem: IdIndex::load_after(conn, covered)?,
            runs,
            covered,
            evicting: None,
            next_seq: next_seq(conn, covered)?,
            keys: Keys::load(conn)?,
            spill: None,
        })
    }

    /// Both tiers for the gateway that owns the store at `store`: the runs the store names (each
    /// checked), the events past them in memory, and a builder that spills at `spill_at` ids.
    pub(super) fn open(
        conn: &Connection,
        store: &Path,
        spill_at: usize,
    ) -> Result<Dedup, StoreError> {
        let dir = runs_dir(store);
        std::fs::create_dir_all(&dir)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        let runs = open_chain(conn, &dir)?;
        let covered = runs.last().map_or(0, |r| r.hi);
        remove_unused(&dir, &runs);
        let mem = IdIndex::load_after(conn, covered)?;
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (done_tx, done) = mpsc::channel();
        let reader = super::open_connection(store)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let trims = Arc::new(AtomicUsize::new(0));
        let trimmed = trims.clone();
        let thread = builder::spawn(Thread {
            reader,
            dir,
            stop: stopped,
            trims: trimmed,
            spill_at,
            jobs: job_rx,
            done: done_tx,
        })
        .map_err(|e| StoreError(format!("cannot start the id run builder: {e}")))?;
        Ok(Dedup {
            mem,
            runs,
            covered,
            evicting: None,
            next_seq: next_seq(conn, covered)?,
            keys: Keys::load(conn)?,
            spill: Some(Spill {
                at: spill_at,
                jobs,
                done,
                busy: false,
                pause_until: None,
                stop,
                #[cfg(test)]
                trims,
                thread: Some(thread),
            }),
        })
    }

    /// The events whose id may have this hash (confirm each against its stored id).
    pub(super) fn candidates(&self, hash: i64) -> Result<Vec<i64>, StoreError> {
        let mut found: Vec<i64> = self.mem.candidates(hash).collect();
        for run in &self.runs {
            found.extend(run.lookup(hash)?);
        }
        Ok(found)
    }

    /// The seq for a new event: past every event stored or covered, so never reused.
    pub(super) fn take_seq(&mut self) -> i64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// The key for a new delivery: past every one stored or purged, so never reused.
    pub(super) fn take_key(&mut self) -> i64 {
        self.keys.take()
    }

    pub(super) fn add(&mut self, hash: i64, seq: i64) {
        self.mem.add(hash, seq);
    }

    /// Forgets a purged event if memory holds it (a run keeps it until a merge: a stale entry
    /// only costs a look-up, as every candidate is confirmed).
    pub(super) fn remove(&mut self, hash: i64, seq: i64) {
        self.mem.remove(hash, seq);
    }

    pub(super) fn commit(&mut self) {
        self.mem.commit();
    }

    pub(super) fn roll_back(&mut self) {
        self.mem.roll_back();
    }

    /// Ids held in memory.
    pub(super) fn len(&self) -> usize {
        self.mem.len()
    }

    /// Whether a spill is under way or due, or covered ids are still to free: the writer then
    /// calls [`Dedup::after_batch`] even while no write comes.
    pub(super) fn has_work(&self) -> bool {
        self.spill.as_ref().is_some_and(|spill| {
            spill.busy || self.evicting.is_some() || (!spill.paused() && self.mem.len() >= spill.at)
        })
    }

    /// Between batches (no transaction open): takes a finished chain in, frees a few shards of
    /// covered ids, and starts a spill when memory holds enough.
    pub(super) fn after_batch(&mut self, conn: &mut Connection) {
        let built = self.built(false);
        self.step(conn, built);
    }

    /// A finished build, if one is there (with `wait`, once the one under way ends). A builder
    /// that is gone (it panicked) ends the spills: ids stay in memory from then on, as without
    /// runs (a spill left "under way" stopped them for good, and woke the writer every 100 ms).
    fn built(&mut self, wait: bool) -> Option<Built> {
        let spill = self.spill.as_ref()?;
        let got = if wait {
            spill
                .done
                .recv()
                .map_err(|_| mpsc::TryRecvError::Disconnected)
        } else {
            spill.done.try_recv()
        };
        match got {
            Ok(built) => Some(built),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => {
                builder_gone(&mut self.spill);
                None
            }
        }
    }

    fn step(&mut self, conn: &mut Connection, built: Option<Built>) {
        let Some(spill) = self.spill.as_mut() else {
            return;
        };
        if let Some(built) = built {
            spill.busy = false;
            let installed = built.map(|chain| install(conn, &self.runs, chain));
            let installed = match installed {
                Ok((installed, unused)) => {
                    // Removed after the writer's handles go (with the old chain, below).
                    let _ = spill.jobs.send(Job::Remove(unused));
                    installed
                }
                Err(e) => Err(e),
            };
            match installed {
                Ok(chain) => {
                    self.covered = chain.last().map_or(self.covered, |r| r.hi);
                    self.runs = chain;
                    self.evicting = Some(0);
                }
                Err(e) => {
                    spill.pause_until = Some(std::time::Instant::now() + RETRY_SPILL_AFTER);
                    tracing::error!(
                        error = %e,
                        "cannot spill event ids to disk; kept in memory, next try in 30 s"
                    )
                }
            }
        }
        if let Some(from) = self.evicting {
            let to = (from + EVICT_SHARDS_PER_BATCH).min(self.mem.shard_count());
            for shard in from..to {
                self.mem.evict_up_to(shard, self.covered);
            }
            self.evicting = (to < self.mem.shard_count()).then_some(to);
            if self.evicting.is_none() {
                // The old chain went with `self.runs = chain`; the covered ids just now.
                let _ = spill.jobs.send(Job::Trim);
            }
        }
        if !spill.busy && !spill.paused() && self.evicting.is_none() && self.mem.len() >= spill.at {
            let hi = self.next_seq - 1;
            if spill.jobs.send(Job::Build(self.runs.clone(), hi)).is_ok() {
                spill.busy = true;
            } else {
                builder_gone(&mut self.spill);
            }
        }
    }

    /// Waits until no spill is under way and memory holds no covered id (for the tests).
    #[cfg(test)]
    pub(super) fn settle(&mut self, conn: &mut Connection) {
        self.step(conn, None);
        for _ in 0..10_000 {
            let busy = self.spill.as_ref().is_some_and(|s| s.busy);
            if !busy && self.evicting.is_none() {
                self.sync();
                return;
            }
            let built = if busy { self.built(true) } else { None };
            self.step(conn, built);
        }
        panic!("the dedup index did not settle");
    }

    /// Waits until the builder did every job sent so far (for the tests).
    #[cfg(test)]
    pub(super) fn sync(&self) {
        if let Some(spill) = self.spill.as_ref() {
            let (tx, rx) = mpsc::channel();
            if spill.jobs.send(Job::Sync(tx)).is_ok() {
                let _ = rx.recv();
            }
        }
    }

    /// How many times the builder handed freed pages back to the OS.
    #[cfg(test)]
    pub(super) fn trims(&self) -> usize {
        self.spill
            .as_ref()
            .map_or(0, |s| s.trims.load(Ordering::Relaxed))
    }

    #[cfg(test)]
    pub(super) fn spill_paused(&self) -> bool {
        self.spill.as_ref().is_some_and(|s| s.pause_until.is_some())
    }

    #[cfg(test)]
    pub(super) fn runs(&self) -> &[Arc<Run>] {
        &self.runs
    }
}

/// The builder thread is gone (it panicked): no more spills (ids stay in memory, as without
/// runs), rather than a spill forever "under way", or tried again after every batch.
fn builder_gone(spill: &mut Option<Spill>) {
    tracing::error!(
        "the event id index's builder stopped: new ids are kept in memory only until the gateway restarts"
    );
    *spill = None;
}

/// One past the highest seq stored, covered (by memory or by a run the store names) or purged
/// ([`floors`]).
fn next_seq(conn: &Connection, covered: i64) -> Result<i64, StoreError> {
    // The runs' ends too: a store whose chain was recorded before the chain raised the floor
    // (see `chain::install`) may have a run past every seq stored.
    let stored: i64 = conn.query_row(
        "SELECT MAX(COALESCE((SELECT MAX(seq) FROM events), 0),
                    COALESCE((SELECT MAX(seq) FROM event_ids), 0),
                    COALESCE((SELECT MAX(hi) FROM id_runs), 0))",
        [],
        |r| r.get(0),
    )?;
    Ok(stored
        .max(covered)
        .max(floors::floor(conn, floors::EVENT_SEQ)?)
        + 1)
}

#[cfg(test)]
#[path = "dedup_runs_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "dedup_state_tests.rs"]
mod state_tests;
