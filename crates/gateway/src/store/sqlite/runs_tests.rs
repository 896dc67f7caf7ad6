//! A run finds exactly the seqs stored under a hash (also when they span blocks), its filter
//! lets few absent hashes through, and a damaged or foreign file is refused.

use rand::{Rng, SeedableRng};

use super::*;

fn write(dir: &Path, pairs: &[(i64, i64)], lo: i64, hi: i64) -> Run {
    let mut sorted = pairs.to_vec();
    sorted.sort_unstable();
    let mut out = RunWriter::create(dir, sorted.len()).expect("create");
    for (hash, seq) in sorted {
        out.push(hash, seq).expect("push");
    }
    out.finish(lo, hi, 0).expect("finish")
}

#[test]
fn every_pair_is_found_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut pairs: Vec<(i64, i64)> = (1..=5_000).map(|seq| (rng.gen(), seq)).collect();
    // One hash many times, across block boundaries, and the smallest and largest hashes.
    pairs.extend((5_001..5_600).map(|seq| (42, seq)));
    pairs.push((i64::MIN, 6_000));
    pairs.push((i64::MAX, 6_001));
    let run = write(dir.path(), &pairs, 0, 6_001);
    let reopened = Run::open(&run.path).expect("open");
    assert_eq!(
        (reopened.lo, reopened.hi, reopened.count),
        (0, 6_001, 5_601)
    );
    assert_eq!(reopened.digest, run.digest);
    for r in [&run, &reopened] {
        for (hash, seq) in pairs.iter().filter(|(h, _)| *h != 42) {
            assert_eq!(r.lookup(*hash).expect("lookup"), vec![*seq], "{hash}");
        }
        let mut many = r.lookup(42).expect("lookup");
        many.sort_unstable();
        assert_eq!(many, (5_001..5_600).collect::<Vec<_>>());
        // Absent hashes: never a seq (the filter may let a few through to the block read).
        for _ in 0..5_000 {
            let h: i64 = rng.gen();
            if !pairs.iter().any(|(p, _)| *p == h) {
                assert!(r.lookup(h).expect("lookup").is_empty());
            }
        }
    }
    let read: Vec<(i64, i64)> = run
        .pairs()
        .expect("pairs")
        .map(|p| p.expect("pair"))
        .collect();
    let mut expected = pairs.clone();
    expected.sort_unstable();
    assert_eq!(read, expected);
    // A merge reads 64 KiB at a time, not the whole run (here 89 KiB).
    let mut merge_read = run.pairs().expect("pairs");
    assert!(merge_read.next().is_some());
    assert_eq!(merge_read.buf.len(), 1 << 16);
}

#[test]
fn the_filter_lets_about_one_percent_through() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut bloom = Bloom::with_keys(100_000);
    for _ in 0..100_000 {
        bloom.insert(rng.gen());
    }
    let through = (0..100_000)
        .filter(|_| bloom.may_contain(rng.gen()))
        .count();
    // 1,033 with this seed; a weaker mix of the hash into the bit positions (`|` or `&`
    // instead of `^`) lets about 1,500 through.
    assert!(through < 1_250, "{through} of 100000 absent keys passed");
}

#[test]
fn the_filter_costs_ten_bits_a_key_in_whole_blocks() {
    // What stays in memory per id kept (the module docs' "about 1.3 bytes per event").
    for (keys, blocks) in [(0, 1), (1, 1), (51, 1), (52, 2), (100_000, 1_954)] {
        let bloom = Bloom::with_keys(keys);
        assert_eq!(bloom.words.len(), blocks * WORDS_PER_BLOCK, "{keys} keys");
    }
}

#[test]
fn an_empty_run_is_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = write(dir.path(), &[], 10, 20);
    let run = Run::open(&run.path).expect("open");
    assert_eq!(run.count, 0);
    assert!(run.lookup(1).expect("lookup").is_empty());
}

#[test]
fn a_damaged_short_or_foreign_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pairs: Vec<(i64, i64)> = (1..=1_000).map(|s| (s * 7_919, s)).collect();
    let run = write(dir.path(), &pairs, 0, 1_000);
    let bytes = std::fs::read(&run.path).expect("read");
    let bad = dir.path().join("bad.ids");
    for (i, damage) in [
        Box::new(|b: &mut Vec<u8>| b[100] ^= 1) as Box<dyn Fn(&mut Vec<u8>)>,
        Box::new(|b: &mut Vec<u8>| b.truncate(b.len() - 1)),
        Box::new(|b: &mut Vec<u8>| b.truncate(10)),
        Box::new(|b: &mut Vec<u8>| {
            let n = b.len();
            b[n - TRAILER_LEN] = b'X';
        }),
        Box::new(|b: &mut Vec<u8>| b.insert(0, 0)),
    ]
    .iter()
    .enumerate()
    {
        let mut copy = bytes.clone();
        damage(&mut copy);
        std::fs::write(&bad, &copy).expect("write");
        assert!(Run::open(&bad).is_err(), "damage {i} went unnoticed");
    }
    assert!(Run::open(&dir.path().join("missing.ids")).is_err());
}

/// A run file written byte by byte, its digest right: what another version or a bug could leave.
struct Craft {
    magic: [u8; 8],
    version: u32,
    pairs: Vec<(i64, i64)>,
    words: usize,
    fences: Vec<i64>,
}

impl Craft {
    /// Two pairs in one block and one filter block: a valid run.
    fn valid() -> Craft {
        Craft {
            magic: *MAGIC,
            version: VERSION,
            pairs: vec![(3, 1), (8, 2)],
            words: WORDS_PER_BLOCK,
            fences: vec![3],
        }
    }

    fn write(&self, path: &Path) {
        let mut b = Vec::new();
        for (hash, seq) in &self.pairs {
            b.extend(hash.to_le_bytes());
            b.extend(seq.to_le_bytes());
        }
        b.extend(std::iter::repeat_n(0xffu8, self.words * 8));
        for f in &self.fences {
            b.extend(f.to_le_bytes());
        }
        b.extend(self.magic);
        b.extend(self.version.to_le_bytes());
        b.extend(0u32.to_le_bytes());
        for n in [0, 2, self.pairs.len(), self.words, self.fences.len()] {
            b.extend((n as i64).to_le_bytes());
        }
        let digest = Sha256::digest(&b);
        b.extend(digest);
        std::fs::write(path, b).expect("write");
    }
}

#[test]
fn a_whole_file_of_another_version_or_with_sizes_that_cannot_be_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("crafted.ids");
    Craft::valid().write(&path);
    let run = Run::open(&path).expect("the crafted run is valid as it is");
    assert_eq!(run.lookup(8).expect("lookup"), vec![2]);
    let refused = |craft: Craft, why: &str| {
        craft.write(&path);
        let err = Run::open(&path).expect_err(why).to_string();
        assert!(err.contains(why), "{err}");
    };
    let magic = *b"GWIDRUN2";
    refused(
        Craft {
            magic,
            ..Craft::valid()
        },
        "not an id run of this version",
    );
    let version = VERSION + 1;
    refused(
        Craft {
            version,
            ..Craft::valid()
        },
        "not an id run of this version",
    );
    // No filter (a look-up would index an empty one), a filter of part of a block, a fence
    // too many: each alone, the rest consistent.
    refused(
        Craft {
            words: 0,
            ..Craft::valid()
        },
        "sizes do not match",
    );
    refused(
        Craft {
            words: 12,
            ..Craft::valid()
        },
        "sizes do not match",
    );
    let fences = vec![3, 8];
    refused(
        Craft {
            fences,
            ..Craft::valid()
        },
        "sizes do not match",
    );
}

#[test]
fn pairs_out_of_order_are_refused_and_an_abandoned_build_leaves_no_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut out = RunWriter::create(dir.path(), 2).expect("create");
    out.push(5, 1).expect("push");
    assert!(out.push(4, 2).is_err());
    drop(out);
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
}
