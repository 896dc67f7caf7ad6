//! The payout end-to-end tests' set-up (e2e/payout.rs): the gateway's config with one `payout`
//! instance on the Lark Open API stand-in, signed pushes, the delivery as the CLI shows it, the
//! ledger as `payout-report` lists it, the order ids the stand-in saw.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
pub(super) use std::time::Duration;

pub(super) use super::lark_api::{Faults, LarkApi, TOKEN_PATH};
pub(super) use gateway_e2e::harness::{
    base_config, binaries, get, metric, wait_until, Lark, TestGateway,
};
use gateway_e2e::{cargo_build, Profile};
use sha2::{Digest, Sha256};

pub(super) const TOKEN: &str = "payout-e2e-token";
pub(super) const ENCRYPT_KEY: &str = "payout-e2e-encrypt-key";
/// The config names this variable; only the gateway's environment holds the secret.
pub(super) const SECRET_VAR: &str = "E2E_PAYOUT_APP_SECRET";
/// What the stand-in accepts.
pub(super) const APP_ID: &str = "cli_test";
pub(super) const APP_SECRET: &str = "secret_test";
pub(super) const PLUGIN: &str = "payout";
pub(super) const T0: u64 = 1_700_000_000_000;

/// The config of a gateway with one `payout` instance on `api`; `timeout` is the plugin's
/// per-request HTTP timeout, `forward` adds the stand-in's payment platform.
pub(super) fn config(api: &LarkApi, timeout: &str, forward: bool) -> String {
    let forward = if forward {
        format!(", forward_url = \"{}\"", api.payments_url())
    } else {
        String::new()
    };
    format!(
        r#"{base}
[[apps]]
name = "hire"
path = "/hook"
verification_token = "{TOKEN}"
encrypt_key = "{ENCRYPT_KEY}"

[delivery]
max_attempts = 6
initial_backoff = "50ms"
max_backoff = "200ms"
timeout = "15s"

[[plugins]]
name = "{PLUGIN}"
library = "{library}"
config = {{ base_url = "{base_url}", app_id = "{APP_ID}", app_secret = "${{{SECRET_VAR}}}", ledger = "data/payout.db", timeout = "{timeout}"{forward} }}

[[routes]]
events = ["hire.referral_account.assets_update_v1"]
plugins = ["{PLUGIN}"]
"#,
        base = base_config(),
        library = binaries().payout.display(),
        base_url = api.base_url(),
    )
}

pub(super) fn spawn(dir: &Path, config: &str) -> TestGateway {
    TestGateway::spawn_with_env(dir, config, &[(SECRET_VAR, APP_SECRET)])
}

/// Sends an assets_update snapshot (`cash` as Lark's JSON list) and checks it was acknowledged.
pub(super) fn send(
    gw: &TestGateway,
    event_id: &str,
    account: &str,
    points: u64,
    cash: &str,
    modify_ms: u64,
) {
    let lark = Lark::encrypted(TOKEN, ENCRYPT_KEY);
    let answer = lark.send(
        &gw.url("/hook"),
        &lark.assets_update(event_id, account, points, cash, modify_ms),
    );
    assert_eq!(answer.status, 200, "{event_id}: {}", answer.body);
}

/// The payout delivery of `event_id` as `gateway events show` reports it.
pub(super) fn delivery(gw: &TestGateway, event_id: &str) -> serde_json::Value {
    let (code, out, err) = gw.cli(&["events", "show", event_id]);
    assert_eq!(code, 0, "events show {event_id}: {err}");
    let event: serde_json::Value = serde_json::from_str(&out).expect("events show prints JSON");
    let deliveries = event["deliveries"].as_array().cloned().unwrap_or_default();
    assert_eq!(deliveries.len(), 1, "{out}");
    assert_eq!(deliveries[0]["plugin"], PLUGIN);
    deliveries[0].clone()
}

/// Waits until the delivery of `event_id` is done; returns its record.
pub(super) fn wait_done(gw: &TestGateway, event_id: &str) -> serde_json::Value {
    let done = wait_until(Duration::from_secs(15), || {
        delivery(gw, event_id)["state"] == "done"
    });
    let d = delivery(gw, event_id);
    assert!(done, "{event_id} not done: {d}\n{}", gw.log());
    d
}

/// `"gw-"` + the first 32 hex digits of SHA-256 of the delivery id (`{event_id}:{plugin}`),
/// computed here independently of the plugin.
pub(super) fn expected_order_id(event_id: &str) -> String {
    let digest = Sha256::digest(format!("{event_id}:{PLUGIN}").as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("gw-{hex}")
}

/// The `payout-report` executable, from the same build as [`binaries`] (the same package set,
/// so the `.so` files the gateways load are not rebuilt under them).
pub(super) fn payout_report() -> &'static Path {
    static REPORT: OnceLock<PathBuf> = OnceLock::new();
    REPORT.get_or_init(|| {
        binaries();
        let artifacts = cargo_build(
            &["gateway", "logger", "testkit", "notifier", "payout"],
            Profile::Debug,
        )
        .unwrap_or_else(|e| panic!("building payout-report failed:\n{e}"));
        artifacts
            .iter()
            .find(|a| a.name == "payout-report" && a.kinds.iter().any(|k| k == "bin"))
            .and_then(|a| a.executable.clone())
            .expect("cargo built no payout-report executable")
    })
}

/// `payout-report list` on the ledger of the gateway in `dir`.
pub(super) fn report(dir: &Path) -> String {
    let out = Command::new(payout_report())
        .args(["list", "--ledger"])
        .arg(dir.join("data/payout.db"))
        .output()
        .expect("run payout-report");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "payout-report list failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The external_order_id of every withdraw request the stand-in received, in order.
pub(super) fn withdraw_order_ids(api: &LarkApi) -> Vec<String> {
    api.withdraw_calls()
        .iter()
        .map(|r| {
            r.json()["external_order_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}
