//! What the ingress tests share: a gateway with an encrypted app, a plain app, a plain app
//! pinned to an `app_id` and Lark's fixture app, all routed to the logger, and the event ids it logged. Part of `ingress.rs`.

use gateway_e2e::harness::{base_config, binaries, read_jsonl, TestGateway};

pub(crate) const TOKEN: &str = "enc-token";
pub(crate) const KEY: &str = "enc-key";
pub(crate) const PLAIN_TOKEN: &str = "plain-token";
/// The `app_id` the `pinned` app (plain, at `/pinned`) is pinned to: the harness's events'.
pub(crate) const PINNED_APP: &str = "cli_9f5343c580712544";
const ASSETS: &str = "hire.referral_account.assets_update_v1";

pub(crate) fn start() -> (tempfile::TempDir, TestGateway) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        r#"{base}
[[apps]]
name = "enc"
path = "/enc"
verification_token = "{TOKEN}"
encrypt_key = "{KEY}"

[[apps]]
name = "plain"
path = "/plain"
verification_token = "{PLAIN_TOKEN}"

[[apps]]
name = "pinned"
path = "/pinned"
verification_token = "{PLAIN_TOKEN}"
app_id = "{PINNED_APP}"

[[apps]]
name = "fixture"
path = "/fixture"
verification_token = "demo-verification-token"
encrypt_key = "demo-encrypt-key"

[[plugins]]
name = "audit"
library = "{logger}"
config = {{ path = "data/audit.jsonl", fsync = "never" }}

[[routes]]
events = ["{ASSETS}", "approval"]
plugins = ["audit"]
"#,
        base = base_config().replace(
            "[server]\n",
            "[server]\nmax_body_bytes = 65536\nbody_timeout = \"300ms\"\n",
        ),
        logger = binaries().logger.display(),
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    (dir, gw)
}

pub(crate) fn audit_ids(gw: &TestGateway) -> Vec<String> {
    read_jsonl(&gw.dir.join("data/audit.jsonl"))
        .iter()
        .map(|l| l["event_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}
