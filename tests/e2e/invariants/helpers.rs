//! What the invariants tests share: the config (testkit instances, each routed for
//! `test.<name>`), sending, and reading a plugin's calls and a delivery's state. Part of
//! `invariants.rs`.

use std::time::{Duration, Instant};

use gateway_e2e::harness::{base_config, binaries, TestGateway};

pub(crate) const TOKEN: &str = "tok";
pub(crate) const WAIT: Duration = Duration::from_secs(15);

/// One app, `[delivery]` settings, and testkit instances `(name, testkit config, extra keys)`
/// each routed for `test.<name>`; testkit records to `data/<name>.jsonl`.
pub(crate) fn config(delivery: &str, plugins: &[(&str, &str, &str)]) -> String {
    let mut cfg = format!(
        "{}\n[[apps]]\nname = \"hire\"\npath = \"/hook\"\nverification_token = \"{TOKEN}\"\n\n[delivery]\n{delivery}\n",
        base_config()
    );
    for (name, kit, extra) in plugins {
        cfg.push_str(&format!(
            "\n[[plugins]]\nname = \"{name}\"\nlibrary = \"{lib}\"\nconfig = {{ {kit}, record = \"data/{name}.jsonl\" }}\n{extra}\n\n[[routes]]\nevents = [\"test.{name}\"]\nplugins = [\"{name}\"]\n",
            lib = binaries().testkit.display(),
        ));
    }
    cfg
}

pub(crate) fn send(gw: &TestGateway, id: &str, event_type: &str) {
    gw.send_plain(TOKEN, id, event_type);
}

pub(crate) fn calls(gw: &TestGateway, name: &str) -> Vec<serde_json::Value> {
    gw.calls(name)
}

pub(crate) fn delivery(gw: &TestGateway, event_id: &str, plugin: &str) -> serde_json::Value {
    gw.delivery(event_id, plugin)
}

pub(crate) fn state(gw: &TestGateway, event_id: &str, plugin: &str) -> String {
    delivery(gw, event_id, plugin)["state"]
        .as_str()
        .unwrap_or("none")
        .to_owned()
}

/// Waits until `name`'s record has `n` calls; returns when each arrived (as seen by polling).
pub(crate) fn call_arrivals(
    gw: &TestGateway,
    name: &str,
    n: usize,
    timeout: Duration,
) -> Vec<Instant> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + timeout;
    while seen.len() < n && Instant::now() < deadline {
        let now = calls(gw, name).len();
        while seen.len() < now {
            seen.push(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    seen
}
