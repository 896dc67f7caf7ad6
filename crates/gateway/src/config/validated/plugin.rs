//! `[[plugins]]`: one plugin instance to create — its library (a path, or a bare name looked up
//! in `[libraries] dir`), the library's pinned SHA-256, its own `config` table (TOML turned into
//! JSON, `${VAR}`s expanded in every string), its concurrency and where it runs ([`Isolation`]).
//! Looking a name up checks which files exist; nothing is opened or hashed here.

use std::env::consts::{DLL_PREFIX, DLL_SUFFIX};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    env, syntax_message, PluginSpec, Validator, DEFAULT_INIT_TIMEOUT, DEFAULT_MAX_CONCURRENCY,
    MAX_PLUGIN_CALLS,
};
use crate::config::raw::RawPlugin;
use crate::config::ConfigError;

/// A plugin's config written in a file of its own (`gateway plugins call --config FILE`), as the
/// JSON its `init` gets. A `.toml` file holds what a `[[plugins]] config` table would (its
/// keys at the top level), `${VAR}`s expanded from the environment as in the gateway's config;
/// a `.json` file holds the JSON object itself, passed as written.
pub fn load_plugin_config(path: &Path) -> Result<serde_json::Value, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    let syntax = |message: String| ConfigError::Syntax {
        path: shown.clone(),
        message,
    };
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) if v.is_object() => Ok(v),
            Ok(_) => Err(syntax(
                "must hold a JSON object (the plugin's config)".into(),
            )),
            Err(e) => Err(syntax(e.to_string())),
        },
        Some("toml") => {
            let table: toml::Table =
                toml::from_str(&text).map_err(|e| syntax(syntax_message(&text, &e)))?;
            let (_, dir) = super::locate(path)?;
            let mut v = Validator::new(&dir, &env::from_process);
            let config = v.toml_to_json("config", toml::Value::Table(table));
            if v.problems.is_empty() {
                Ok(config)
            } else {
                Err(ConfigError::Invalid {
                    path: shown,
                    problems: v.problems,
                })
            }
        }
        _ => Err(syntax(
            "a plugin config file must end in .toml (the keys of a [[plugins]] config table) \
             or .json (the JSON object init gets)"
                .into(),
        )),
    }
}

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
    /// An app's or a plugin instance's name: stored with every event or delivery, shown in logs,
    /// metrics labels and the console, so neither empty nor holding a control character (a NUL
    /// cannot be stored in PostgreSQL at all: every event would fail), `"` or `\\` (the metrics
    /// library writes label values as they are: one such name broke every scrape).
    pub(super) fn name(&mut self, at: &str, name: &str) {
        if name.is_empty() {
            self.problem(at, "must not be empty");
        } else if let Some(c) = name.chars().find(|c| c.is_control()) {
            self.problem(
                at,
                format!("must not hold a control character ({:?} found)", c),
            );
        } else if let Some(c) = name.chars().find(|c| matches!(c, '"' | '\\')) {
            self.problem(
                at,
                format!("must not hold {c:?}: names are metrics label values"),
            );
        }
    }

    /// The instances' `max_concurrency` together: at most [`MAX_PLUGIN_CALLS`], reported at the
    /// first entry whose limit takes the sum past it.
    pub(super) fn plugin_calls(&mut self, plugins: &[PluginSpec]) {
        let mut sum = 0usize;
        for (i, p) in plugins.iter().enumerate() {
            let before = sum;
            sum += p.max_concurrency;
            if before <= MAX_PLUGIN_CALLS && sum > MAX_PLUGIN_CALLS {
                let total: usize = plugins.iter().map(|p| p.max_concurrency).sum();
                self.problem(
                    &format!("plugins[{i}].max_concurrency"),
                    format!(
                        "the [[plugins]] entries' max_concurrency add up to {total}, more than \
                         {MAX_PLUGIN_CALLS}: every call holds one of the gateway's threads until \
                         it returns (a hung one too), which the store's reads and the other \
                         plugins' calls share"
                    ),
                );
            }
        }
    }

    pub(super) fn plugin(
        &mut self,
        i: usize,
        p: &RawPlugin,
        library_dir: Option<&Path>,
    ) -> PluginSpec {
        let at = |k: &str| format!("plugins[{i}].{k}");
        let name = self.expand(&at("name"), &p.name);
        self.name(&at("name"), &name);
        let library = self.library(&at("library"), &p.library, library_dir);
        let sha256 = p.sha256.as_deref().and_then(|text| {
            let text = self.expand(&at("sha256"), text);
            match parse_sha256(&text) {
                Ok(hex) => Some(hex),
                Err(e) => {
                    self.problem(&at("sha256"), e);
                    None
                }
            }
        });
        let table = p.config.clone().unwrap_or_default();
        let config = self.toml_to_json(&at("config"), toml::Value::Table(table));
        let max_concurrency = match p.max_concurrency {
            Some(0) => {
                self.problem(&at("max_concurrency"), "must be at least 1");
                1
            }
            Some(n) if n as usize > MAX_PLUGIN_CALLS => {
                self.problem(
                    &at("max_concurrency"),
                    format!("must be at most {MAX_PLUGIN_CALLS}"),
                );
                MAX_PLUGIN_CALLS
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
        let init_timeout = self.duration_at_least(
            &at("init_timeout"),
            p.init_timeout.as_deref(),
            DEFAULT_INIT_TIMEOUT,
            Duration::from_secs(1),
            "must be at least 1s",
        );
        PluginSpec {
            name,
            library,
            sha256,
            config,
            max_concurrency,
            isolation,
            init_timeout,
        }
    }

    /// `library`: a bare name (no `/`, no `.so`) with `[libraries] dir` set is
    /// `<dir>/lib<name>.so` or else `<dir>/<name>.so`, whichever exists first; anything else is a
    /// path, relative to the config's folder.
    fn library(&mut self, at: &str, text: &str, dir: Option<&Path>) -> PathBuf {
        let text = self.expand(at, text);
        match dir.filter(|_| is_bare_name(&text)) {
            Some(dir) => {
                let tried = candidates(dir, &text);
                match tried.iter().find(|p| p.is_file()) {
                    Some(found) => found.clone(),
                    None => {
                        let list: Vec<String> =
                            tried.iter().map(|p| p.display().to_string()).collect();
                        self.problem(
                            at,
                            format!(
                                "no plugin library {text:?} in [libraries] dir {}: tried {} \
                                 (`gateway plugins list` shows what the folder holds)",
                                dir.display(),
                                list.join(" and ")
                            ),
                        );
                        tried[0].clone()
                    }
                }
            }
            None => {
                let p = PathBuf::from(text);
                if p.is_absolute() {
                    p
                } else {
                    self.dir.join(p)
                }
            }
        }
    }

    /// Converts a plugin's TOML config to JSON, expanding `${VAR}` in every string.
    fn toml_to_json(&mut self, at: &str, value: toml::Value) -> serde_json::Value {
        use serde_json::Value as J;
        match value {
            toml::Value::String(s) => J::String(self.expand(at, &s)),
            toml::Value::Integer(n) => J::from(n),
            // JSON has no NaN or infinity: refused rather than handed over as `null`.
            toml::Value::Float(f) => match serde_json::Number::from_f64(f) {
                Some(n) => J::Number(n),
                None => {
                    self.problem(
                        at,
                        format!("{f} has no JSON form (a plugin's config is JSON)"),
                    );
                    J::Null
                }
            },
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

/// A `library` that names a library rather than giving its path: no `/` and no `.so`.
fn is_bare_name(text: &str) -> bool {
    !text.is_empty() && !text.contains('/') && !text.ends_with(DLL_SUFFIX)
}

/// Where a bare name may live in `dir`, in the order tried.
fn candidates(dir: &Path, name: &str) -> [PathBuf; 2] {
    [
        dir.join(format!("{DLL_PREFIX}{name}{DLL_SUFFIX}")),
        dir.join(format!("{name}{DLL_SUFFIX}")),
    ]
}

/// A pinned SHA-256: 64 hex digits (either case) → lowercase.
fn parse_sha256(text: &str) -> Result<String, String> {
    let how = "must be the library's SHA-256 as 64 hexadecimal digits (what `sha256sum FILE` or \
               `gateway plugins inspect FILE` prints)";
    if let Some(bad) = text.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(format!("{how}; {bad:?} is not a hexadecimal digit"));
    }
    if text.len() != 64 {
        return Err(format!("{how}; got {} digits", text.len()));
    }
    Ok(text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::{is_bare_name, parse_sha256};

    #[test]
    fn names_and_paths() {
        for name in ["logger", "liblogger", "payout-2", "x.y"] {
            assert!(is_bare_name(name), "{name}");
        }
        for path in ["", "lib/liblogger.so", "./logger", "liblogger.so", "/opt/x"] {
            assert!(!is_bare_name(path), "{path}");
        }
    }

    #[test]
    fn sha256_pins() {
        let upper = "AB".repeat(32);
        assert_eq!(parse_sha256(&upper), Ok("ab".repeat(32)));
        let short = parse_sha256("abc").expect_err("short");
        assert!(
            short.contains("64 hexadecimal digits") && short.contains("got 3"),
            "{short}"
        );
        let bad = parse_sha256(&format!("sha256:{}", "a".repeat(57))).expect_err("prefix");
        assert!(bad.contains("'s' is not a hexadecimal digit"), "{bad}");
    }
}
