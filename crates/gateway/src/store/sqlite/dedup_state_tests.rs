//! The index's own state: when the writer must call it between writes ([`Dedup::has_work`]),
//! a purged id leaving memory, and closing, which stops the builder and waits for it.

use std::time::{Duration, Instant};

use super::*;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;

const AT: usize = 4;

fn opened() -> (tempfile::TempDir, Connection, Dedup) {
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
    let (_dir, _conn, mut index) = opened();
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
    let (_dir, _conn, mut index) = opened();
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
    let (_dir, _conn, mut index) = opened();
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
