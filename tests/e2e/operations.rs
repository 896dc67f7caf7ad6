//! Operating the gateway end to end. The tests live in one submodule per topic of this target:
//! `lifecycle` (SIGTERM during a burst and with a hung plugin, `check` and `run` refusing a
//! broken plugin or a store another gateway holds), `reload` (SIGHUP reloads: broken config kept
//! out, plugin and route added, requests in flight across reloads, a changed library refused;
//! `--watch`; replay of a dead letter once its plugin is fixed), `drain` (no call starts once a
//! stop began) and `traffic` (metrics after known
//! traffic, `gateway send`, a store that cannot write, the connection limit); `helpers` holds
//! what they share.

#[path = "operations/drain.rs"]
mod drain;

#[path = "operations/helpers.rs"]
mod helpers;

#[path = "operations/lifecycle.rs"]
mod lifecycle;

#[path = "operations/reload.rs"]
mod reload;

#[path = "operations/traffic.rs"]
mod traffic;
