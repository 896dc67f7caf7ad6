//! [`WriteId`]: the name of one outcome write, the same across its retries.
//!
//! A write to a shared store can commit while its answer is lost (a connection dropped after
//! `COMMIT`, the gateway's time limit running out while the database still holds the
//! statement). The engine then writes the same records again; their guards no longer hold (the
//! first try moved the delivery on), and without a name for the write a store could not tell
//! "an earlier try of this very write applied" from "something else (a replay, another replica)
//! moved the delivery on". The PostgreSQL store keeps the name in the history row the write adds.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Unique among the writes of every process on one store (a random start per process, then a
/// counter): two replicas never name two writes alike in practice (a 2⁻⁶⁴ chance per pair of
/// ranges that meet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteId(pub i64);

impl WriteId {
    /// A name no write of this process had before.
    pub fn fresh() -> WriteId {
        static START: OnceLock<u64> = OnceLock::new();
        static NEXT: AtomicU64 = AtomicU64::new(0);
        // The standard library seeds each `RandomState` from the OS's random source.
        let start = *START.get_or_init(|| RandomState::new().build_hasher().finish());
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        WriteId(start.wrapping_add(n) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::WriteId;

    #[test]
    fn fresh_ids_differ() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| WriteId::fresh().0).collect();
        assert_eq!(ids.len(), 1000);
    }
}
