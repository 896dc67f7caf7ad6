//! # gateway-plugin: write handler plugins for the Lark event gateway
//!
//! A plugin is a Rust `cdylib` that the gateway loads at start (or on reload) and calls for every
//! event routed to it. This crate is both the **contract** ([`abi`], a versioned C ABI) and the
//! **SDK** that makes writing one safe: implement [`Plugin`], add one [`export_plugin!`] line.
//!
//! ## Writing a plugin
//!
//! A plugin is its own crate, usually in its own repository: copy `examples/plugin-template/`
//! (a workspace of its own, with a README) or start from these two files. The step-by-step
//! guide, C plugins included, is `docs/plugins.md`.
//!
//! `Cargo.toml`:
//! ```toml
//! [package]
//! name = "hello"
//! version = "0.1.0"
//! edition = "2021"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! # From the gateway's repository, pinned to a commit (or a `tag`), or a local checkout by path:
//! gateway-plugin = { git = "https://github.com/OWNER/gateway", rev = "<commit>" }
//! # gateway-plugin = { path = "../gateway/crates/plugin" }
//! serde_json = "1"
//!
//! [profile.release]
//! panic = "unwind"   # required: panics are caught and reported, never abort the gateway
//! ```
//! (`OWNER` and `<commit>` are placeholders for where the gateway's repository lives and the
//! commit you build against.) The crate's version (0.1) is not the ABI's (1.x): a plugin built
//! with an SDK speaking ABI 1.x loads in any gateway of ABI 1.y with y ≥ x;
//! `gateway plugins inspect` shows what a library was built with.
//!
//! `src/lib.rs`:
//! ```
//! use gateway_plugin::events::AssetsUpdateV1;
//! use gateway_plugin::{Delivery, Host, Level, Outcome, Plugin};
//!
//! pub struct Hello {
//!     host: Host,
//!     greeting: String,
//! }
//!
//! impl Plugin for Hello {
//!     fn new(config: serde_json::Value, host: Host) -> Result<Self, String> {
//!         let greeting = config["greeting"].as_str().unwrap_or("hello").to_owned();
//!         Ok(Hello { host, greeting })
//!     }
//!
//!     fn handle(&self, d: &Delivery) -> Outcome {
//!         self.host.log(Level::Info, &format!("{} {} (attempt {})", self.greeting, d.event_type, d.attempt));
//!         if let Ok(ev) = d.event::<AssetsUpdateV1>() {
//!             self.host.log(Level::Info, &format!("{}: {} points", ev.account_id, ev.points));
//!         }
//!         Outcome::Ok
//!     }
//! }
//!
//! gateway_plugin::export_plugin!(Hello);
//! ```
//!
//! Build it with `cargo build --release`, try it without a server
//! (`gateway plugins inspect target/release/libhello.so`, then
//! `gateway plugins call target/release/libhello.so --config config.json --event event.json`),
//! then point the gateway at the file:
//! ```toml
//! [[plugins]]
//! name = "hello"
//! library = "target/release/libhello.so"
//! config = { greeting = "hi" }
//!
//! [[routes]]
//! events = ["hire.*"]
//! plugins = ["hello"]
//! ```
//! `gateway check` opens the library, checks its ABI, creates the instance (your `new` checks its
//! config) and prints the route table.
//!
//! ## Typed events and exact money
//! [`events`] re-exports the typed events (`AssetsUpdateV1`, with each field documented) and
//! [`Money`](events::Money) (integer hundredths, never `f64`) from the gateway's pure protocol
//! crate, `lark_core`; [`Delivery::event`] reads a delivery's event in its typed form. A plugin
//! needs no other dependency for them.
//!
//! ## Other languages
//! The ABI is plain C: `include/gateway_plugin.h` is the header (checked against [`abi`] by the
//! tests), `delivery.schema.json` (JSON Schema 2020-12) the JSON each `handle` receives, and
//! `examples/c-plugin/` a complete plugin in C.

//! ## What the host does with each outcome
//! | [`Outcome`] | host action |
//! |---|---|
//! | `Ok` | the delivery is done; it is never sent to this instance again |
//! | `Retry { reason, retry_after }` | retried later: exponential backoff with full jitter, at least `retry_after`; after `max_attempts` attempts it becomes a dead letter with `reason` |
//! | `Reject { reason }` | dead letter at once (replayable with `gateway replay`) |
//! | a panic | caught by the SDK; dead letter with the panic message; the instance gets no call after it, is shut down just before a fresh instance is created from the same config (or once a call still running on it returns), and calls that come while the fresh one's `new` runs, or after it failed, are retries |
//! | a call longer than `[delivery] timeout` | treated as `Retry`; the call keeps its concurrency slot until it really returns |
//!
//! Delivery is **at least once**: after a crash, a call that was running may be repeated. Use
//! [`Delivery::delivery_id`] (stable across attempts) as your idempotency key.
//!
//! ## Batches
//! When several deliveries are ready, the host hands them over in one call (ABI 1.1, up to
//! `[delivery] max_batch`) through [`Plugin::handle_batch`], whose default calls
//! [`Plugin::handle`] for each. Override it to amortise your own I/O (the `logger` writes and
//! syncs a whole batch at once). Each delivery still gets its own outcome, retries and dead
//! letter; a panic fails the whole batch, and the host then replaces the instance and calls
//! `handle` for each delivery of it, so a poison delivery ends only itself.
//!
//! ## Threading
//! The host calls [`Plugin::handle`] and [`Plugin::handle_batch`] from its blocking thread pool,
//! concurrently on one instance up to the plugin's `max_concurrency` calls (default 4), hence
//! `Plugin: Send + Sync`. Blocking I/O inside
//! `handle` is expected. [`Plugin::new`] and [`Plugin::shutdown`] are never concurrent with
//! `handle` on the same instance. One library may be instantiated several times with different
//! configs; instances share the library's globals.
//!
//! ## Ownership and lifetime (the ABI in one paragraph)
//! Inputs (config, delivery) are borrowed from the host for the duration of a call; the SDK
//! copies what it needs. Buffers the plugin returns (error messages, outcome details) are freed by
//! the host calling this same library's `free_buf`: allocators never mix. The [`Host`] handle is
//! valid for the instance's whole life. Libraries are never unloaded; upgrading a plugin means a
//! new file path and a reload, or a restart. See [`abi`] for the item-by-item contract.
//!
//! ## Host side
//! With the `host` feature, its `host` module opens libraries (`RTLD_NOW | RTLD_LOCAL`), checks the
//! descriptor (entry symbol → ABI major → struct size → ABI minor) and calls instances. Plugins
//! never enable it.

pub mod abi;
pub mod config;
pub mod events;
#[doc(hidden)]
pub mod export;
#[cfg(feature = "host")]
pub mod host;
mod sdk;

pub use sdk::{Delivery, Host, Level, Outcome, OutcomeDetail, Plugin, ISOLATED_ENV};
pub use serde_json;
