//! Per-plugin health for `/status`: when a delivery last succeeded, how many outcomes in a row
//! were failures (a retry or a dead letter), and the last failure. Updated only by outcomes the
//! store took.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;

use crate::store::{sqlite::now_ms, Finish};

/// One plugin instance's health.
#[derive(Debug, Default, Clone, Serialize)]
pub struct PluginHealth {
    pub last_success_ms: Option<i64>,
    pub consecutive_failures: u64,
    pub last_failure_ms: Option<i64>,
    pub last_error: Option<String>,
}

/// Every plugin's health, by instance name.
#[derive(Debug, Default)]
pub struct HealthBook(Mutex<HashMap<String, PluginHealth>>);

impl HealthBook {
    /// Notes an outcome the store took.
    pub fn record(&self, plugin: &str, finish: &Finish) {
        let Ok(mut book) = self.0.lock() else {
            return;
        };
        let h = book.entry(plugin.to_owned()).or_default();
        match finish {
            Finish::Done => {
                h.last_success_ms = Some(now_ms());
                h.consecutive_failures = 0;
            }
            Finish::Retry { error, .. } | Finish::Dead { error } => {
                h.consecutive_failures += 1;
                h.last_failure_ms = Some(now_ms());
                h.last_error = Some(error.clone());
            }
        }
    }

    /// The health of `plugin` (all empty when it has had no outcome yet).
    pub fn get(&self, plugin: &str) -> PluginHealth {
        self.0
            .lock()
            .ok()
            .and_then(|b| b.get(plugin).cloned())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_count_until_a_success() {
        let book = HealthBook::default();
        let retry = Finish::Retry {
            next_at_ms: 0,
            error: "503".into(),
        };
        book.record("p", &retry);
        book.record("p", &Finish::Dead { error: "no".into() });
        let h = book.get("p");
        assert_eq!(h.consecutive_failures, 2);
        assert_eq!(h.last_error.as_deref(), Some("no"));
        assert!(h.last_success_ms.is_none());
        book.record("p", &Finish::Done);
        let h = book.get("p");
        assert_eq!(h.consecutive_failures, 0);
        assert!(h.last_success_ms.is_some());
        assert_eq!(book.get("other").consecutive_failures, 0);
    }
}
