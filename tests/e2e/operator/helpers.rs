//! What the `operator` tests share: the config (one app, a testkit `kit` that rejects `test.bad`
//! and keeps retrying `test.wait`) and a delivery's state as `events show` prints it. Part of
//! `operator.rs`.

use gateway_e2e::harness::{kit_config, TestGateway};

pub(crate) const TOKEN: &str = "tok";

pub(crate) fn config() -> String {
    kit_config(
        TOKEN,
        r#"{ mode = "ok", modes = { "test.bad" = "reject", "test.wait" = "retry_always" }, record = "data/kit.jsonl" }"#,
    )
}

pub(crate) fn state(gw: &TestGateway, id: &str) -> String {
    let (code, out, err) = gw.cli(&["events", "show", id]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    v["deliveries"][0]["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}
