//! Deduplication of event ids in memory, so the store keeps no index on them.
//!
//! Lark's event ids are random: a B-tree index on them takes every new event into a random leaf
//! page, and that page is written to the WAL with the commit and again by the next checkpoint
//! (measured: 12 of the 30 pages a 12-event commit wrote). Instead, the `event_ids` table holds
//! each event's [`id_hash`] in arrival order (appended, like the events themselves), the writer
//! loads it into an [`IdIndex`] before its first accept (or replay by id), and a candidate found there is confirmed
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

/// A hasher for keys that already are uniform hashes: spreads them over 64 bits.
#[derive(Default)]
struct Spread(u64);

impl Hasher for Spread {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u32` / `write_u64` are used; fold anything else in rather than ignore it.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Map<K, V> = HashMap<K, V, BuildHasherDefault<Spread>>;

/// How many maps the index is split into (by 8 bits of the hash): each grows, and rehashes, on
/// its own, so a growth step moves 1/256 of the entries (a fraction of a millisecond at
/// millions of events) instead of stalling the writer for all of them at once.
const SHARDS: usize = 256;

/// The 40 bits of a hash the index keys on: 8 pick the shard, 32 are the key within it.
fn key40(hash: i64) -> u64 {
    (hash as u64) & ((1 << 40) - 1)
}

/// The room each shard's map is made with for `events` loaded at start: its share and an
/// eighth more (the shares vary; a map that must grow past its room rehashes).
fn per_shard(events: usize) -> usize {
    events / SHARDS + events / SHARDS / 8
}

/// `seq` as an offset from `base`, if it fits in 32 bits.
fn offset_from(base: i64, seq: i64) -> Option<u32> {
    seq.checked_sub(base).and_then(|d| u32::try_from(d).ok())
}

/// A change to undo if the transaction that made it fails.
#[derive(Debug, Clone, Copy)]
enum Change {
    Added(i64, i64),
    Removed(i64, i64),
}

/// Every stored event's id hash, with the event's `seq`: 9 bytes a slot in the common case (a
/// 32-bit key and the seq as a 32-bit offset from `base`), the rest exactly in `more`.
#[derive(Debug)]
pub(super) struct IdIndex {
    /// The smallest seq when the index was loaded: seqs are kept as offsets from it.
    base: i64,
    /// Per shard: the key's first event, as `seq - base`.
    shards: Vec<Map<u32, u32>>,
    /// Further events with the same 40-bit key (different ids, or ids differing beyond those
    /// bits), and any seq that does not fit an offset from `base`; almost always small.
    more: Map<u64, Vec<i64>>,
    /// How many events it holds.
    entries: usize,
    journal: Vec<Change>,
}

impl Default for IdIndex {
    fn default() -> Self {
        IdIndex::with_capacity(0, 1)
    }
}

impl IdIndex {
    fn with_capacity(events: usize, base: i64) -> IdIndex {
        let per_shard = per_shard(events);
        IdIndex {
            base,
            shards: (0..SHARDS)
                .map(|_| Map::with_capacity_and_hasher(per_shard, Default::default()))
                .collect(),
            more: Map::default(),
            entries: 0,
            journal: Vec::new(),
        }
    }

    /// Reads every `(hash, seq)` of the store's `event_ids` table past `after`.
    pub(super) fn load_after(conn: &Connection, after: i64) -> Result<IdIndex, StoreError> {
        let (count, base): (i64, Option<i64>) = conn.query_row(
            "SELECT COUNT(*), MIN(seq) FROM event_ids WHERE seq > ?1",
            [after],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let mut index =
            IdIndex::with_capacity(count.max(0) as usize, base.unwrap_or(after.max(0) + 1));
        let mut stmt = conn.prepare("SELECT hash, seq FROM event_ids WHERE seq > ?1")?;
        let mut rows = stmt.query([after])?;
        while let Some(row) = rows.next()? {
            index.insert(row.get(0)?, row.get(1)?);
        }
        Ok(index)
    }

    /// `seq` as an offset from `base`, if it fits in 32 bits.
    fn offset(&self, seq: i64) -> Option<u32> {
        offset_from(self.base, seq)
    }

    fn shard(&self, key: u64) -> (usize, u32) {
        ((key >> 32) as usize % SHARDS, key as u32)
    }

    /// The events whose id may have this hash (confirm each against its stored id).
    pub(super) fn candidates(&self, hash: i64) -> impl Iterator<Item = i64> + '_ {
        let key = key40(hash);
        let (shard, k) = self.shard(key);
        let first = self.shards[shard]
            .get(&k)
            .map(|off| self.base + i64::from(*off));
        let more = self.more.get(&key).into_iter().flatten().copied();
        first.into_iter().chain(more)
    }

    /// Records a new event (journaled).
    pub(super) fn add(&mut self, hash: i64, seq: i64) {
        self.insert(hash, seq);
        self.journal.push(Change::Added(hash, seq));
    }

    fn insert(&mut self, hash: i64, seq: i64) {
        self.entries += 1;
        let key = key40(hash);
        let (shard, k) = self.shard(key);
        match (self.offset(seq), self.shards[shard].entry(k)) {
            (Some(off), std::collections::hash_map::Entry::Vacant(v)) => {
                v.insert(off);
            }
            _ => self.more.entry(key).or_default().push(seq),
        }
    }

    /// Forgets a removed event (journaled); nothing if it is not there.
    pub(super) fn remove(&mut self, hash: i64, seq: i64) {
        if self.forget(hash, seq) {
            self.journal.push(Change::Removed(hash, seq));
        }
    }

    fn forget(&mut self, hash: i64, seq: i64) -> bool {
        let key = key40(hash);
        let (shard, k) = self.shard(key);
        let slot = self.shards[shard].get(&k).copied();
        if slot.is_some() && slot == self.offset(seq) {
            self.shards[shard].remove(&k);
            // Another event with this key moves up into the slot, if its seq fits.
            let base = self.base;
            if let Some(others) = self.more.get_mut(&key) {
                let fits = others
                    .iter()
                    .find_map(|s| offset_from(base, *s).map(|o| (*s, o)));
                if let Some((next, off)) = fits {
                    others.retain(|s| *s != next);
                    self.shards[shard].insert(k, off);
                }
            }
        } else {
            let Some(others) = self.more.get_mut(&key) else {
                return false;
            };
            let Some(at) = others.iter().position(|s| *s == seq) else {
                return false;
            };
            others.swap_remove(at);
        }
        if self.more.get(&key).is_some_and(Vec::is_empty) {
            self.more.remove(&key);
        }
        self.entries -= 1;
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
    pub(super) fn len(&self) -> usize {
        self.entries
    }

    pub(super) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Drops one shard's events with `seq <= covered` (now in a run on disk), and the exact
    /// entries of `more` with it on the first shard. Not journaled: only between transactions.
    pub(super) fn evict_up_to(&mut self, shard: usize, covered: i64) {
        let base = self.base;
        let Some(map) = self.shards.get_mut(shard) else {
            return;
        };
        let before = map.len();
        map.retain(|_, off| base + i64::from(*off) > covered);
        // The capacity stays: the shard fills to about the same size again before the next
        // spill, so memory stays flat rather than freed and grown again.
        let mut gone = before - map.len();
        if shard == 0 {
            self.more.retain(|_, seqs| {
                let n = seqs.len();
                seqs.retain(|s| *s > covered);
                gone += n - seqs.len();
                !seqs.is_empty()
            });
        }
        self.entries -= gone;
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
    fn a_key_picks_its_shard_by_its_top_8_bits_and_keeps_the_low_32() {
        let index = IdIndex::default();
        assert_eq!(index.shard(0xAB_1234_5678), (0xAB, 0x1234_5678));
        assert_eq!(index.shard(key40(-1)), (0xFF, u32::MAX));
    }

    #[test]
    fn each_shard_gets_room_for_its_share_and_an_eighth() {
        assert_eq!(per_shard(0), 0);
        assert_eq!(per_shard(256_000), 1_000 + 125);
        assert_eq!(per_shard(255), 0);
    }

    /// The maps' hasher gives distinct keys distinct low bits (the table picks buckets by
    /// them): a constant would pile every key into one bucket (the index stays right, but each
    /// look-up walks them all).
    #[test]
    fn the_hasher_spreads_keys_over_the_buckets() {
        use std::hash::{BuildHasher, Hash};
        let build = BuildHasherDefault::<Spread>::default();
        let low_bits = |k: &dyn Fn(&mut Spread)| {
            let mut h = build.build_hasher();
            k(&mut h);
            h.finish() & 1023
        };
        let of_u32: std::collections::HashSet<u64> =
            (0..1024u32).map(|k| low_bits(&|h| k.hash(h))).collect();
        let of_u64: std::collections::HashSet<u64> = (0..1024u64)
            .map(|k| low_bits(&|h| (k << 32 | k).hash(h)))
            .collect();
        assert_eq!((of_u32.len(), of_u64.len()), (1024, 1024));
        // Other keys (none today) are folded in byte by byte, every byte counted.
        let of_bytes = |b: &[u8]| low_bits(&|h| h.write(b));
        assert_ne!(of_bytes(&[1, 2]), of_bytes(&[2, 1]));
        assert_ne!(of_bytes(&[0xFF; 8]), of_bytes(&[0xFF; 9]));
    }

    #[test]
    fn the_hash_is_the_first_eight_bytes_of_sha256() {
        // SHA-256("abc") = ba7816bf 8f01cfea ...
        assert_eq!(id_hash("abc"), 0xba78_16bf_8f01_cfea_u64 as i64);
        assert_ne!(id_hash("abc"), id_hash("abd"));
    }

    /// Hashes with the same 40 bits the index keys on, different above them.
    fn same_key(n: i64) -> i64 {
        (n << 40) | 0x12_3456_789a
    }

    /// A spill's run covers the seqs up to `covered`; ids stored after the spill began stay in
    /// memory whatever their shard, in the slots and among colliding keys alike (dropped, a
    /// re-sent event of theirs would be accepted again).
    #[test]
    fn eviction_drops_exactly_the_ids_the_runs_cover() {
        let mut index = IdIndex::with_capacity(0, 100);
        // One key in each of shards 0 (twice), 1, 0x12, 3 and 0xFF.
        let alone = [
            (0x77, 100),
            (1 << 32 | 0x78, 101),
            (0x12 << 32 | 0x79, 104),
            (3 << 32 | 0x7a, 105),
            (0x177, 106),
            (0xFF << 32 | 0x7b, 107),
        ];
        for (hash, seq) in alone {
            index.add(hash, seq);
        }
        // Colliding keys (shard 0x12): one slot, the rest in `more`, on both sides of
        // `covered`.
        for (n, seq) in [(1, 103), (2, 104), (3, 108), (4, 109)] {
            index.add(same_key(n), seq);
        }
        // Another key (shard 0) whose colliding events are all covered.
        let other = |n: i64| (n << 40) | 0x55;
        index.add(other(1), 103);
        index.add(other(2), 104);
        index.commit();
        assert_eq!(index.len(), 12);

        // Shard 0's turn also drops the covered entries of `more`.
        index.evict_up_to(0, 104);
        assert!(
            !index.more.contains_key(&key40(other(2))),
            "emptied and gone"
        );
        assert_eq!(sorted(&index, same_key(1)), vec![103, 108, 109]);
        assert_eq!(
            index.len(),
            12 - 4,
            "shard 0's 100 and 103, more's 104 twice"
        );
        for shard in 1..index.shard_count() {
            index.evict_up_to(shard, 104);
        }
        assert_eq!(index.len(), 5);
        assert_eq!(sorted(&index, same_key(1)), vec![108, 109]);
        for (hash, seq) in alone {
            let kept: Vec<i64> = if seq > 104 { vec![seq] } else { vec![] };
            assert_eq!(sorted(&index, hash), kept, "{hash:x}");
        }
        assert!(sorted(&index, other(1)).is_empty());
        // Past the last shard: nothing.
        index.evict_up_to(index.shard_count(), i64::MAX);
        assert_eq!(index.len(), 5);
    }

    #[test]
    fn colliding_keys_keep_every_event() {
        let mut index = IdIndex::default();
        index.add(same_key(1), 1);
        index.add(same_key(2), 2);
        index.add(same_key(1), 3);
        index.add(8, 4);
        // Every event with the key is a candidate (confirmed against its id by the writer).
        assert_eq!(sorted(&index, same_key(1)), vec![1, 2, 3]);
        index.remove(same_key(1), 1);
        assert_eq!(sorted(&index, same_key(2)), vec![2, 3]);
        index.remove(same_key(1), 3);
        index.remove(same_key(1), 9);
        assert_eq!(sorted(&index, same_key(1)), vec![2]);
        index.remove(same_key(2), 2);
        assert_eq!(sorted(&index, same_key(1)), Vec::<i64>::new());
        assert_eq!(sorted(&index, 8), vec![4]);
        assert_eq!(index.len(), 1);
        assert!(index.more.is_empty(), "no empty lists left behind");
    }

    #[test]
    fn seqs_that_do_not_fit_an_offset_are_kept_exactly() {
        let mut index = IdIndex::with_capacity(0, 1_000);
        let far = 1_000 + i64::from(u32::MAX) + 5;
        index.add(1, 5);
        index.add(2, far);
        index.add(3, 1_000);
        assert_eq!(sorted(&index, 1), vec![5]);
        assert_eq!(sorted(&index, 2), vec![far]);
        assert_eq!(sorted(&index, 3), vec![1_000]);
        index.remove(1, 5);
        index.remove(2, far);
        assert_eq!(index.len(), 1);
        assert!(index.more.is_empty());
    }

    #[test]
    fn it_agrees_with_a_plain_map_through_commits_and_roll_backs() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut index = IdIndex::with_capacity(0, 100);
        // The model: hash -> seqs, as committed, and as the open transaction has it.
        let mut committed: HashMap<i64, Vec<i64>> = HashMap::new();
        let mut open = committed.clone();
        let mut next_seq = 50; // some below the base, then above it
        for _ in 0..20_000 {
            // Few distinct keys, so collisions and refills of slots happen often.
            let hash = same_key(rng.gen_range(0..4)) ^ rng.gen_range(0..64);
            match rng.gen_range(0..10) {
                0..=4 => {
                    index.add(hash, next_seq);
                    open.entry(hash).or_default().push(next_seq);
                    next_seq += rng.gen_range(1..3);
                }
                5..=7 => {
                    let seqs = open.entry(hash).or_default();
                    let seq = match seqs.len() {
                        0 => next_seq + 1,
                        n => seqs.swap_remove(rng.gen_range(0..n)),
                    };
                    index.remove(hash, seq);
                }
                8 => {
                    index.commit();
                    committed = open.clone();
                }
                _ => {
                    index.roll_back();
                    open = committed.clone();
                }
            }
            let h = same_key(rng.gen_range(0..4)) ^ rng.gen_range(0..64);
            let found: std::collections::HashSet<i64> = index.candidates(h).collect();
            for seq in open.get(&h).into_iter().flatten() {
                assert!(found.contains(seq), "{h:x}: {seq} missing");
            }
            // And nothing but events stored under the same key (no leftovers).
            let same: std::collections::HashSet<i64> = open
                .iter()
                .filter(|(other, _)| key40(**other) == key40(h))
                .flat_map(|(_, seqs)| seqs.iter().copied())
                .collect();
            assert!(found.is_subset(&same), "{h:x}: {found:?} vs {same:?}");
            let model_len: usize = open.values().map(Vec::len).sum();
            assert_eq!(index.len(), model_len);
            let counted = index.shards.iter().map(Map::len).sum::<usize>()
                + index.more.values().map(Vec::len).sum::<usize>();
            assert_eq!(counted, model_len);
        }
    }

    #[test]
    fn it_loads_what_the_table_holds() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(
            "CREATE TABLE event_ids (seq INTEGER PRIMARY KEY, hash INTEGER NOT NULL);
             INSERT INTO event_ids VALUES (1, 5), (2, 6), (3, 5);",
        )
        .expect("fill");
        let index = IdIndex::load_after(&conn, i64::MIN).expect("load");
        assert_eq!(index.len(), 3);
        assert_eq!(index.base, 1);
        assert_eq!(sorted(&index, 5), vec![1, 3]);
        assert_eq!(sorted(&index, 6), vec![2]);
        assert!(index.journal.is_empty());
    }
}
