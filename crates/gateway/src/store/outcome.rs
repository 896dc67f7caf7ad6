//! What one attempt's end is, as the engine hands it to the store: how it ended ([`Finish`]),
//! what it may replace ([`Guard`]), its history entry ([`Trace`]), and the record that carries
//! them ([`FinishRecord`]).

use std::sync::Arc;

use super::WriteId;

/// How a delivery attempt ended, as persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    Done,
    Retry { next_at_ms: i64, error: String },
    Dead { error: String },
}

impl Finish {
    /// The reason recorded with it (none for a success).
    pub fn error(&self) -> Option<&str> {
        match self {
            Finish::Done => None,
            Finish::Retry { error, .. } | Finish::Dead { error } => Some(error),
        }
    }
}

/// What an outcome may replace: the delivery as it was when the call started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guard {
    /// Bumped by every replay.
    pub generation: u32,
    /// Attempts recorded when the call started (or, for a late outcome, after its timeout).
    pub attempts: u32,
    /// Also replace a dead letter of the same attempt (a success does: a late one, or one whose
    /// delivery was dead-lettered as an orphan while the call ran).
    pub dead_too: bool,
    /// Apply only while the attempt's "started" mark is still on the row (`started` = the
    /// record's `attempts`; in a shared store, this process's claim too): the record of a late
    /// outcome over its timeout's, which a shared store's other replicas may have counted as a
    /// crash and started again since (their mark is another).
    pub own_mark: bool,
}

/// Tests: the guard of generation 0 at `attempts`, asking for no mark and replacing no dead
/// letter (the first call of a delivery never replayed).
#[cfg(test)]
pub(crate) fn first_call_guard(attempts: u32) -> Guard {
    Guard {
        generation: 0,
        attempts,
        dead_too: false,
        own_mark: false,
    }
}

/// The end of one attempt, to persist (see [`super::Store::finish_many`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishRecord {
    pub key: i64,
    pub guard: Guard,
    /// Attempts made, including this one.
    pub attempts: u32,
    pub finish: Finish,
    /// What the attempt's history row says (written only when the record applies).
    pub trace: Trace,
    /// The same in every retry of this record's write (a shared store tells by it whether a
    /// try whose answer was lost applied; the embedded store's writes are never in doubt).
    pub write: WriteId,
}

/// The history label of an attempt whose call outlived `[delivery] timeout`.
pub const TIMED_OUT: &str = "timeout";
/// The history label of such a call that returned `Retry` (or an outcome the engine could
/// not read) after all: the timeout's record stands, written again to end the "running".
pub const LATE_RETRY: &str = "late retry";

impl FinishRecord {
    /// True when the call this records has not returned (its timeout is what is recorded, as a
    /// retry or a dead letter: native code cannot be stopped). The delivery then stays marked
    /// as running until the call's late outcome is recorded, on both stores, so that a replay
    /// needs `--force` meanwhile and a process that dies before the call returns is counted as
    /// crashed in it: the embedded store keeps the attempt's "started" mark (on the retry and
    /// on the dead letter); a shared store keeps it on a retry and keeps this process's claim
    /// on both, renewed while the call runs, so that no other process runs the delivery beside
    /// it (after a forced replay of the dead letter, say).
    pub fn call_still_runs(&self) -> bool {
        self.trace.outcome == TIMED_OUT
    }
}

/// How one attempt went, for the delivery's history (see [`super::AttemptRecord`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// `ok`, `retry`, `reject`, `panicked`, `timeout`; `late ok`, `late retry`, `late reject`,
    /// `late panicked` for the outcome of a call that returned after its timeout was recorded.
    pub outcome: &'static str,
    /// When the plugin call started (Unix ms).
    pub started_at_ms: i64,
    /// How long it ran, in milliseconds.
    pub duration_ms: u64,
    /// Why the plugin had this delivery once before in the same call, that run's outcome
    /// discarded: its batch as a whole panicked (or, isolated, its process died), and each
    /// delivery was handed over again on its own. Written as a history entry of its own
    /// ([`DISCARDED`]) before this one, so the history shows every time the plugin had it.
    pub discarded_run: Option<Arc<str>>,
}

/// The history label of a run of a delivery whose outcome was discarded (see
/// [`Trace::discarded_run`]).
pub const DISCARDED: &str = "discarded";
