//! The two-tier index: ids spill to runs on disk and stay duplicates, across restarts and
//! merges; memory stays bounded; purged events leave the runs; a damaged run is dropped and
//! its ids read back; seqs are never reused.

use tokio::sync::oneshot;

use super::chain::check_named;
use super::*;
use crate::store::sqlite::tests::event;
use crate::store::sqlite::{writer, SqliteStore, Write};
use crate::store::{Store, PURGE_CHUNK};

const AT: usize = 50;

fn accept(id: &str) -> Write {
    Write::Accept(
        event(id, &["p"]),
        std::time::Instant::now(),
        oneshot::channel().0,
    )
}

/// Runs `batch` through the writer's path, then lets the index take in any spill.
fn run(conn: &mut Connection, ids: &mut Option<Dedup>, batch: &[Write]) -> Vec<&'static str> {
    let outcomes = writer::apply_and_settle_for_tests(conn, batch, ids).expect("batch");
    if let Some(index) = ids.as_mut() {
        index.settle(conn);
    }
    outcomes
}

pub(super) fn names(n: std::ops::Range<usize>) -> Vec<String> {
    n.map(|i| format!("ev-{i}")).collect()
}

pub(super) fn accept_all(
    conn: &mut Connection,
    ids: &mut Option<Dedup>,
    names: &[String],
) -> Vec<&'static str> {
    names
        .chunks(10)
        .flat_map(|chunk| {
            run(
                conn,
                ids,
                &chunk.iter().map(|n| accept(n)).collect::<Vec<_>>(),
            )
        })
        .collect()
}

fn setup() -> (tempfile::TempDir, PathBuf, Connection) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    SqliteStore::open(&path).expect("create").close();
    let conn = super::super::open_connection(&path).expect("conn");
    (dir, path, conn)
}

/// A store with the index open, spilling at [`AT`].
pub(super) fn opened() -> (tempfile::TempDir, PathBuf, Connection, Option<Dedup>) {
    let (dir, path, conn) = setup();
    let ids = Some(Dedup::open(&conn, &path, AT).expect("open"));
    (dir, path, conn, ids)
}

fn stored(conn: &Connection) -> i64 {
    conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .expect("count")
}

pub(super) fn assert_all(outcomes: &[&str], expected: &str) {
    assert!(outcomes.iter().all(|o| *o == expected), "{outcomes:?}");
}

/// The files of the index's chain, oldest first.
fn run_paths(ids: &Option<Dedup>) -> Vec<PathBuf> {
    let index = ids.as_ref().expect("index");
    index.runs().iter().map(|r| r.path.clone()).collect()
}

pub(super) fn files(path: &Path) -> Vec<PathBuf> {
    let mut f: Vec<PathBuf> = std::fs::read_dir(runs_dir(path))
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .collect();
    f.sort();
    f
}

fn check_chain(index: &Dedup) {
    let runs = index.runs();
    for pair in runs.windows(2) {
        assert_eq!(pair[0].hi, pair[1].lo, "contiguous");
        assert!(
            pair[0].level > pair[1].level,
            "one run per level, oldest largest"
        );
    }
}

#[test]
fn spilled_ids_stay_duplicates_across_restarts_with_bounded_memory() {
    let (_dir, path, mut conn, mut ids) = opened();
    let all = names(0..1_000);
    assert_all(&accept_all(&mut conn, &mut ids, &all), "new");
    let index = ids.as_ref().expect("index");
    check_chain(index);
    assert!(index.runs().len() >= 2, "merged into levels");
    assert!(index.len() < AT + 10, "memory holds {} ids", index.len());
    let covered: u64 = index.runs().iter().map(|r| r.count).sum();
    assert_eq!(covered as usize + index.len(), 1_000);
    let chain: Vec<PathBuf> = run_paths(&ids);
    assert_eq!(files(&path), chain, "no file but the chain's");
    // Once each spill's covered ids left memory, the freed pages went back to the OS.
    let trims = index.trims();
    assert!(trims >= 2, "{trims} trims");
    assert_all(&accept_all(&mut conn, &mut ids, &all), "duplicate");
    // A restart reads the runs the store names and the rest into memory.
    drop(ids);
    let mut ids = Some(Dedup::open(&conn, &path, AT).expect("reopen"));
    let reopened: Vec<PathBuf> = run_paths(&ids);
    assert_eq!(reopened, chain);
    assert_all(&accept_all(&mut conn, &mut ids, &all), "duplicate");
    assert_eq!(
        accept_all(&mut conn, &mut ids, &names(1_000..1_001)),
        ["new"]
    );
    assert_eq!(stored(&conn), 1_001);
    let before = ids.as_ref().map_or(0, Dedup::trims);
    accept_all(&mut conn, &mut ids, &names(1_001..1_001 + AT));
    assert!(
        ids.as_ref().map_or(0, Dedup::trims) > before,
        "a spill trims"
    );
}

#[test]
fn a_damaged_run_is_dropped_and_its_ids_read_back_into_memory() {
    let (_dir, path, mut conn, mut ids) = opened();
    let all = names(0..300);
    accept_all(&mut conn, &mut ids, &all);
    let first = ids.as_ref().expect("i").runs()[0].path.clone();
    drop(ids);
    let mut bytes = std::fs::read(&first).expect("read");
    bytes[20] ^= 0xff;
    std::fs::write(&first, bytes).expect("write");
    let mut ids = Some(Dedup::open(&conn, &path, usize::MAX).expect("reopen"));
    let index = ids.as_ref().expect("i");
    assert!(
        index.runs().is_empty(),
        "the chain stops at the damaged run"
    );
    assert_eq!(index.len(), 300);
    assert!(files(&path).is_empty(), "the unusable runs are removed");
    assert_all(&accept_all(&mut conn, &mut ids, &all), "duplicate");
}

#[test]
fn a_run_the_store_does_not_name_is_not_used() {
    let (_dir, path, mut conn, mut ids) = opened();
    accept_all(&mut conn, &mut ids, &names(0..200));
    drop(ids);
    // Another store at the same path: the runs left in the folder are not its.
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    SqliteStore::open(&path).expect("create").close();
    let mut conn = super::super::open_connection(&path).expect("conn");
    let mut ids = Some(Dedup::open(&conn, &path, AT).expect("open"));
    assert!(ids.as_ref().expect("i").runs().is_empty());
    assert!(files(&path).is_empty());
    assert!(accept_all(&mut conn, &mut ids, &names(0..200))
        .iter()
        .all(|o| *o == "new"));
}

fn purge_all(conn: &mut Connection, ids: &mut Option<Dedup>) {
    // Chunk by chunk (at most PURGE_CHUNK events each), until none is left.
    for _ in 0..=400 / PURGE_CHUNK + 1 {
        run(
            conn,
            ids,
            &[Write::Purge(
                2_000,
                i64::MIN,
                (i64::MIN, i64::MIN),
                oneshot::channel().0,
            )],
        );
    }
    assert_eq!(stored(conn), 0);
}

#[test]
fn purged_events_leave_the_runs_and_seqs_are_never_reused() {
    let (_dir, _path, mut conn, mut ids) = opened();
    let old = names(0..400);
    accept_all(&mut conn, &mut ids, &old);
    // Deliveries must be finished for retention to remove their events.
    conn.execute("UPDATE deliveries SET state = 'done'", [])
        .expect("done");
    purge_all(&mut conn, &mut ids);
    let covered = ids.as_ref().expect("i").runs().last().map_or(0, |r| r.hi);
    assert!(covered > 0);
    // Gone from the store: new again (a stale pair in a run is confirmed and found gone).
    assert_all(&accept_all(&mut conn, &mut ids, &old[..5]), "new");
    let min_seq: i64 = conn
        .query_row("SELECT MIN(seq) FROM events", [], |r| r.get(0))
        .expect("min");
    assert!(min_seq > covered, "seq {min_seq} reused below {covered}");
    // Later spills merge the old runs away: their pairs are gone with their events.
    accept_all(&mut conn, &mut ids, &names(1_000..1_800));
    let index = ids.as_ref().expect("i");
    check_chain(index);
    let in_runs: u64 = index.runs().iter().map(|r| r.count).sum();
    assert!(
        in_runs as usize + index.len() <= 805 + 400 - 5,
        "{in_runs} pairs in runs"
    );
    assert_all(&accept_all(&mut conn, &mut ids, &old[..5]), "duplicate");
    assert_all(&accept_all(&mut conn, &mut ids, &old[5..10]), "new");
}

#[test]
fn store_check_verifies_the_runs_the_store_names() {
    let (_dir, path, mut conn, mut ids) = opened();
    accept_all(&mut conn, &mut ids, &names(0..200));
    assert!(check_runs(&conn, &path).expect("check").is_empty());
    let runs: Vec<PathBuf> = run_paths(&ids);
    // An event of a run's range that the run lacks (a row the run was not built from).
    conn.execute("UPDATE event_ids SET hash = 12345 WHERE seq = 1", [])
        .expect("row");
    let found = check_runs(&conn, &path).expect("check");
    assert!(
        found.iter().any(|p| p.contains("lacks 1 events")),
        "{found:?}"
    );
    std::fs::remove_file(&runs[0]).expect("remove");
    let found = check_runs(&conn, &path).expect("check");
    assert!(found.iter().any(|p| p.contains("open")), "{found:?}");
    // A run the store no longer names (the gateway replaced the chain and deleted the file
    // while the check ran) is not a finding.
    let listed: Vec<(String, i64, i64, String)> = conn
        .prepare("SELECT file, lo, hi, digest FROM id_runs ORDER BY lo")
        .and_then(|mut st| {
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect()
        })
        .expect("list");
    let gone = &listed[0].0;
    conn.execute("DELETE FROM id_runs WHERE file = ?1", [gone])
        .expect("unname");
    let found = check_named(&conn, &path, listed.clone()).expect("check");
    assert!(!found.iter().any(|p| p.contains("open")), "{found:?}");
}

#[test]
fn a_version_6_store_gets_the_runs_table_and_keeps_its_ids() {
    let (_dir, path, mut conn) = setup();
    let mut ids = Some(Dedup::open(&conn, &path, usize::MAX).expect("open"));
    accept_all(&mut conn, &mut ids, &names(0..3));
    drop(ids);
    conn.execute_batch("DROP TABLE id_runs; PRAGMA user_version = 6;")
        .expect("v6");
    drop(conn);
    SqliteStore::open(&path).expect("migrates").close();
    let mut conn = super::super::open_connection(&path).expect("conn");
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("version");
    assert_eq!(version, super::super::SCHEMA_VERSION);
    let mut ids = Some(Dedup::open(&conn, &path, AT).expect("open"));
    assert!(accept_all(&mut conn, &mut ids, &names(0..3))
        .iter()
        .all(|o| *o == "duplicate"));
}

#[test]
fn the_writer_thread_spills_and_a_restarted_store_still_finds_every_id() {
    use crate::store::sqlite::tests::{accepted, rt};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    rt().block_on(async {
        let store = SqliteStore::open_spilling_at(&path, 40).expect("open");
        for i in 0..400 {
            accepted(&store, event(&format!("w-{i}"), &["p"])).await;
        }
        store.close();
    });
    let conn = super::super::open_connection(&path).expect("conn");
    let runs: i64 = conn
        .query_row("SELECT COUNT(*) FROM id_runs", [], |r| r.get(0))
        .expect("runs");
    assert!(runs >= 1, "the writer thread spilled");
    // A build the stop interrupted may have left a file: the next start removes it.
    assert!(files(&path).len() as i64 >= runs);
    rt().block_on(async {
        let store = SqliteStore::open_spilling_at(&path, 40).expect("reopen");
        for i in (0..400).step_by(7) {
            let again = store.accept(event(&format!("w-{i}"), &["p"])).await;
            assert_eq!(
                again.expect("dup"),
                crate::store::Accepted::Duplicate,
                "w-{i}"
            );
        }
        assert!(store.check().await.expect("check").is_empty());
        store.close();
    });
    let runs: i64 = conn
        .query_row("SELECT COUNT(*) FROM id_runs", [], |r| r.get(0))
        .expect("runs");
    let named: Vec<String> = conn
        .prepare("SELECT file FROM id_runs")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("named");
    let left = files(&path);
    assert!(left.len() as i64 >= runs);
    for file in named {
        assert!(left.contains(&runs_dir(&path).join(file)));
    }
}

#[test]
fn a_spill_that_fails_keeps_the_ids_in_memory_and_waits_before_the_next_try() {
    let (_dir, path, mut conn, mut ids) = opened();
    // The runs folder replaced by a file: no run can be written.
    let runs = runs_dir(&path);
    std::fs::remove_dir_all(&runs).expect("remove");
    std::fs::write(&runs, b"in the way").expect("file");
    let all = names(0..200);
    assert_all(&accept_all(&mut conn, &mut ids, &all), "new");
    let index = ids.as_ref().expect("i");
    assert!(index.runs().is_empty());
    assert_eq!(index.len(), 200, "every id still in memory");
    assert!(index.spill_paused(), "no new try at once");
    assert_all(&accept_all(&mut conn, &mut ids, &all), "duplicate");
}

#[test]
fn an_idle_writer_still_takes_a_finished_spill_in() {
    use crate::store::sqlite::tests::{accepted, rt};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    rt().block_on(async {
        let store = SqliteStore::open_spilling_at(&path, usize::MAX).expect("open");
        for i in 0..100 {
            accepted(&store, event(&format!("i-{i}"), &[])).await;
        }
        store.close();
    });
    // Reopened with a small spill size: 100 ids in memory are due at once, and no write comes.
    let store = SqliteStore::open_spilling_at(&path, 40).expect("reopen");
    let conn = super::super::open_connection(&path).expect("conn");
    let named = || -> i64 {
        conn.query_row("SELECT COUNT(*) FROM id_runs", [], |r| r.get(0))
            .expect("runs")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while named() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(named(), 1, "the spill was taken in without a write");
    store.close();
}

/// Regression: a spill's run covers every seq handed out, one a batch took and then rolled
/// back included, so a run could end past the highest seq stored. A session with the index in
/// memory only (the fallback when the runs cannot be opened) numbered from the highest stored
/// seq and put an event inside that run's range; the next start trusted the run for that range,
/// loaded only the ids past it, and accepted the event again. The chain's end is now a floor,
/// and seqs are numbered past the runs' ends too (a store whose chain was recorded before that
/// floor existed: here, the floor's row deleted).
#[test]
fn a_seq_a_rolled_back_batch_took_before_a_spill_is_never_given_again() {
    for recorded_before in [false, true] {
        rolled_back_seq_before_a_spill(recorded_before);
    }
}

fn rolled_back_seq_before_a_spill(recorded_before: bool) {
    let (_dir, path, mut conn, mut ids) = opened();
    for chunk in names(0..AT).chunks(10) {
        let batch: Vec<Write> = chunk.iter().map(|n| accept(n)).collect();
        writer::apply_and_settle_for_tests(&mut conn, &batch, &mut ids).expect("batch");
    }
    conn.execute_batch(
        "CREATE TRIGGER full BEFORE INSERT ON deliveries BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
    )
    .expect("trigger");
    let failed = writer::apply_and_settle_for_tests(&mut conn, &[accept("doomed")], &mut ids);
    assert!(failed.is_err(), "{failed:?}");
    conn.execute_batch("DROP TRIGGER full").expect("drop");
    ids.as_mut().expect("index").settle(&mut conn);
    let max = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).expect(sql) };
    assert!(
        max("SELECT MAX(hi) FROM id_runs") > max("SELECT MAX(seq) FROM events"),
        "the set-up: a run past the highest seq stored"
    );
    drop(ids);
    if recorded_before {
        conn.execute("DELETE FROM floors WHERE name = 'event_seq'", [])
            .expect("no floor");
    }
    let mut memory_only = Some(Dedup::in_memory(&conn).expect("in memory"));
    assert_eq!(run(&mut conn, &mut memory_only, &[accept("late")]), ["new"]);
    drop(memory_only);
    let mut ids = Some(Dedup::open(&conn, &path, AT).expect("open"));
    assert_eq!(
        run(&mut conn, &mut ids, &[accept("late")]),
        ["duplicate"],
        "an id stored inside a run's range was accepted again"
    );
}

/// Kills `index`'s builder thread and waits until it is gone.
fn kill_builder(index: &mut Dedup) {
    let spill = index.spill.as_mut().expect("a builder");
    spill.jobs.send(Job::Panic).expect("send");
    let thread = spill.thread.take().expect("thread");
    assert!(thread.join().is_err(), "the builder panicked");
}

/// Regression: a builder thread that died with a spill under way left it "under way" for good:
/// no spill ever again, and the writer woken every 100 ms for it. Now the spills end (ids stay
/// in memory) and the index stays right; one that died between spills likewise.
#[test]
fn a_builder_that_dies_ends_the_spills_and_the_index_stays_right() {
    for under_way in [true, false] {
        let (_dir, _path, mut conn, mut ids) = opened();
        let index = ids.as_mut().expect("index");
        kill_builder(index);
        if under_way {
            index.spill.as_mut().expect("spill").busy = true;
        }
        let all = names(0..AT * 3);
        assert_all(&accept_all(&mut conn, &mut ids, &all), "new");
        let index = ids.as_ref().expect("index");
        assert!(index.spill.is_none(), "under way: {under_way}");
        assert!(!index.has_work(), "under way: {under_way}");
        assert_all(&accept_all(&mut conn, &mut ids, &all), "duplicate");
    }
}

/// An operator command's index reads the runs the store names, as the gateway does: the ids
/// they cover stay on disk (a replay by id read every id into memory first), and are found.
/// Without the runs' folder, every id is read into memory.
#[test]
fn an_operator_reads_the_runs_instead_of_every_id() {
    let (_dir, path, mut conn, mut ids) = opened();
    let all = names(0..1_000);
    assert_all(&accept_all(&mut conn, &mut ids, &all), "new");
    drop(ids);
    let mut operator = Some(Dedup::for_operator(&conn, &path).expect("operator"));
    let index = operator.as_ref().expect("index");
    assert!(!index.runs().is_empty());
    assert!(index.len() < AT + 10, "memory holds {} ids", index.len());
    assert_all(&accept_all(&mut conn, &mut operator, &all), "duplicate");
    assert!(operator.as_ref().is_some_and(|o| !o.has_work()));
    drop(operator);
    std::fs::rename(runs_dir(&path), path.with_extension("moved")).expect("move the runs");
    let mut operator = Some(Dedup::for_operator(&conn, &path).expect("operator"));
    assert_eq!(operator.as_ref().expect("index").len(), 1_000);
    assert_all(&accept_all(&mut conn, &mut operator, &all), "duplicate");
}

/// A build that fails part-way (here its merge, after its level-0 run was written: a full
/// disk, a read error) leaves none of its runs behind: each 30 s retry left its level-0 run, a
/// bigger one each time, in the folder no chain names (on a full disk, for good, with the
/// store's own commits then failing for want of space).
#[test]
fn a_failed_build_leaves_no_file_behind() {
    let (_dir, path, mut conn, mut ids) = opened();
    assert_all(&accept_all(&mut conn, &mut ids, &names(0..AT)), "new");
    let first = run_paths(&ids);
    assert_eq!(first.len(), 1, "one level-0 run");
    let folder = first[0].parent().expect("its folder").to_path_buf();
    *super::builder::FAIL_MERGES_IN.lock().expect("lock") = Some(folder);
    for round in 1..=3 {
        let index = ids.as_mut().expect("index");
        index.spill.as_mut().expect("spill").pause_until = None; // the 30 s have passed
        let batch = names(AT * round..AT * (round + 1));
        assert_all(&accept_all(&mut conn, &mut ids, &batch), "new");
        let index = ids.as_ref().expect("index");
        assert!(index.spill_paused(), "round {round}: the build failed");
        assert_eq!(index.runs().len(), 1, "round {round}: the old chain stays");
    }
    let named: Vec<String> = conn
        .prepare("SELECT file FROM id_runs")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("named");
    let stray: Vec<PathBuf> = files(&path)
        .into_iter()
        .filter(|f| {
            !named
                .iter()
                .any(|n| f.file_name().and_then(|x| x.to_str()) == Some(n.as_str()))
        })
        .collect();
    *super::builder::FAIL_MERGES_IN.lock().expect("lock") = None;
    assert!(stray.is_empty(), "files no chain names: {stray:?}");
}

/// A run file deleted while the gateway runs (runs are derived data, and an operator may
/// clear them) is still merged: the merge read it again by its path, so every later build
/// failed until a restart, and the ids piled up in memory.
#[test]
fn a_run_file_deleted_while_running_is_still_merged() {
    let (_dir, _path, mut conn, mut ids) = opened();
    assert_all(&accept_all(&mut conn, &mut ids, &names(0..AT)), "new");
    let first = run_paths(&ids);
    assert_eq!(first.len(), 1, "one level-0 run");
    std::fs::remove_file(&first[0]).expect("remove");
    assert_all(&accept_all(&mut conn, &mut ids, &names(AT..2 * AT)), "new");
    let index = ids.as_ref().expect("index");
    assert!(!index.spill_paused(), "the merge failed");
    assert_eq!(index.runs().len(), 1, "merged into one run");
    assert_eq!(index.runs()[0].level, 1);
    // Every id is still known.
    assert_all(
        &accept_all(&mut conn, &mut ids, &names(0..2 * AT)),
        "duplicate",
    );
}
