//! Sorted runs of event-id hashes on disk: the older part of the dedup index (see
//! [`super::dedup`]), so the writer's memory does not grow with the events kept.
//!
//! A run is an immutable file covering the events with `lo < seq <= hi`: their `(hash, seq)`
//! pairs sorted by hash, a blocked Bloom filter over the hashes and the first hash of every
//! block of [`PER_BLOCK`] pairs. Only the filter and the block fences stay in memory (about
//! 1.3 bytes per event); a look-up that passes the filter reads one 4 KiB block. A run is
//! derived from the `event_ids` table, the truth: a run that is missing, damaged or not the
//! store's is dropped and its events read back into memory.
//!
//! Layout, little-endian: the pairs (16 bytes each), the filter's words, the fences, then a
//! trailer of [`TRAILER_LEN`] bytes: magic, version, level, lo, hi, pair count, filter words,
//! fences, and the SHA-256 of every byte before the digest.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::store::StoreError;

const MAGIC: &[u8; 8] = b"GWIDRUN\0";
const VERSION: u32 = 1;
/// Pairs per block: one block is 4 KiB.
pub(super) const PER_BLOCK: usize = 256;
const PAIR: usize = 16;
/// Magic (8), version (4), level (4), lo, hi, count, words, fences (8 each), digest (32).
const TRAILER_LEN: usize = 8 + 4 + 4 + 5 * 8 + 32;
/// Filter bits per event: about 1% false positives with [`WORDS_PER_BLOCK`]-word blocks.
const BITS_PER_KEY: usize = 10;
const WORDS_PER_BLOCK: usize = 8;

fn io_err(path: &Path, what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("id run {}: {what}: {e}", path.display()))
}

/// A blocked Bloom filter keyed by id hashes (already uniform): one 512-bit block per key, one
/// bit set in each of its eight words, so a probe touches one cache line.
#[derive(Debug)]
struct Bloom {
    words: Vec<u64>,
}

/// The eight bit positions of a hash, six bits each (the block is chosen by its top half).
fn bit_seed(h: u64) -> u64 {
    (h ^ (h >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

impl Bloom {
    fn with_keys(keys: usize) -> Bloom {
        let blocks = (keys * BITS_PER_KEY).div_ceil(64 * WORDS_PER_BLOCK).max(1);
        Bloom {
            words: vec![0; blocks * WORDS_PER_BLOCK],
        }
    }

    /// The block's first word and the eight bits, one per word.
    fn probe(&self, hash: i64) -> (usize, u64) {
        let h = hash as u64;
        let blocks = (self.words.len() / WORDS_PER_BLOCK) as u64;
        let block = (((h >> 32) * blocks) >> 32) as usize;
        (block * WORDS_PER_BLOCK, bit_seed(h))
    }

    fn insert(&mut self, hash: i64) {
        let (first, bits) = self.probe(hash);
        for (i, word) in self.words[first..first + WORDS_PER_BLOCK]
            .iter_mut()
            .enumerate()
        {
            *word |= 1 << ((bits >> (6 * i)) & 63);
        }
    }

    fn may_contain(&self, hash: i64) -> bool {
        let (first, bits) = self.probe(hash);
        self.words[first..first + WORDS_PER_BLOCK]
            .iter()
            .enumerate()
            .all(|(i, word)| word & (1 << ((bits >> (6 * i)) & 63)) != 0)
    }
}

/// One run, open for look-ups.
#[derive(Debug)]
pub(super) struct Run {
    /// The run covers `lo < seq <= hi`.
    pub(super) lo: i64,
    pub(super) hi: i64,
    /// How many level-0 runs were merged into it, as a power of two (merges pair equal levels).
    pub(super) level: u32,
    pub(super) count: u64,
    /// The file's SHA-256, hex (also kept in the store, which names the runs it uses).
    pub(super) digest: String,
    pub(super) path: PathBuf,
    file: File,
    bloom: Bloom,
    fences: Vec<i64>,
}

/// Writes a run, pairs in sorted order, to a temporary name; [`RunWriter::finish`] makes it
/// durable and gives it its final name.
pub(super) struct RunWriter {
    tmp: Temporary,
    out: BufWriter<File>,
    sha: Sha256,
    bloom: Bloom,
    fences: Vec<i64>,
    count: u64,
    last: Option<(i64, i64)>,
}

impl RunWriter {
    /// A writer for at most `keys` pairs (the filter's size) in `dir`.
    pub(super) fn create(dir: &Path, keys: usize) -> Result<RunWriter, StoreError> {
        static BUILDS: AtomicU64 = AtomicU64::new(0);
        let n = BUILDS.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("building-{}-{n}.tmp", std::process::id()));
        let file = File::create(&tmp).map_err(|e| io_err(&tmp, "create", e))?;
        Ok(RunWriter {
            tmp: Temporary(Some(tmp)),
            out: BufWriter::with_capacity(1 << 16, file),
            sha: Sha256::new(),
            bloom: Bloom::with_keys(keys),
            fences: Vec::new(),
            count: 0,
            last: None,
        })
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.sha.update(bytes);
        self.out
            .write_all(bytes)
            .map_err(|e| io_err(self.tmp.path(), "write", e))
    }

    /// Appends one pair; pairs come sorted by `(hash, seq)`.
    pub(super) fn push(&mut self, hash: i64, seq: i64) -> Result<(), StoreError> {
        if self.last.is_some_and(|last| last >= (hash, seq)) {
            return Err(StoreError("id run: pairs out of order".into()));
        }
        self.last = Some((hash, seq));
        if self.count.is_multiple_of(PER_BLOCK as u64) {
            self.fences.push(hash);
        }
        self.bloom.insert(hash);
        self.count += 1;
        let mut pair = [0u8; PAIR];
        pair[..8].copy_from_slice(&hash.to_le_bytes());
        pair[8..].copy_from_slice(&seq.to_le_bytes());
        self.put(&pair)
    }

    /// Writes the filter, fences and trailer, fsyncs, and renames the file into `dir` as
    /// `run-<lo>-<hi>-<level>.ids` (fsyncing the directory), then opens it.
    pub(super) fn finish(mut self, lo: i64, hi: i64, level: u32) -> Result<Run, StoreError> {
        let words = std::mem::take(&mut self.bloom.words);
        for w in &words {
            self.put(&w.to_le_bytes())?;
        }
        let fences = std::mem::take(&mut self.fences);
        for f in &fences {
            self.put(&f.to_le_bytes())?;
        }
        self.put(MAGIC)?;
        self.put(&VERSION.to_le_bytes())?;
        self.put(&level.to_le_bytes())?;
        for n in [
            lo,
            hi,
            self.count as i64,
            words.len() as i64,
            fences.len() as i64,
        ] {
            self.put(&n.to_le_bytes())?;
        }
        let digest = self.sha.clone().finalize();
        let tmp = self.tmp.path().to_path_buf();
        self.out
            .write_all(&digest)
            .map_err(|e| io_err(&tmp, "write", e))?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| io_err(&tmp, "flush", e.error()))?;
        file.sync_all().map_err(|e| io_err(&tmp, "fsync", e))?;
        let dir = tmp.parent().unwrap_or(Path::new("."));
        let path = dir.join(format!("run-{lo}-{hi}-{level}.ids"));
        std::fs::rename(&tmp, &path).map_err(|e| io_err(&path, "rename", e))?;
        self.tmp.0 = None;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(dir, "fsync directory", e))?;
        drop(file);
        let file = File::open(&path).map_err(|e| io_err(&path, "open", e))?;
        Ok(Run {
            lo,
            hi,
            level,
            count: self.count,
            digest: hex::encode(digest),
            path,
            file,
            bloom: Bloom { words },
            fences,
        })
    }
}

/// A file being built: removed if the build is abandoned before its rename.
struct Temporary(Option<PathBuf>);

impl Temporary {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new("(renamed)"))
    }
}

impl Drop for Temporary {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Run {
    /// Opens a run and checks all of it against its digest.
    pub(super) fn open(path: &Path) -> Result<Run, StoreError> {
        let file = File::open(path).map_err(|e| io_err(path, "open", e))?;
        let len = file.metadata().map_err(|e| io_err(path, "stat", e))?.len() as usize;
        let bad = |what: &str| StoreError(format!("id run {}: {what}", path.display()));
        if len < TRAILER_LEN {
            return Err(bad("shorter than its trailer"));
        }
        let mut trailer = [0u8; TRAILER_LEN];
        file.read_exact_at(&mut trailer, (len - TRAILER_LEN) as u64)
            .map_err(|e| io_err(path, "read", e))?;
        let field = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&trailer[at..at + 8]);
            i64::from_le_bytes(b)
        };
        let word = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&trailer[at..at + 4]);
            u32::from_le_bytes(b)
        };
        if &trailer[..8] != MAGIC || word(8) != VERSION {
            return Err(bad("not an id run of this version"));
        }
        let (level, lo, hi) = (word(12), field(16), field(24));
        let sizes = [field(32), field(40), field(48)].map(|n| usize::try_from(n).ok());
        let [Some(count), Some(words), Some(fences)] = sizes else {
            return Err(bad("negative sizes"));
        };
        let body = count
            .checked_mul(PAIR)
            .zip(words.checked_add(fences).and_then(|n| n.checked_mul(8)))
            .and_then(|(a, b)| a.checked_add(b));
        if body.and_then(|b| b.checked_add(TRAILER_LEN)) != Some(len)
            || fences != count.div_ceil(PER_BLOCK)
            || words == 0
            || words % WORDS_PER_BLOCK != 0
        {
            return Err(bad("sizes do not match the file"));
        }
        // Read it all once: the digest, and the filter and fences kept in memory.
        let mut sha = Sha256::new();
        let mut reader = BufReader::with_capacity(1 << 16, &file);
        let mut pairs_left = count * PAIR;
        let mut chunk = vec![0u8; 1 << 16];
        while pairs_left > 0 {
            let n = pairs_left.min(chunk.len());
            reader
                .read_exact(&mut chunk[..n])
                .map_err(|e| io_err(path, "read", e))?;
            sha.update(&chunk[..n]);
            pairs_left -= n;
        }
        let mut read_i64s = |n: usize, sha: &mut Sha256| -> Result<Vec<i64>, StoreError> {
            let mut out = Vec::with_capacity(n);
            let mut b = [0u8; 8];
            for _ in 0..n {
                reader
                    .read_exact(&mut b)
                    .map_err(|e| io_err(path, "read", e))?;
                sha.update(b);
                out.push(i64::from_le_bytes(b));
            }
            Ok(out)
        };
        let words: Vec<u64> = read_i64s(words, &mut sha)?
            .into_iter()
            .map(|w| w as u64)
            .collect();
        let fences = read_i64s(fences, &mut sha)?;
        sha.update(&trailer[..TRAILER_LEN - 32]);
        let digest = sha.finalize();
        if digest[..] != trailer[TRAILER_LEN - 32..] {
            return Err(bad("digest mismatch (damaged)"));
        }
        Ok(Run {
            lo,
            hi,
            level,
            count: count as u64,
            digest: hex::encode(digest),
            path: path.to_path_buf(),
            file,
            bloom: Bloom { words },
            fences,
        })
    }

    /// Tests: the filter's size, in 64-bit words.
    #[cfg(test)]
    pub(super) fn filter_words(&self) -> usize {
        self.bloom.words.len()
    }

    /// The seqs stored under `hash` (usually none, read from disk only past the filter).
    pub(super) fn lookup(&self, hash: i64) -> Result<Vec<i64>, StoreError> {
        if !self.bloom.may_contain(hash) {
            return Ok(Vec::new());
        }
        // Pairs with this hash start in the last block whose first hash is below it (or the
        // first block) and may run on into the following ones.
        let mut block = self.fences.partition_point(|f| *f < hash).saturating_sub(1);
        let mut found = Vec::new();
        let mut buf = vec![0u8; PER_BLOCK * PAIR];
        while block < self.fences.len() && self.fences[block] <= hash {
            let first = block * PER_BLOCK;
            let n = (self.count as usize - first).min(PER_BLOCK);
            self.file
                .read_exact_at(&mut buf[..n * PAIR], (first * PAIR) as u64)
                .map_err(|e| io_err(&self.path, "read", e))?;
            // Sorted: the block's pairs under this hash are together. A block holding a
            // greater hash ends the search (the next block's fence is past the hash too).
            found.extend(
                buf[..n * PAIR]
                    .chunks_exact(PAIR)
                    .map(split)
                    .skip_while(|(h, _)| *h < hash)
                    .take_while(|(h, _)| *h == hash)
                    .map(|(_, seq)| seq),
            );
            block += 1;
        }
        Ok(found)
    }

    /// Every pair in order, read sequentially (for a merge) from the file this run opened (a
    /// path removed or replaced since is not read: a merge of a run whose file was deleted
    /// while the gateway runs still works).
    pub(super) fn pairs(&self) -> Result<Pairs, StoreError> {
        let file = self
            .file
            .try_clone()
            .map_err(|e| io_err(&self.path, "open", e))?;
        Ok(Pairs {
            file,
            at: 0,
            buf: Vec::new(),
            next: 0,
            left: self.count,
        })
    }
}

fn split(pair: &[u8]) -> (i64, i64) {
    let mut h = [0u8; 8];
    let mut s = [0u8; 8];
    h.copy_from_slice(&pair[..8]);
    s.copy_from_slice(&pair[8..PAIR]);
    (i64::from_le_bytes(h), i64::from_le_bytes(s))
}

/// A run's pairs, in order: positioned reads of 64 KiB at a time (the descriptor is shared
/// with the run's look-ups, so no file offset is used).
pub(super) struct Pairs {
    file: File,
    /// Where the next read starts.
    at: u64,
    buf: Vec<u8>,
    /// The next pair's place in `buf`.
    next: usize,
    left: u64,
}

impl Iterator for Pairs {
    type Item = std::io::Result<(i64, i64)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        if self.next >= self.buf.len() {
            let n = (self.left as usize).min((1 << 16) / PAIR) * PAIR;
            self.buf.resize(n, 0);
            if let Err(e) = self.file.read_exact_at(&mut self.buf, self.at) {
                self.left = 0;
                return Some(Err(e));
            }
            self.at += n as u64;
            self.next = 0;
        }
        self.left -= 1;
        let pair = &self.buf[self.next..self.next + PAIR];
        self.next += PAIR;
        Some(Ok(split(pair)))
    }
}

#[cfg(test)]
#[path = "runs_tests.rs"]
mod tests;
