//! The configs tests start gateways on: the common header ([`base_config`]: ephemeral ports, the
//! store in the test's folder), extra `[admin]` lines, and the usual one-`testkit` config.

use super::binaries;

/// The config header every test config starts with: ephemeral ports, store in `dir`.
pub fn base_config() -> String {
    r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "5s"

[admin]
listen = "127.0.0.1:0"

[store]
path = "data/gateway.db"
"#
    .to_owned()
}

/// `config` (built on [`base_config`]) with `extra` lines added to its `[admin]` table.
pub fn with_admin(config: &str, extra: &str) -> String {
    config.replacen(
        "[admin]\nlisten = \"127.0.0.1:0\"",
        &format!("[admin]\nlisten = \"127.0.0.1:0\"\n{extra}"),
        1,
    )
}

/// The usual one-plugin config: [`base_config`], the app `hire` on `/hook` with `token`, one
/// `testkit` instance `kit` with the inline table `kit` as its config, and `test.*` routed to it.
pub fn kit_config(token: &str, kit: &str) -> String {
    format!(
        r#"{base}
[[apps]]
name = "hire"
path = "/hook"
verification_token = "{token}"

[[plugins]]
name = "kit"
library = "{testkit}"
config = {kit}

[[routes]]
events = ["test.*"]
plugins = ["kit"]
"#,
        base = base_config(),
        testkit = binaries().testkit.display(),
    )
}
