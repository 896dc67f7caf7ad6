//! The index's own state: when the writer must call it between writes ([`Dedup::has_work`]),
//! a purged id leaving memory, closing, which stops the builder and waits for it, and the
//! chain a restart trusts.

use std::time::{Duration, Instant};

use super::*;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;

const AT: usize = 4;

fn open_small() -> (tempfile::TempDir, Connection, Dedup) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    SqliteStore::open(&path).expect("create").close();
    let conn = super::super::open_connection(&path).expect("conn");
    let index = Dedup::open(&conn, &path, AT).expect("open");
    (dir, conn, index)
}

fn spill(index: &mut Dedup) -> &mut Spill {
    index.spill.as_mut().expect("a builder")
}

#[test]
fn the_writer_is_called_back_while_a_spill_runs_ids_are_freed_or_a_spill_is_due() {
    let (_dir, _conn, mut index) = open_small();
    assert!(!index.has_work(), "nothing held, nothing under way");
    spill(&mut index).busy = true;
    assert!(index.has_work(), "a spill under way");
    spill(&mut index).busy = false;
    index.evicting = Some(0);
    assert!(index.has_work(), "covered ids to free");
    index.evicting = None;

    for seq in 1..AT as i64 {
        index.add(seq, seq);
    }
    index.commit();
    assert!(!index.has_work(), "one id short of a spill");
    index.add(AT as i64, AT as i64);
    index.commit();
    assert!(index.has_work(), "a spill is due");
    spill(&mut index).pause_until = Some(Instant::now() + Duration::from_secs(30));
    assert!(
        !index.has_work(),
        "after a failed spill, not before the wait is over"
    );
    spill(&mut index).pause_until = Some(Instant::now() - Duration::from_millis(1));
    assert!(index.has_work(), "the wait is over");

    // Without a builder (an operator's index, or one whose builder died), never.
    index.spill = None;
    assert!(!index.has_work());
}

#[test]
fn a_purged_id_leaves_memory() {
    let (_dir, _conn, mut index) = open_small();
    index.add(7, 1);
    index.add(8, 2);
    index.commit();
    index.remove(7, 1);
    index.commit();
    assert_eq!(index.len(), 1);
    assert_eq!(index.mem.candidates(7).count(), 0);
    assert_eq!(index.mem.candidates(8).collect::<Vec<_>>(), [2]);
}

#[test]
fn closing_the_index_stops_its_builder_and_waits_for_it() {
    let (_dir, _conn, mut index) = open_small();
    let stop = spill(&mut index).stop.clone();
    drop(index);
    assert!(
        stop.load(Ordering::Relaxed),
        "a build under way is told to give up"
    );
    assert_eq!(
        Arc::strong_count(&stop),
        1,
        "the builder thread (and its connection) is gone"
    );
}

/// The store names each run with its range and digest, and the chain must be contiguous: a run
/// whose file says otherwise, or that does not follow the one before it, is a finding of
/// `store check`, and a restart drops it with every run after it and reads their ids back into
/// memory (still duplicates).
#[test]
fn a_run_unlike_its_name_or_out_of_line_is_dropped_with_the_runs_after_it() {
    use super::tests::{accept_all, assert_all, files, names, opened};
    let last = "hi = (SELECT MAX(hi) FROM id_runs)";
    for (what, sql, kept) in [
        (
            "lo",
            format!("UPDATE id_runs SET lo = lo + 1 WHERE {last}"),
            2,
        ),
        (
            "hi",
            format!("UPDATE id_runs SET hi = hi + 1 WHERE {last}"),
            2,
        ),
        (
            "digest",
            format!("UPDATE id_runs SET digest = 'x' || digest WHERE {last}"),
            2,
        ),
        (
            "in line",
            "DELETE FROM id_runs WHERE lo > 0 AND hi < (SELECT MAX(hi) FROM id_runs)".into(),
            1,
        ),
    ] {
        let (_dir, path, mut conn, mut ids) = opened();
        let all = names(0..350);
        accept_all(&mut conn, &mut ids, &all);
        let runs = ids.as_ref().expect("index").runs().to_vec();
        assert_eq!(runs.len(), 3, "the set-up: levels 2, 1 and 0");
        drop(ids);
        conn.execute(&sql, []).expect(what);
        // `store check` says so first.
        let problems = check_runs(&conn, &path).expect("check");
        let said = if kept == 1 {
            "does not follow the previous run"
        } else {
            "is not the one the store names"
        };
        assert!(
            problems.iter().any(|p| p.contains(said)),
            "{what}: {problems:?}"
        );
        let mut ids = Some(Dedup::open(&conn, &path, usize::MAX).expect("reopen"));
        let index = ids.as_ref().expect("index");
        assert_eq!(index.runs().len(), kept, "{what}");
        let covered = runs[kept - 1].hi;
        assert_eq!(
            index.len() as i64,
            350 - covered,
            "{what}: the rest in memory"
        );
        assert_eq!(
            files(&path).len(),
            kept,
            "{what}: the dropped runs' files removed"
        );
        assert_all(&accept_all(&mut conn, &mut ids, &all), "duplicate");
    }
}
