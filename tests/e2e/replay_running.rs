//! A replay of a delivery whose call is running needs `--force` (the API: `force: true`), as
//! one that succeeded does: replayed, the call's own success would be refused (the generation
//! changed) and the plugin run a second time. The rule holds in the store's write, so a
//! replay that listed the delivery before its call started still leaves it alone.

use std::time::Duration;

use gateway_e2e::harness::{base_config, binaries, post, wait_until, Lark, TestGateway};

const WAIT: Duration = Duration::from_secs(20);

fn config() -> String {
    format!(
        r#"{base}
[delivery]
timeout = "30s"

[[apps]]
name = "hire"
path = "/hook"
verification_token = "tok"

[[plugins]]
name = "held"
library = "{testkit}"
config = {{ mode = "gate", gate = "open", record = "data/held.jsonl" }}

[[routes]]
events = ["*"]
plugins = ["held"]
"#,
        base = base_config(),
        testkit = binaries().testkit.display(),
    )
}

#[test]
fn a_delivery_whose_call_runs_is_replayed_only_when_forced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config());
    let lark = Lark::plain("tok");
    for id in ["run-1", "run-2"] {
        let a = lark.send(
            &gw.url("/hook"),
            &lark.event_v2(id, "x.y_v1", serde_json::json!({})),
        );
        assert_eq!(a.status, 200, "{}", a.body);
    }
    assert!(
        wait_until(WAIT, || gw.delivery("run-1", "held")["running"] == true
            && gw.delivery("run-2", "held")["running"] == true),
        "the calls never showed as running: {}",
        gw.delivery("run-1", "held")
    );

    let (code, out, err) = gw.cli(&["replay", "run-1", "--dry-run"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(
            "needs --force (its call is running, or was when the gateway last stopped) run-1:held"
        ),
        "{out}"
    );
    let (code, out, err) = gw.cli(&["replay", "run-1"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("run-1:held its call is running, or was when the gateway last stopped"),
        "{err}"
    );

    // The API says the same (409), naming the running delivery.
    let api = post(
        &gw.admin_url("/api/v1/replay"),
        &[("content-type".to_owned(), "application/json".to_owned())],
        r#"{"event_ids":["run-2"]}"#,
    )
    .expect("api");
    assert_eq!(api.status, 409, "{}", api.body);
    let v: serde_json::Value = serde_json::from_str(&api.body).expect("json");
    assert_eq!(v["running"][0]["event_id"], "run-2", "{v}");

    // Each call finishes once; nothing runs a second time.
    std::fs::write(dir.path().join("open"), "").expect("open the gate");
    assert!(wait_until(WAIT, || {
        gw.delivery("run-1", "held")["state"] == "done"
            && gw.delivery("run-2", "held")["state"] == "done"
    }));
    std::thread::sleep(Duration::from_millis(1_500));
    let calls = gw.calls("held");
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(
        gw.delivery("run-1", "held")["running"],
        serde_json::Value::Null
    );
}
