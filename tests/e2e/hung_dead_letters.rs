//! A call hung past `[delivery] timeout` on its last attempt makes a dead letter while it still
//! runs. That dead letter shows as running, and no replay takes it unless forced: named (the
//! CLI or the API by event id) it is refused; in a replay of every dead letter (or of picks
//! on the console's page) it is left out and named as skipped. Replayed, the plugin would run
//! again beside a call that may yet succeed. Once the call returns (here a retry after the gate opens) the dead
//! letter is an ordinary one, replayed without `--force`. The same on SQLite and, with its
//! claims, on PostgreSQL.

use std::path::Path;
use std::time::Duration;

use gateway_e2e::harness::{base_config, binaries, post, wait_until, Lark, TestGateway};
use gateway_e2e::pgkit::PgCluster;

const WAIT: Duration = Duration::from_secs(30);

/// The harness's base config with `store` (a `[store]` table) for its embedded store.
fn config(store: &str) -> String {
    let base = base_config().replace("[store]\npath = \"data/gateway.db\"", store);
    format!(
        r#"{base}
[delivery]
timeout = "1s"
max_attempts = 1

[[apps]]
name = "hire"
path = "/hook"
verification_token = "tok"

[[plugins]]
name = "held"
library = "{testkit}"
config = {{ mode = "gate", gate = "open", gate_then = "retry", record = "data/held.jsonl" }}

[[routes]]
events = ["*"]
plugins = ["held"]
"#,
        testkit = binaries().testkit.display(),
    )
}

fn scenario(dir: &Path, gw: &TestGateway) {
    let lark = Lark::plain("tok");
    let a = lark.send(
        &gw.url("/hook"),
        &lark.event_v2("hung-1", "x.y_v1", serde_json::json!({})),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        wait_until(WAIT, || {
            let d = gw.delivery("hung-1", "held");
            d["state"] == "dead" && d["running"] == true
        }),
        "the timed-out call's dead letter never showed as running: {}\n{}",
        gw.delivery("hung-1", "held"),
        gw.log()
    );

    // Named, it is refused; in a replay of every dead letter, it is left out (a call hung for
    // good must not block the others' replay).
    let (code, out, err) = gw.cli(&["replay", "hung-1"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("hung-1:held its call is running"),
        "{out}{err}"
    );
    let (code, out, err) = gw.cli(&["replay", "--dead-letters"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("skipped: hung-1:held its call is running"),
        "{out}{err}"
    );
    assert!(out.contains("0 deliveries queued again"), "{out}");
    let api = |body: &str| {
        post(
            &gw.admin_url("/api/v1/replay"),
            &[("content-type".to_owned(), "application/json".to_owned())],
            body,
        )
        .expect("api")
    };
    let a = api(r#"{"event_ids":["hung-1"]}"#);
    assert_eq!(a.status, 409, "{}", a.body);
    // `dead_only` picks deliveries: with a whole selection it would be ignored, so refused.
    let a = api(r#"{"dead_letters":true,"dead_only":true}"#);
    assert_eq!(a.status, 400, "{}", a.body);
    for body in [
        r#"{"dead_letters":true}"#,
        r#"{"deliveries":[{"event_id":"hung-1","plugin":"held"}],"dead_only":true}"#,
    ] {
        let a = api(body);
        assert_eq!(a.status, 200, "{body}: {}", a.body);
        let v: serde_json::Value = serde_json::from_str(&a.body).expect("json");
        assert_eq!(v["replayed"], 0, "{v}");
        assert_eq!(v["skipped"][0]["event_id"], "hung-1", "{v}");
        if body.contains("dead_letters") {
            // Counted in the store (PostgreSQL: the replica's live claim).
            assert_eq!(v["skipped_count"], 1, "{v}");
        }
    }
    let a = api(r#"{"dead_letters":true,"dry_run":true}"#);
    let v: serde_json::Value = serde_json::from_str(&a.body).expect("json");
    assert_eq!(
        (
            v["would_replay_count"].as_u64(),
            v["skipped_count"].as_u64()
        ),
        (Some(0), Some(1)),
        "{v}"
    );
    assert_eq!(gw.delivery("hung-1", "held")["state"], "dead");
    assert_eq!(gw.calls("held").len(), 0, "the call has not returned yet");

    // The call returns (a retry): the dead letter stands and is no longer running.
    std::fs::write(dir.join("open"), "").expect("open the gate");
    assert!(
        wait_until(WAIT, || gw.delivery("hung-1", "held")["running"]
            == serde_json::Value::Null),
        "still running after the call returned: {}",
        gw.delivery("hung-1", "held")
    );
    let d = gw.delivery("hung-1", "held");
    assert_eq!(d["state"], "dead", "{d}");
    assert_eq!(gw.calls("held").len(), 1);

    // Now a plain replay takes it, and the plugin runs once more.
    let (code, out, err) = gw.cli(&["replay", "--dead-letters"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 deliveries queued again"), "{out}");
    assert!(
        wait_until(WAIT, || gw.calls("held").len() == 2),
        "the replay was not called: {:?}",
        gw.calls("held")
    );
}

#[test]
fn a_dead_letter_whose_call_still_runs_needs_force_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config("[store]\npath = \"data/gateway.db\""));
    scenario(dir.path(), &gw);
}

#[test]
fn a_dead_letter_whose_call_still_runs_needs_force_on_postgresql() {
    let pg = PgCluster::start();
    let url = pg.create_database("hung");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = "[store]\nurl = \"${PG_URL}\"\nlease = \"3s\"";
    let gw = TestGateway::spawn_with_env(dir.path(), &config(store), &[("PG_URL", &url)]);
    scenario(dir.path(), &gw);
}
