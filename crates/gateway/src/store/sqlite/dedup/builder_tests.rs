//! The builder's reads of `event_ids` (chunks, the purged-seq bitmap), its merges (exactly
//! the live pairs kept) and its rule for the oldest run once retention emptied it.

use super::*;

/// An empty `event_ids` table.
fn table() -> Connection {
    let conn = Connection::open_in_memory().expect("open");
    conn.execute_batch("CREATE TABLE event_ids (seq INTEGER PRIMARY KEY, hash INTEGER NOT NULL)")
        .expect("schema");
    conn
}

/// `event_ids` holding `seqs`, each its own hash.
fn ids(seqs: std::ops::RangeInclusive<i64>) -> Connection {
    ids_hashed(seqs, |seq| seq)
}

#[test]
fn live_seqs_skips_the_bitmap_only_when_no_pair_was_purged() {
    let conn = ids(1..=200);
    let stop = AtomicBool::new(false);
    assert_eq!(live_seqs(&conn, 0, 200, 200, &stop).expect("live"), None);
    // Seqs outside the range do not count.
    assert_eq!(live_seqs(&conn, 100, 150, 50, &stop).expect("live"), None);
    conn.execute("DELETE FROM event_ids WHERE seq = 70", [])
        .expect("purge");
    let live = live_seqs(&conn, 0, 200, 200, &stop)
        .expect("live")
        .expect("a bitmap: one pair was purged");
    let set = |seq: i64| live[(seq - 1) as usize / 64] & (1 << ((seq - 1) % 64)) != 0;
    assert!(!set(70));
    assert!((1..=200).filter(|s| *s != 70).all(set));
    // A range that does not start at 0: its bitmap spans the range only (300 seqs, 5 words).
    let conn = ids(1_001..=1_300);
    conn.execute("DELETE FROM event_ids WHERE seq = 1002", [])
        .expect("purge");
    let live = live_seqs(&conn, 1_000, 1_300, 300, &stop)
        .expect("live")
        .expect("bitmap");
    assert_eq!(live.len(), 5);
    assert_eq!(live[0], !0b10);
}

#[test]
fn the_sort_buffer_is_kept_up_to_twice_a_spill() {
    let mut pairs = Vec::with_capacity(200);
    keep_for_next(&mut pairs, 100);
    assert!(pairs.capacity() >= 200);
    let mut pairs = Vec::with_capacity(201);
    keep_for_next(&mut pairs, 100);
    assert_eq!(pairs.capacity(), 0);
}

#[test]
fn chunks_cover_the_range_once_in_order() {
    assert_eq!(chunks(7, 7).count(), 0);
    assert_eq!(chunks(5, 6).collect::<Vec<_>>(), vec![(5, 6)]);
    let n = READ_CHUNK;
    assert_eq!(
        chunks(-3, 2 * n + 4).collect::<Vec<_>>(),
        vec![(-3, n - 3), (n - 3, 2 * n - 3), (2 * n - 3, 2 * n + 4)]
    );
    // A range wider than one chunk is read across statements, every seq once.
    let conn = ids(1..=(n + 10));
    let stop = AtomicBool::new(false);
    let pairs = (n + 10) as u64;
    assert_eq!(
        live_seqs(&conn, 0, n + 10, pairs, &stop).expect("live"),
        None
    );
    conn.execute("DELETE FROM event_ids WHERE seq = ?1", [n + 3])
        .expect("purge");
    let live = live_seqs(&conn, 0, n + 10, pairs, &stop)
        .expect("live")
        .expect("bitmap");
    let ones: u32 = live.iter().map(|w| w.count_ones()).sum();
    assert_eq!(u64::from(ones), pairs - 1);
}

/// `event_ids` holding `seqs`, each under `hash(seq)`.
fn ids_hashed(seqs: std::ops::RangeInclusive<i64>, hash: fn(i64) -> i64) -> Connection {
    let conn = table();
    for seq in seqs {
        conn.execute("INSERT INTO event_ids VALUES (?1, ?2)", [seq, hash(seq)])
            .expect("insert");
    }
    conn
}

/// Distinct for distinct seqs (an odd multiplier), spread over the whole range.
fn spread(seq: i64) -> i64 {
    seq.wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as i64)
}

/// A run of the pairs `(spread(seq), seq)` for `seqs`, covering `(lo, hi]`.
fn run_of(dir: &Path, seqs: &[i64], lo: i64, hi: i64, level: u32) -> Run {
    let mut pairs: Vec<(i64, i64)> = seqs.iter().map(|s| (spread(*s), *s)).collect();
    pairs.sort_unstable();
    let mut out = RunWriter::create(dir, pairs.len()).expect("create");
    for (hash, seq) in pairs {
        out.push(hash, seq).expect("push");
    }
    out.finish(lo, hi, level).expect("finish")
}

fn seqs_of(run: &Run) -> Vec<i64> {
    let mut seqs: Vec<i64> = run
        .pairs()
        .expect("pairs")
        .map(|p| p.expect("pair").1)
        .collect();
    seqs.sort_unstable();
    seqs
}

#[test]
fn a_merge_keeps_exactly_the_pairs_whose_events_are_still_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stop = AtomicBool::new(false);
    let (lo, mid, hi) = (1_000, 1_150, 1_300);
    let conn = ids_hashed((lo + 1)..=hi, spread);
    let range = |a: i64, b: i64| ((a + 1)..=b).collect::<Vec<i64>>();
    let older = run_of(dir.path(), &range(lo, mid), lo, mid, 0);
    let newer = run_of(dir.path(), &range(mid, hi), mid, hi, 0);
    let all = merge(&conn, dir.path(), &stop, &older, &newer).expect("merge");
    assert_eq!((all.lo, all.hi, all.level), (lo, hi, 1));
    assert_eq!(seqs_of(&all), range(lo, hi));
    // Purged at the range's first seq, at a bitmap word's edges, on both sides of the runs'
    // border and just before the last seq: every other pair stays, found by its hash.
    let purged = [lo + 1, lo + 64, lo + 65, lo + 128, mid, mid + 1, hi - 1];
    for seq in purged {
        conn.execute("DELETE FROM event_ids WHERE seq = ?1", [seq])
            .expect("purge");
    }
    let merged = merge(&conn, dir.path(), &stop, &older, &newer).expect("merge");
    let live: Vec<i64> = range(lo, hi)
        .into_iter()
        .filter(|s| !purged.contains(s))
        .collect();
    assert_eq!(seqs_of(&merged), live);
    // Its filter is sized for the two runs' pairs (an upper bound of what it keeps).
    let sized = run_of(dir.path(), &range(lo, hi), lo, hi, 0);
    assert_eq!(merged.filter_words(), sized.filter_words());
    for seq in &live {
        assert_eq!(merged.lookup(spread(*seq)).expect("lookup"), vec![*seq]);
    }
    // A pair outside its run's range (no build writes one) is left out, purged or not.
    let stray_older = run_of(dir.path(), &[lo, lo + 2], lo, mid, 0);
    let stray_newer = run_of(dir.path(), &[hi, hi + 1], mid, hi, 0);
    let stray = merge(&conn, dir.path(), &stop, &stray_older, &stray_newer).expect("merge");
    assert_eq!(seqs_of(&stray), vec![lo + 2, hi]);
}

#[test]
fn the_oldest_run_goes_once_retention_emptied_it_unless_it_is_the_last() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stop = AtomicBool::new(false);
    let mut pairs = Vec::new();
    // Events 1..=100 purged; 101..=200 stored.
    let conn = ids_hashed(101..=200, spread);
    let emptied: Vec<i64> = (1..=100).collect();
    let old = Arc::new(run_of(dir.path(), &emptied, 0, 100, 1));
    let chain = build(&conn, dir.path(), &stop, vec![old.clone()], 200, &mut pairs).expect("build");
    let ends: Vec<(i64, i64)> = chain.iter().map(|r| (r.lo, r.hi)).collect();
    assert_eq!(
        ends,
        vec![(100, 200)],
        "the emptied run went, the new one stays"
    );
    // A build that merges everything into one run, emptied: it stays, the chain's end.
    let conn = table();
    let old = Arc::new(run_of(dir.path(), &emptied, 0, 100, 0));
    let chain = build(&conn, dir.path(), &stop, vec![old], 100, &mut pairs).expect("build");
    let ends: Vec<(i64, i64, u64)> = chain.iter().map(|r| (r.lo, r.hi, r.count)).collect();
    assert_eq!(ends, vec![(0, 100, 0)]);
}

#[test]
fn a_build_gives_up_once_the_store_closes_and_leaves_no_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = ids(1..=100);
    let stop = AtomicBool::new(true);
    let mut pairs = Vec::new();
    let err = build(&conn, dir.path(), &stop, Vec::new(), 100, &mut pairs).expect_err("closing");
    assert!(err.to_string().contains("the store is closing"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    assert!(live_seqs(&conn, 0, 100, 50, &stop).is_err());
}
