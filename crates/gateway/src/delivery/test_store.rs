//! What the delivery engine's unit tests share: an embedded store in a temp folder (as a
//! minimal config opens it), an event stored with one delivery, and a generation-0 guard.

use std::sync::Arc;

use crate::config::Config;
use crate::store::sqlite::now_ms;
use crate::store::{Accepted, NewEvent, Store};

/// The embedded store of a config with one app and nothing else, in `dir`.
pub(super) async fn store(dir: &std::path::Path) -> Arc<dyn Store> {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, "[[apps]]\nname = \"a\"\npath = \"/a\"\n").expect("config");
    let config = Config::load(&path).expect("valid");
    crate::store::open(&config.store, false)
        .await
        .expect("store")
}

/// Stores event `id` (received now, body `{}`) with one delivery, to `plugin`: its key.
pub(super) async fn accept(store: &Arc<dyn Store>, id: &str, plugin: &str) -> i64 {
    let event = NewEvent {
        id: id.into(),
        app: "a".into(),
        event_type: "t".into(),
        schema: "2.0",
        received_at_ms: now_ms(),
        body: Arc::from("{}"),
        plugins: vec![plugin.into()],
    };
    match store.accept(event).await.expect("accept") {
        Accepted::New { deliveries } => deliveries[0].0,
        Accepted::Duplicate => panic!("{id} is a duplicate"),
    }
}

/// The guard of generation 0 at `attempts` (no mark asked, no dead letter replaced).
pub(super) use crate::store::first_call_guard as at;
