//! What the `operations` tests share: the app's config, testkit plugins and routes, sending an
//! event, reading a plugin's record, and reloading by SIGHUP. Part of `operations.rs`.

use std::time::Duration;

use gateway_e2e::harness::{base_config, binaries, read_jsonl, wait_until, Lark, TestGateway};

pub(crate) const TOKEN: &str = "ops-token";

pub(crate) fn app() -> String {
    format!(
        r#"
[[apps]]
name = "ops"
path = "/hook"
verification_token = "{TOKEN}"

[delivery]
max_attempts = 3
initial_backoff = "50ms"
max_backoff = "100ms"
timeout = "10s"
"#
    )
}

pub(crate) fn testkit(name: &str, config: &str) -> String {
    format!(
        "\n[[plugins]]\nname = \"{name}\"\nlibrary = \"{}\"\nconfig = {{ {config} }}\n",
        binaries().testkit.display()
    )
}

pub(crate) fn route(events: &str, plugins: &str) -> String {
    format!("\n[[routes]]\nevents = [{events}]\nplugins = [{plugins}]\n")
}

pub(crate) fn send(gw: &TestGateway, id: &str, event_type: &str) -> u16 {
    let lark = Lark::plain(TOKEN);
    lark.send(
        &gw.url("/hook"),
        &lark.event_v2(id, event_type, serde_json::json!({})),
    )
    .status
}

pub(crate) fn recorded(gw: &TestGateway, file: &str) -> Vec<serde_json::Value> {
    read_jsonl(&gw.dir.join("data").join(file))
}

pub(crate) fn reload(gw: &TestGateway, config: &str, expect: &str) {
    let before = gw.log().matches(expect).count();
    std::fs::write(gw.dir.join("gateway.toml"), config).expect("write config");
    gw.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(10), || gw.log().matches(expect).count()
            > before),
        "no {expect:?} after SIGHUP:\n{}",
        gw.log()
    );
}

/// One app whose `t.s` events go to a testkit plugin recording to `data/sink.jsonl`.
pub(crate) fn sink_config() -> String {
    format!(
        "{}{}{}{}",
        base_config(),
        app(),
        testkit("sink", "record = \"data/sink.jsonl\""),
        route("\"t.s\"", "\"sink\""),
    )
}
