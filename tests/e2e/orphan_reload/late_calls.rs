//! A call of an older generation of a delivery, returning after the orphan rule made a newer
//! generation of it a dead letter: its verdict is its own generation's, never the newer dead
//! letter's reason.

use gateway_e2e::harness::{wait_until, TestGateway};
use gateway_e2e::pgkit::PgCluster;

use super::{config, reloads, TOKEN, WAIT};

/// A call hangs past its timeout on its last attempt (a dead letter while it runs); a forced
/// replay makes generation 1 of the delivery, which waits for that call; the instance is
/// removed and the orphan rule dead-letters generation 1, never attempted. The hung call then
/// returns a rejection of generation 0: generation 1's dead letter keeps the orphan rule's
/// reason (the one a replay after adding the instance back relies on), as on the embedded
/// store. PostgreSQL used to write the late rejection over it when the call's claim went.
#[test]
fn a_late_verdict_of_an_older_generation_leaves_the_orphan_rules_reason() {
    let pg = PgCluster::start();
    let url = pg.create_database("lateverdict");
    let dir = tempfile::tempdir().expect("tempdir");
    let first = config(Some(
        "mode = \"gate\", gate = \"open\", gate_then = \"reject\"",
    ))
    .replace("timeout = \"20s\"", "timeout = \"1s\"\nmax_attempts = 1");
    let gw = TestGateway::spawn_with_env(dir.path(), &first, &[("PG_URL", &url)]);
    gw.send_plain(TOKEN, "late-1", "test.gone");
    assert!(
        wait_until(WAIT, || {
            let d = gw.delivery("late-1", "gone");
            d["state"] == "dead" && d["running"] == true
        }),
        "the hung call's timeout was not a running dead letter: {}\n{}",
        gw.delivery("late-1", "gone"),
        gw.log()
    );
    let (code, out, err) = gw.cli(&["replay", "--dead-letters", "--force"]);
    assert_eq!(code, 0, "{out}{err}");
    let generation = || {
        pg.sql(
            "lateverdict",
            "SELECT state || '|' || generation FROM deliveries",
        )
    };
    assert_eq!(generation(), "pending|1", "replayed");

    std::fs::write(dir.path().join("gateway.toml"), config(None)).expect("write");
    gw.signal("HUP");
    assert!(wait_until(WAIT, || reloads(&gw) == 1), "{}", gw.log());
    assert!(
        wait_until(WAIT, || generation() == "dead|1"),
        "the orphan rule did not dead-letter generation 1: {}",
        gw.log()
    );
    let orphaned = gw.delivery("late-1", "gone");
    let reason = orphaned["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("removed_plugin_grace"), "{orphaned}");
    assert_eq!(
        orphaned["running"], true,
        "the old call still runs: {orphaned}"
    );

    std::fs::write(dir.path().join("open"), "").expect("the hung call returns");
    assert!(
        wait_until(WAIT, || gw.delivery("late-1", "gone")["running"].is_null()),
        "the returned call's claim stayed: {}\n{}",
        gw.delivery("late-1", "gone"),
        gw.log()
    );
    let calls: Vec<String> = gw
        .calls("gone")
        .iter()
        .map(|c| c["outcome"].to_string())
        .collect();
    assert_eq!(calls, ["\"reject\""], "the old call, once");
    let after = gw.delivery("late-1", "gone");
    assert_eq!(generation(), "dead|1");
    assert_eq!(
        after["last_error"].as_str(),
        Some(reason.as_str()),
        "generation 0's late rejection was written over generation 1's dead letter"
    );
}
