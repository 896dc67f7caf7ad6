//! The plugin examples as an outside author would use them, in the real gateway: the C plugin
//! (`examples/c-plugin`) compiled with `cc` against the header alone, and the Rust template
//! (`examples/plugin-template`) copied out of the repository and built as its own workspace.
//! Each is inspected with `gateway plugins inspect`, configured in a `gateway.toml`, and sent
//! events over the webhook.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gateway_e2e::harness::{base_config, read_jsonl, run_cli, wait_until, Lark, TestGateway};

const TOKEN: &str = "tok";

fn target_tmp() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

fn c_example() -> PathBuf {
    gateway_e2e::c_example(target_tmp())
}

fn config(plugin: &str, routes: &str) -> String {
    format!(
        r#"{base}
[[apps]]
name = "hire"
path = "/hook"
verification_token = "{TOKEN}"

[delivery]
max_attempts = 3
initial_backoff = "50ms"
max_backoff = "200ms"

{plugin}

{routes}
"#,
        base = base_config(),
    )
}

/// The stored state of `event_id`'s delivery to `plugin` (`done`, `pending`, `dead`).
fn state(gw: &TestGateway, event_id: &str, plugin: &str) -> String {
    gw.delivery(event_id, plugin)["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn dead_letters(gw: &TestGateway) -> Vec<serde_json::Value> {
    let (code, out, err) = gw.cli(&["dead-letters", "--json"]);
    assert_eq!(code, 0, "dead-letters: {err}");
    out.lines()
        .map(|l| serde_json::from_str(l).expect("one JSON dead letter per line"))
        .collect()
}

#[test]
fn the_c_example_appends_deliveries_and_dead_letters_the_types_it_refuses() {
    let lib = c_example();
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = format!(
        r#"[[plugins]]
name = "audit-c"
library = "{}"
config = {{ path = "audit-c.jsonl", reject_event_types = ["test.refused", "test.other"] }}"#,
        lib.display()
    );
    let gw = TestGateway::spawn(
        dir.path(),
        &config(
            &plugin,
            "[[routes]]\nevents = [\"test.*\"]\nplugins = [\"audit-c\"]",
        ),
    );
    for (id, event_type) in [
        ("c-1", "test.kept"),
        ("c-2", "test.refused"),
        ("c-3", "test.kept"),
    ] {
        gw.send_plain(TOKEN, id, event_type);
    }
    // A schema 1.0 event: its token is a member of the envelope itself.
    let v1 = format!(
        r#"{{"ts":"1502199207.7171419","uuid":"c-v1","token":"{TOKEN}","type":"event_callback","event":{{"type":"test.kept","n":"c-v1"}}}}"#
    );
    let a = Lark::plain(TOKEN).send(&gw.url("/hook"), &v1);
    assert_eq!(a.status, 200, "{}", a.body);
    let file = dir.path().join("audit-c.jsonl");
    assert!(
        wait_until(Duration::from_secs(10), || read_jsonl(&file).len() == 3
            && state(&gw, "c-2", "audit-c") == "dead"),
        "lines: {:?}\n{}",
        read_jsonl(&file),
        gw.log()
    );
    // The verification token is a secret: written "<redacted>", in either schema.
    let text = std::fs::read_to_string(&file).expect("read the file");
    assert!(!text.contains(&format!("\"{TOKEN}\"")), "{text}");
    let (v1, lines): (Vec<_>, Vec<_>) = read_jsonl(&file)
        .into_iter()
        .partition(|l| l["event_id"] == "c-v1");
    assert_eq!(v1.len(), 1, "{text}");
    assert_eq!(v1[0]["event"]["token"], "<redacted>", "{text}");
    assert_eq!(v1[0]["event"]["event"]["type"], "test.kept", "{text}");
    // Each line is the delivery JSON the host handed over, as it came (but for the token):
    // exactly the fields `delivery.schema.json` lists (all required), readable as the SDK's
    // `Delivery`.
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            gateway_e2e::workspace_root().join("crates/plugin/delivery.schema.json"),
        )
        .expect("read the delivery schema"),
    )
    .expect("the schema is JSON");
    let mut required: Vec<&str> = schema["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    required.sort_unstable();
    for line in &lines {
        let mut keys: Vec<&str> = line
            .as_object()
            .expect("a JSON object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, required, "{line}");
        serde_json::from_value::<gateway_plugin::Delivery>(line.clone()).expect("a Delivery");
    }
    let ids: Vec<&str> = lines
        .iter()
        .map(|l| l["event_id"].as_str().unwrap_or_default())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["c-1", "c-3"], "{lines:?}");
    for line in &lines {
        assert_eq!(line["plugin"], "audit-c");
        assert_eq!(line["app"], "hire");
        assert_eq!(line["attempt"], 1);
        assert_eq!(line["event_type"], "test.kept");
        assert_eq!(
            line["delivery_id"],
            format!("{}:audit-c", line["event_id"].as_str().unwrap_or_default())
        );
        assert_eq!(line["event"]["header"]["event_id"], line["event_id"]);
        assert_eq!(line["event"]["header"]["token"], "<redacted>", "{line}");
        assert_eq!(line["event"]["event"]["n"], line["event_id"]);
    }
    assert_eq!(state(&gw, "c-1", "audit-c"), "done");
    assert_eq!(state(&gw, "c-3", "audit-c"), "done");
    // The refused type: one attempt, a dead letter whose reason the plugin wrote.
    let dead = dead_letters(&gw);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["event_id"], "c-2");
    assert_eq!(dead[0]["attempts"], 1);
    let reason = dead[0]["last_error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("event type `test.refused` is refused by reject_event_types"),
        "{reason}"
    );
    // The plugin's init line reached the gateway's log through the host's `log` callback.
    assert!(
        gw.log().contains("example_c: appending deliveries to"),
        "{}",
        gw.log()
    );
}

#[test]
fn the_c_example_refuses_a_bad_config_through_the_init_error_path() {
    let lib = c_example();
    let dir = tempfile::tempdir().expect("tempdir");
    for (config_table, needle) in [
        (
            r#"{ path = "a.jsonl", colour = "blue" }"#,
            "example_c config: unknown key `colour` (known: `path`, `reject_event_types`)",
        ),
        ("{}", "example_c config: `path` is required"),
        (
            r#"{ path = "a.jsonl", reject_event_types = "test.x" }"#,
            "`reject_event_types` must be an array of strings",
        ),
        (
            r#"{ path = "no/such/folder/a.jsonl" }"#,
            "example_c: cannot open",
        ),
    ] {
        let plugin = format!(
            "[[plugins]]\nname = \"audit-c\"\nlibrary = \"{}\"\nconfig = {config_table}",
            lib.display()
        );
        let path = dir.path().join("gateway.toml");
        std::fs::write(
            &path,
            config(
                &plugin,
                "[[routes]]\nevents = [\"*\"]\nplugins = [\"audit-c\"]",
            ),
        )
        .expect("write gateway.toml");
        let (code, out, err) = run_cli(&path, &["check"]);
        assert_eq!(code, 3, "{config_table}: {out}{err}");
        assert!(
            out.contains(needle) || err.contains(needle),
            "{config_table}: expected {needle:?} in\n{out}{err}"
        );
    }
}

#[test]
fn plugins_inspect_shows_the_c_example_as_built_from_the_header() {
    let lib = c_example();
    let nowhere = Path::new("/nonexistent/gateway.toml");
    let (code, out, err) = run_cli(nowhere, &["plugins", "inspect", &lib.display().to_string()]);
    assert_eq!(code, 0, "{err}");
    for expected in [
        "name      example_c",
        "version   0.1.0",
        "abi       1.1",
        "batch     yes",
        "C11 against gateway_plugin.h",
        "not contained",
    ] {
        assert!(out.contains(expected), "{expected:?} in\n{out}");
    }
}

/// The panic strategy a library is linked with is its own crate's: the template's crate built
/// with `-C panic=abort` while the SDK was built to unwind is reported as not containing its
/// panics (`inspect`, and `check`'s warning), never as "panics contained" (the SDK's own
/// strategy, which it reported before). Its crate forbids `unsafe_code`, which the SDK's macro
/// must build under (an `allow` in the expansion was a hard error there).
#[test]
fn a_template_linked_with_panic_abort_is_reported_as_not_containing_its_panics() {
    let lib = gateway_e2e::plugin_template_abort_linked(target_tmp());
    let nowhere = Path::new("/nonexistent/gateway.toml");
    let (code, out, err) = run_cli(nowhere, &["plugins", "inspect", &lib.display().to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("name      plugin-template-abort"), "{out}");
    assert!(out.contains("panic=abort"), "{out}");
    assert!(out.contains("not contained"), "{out}");

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    let plugin = format!(
        "[[plugins]]\nname = \"template\"\nlibrary = \"{}\"",
        lib.display()
    );
    std::fs::write(
        &path,
        config(
            &plugin,
            "[[routes]]\nevents = [\"hire.*\"]\nplugins = [\"template\"]",
        ),
    )
    .expect("write config");
    let (code, out, err) = run_cli(&path, &["check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("was not built by the Rust SDK with panic = \"unwind\""),
        "{out}{err}"
    );
}

#[test]
fn the_rust_template_builds_out_of_tree_and_handles_an_assets_update() {
    let lib = gateway_e2e::plugin_template(target_tmp());
    let nowhere = Path::new("/nonexistent/gateway.toml");
    let (code, out, err) = run_cli(nowhere, &["plugins", "inspect", &lib.display().to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("name      plugin-template"), "{out}");
    assert!(out.contains("panics contained"), "{out}");

    // A config error names the field, with no position in the JSON the gateway made of the
    // table (the user never saw it).
    let bad = tempfile::tempdir().expect("tempdir");
    let cfg = bad.path().join("bad.toml");
    std::fs::write(&cfg, "min_cash = \"50.00\"\ncolour = \"blue\"\n").expect("write");
    let (code, out, err) = run_cli(
        nowhere,
        &[
            "plugins",
            "call",
            &lib.display().to_string(),
            "--config",
            &cfg.display().to_string(),
            "--event",
            &gateway_e2e::workspace_root()
                .join("fixtures/assets_update_v1.json")
                .display()
                .to_string(),
        ],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("plugin-template config: unknown field `colour`")
            && !err.contains(" at line "),
        "{err}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = format!(
        r#"[[plugins]]
name = "template"
library = "{}"
config = {{ min_cash = "50.00" }}"#,
        lib.display()
    );
    let gw = TestGateway::spawn(
        dir.path(),
        &config(
            &plugin,
            "[[routes]]\nevents = [\"hire.*\", \"test.*\"]\nplugins = [\"template\"]",
        ),
    );
    let lark = Lark::plain(TOKEN);
    let send = |id: &str, account: &str, points: u64, cny: &str, modify_ms: u64| {
        let cash = format!(r#"[{{"currency_type": "CNY", "amount": {cny}}}]"#);
        let body = lark.assets_update(id, account, points, &cash, modify_ms);
        let a = lark.send(&gw.url("/hook"), &body);
        assert_eq!(a.status, 200, "{}", a.body);
    };
    // 100.1 as a JSON number: exact money shows it as 100.10 (a float would print 100.1).
    send("t-1", "acct-7", 30, "100.1", 1_700_000_000_000);
    // Below min_cash: handled, nothing reported.
    send("t-2", "acct-8", 0, "49.99", 1_700_000_000_001);
    // Three decimals is not money: the template rejects it (a dead letter), never rounds it.
    send("t-3", "acct-9", 0, "1.005", 1_700_000_000_002);
    // Another event type routed to it: acknowledged untouched.
    gw.send_plain(TOKEN, "t-4", "test.other");

    assert!(
        wait_until(Duration::from_secs(10), || {
            ["t-1", "t-2", "t-4"]
                .iter()
                .all(|id| state(&gw, id, "template") == "done")
                && state(&gw, "t-3", "template") == "dead"
        }),
        "{}",
        gw.log()
    );
    let log = gw.log();
    assert!(
        log.contains("referral account acct-7: 100.10 CNY (30 points) as of 1700000000000"),
        "{log}"
    );
    assert!(!log.contains("referral account acct-8"), "{log}");
    assert!(
        log.contains("plugin-template: reporting cash balances of at least 50.00"),
        "{log}"
    );
    let dead = dead_letters(&gw);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["event_id"], "t-3");
    let reason = dead[0]["last_error"].as_str().unwrap_or_default();
    assert!(reason.contains("more than 2 decimal places"), "{reason}");
}
