//! Restores of `gateway store backup` copies, with or without the id runs' folder: the copy
//! names no run (it carries none of their files), so `store check` finds nothing missing, and
//! dedup holds across the restore (review finding: the copy named the live store's runs, and
//! `store check` of a correctly restored store failed, after a purge even once the gateway ran).

use super::tests::{accepted, event, rt};
use super::*;

fn id_runs(path: &Path) -> i64 {
    Connection::open(path)
        .expect("conn")
        .query_row("SELECT COUNT(*) FROM id_runs", [], |r| r.get(0))
        .expect("id_runs")
}

/// The backup at `copy` restored alone in a folder of its own (another host, or a lost runs
/// folder): the folder (kept while it lives) and the store's path.
fn restored(copy: &Path) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    std::fs::copy(copy, &path).expect("copy");
    (dir, path)
}

/// A store at `path` spilling at 50 ids, with `n` events accepted and at least one run named.
async fn spilled(store: &SqliteStore, path: &Path, from: usize, n: usize) {
    for i in from..from + n {
        accepted(store, event(&format!("ev-{i}"), &["a"])).await;
    }
    for _ in 0..500 {
        if id_runs(path) > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no run was recorded");
}

/// README "Store and backups": restore = stop, put the copy at the store path, start. The
/// runs folder is not part of the copy ("a backup does not need them").
#[test]
fn a_backup_restored_without_its_runs_folder_is_sound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let copy = dir.path().join("backup.db");
    rt().block_on(async {
        let store = SqliteStore::open_spilling_at(&path, 50).expect("open");
        spilled(&store, &path, 0, 300).await;
        assert!(
            store.check().await.expect("check").is_empty(),
            "live store sound"
        );
        store.backup(copy.clone()).await.expect("backup");
        store.close();
    });
    // Restored on another host (or after losing the folder): the copy alone.
    let (_restored, rpath) = restored(&copy);
    assert_eq!(id_runs(&rpath), 0, "the copy names no run");
    rt().block_on(async {
        // `gateway store check` right after the restore (as tests/e2e/backup.rs does).
        let op = SqliteStore::open_existing(&rpath).expect("operator");
        let before_start = op.check().await.expect("check");
        op.close();
        // The gateway starts on it: dedup holds.
        let store = SqliteStore::open_spilling_at(&rpath, 50).expect("run");
        assert_eq!(
            store.accept(event("ev-7", &["a"])).await.expect("accept"),
            Accepted::Duplicate
        );
        accepted(&store, event("fresh", &["a"])).await;
        store.close();
        let op = SqliteStore::open_existing(&rpath).expect("operator");
        let after_start = op.check().await.expect("check");
        op.close();
        assert!(
            before_start.is_empty() && after_start.is_empty(),
            "store check of a restored backup: before the gateway ran {before_start:?}; after {after_start:?}"
        );
    });
}

/// Restored over the live store, whose runs folder moved on after the copy was taken (more
/// spills and merges): old ids stay duplicates, new events are new, nothing twice.
#[test]
fn a_backup_restored_beside_a_newer_runs_folder_dedups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let copy = dir.path().join("backup.db");
    rt().block_on(async {
        let store = SqliteStore::open_spilling_at(&path, 50).expect("open");
        spilled(&store, &path, 0, 300).await;
        store.backup(copy.clone()).await.expect("backup");
        // After the copy: more events, more spills and merges.
        for i in 300..700 {
            accepted(&store, event(&format!("ev-{i}"), &["a"])).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        store.close();
    });
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("s.db{suffix}")));
    }
    std::fs::copy(&copy, &path).expect("restore");
    rt().block_on(async {
        let store = SqliteStore::open_spilling_at(&path, 50).expect("run");
        for i in (0..300).step_by(7) {
            assert_eq!(
                store
                    .accept(event(&format!("ev-{i}"), &["a"]))
                    .await
                    .expect("accept"),
                Accepted::Duplicate,
                "ev-{i}"
            );
        }
        // Events accepted after the copy are gone from it: accepted again, once.
        for i in 300..700 {
            accepted(&store, event(&format!("ev-{i}"), &["a"])).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        store.close();
        let store = SqliteStore::open_spilling_at(&path, 50).expect("restart");
        for i in (0..700).step_by(3) {
            assert_eq!(
                store
                    .accept(event(&format!("ev-{i}"), &["a"]))
                    .await
                    .expect("accept"),
                Accepted::Duplicate,
                "ev-{i} after restart"
            );
        }
        assert!(store.check().await.expect("check").is_empty());
        store.close();
    });
}

/// As above, on a store whose retention purged the events its runs covered: the restored
/// store's gateway holds fewer ids than a spill takes, so nothing renamed the runs: the copy
/// named them and `store check` failed even after the gateway ran.
#[test]
fn a_restored_purged_store_is_sound_after_the_gateway_ran() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let copy = dir.path().join("backup.db");
    rt().block_on(async {
        let store = SqliteStore::open_spilling_at(&path, 50).expect("open");
        for i in 0..300 {
            accepted(&store, event(&format!("ev-{i}"), &[])).await;
        }
        for _ in 0..500 {
            if id_runs(&path) > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(id_runs(&path) > 0);
        assert_eq!(store.purge(i64::MAX, i64::MAX).await.expect("purge"), 300);
        for i in 300..310 {
            accepted(&store, event(&format!("ev-{i}"), &["a"])).await;
        }
        assert!(
            store.check().await.expect("check").is_empty(),
            "live store sound"
        );
        store.backup(copy.clone()).await.expect("backup");
        store.close();
    });
    let (_restored, rpath) = restored(&copy);
    rt().block_on(async {
        let store = SqliteStore::open_spilling_at(&rpath, 50).expect("run");
        assert_eq!(
            store.accept(event("ev-305", &["a"])).await.expect("accept"),
            Accepted::Duplicate
        );
        for i in 310..330 {
            accepted(&store, event(&format!("ev-{i}"), &["a"])).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        store.close();
        let op = SqliteStore::open_existing(&rpath).expect("operator");
        let found = op.check().await.expect("check");
        op.close();
        assert!(found.is_empty(), "after the gateway ran: {found:?}");
    });
}
