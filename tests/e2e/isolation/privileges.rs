//! What an isolated plugin's process does not get: a gateway allowed to listen on a port
//! below 1024 (`CAP_NET_BIND_SERVICE` in its ambient set, as systemd's `AmbientCapabilities=`
//! gives it) keeps that to itself, its plugins' children start with none; and the variables
//! the config reads with `${NAME}` (its secrets) are not in their environment.

use std::path::Path;
use std::time::Duration;

use gateway_e2e::harness::{children, read_jsonl, status_field, wait_until, TestGateway};
use gateway_e2e::raw_fixtures;

use super::config;

/// `CAP_NET_BIND_SERVICE`'s bit in `/proc/PID/status`'s capability masks.
const NET_BIND_SERVICE: u64 = 1 << 10;

/// One capability mask of a process (`CapPrm`, `CapEff`, `CapAmb`).
fn capabilities(pid: u32, set: &str) -> u64 {
    u64::from_str_radix(&status_field(&pid.to_string(), set), 16).expect("a hex mask")
}

/// The ambient set used to pass down: the child (and anything the plugin executes) held the
/// capability in its permitted and effective sets and could bind privileged ports. Run as an
/// unprivileged user (`nobody`) given the capability the way systemd does; setting that up
/// needs root, so elsewhere it says so and checks nothing. (The inheritable set still passes
/// down: it grants nothing without file capabilities, which `NoNewPrivileges=` rules out, and
/// lowering it takes `capset`, which the unit's system-call filter forbids.)
#[test]
fn an_isolated_plugin_does_not_inherit_the_gateways_capabilities() {
    if status_field("self", "Uid") != "0" {
        eprintln!("skipped: setting up an ambient capability needs root");
        return;
    }
    let raw = raw_fixtures(Path::new(env!("CARGO_TARGET_TMPDIR"))).legacy;
    let dir = tempfile::tempdir().expect("tempdir");
    // `nobody` writes its store and the logger's file here.
    let open = std::os::unix::fs::PermissionsExt::from_mode(0o777);
    std::fs::set_permissions(dir.path(), open).expect("chmod");
    let cfg = config("", &format!("library = \"{}\"", raw.display()));
    let gw = TestGateway::spawn_after(
        dir.path(),
        &cfg,
        "exec setpriv --reuid=65534 --regid=65534 --clear-groups \
         --inh-caps=+net_bind_service --ambient-caps=+net_bind_service \"$0\" \"$@\"",
    );
    // The set-up gave the gateway the capability (so the child's lack of it is the fix's).
    assert_eq!(
        capabilities(gw.pid(), "CapEff") & NET_BIND_SERVICE,
        NET_BIND_SERVICE
    );
    assert_eq!(status_field(&gw.pid().to_string(), "Uid"), "65534");
    assert!(
        wait_until(Duration::from_secs(10), || children(gw.pid()).len() == 1),
        "one plugin process: {:?}\n{}",
        children(gw.pid()),
        gw.log()
    );
    let child = children(gw.pid())[0];
    for set in ["CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(
            capabilities(child, set),
            0,
            "{set} of the plugin process {child}:\n{}",
            std::fs::read_to_string(format!("/proc/{child}/status")).unwrap_or_default()
        );
    }
}

/// The variables the config reads with `${NAME}` are secrets (here the app's verification
/// token and the plugin's own `tag`): an isolated plugin's process does not get them in its
/// environment (its own arrive expanded in its config); any other variable it does get.
#[test]
fn an_isolated_plugin_does_not_get_the_configs_secret_variables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kit = format!(
        "library = \"{}\"\nconfig = {{ record = \"data/kit.jsonl\", tag = \"${{KIT_OWN_SECRET}}\", \
         record_env = [\"KIT_APP_TOKEN\", \"KIT_OWN_SECRET\", \"KIT_PLAIN\"] }}",
        gateway_e2e::harness::binaries().testkit.display()
    );
    let cfg = config("", &kit).replace(
        "verification_token = \"tok\"",
        "verification_token = \"${KIT_APP_TOKEN}\"",
    );
    assert!(cfg.contains("${KIT_APP_TOKEN}"), "{cfg}");
    let gw = TestGateway::spawn_with_env(
        dir.path(),
        &cfg,
        &[
            ("KIT_APP_TOKEN", super::TOKEN),
            ("KIT_OWN_SECRET", "s3cret"),
            ("KIT_PLAIN", "visible"),
        ],
    );
    super::send(&gw, "env-1", "hire.referral_account.assets_update_v1");
    let record = dir.path().join("data/kit.jsonl");
    assert!(
        wait_until(Duration::from_secs(20), || !read_jsonl(&record).is_empty()),
        "no call recorded\n{}",
        gw.log()
    );
    let line = &read_jsonl(&record)[0];
    assert_eq!(
        line["tag"], "s3cret",
        "the config reached the plugin: {line}"
    );
    assert_eq!(
        line["env"],
        serde_json::json!({"KIT_APP_TOKEN": null, "KIT_OWN_SECRET": null, "KIT_PLAIN": "visible"}),
        "{line}"
    );
}

/// A variable the config first reads with `${NAME}` at a reload (here the app's verification
/// token, moved into a variable) is a secret from then on: a plugin process that was already
/// running then, kept by the reload (its spec unchanged), must not go on holding it in its
/// environment either (the README: "the child's environment is the gateway's without every
/// variable a config loaded by this process read").
#[test]
fn a_plugin_process_kept_by_a_reload_does_not_keep_a_variable_the_reload_made_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kit = format!(
        "library = \"{}\"\nconfig = {{ record = \"data/kit.jsonl\", record_env = [\"KIT_LATE_SECRET\"] }}",
        gateway_e2e::harness::binaries().testkit.display()
    );
    let before = config("", &kit);
    let gw = TestGateway::spawn_with_env(dir.path(), &before, &[("KIT_LATE_SECRET", super::TOKEN)]);
    super::send(&gw, "late-1", "hire.referral_account.assets_update_v1");
    let record = dir.path().join("data/kit.jsonl");
    let lines = |n: usize| wait_until(Duration::from_secs(20), || read_jsonl(&record).len() >= n);
    assert!(lines(1), "no call recorded\n{}", gw.log());
    // Not a config variable yet: the plugin may see it.
    assert_eq!(
        read_jsonl(&record)[0]["env"]["KIT_LATE_SECRET"],
        super::TOKEN
    );
    let after = before.replace(
        &format!("verification_token = \"{}\"", super::TOKEN),
        "verification_token = \"${KIT_LATE_SECRET}\"",
    );
    assert_ne!(after, before);
    std::fs::write(dir.path().join("gateway.toml"), &after).expect("write");
    gw.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(20), || gw
            .log()
            .contains("config reloaded")),
        "{}",
        gw.log()
    );
    super::send(&gw, "late-2", "hire.referral_account.assets_update_v1");
    let second = || {
        read_jsonl(&record)
            .into_iter()
            .find(|l| l["event_id"] == "late-2")
    };
    assert!(
        wait_until(Duration::from_secs(20), || second().is_some()),
        "no second call recorded\n{}",
        gw.log()
    );
    let line = &second().expect("recorded");
    assert_eq!(
        line["env"],
        serde_json::json!({"KIT_LATE_SECRET": null}),
        "the app's token, read with ${{KIT_LATE_SECRET}} since the reload, is still in the \
         plugin process's environment: {line}"
    );
}
