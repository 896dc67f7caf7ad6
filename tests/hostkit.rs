//! Helpers for the plugin host tests (`e2e/plugin_calls.rs`, `e2e/plugin_host.rs`): open and
//! instantiate libraries with log sinks that drop or keep lines, call with a small delivery, read
//! and read JSON Lines files.

use std::path::Path;
use std::sync::{Arc, Mutex};

use gateway_plugin::host::{CallOutcome, Instance, Library, LogSink};
use gateway_plugin::Level;

use crate::{delivery, delivery_json};

/// A log sink that drops everything.
pub fn quiet() -> LogSink {
    Arc::new(|_: &str, _: Level, _: &str| {})
}

/// Log lines kept by [`recording`]: `(instance, level, message)`.
pub type Kept = Arc<Mutex<Vec<(String, Level, String)>>>;

/// A log sink that keeps every line.
pub fn recording() -> (LogSink, Kept) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let keep = lines.clone();
    let sink: LogSink = Arc::new(move |instance: &str, level: Level, message: &str| {
        keep.lock()
            .expect("log lock")
            .push((instance.to_owned(), level, message.to_owned()));
    });
    (sink, lines)
}

pub fn open(path: &Path) -> Library {
    Library::open(path).unwrap_or_else(|e| panic!("{} should load: {e}", path.display()))
}

pub fn instantiate(lib: &Library, name: &str, config: serde_json::Value, dir: &Path) -> Instance {
    lib.instantiate(name, &config, dir, quiet())
        .unwrap_or_else(|e| panic!("instance {name} should start: {e}"))
}

pub fn call(instance: &Instance, n: u64, event_type: &str) -> CallOutcome {
    instance.handle(&delivery_json(&delivery(n, event_type, 16)))
}

pub fn read_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("line {l:?} is not JSON: {e}")))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The logger plugin
// ---------------------------------------------------------------------------------------------
