//! `gateway store backup`: a consistent copy of the embedded store taken while the gateway runs
//! and takes events, which a gateway restored from it runs on (its dedup set included); never
//! over an existing file; a PostgreSQL store refuses (its own tools back it up).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gateway_e2e::harness::{kit_config, run_cli, wait_until, Lark, TestGateway};

const TOKEN: &str = "tok";

fn config() -> String {
    kit_config(TOKEN, r#"{ mode = "ok", record = "data/kit.jsonl" }"#)
}

#[test]
fn a_backup_taken_while_events_arrive_restores_a_working_store_with_its_dedup_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config());
    for i in 0..40 {
        gw.send_plain(TOKEN, &format!("ev-{i}"), "test.ok");
    }
    assert!(wait_until(Duration::from_secs(10), || gw
        .calls("kit")
        .len()
        == 40));

    // Events keep arriving during the backup.
    let stop = Arc::new(AtomicBool::new(false));
    let url = gw.url("/hook");
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let lark = Lark::plain(TOKEN);
            let mut sent = 0;
            while !stop.load(Ordering::SeqCst) {
                let body = lark.event_v2(&format!("late-{sent}"), "test.ok", serde_json::json!({}));
                assert_eq!(lark.send(&url, &body).status, 200);
                sent += 1;
            }
            sent
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let copy = dir.path().join("backup.db");
    let copy_arg = copy.to_str().expect("utf-8 path");
    let (code, out, err) = gw.cli(&["store", "backup", copy_arg]);
    stop.store(true, Ordering::SeqCst);
    let late = sender.join().expect("sender");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("backed up") && out.contains(copy_arg), "{out}");
    let held: u64 = out
        .split('(')
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the event count");
    assert!(
        (40..=40 + late).contains(&held),
        "{held} of {} events",
        40 + late
    );

    // Never over an existing file.
    let (code, _, err) = gw.cli(&["store", "backup", copy_arg]);
    assert_eq!(code, 1);
    assert!(err.contains("exists"), "{err}");

    // Restored in another folder: sound, the events are there and still deduplicated.
    let restored = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(restored.path().join("data")).expect("mkdir");
    std::fs::copy(&copy, restored.path().join("data/gateway.db")).expect("copy");
    std::fs::write(restored.path().join("gateway.toml"), config()).expect("config");
    let (code, out, err) = run_cli(&restored.path().join("gateway.toml"), &["store", "check"]);
    assert_eq!(code, 0, "{out}{err}");
    let second = TestGateway::spawn(restored.path(), &config());
    assert_eq!(second.delivery("ev-7", "kit")["state"], "done");
    second.send_plain(TOKEN, "ev-7", "test.ok");
    second.send_plain(TOKEN, "fresh", "test.ok");
    // Deliveries pending in the copy (late events not yet delivered when it was taken) resume;
    // the duplicate is not delivered again.
    let count = |id: &str| {
        second
            .calls("kit")
            .iter()
            .filter(|c| c["event_id"] == id)
            .count()
    };
    assert!(wait_until(Duration::from_secs(10), || count("fresh") == 1));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        count("ev-7"),
        0,
        "a duplicate of a stored event is not delivered"
    );
    assert_eq!(count("fresh"), 1);
}

#[test]
fn a_backup_to_a_folder_that_does_not_exist_fails_and_says_where() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config());
    gw.send_plain(TOKEN, "one", "test.ok");
    let dest = dir.path().join("no/such/folder/b.db");
    let (code, out, err) = gw.cli(&["store", "backup", dest.to_str().expect("utf-8")]);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("no/such/folder/b.db"), "{err}");
    assert!(!dest.exists());
}

/// A call running while the backup is taken did not die: the copy carries no "started" mark,
/// so a store restored from it counts no crash (it runs the delivery again, as every delivery
/// pending in the copy). The copy is the owner's alone (mode 0600) and one file, no WAL beside.
#[test]
fn a_call_running_during_the_backup_is_no_crash_in_the_restored_store() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let gated = kit_config(
        TOKEN,
        r#"{ mode = "gate", gate = "open", record = "data/kit.jsonl" }"#,
    );
    let gw = TestGateway::spawn(dir.path(), &gated);
    gw.send_plain(TOKEN, "held", "test.ok");
    assert!(wait_until(Duration::from_secs(10), || gw
        .delivery("held", "kit")["running"]
        == true));
    let copy = dir.path().join("running.db");
    let (code, out, err) = gw.cli(&["store", "backup", copy.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{out}{err}");
    let mode = std::fs::metadata(&copy).expect("copy").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the copy's mode: {mode:o}");
    assert!(!dir.path().join("running.db-wal").exists());
    let db = rusqlite::Connection::open(&copy).expect("open the copy");
    let marked: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM deliveries WHERE started > 0",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(marked, 0, "the copy keeps a running call's mark");
    drop(db);
    std::fs::write(dir.path().join("open"), "").expect("open the gate");

    let restored = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(restored.path().join("data")).expect("mkdir");
    std::fs::copy(&copy, restored.path().join("data/gateway.db")).expect("copy");
    std::fs::write(restored.path().join("open"), "").expect("open the gate");
    let second = TestGateway::spawn(restored.path(), &gated);
    assert!(wait_until(Duration::from_secs(10), || second
        .delivery("held", "kit")["state"]
        == "done"));
    let held = second.delivery("held", "kit");
    assert_eq!(held["crashes"], 0, "{held}");
    assert!(
        !second.log().contains("died during plugin calls"),
        "{}",
        second.log()
    );
}
