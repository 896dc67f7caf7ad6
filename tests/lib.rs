//! Helpers for the end-to-end tests and benchmarks in this package (see `e2e/` and `benches/`):
//! find the workspace, build the real plugin libraries with cargo (once per process), compile the
//! raw-ABI fixture libraries of `raw-plugins/` with rustc, and make deliveries.
//!
//! Everything a test needs is built on demand, so `cargo test` works on a clean clone. These are
//! test helpers: on a failed build they panic with the compiler's output.

mod cargo_builds;
mod fixture_builds;
pub mod harness;
pub mod hostkit;
pub mod pgkit;
pub mod schema;

use std::path::{Path, PathBuf};

use gateway_plugin::Delivery;
use serde_json::{json, value::RawValue};

pub use cargo_builds::{
    build_plugins, build_plugins_release, cargo_build, cargo_build_manifest, plugin_template,
    plugin_template_abort_linked, testkit_panic_abort, Artifact, PluginPaths, Profile,
};
pub use fixture_builds::{c_example, c_fixture, compile_raw_plugin, raw_fixtures, RawFixtures};

/// The workspace root (the folder holding the root `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// A delivery as the gateway would make it: number `n` of event type `event_type`, whose envelope
/// carries `padding` extra bytes of payload.
pub fn delivery(n: u64, event_type: &str, padding: usize) -> Delivery {
    let envelope = json!({
        "schema": "2.0",
        "header": {
            "event_id": format!("ev-{n}"),
            "event_type": event_type,
            "create_time": "1700000000000",
            "token": "v-token",
            "app_id": "cli_demo",
            "tenant_key": "tenant-1",
        },
        "event": {"n": n, "padding": "x".repeat(padding)},
    });
    let event = RawValue::from_string(envelope.to_string())
        .unwrap_or_else(|e| panic!("an envelope from json! is valid JSON: {e}"));
    Delivery {
        delivery_id: format!("dl-{n}"),
        attempt: 1,
        plugin: "under-test".to_owned(),
        app: "demo".to_owned(),
        event_id: format!("ev-{n}"),
        event_type: event_type.to_owned(),
        received_at: 1_700_000_000_000 + n,
        event,
    }
}

/// The JSON the host passes to `handle` for `d`.
pub fn delivery_json(d: &Delivery) -> Vec<u8> {
    serde_json::to_vec(d).unwrap_or_else(|e| panic!("a Delivery always serialises: {e}"))
}

/// A delivery whose JSON is about `bytes` long (within a few bytes, for `bytes` ≥ ~350).
pub fn delivery_json_of_size(n: u64, event_type: &str, bytes: usize) -> Vec<u8> {
    let base = delivery_json(&delivery(n, event_type, 0)).len();
    delivery_json(&delivery(n, event_type, bytes.saturating_sub(base)))
}
