//! Deduplication of event ids in memory, so the store keeps no index on them.
//!
//! Lark's event ids are random: a B-tree index on them takes every new event into a random leaf
//! page, and that page is written to the WAL with the commit and again by the next checkpoint
//! (measured: 12 of the 30 pages a 12-event commit wrote). Instead, the `event_ids` table holds
//! each event's [`id_hash`] in arrival order (appended, like the events themselves), the writer
//! loads it into an [`IdIndex`] before its first accept, and a candidate found there is confirmed
//! against the event's stored id: a hash match alone never makes a duplicate.
//!
//! The index changes with the writer's transaction: every change is journaled and undone when the
//! transaction fails, so the index always matches what is committed.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use rusqlite::Connection;
use sha2::{Digest, Sha256};

use crate::store::StoreError;

/// The first 8 bytes of the SHA-256 of an event id: stable across builds and platforms (it is
/// stored), and not steerable into collisions by whoever picks ids.
pub(super) fn id_hash(id: &str) -> i64 {
    let digest = Sha256::digest(id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// A hasher for keys that already are uniform hashes: passes them through.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_i64` is used; fold anything else in rather than ignore it.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_i64(&mut self, n: i64) {
        self.0 = n as u64;
    }
}

type Map<V> = HashMap<i64, V, BuildHasherDefault<PassThrough>>;

/// A change to undo if the transaction that made it fails.
#[derive(Debug, Clone, Copy)]
enum Change {
    Added(i64, i64),
    Removed(i64, i64),
}

/// Every stored event's id hash, with the event's `seq`.
#[derive(Debug, Default)]
pub(super) struct IdIndex {
    /// The first event with each hash.
    first: Map<i64>,
    /// Further events with the same hash (different ids; practically never used).
    more: Map<Vec<i64>>,
    journal: Vec<Change>,
}

impl IdIndex {
    /// Reads every `(hash, seq)` of the store's `event_ids` table.
    pub(super) fn load(conn: &Connection) -> Result<IdIndex, StoreError> {
        let count: i64 = conn.query_row("SELECT COUNT(*) FROM event_ids", [], |r| r.get(0))?;
        let mut index = IdIndex {
            first: Map::with_capacity_and_hasher(count.max(0) as usize, Default::default()),
            ..IdIndex::default()
        };
        let mut stmt = conn.prepare("SELECT hash, seq FROM event_ids")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            index.insert(row.get(0)?, row.get(1)?);
        }
        Ok(index)
    }

    /// The events whose id has this hash (confirm each against its stored id).
    pub(super) fn candidates(&self, hash: i64) -> impl Iterator<Item = i64> + '_ {
        let first = self.first.get(&hash).copied();
        let more = self.more.get(&hash).into_iter().flatten().copied();
        first.into_iter().chain(more)
    }

    /// Records a new event (journaled).
    pub(super) fn add(&mut self, hash: i64, seq: i64) {
        self.insert(hash, seq);
        self.journal.push(Change::Added(hash, seq));
    }

    fn insert(&mut self, hash: i64, seq: i64) {
        match self.first.entry(hash) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(seq);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.more.entry(hash).or_default().push(seq);
            }
        }
    }

    /// Forgets a removed event (journaled); nothing if it is not there.
    pub(super) fn remove(&mut self, hash: i64, seq: i64) {
        if self.forget(hash, seq) {
            self.journal.push(Change::Removed(hash, seq));
        }
    }

    fn forget(&mut self, hash: i64, seq: i64) -> bool {
        if self.first.get(&hash) == Some(&seq) {
            match self.more.get_mut(&hash).and_then(Vec::pop) {
                Some(next) => {
                    self.first.insert(hash, next);
                }
                None => {
                    self.first.remove(&hash);
                }
            }
        } else {
            let Some(others) = self.more.get_mut(&hash) else {
                return false;
            };
            let Some(at) = others.iter().position(|s| *s == seq) else {
                return false;
            };
            others.swap_remove(at);
        }
        if self.more.get(&hash).is_some_and(Vec::is_empty) {
            self.more.remove(&hash);
        }
        true
    }

    /// The transaction committed: its changes stay.
    pub(super) fn commit(&mut self) {
        self.journal.clear();
    }

    /// The transaction failed: undoes its changes, newest first.
    pub(super) fn roll_back(&mut self) {
        while let Some(change) = self.journal.pop() {
            match change {
                Change::Added(hash, seq) => {
                    self.forget(hash, seq);
                }
                Change::Removed(hash, seq) => self.insert(hash, seq),
            }
        }
    }

    /// How many events it holds.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.first.len() + self.more.values().map(Vec::len).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(index: &IdIndex, hash: i64) -> Vec<i64> {
        let mut c: Vec<i64> = index.candidates(hash).collect();
        c.sort_unstable();
        c
    }

    #[test]
    fn the_hash_is_the_first_eight_bytes_of_sha256() {
        // SHA-256("abc") = ba7816bf 8f01cfea ...
        assert_eq!(id_hash("abc"), 0xba78_16bf_8f01_cfea_u64 as i64);
        assert_ne!(id_hash("abc"), id_hash("abd"));
    }

    #[test]
    fn colliding_hashes_keep_every_event() {
        let mut index = IdIndex::default();
        index.add(7, 1);
        index.add(7, 2);
        index.add(7, 3);
        index.add(8, 4);
        assert_eq!(sorted(&index, 7), vec![1, 2, 3]);
        index.remove(7, 1);
        assert_eq!(sorted(&index, 7), vec![2, 3]);
        index.remove(7, 3);
        index.remove(7, 9);
        assert_eq!(sorted(&index, 7), vec![2]);
        index.remove(7, 2);
        assert_eq!(sorted(&index, 7), Vec::<i64>::new());
        assert_eq!(sorted(&index, 8), vec![4]);
        assert_eq!(index.len(), 1);
        assert!(index.more.is_empty(), "no empty lists left behind");
    }

    #[test]
    fn a_roll_back_undoes_the_transaction_and_only_it() {
        let mut index = IdIndex::default();
        index.add(1, 10);
        index.add(2, 20);
        index.commit();
        index.add(3, 30);
        index.add(1, 11);
        index.remove(2, 20);
        index.remove(1, 10);
        index.remove(5, 50);
        index.roll_back();
        assert_eq!(sorted(&index, 1), vec![10]);
        assert_eq!(sorted(&index, 2), vec![20]);
        assert_eq!(sorted(&index, 3), Vec::<i64>::new());
        assert_eq!(index.len(), 2);
        assert!(index.journal.is_empty());
        index.remove(2, 20);
        index.commit();
        index.roll_back();
        assert_eq!(sorted(&index, 2), Vec::<i64>::new(), "committed: stays");
    }

    #[test]
    fn it_loads_what_the_table_holds() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(
            "CREATE TABLE event_ids (seq INTEGER PRIMARY KEY, hash INTEGER NOT NULL);
             INSERT INTO event_ids VALUES (1, 5), (2, 6), (3, 5);",
        )
        .expect("fill");
        let index = IdIndex::load(&conn).expect("load");
        assert_eq!(index.len(), 3);
        assert_eq!(sorted(&index, 5), vec![1, 3]);
        assert_eq!(sorted(&index, 6), vec![2]);
        assert!(index.journal.is_empty());
    }
}
