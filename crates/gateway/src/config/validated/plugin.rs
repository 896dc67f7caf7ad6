//! `[[plugins]]`: one plugin instance to create — its library, its own `config` table (TOML
//! turned into JSON, `${VAR}`s expanded in every string), its concurrency and where it runs
//! ([`Isolation`]).

use super::{PluginSpec, Validator, DEFAULT_MAX_CONCURRENCY};
use crate::config::raw::RawPlugin;

/// Where a plugin instance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// In the gateway's process: fastest; a crash of native code ends the gateway.
    None,
    /// In a child process of its own: a crash ends only the child.
    Process,
}

impl Isolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::None => "none",
            Isolation::Process => "process",
        }
    }
}

impl Validator<'_> {
    pub(super) fn plugin(&mut self, i: usize, p: &RawPlugin) -> PluginSpec {
        let at = |k: &str| format!("plugins[{i}].{k}");
        let name = self.expand(&at("name"), &p.name);
        if name.is_empty() {
            self.problem(&at("name"), "must not be empty");
        }
        let library = self.path(&at("library"), &p.library);
        let table = p.config.clone().unwrap_or_default();
        let config = self.toml_to_json(&at("config"), toml::Value::Table(table));
        let max_concurrency = match p.max_concurrency {
            Some(0) => {
                self.problem(&at("max_concurrency"), "must be at least 1");
                1
            }
            Some(n) => n as usize,
            None => DEFAULT_MAX_CONCURRENCY,
        };
        let isolation = match p
            .isolation
            .as_deref()
            .map(|t| self.expand(&at("isolation"), t))
        {
            None => Isolation::None,
            Some(t) if t == "none" => Isolation::None,
            Some(t) if t == "process" => Isolation::Process,
            Some(t) => {
                self.problem(
                    &at("isolation"),
                    format!("{t:?} is neither \"none\" nor \"process\""),
                );
                Isolation::None
            }
        };
        PluginSpec {
            name,
            library,
            config,
            max_concurrency,
            isolation,
        }
    }

    /// Converts a plugin's TOML config to JSON, expanding `${VAR}` in every string.
    fn toml_to_json(&mut self, at: &str, value: toml::Value) -> serde_json::Value {
        use serde_json::Value as J;
        match value {
            toml::Value::String(s) => J::String(self.expand(at, &s)),
            toml::Value::Integer(n) => J::from(n),
            toml::Value::Float(f) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
            toml::Value::Boolean(b) => J::Bool(b),
            toml::Value::Datetime(d) => J::String(d.to_string()),
            toml::Value::Array(items) => J::Array(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| self.toml_to_json(&format!("{at}[{i}]"), v))
                    .collect(),
            ),
            toml::Value::Table(t) => J::Object(
                t.into_iter()
                    .map(|(k, v)| {
                        let value = self.toml_to_json(&format!("{at}.{k}"), v);
                        (k, value)
                    })
                    .collect(),
            ),
        }
    }
}
