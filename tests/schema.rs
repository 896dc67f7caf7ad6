//! A tiny JSON Schema validator for the keywords `gateway config schema` emits (schemars,
//! draft 2020-12): `type`, `properties`, `additionalProperties`, `required`, `items`, `$ref`
//! (to `#/$defs/...`), `anyOf`/`oneOf`/`allOf`, `enum`, `const`, `minimum`/`maximum`;
//! annotations (`description`, `default`, `format`, `title`, `$schema`, `examples`) are
//! ignored. Any other keyword is an error, so this validator never silently checks less than
//! the schema says. Used by `e2e/cli_extras.rs` and by [`crate::harness::TestGateway::spawn`]
//! (every config a test starts the gateway with must satisfy the schema).

use std::path::Path;
use std::sync::OnceLock;

use serde_json::Value;

/// The schema the built gateway prints (`gateway config schema`), once per process.
pub fn gateway_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let out = std::process::Command::new(&crate::harness::binaries().gateway)
            .args(["config", "schema"])
            .env_remove("GATEWAY_CONFIG")
            .output()
            .expect("run gateway config schema");
        assert!(out.status.success(), "gateway config schema failed");
        serde_json::from_slice(&out.stdout).expect("the schema is JSON")
    })
}

/// A TOML document as the JSON value the schema describes.
pub fn toml_to_json(text: &str) -> Result<Value, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    serde_json::to_value(table).map_err(|e| e.to_string())
}

/// Validates the TOML config `text` against `schema`: every violation, each with its path.
pub fn validate_toml(schema: &Value, text: &str) -> Result<(), Vec<String>> {
    let value = toml_to_json(text).map_err(|e| vec![format!("not TOML: {e}")])?;
    validate(schema, &value)
}

/// Validates `value` against `schema` (its root holds the `$defs`).
pub fn validate(schema: &Value, value: &Value) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    check(schema, schema, value, "$", &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Panics, naming the file, unless the config at `path` satisfies the gateway's schema.
pub fn assert_config_matches_schema(path: &Path, text: &str) {
    if let Err(errors) = validate_toml(gateway_schema(), text) {
        panic!(
            "{} is accepted by the gateway but not by `gateway config schema`:\n  {}\n{text}",
            path.display(),
            errors.join("\n  ")
        );
    }
}

const ANNOTATIONS: [&str; 6] = [
    "description",
    "default",
    "format",
    "title",
    "$schema",
    "examples",
];

fn type_matches(name: &str, v: &Value) -> bool {
    match name {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        _ => false,
    }
}

fn check(root: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let obj = match schema {
        Value::Bool(true) => return,
        Value::Bool(false) => {
            errors.push(format!("{at}: not allowed"));
            return;
        }
        Value::Object(o) => o,
        other => {
            errors.push(format!("{at}: the schema is not an object: {other}"));
            return;
        }
    };
    for (k, s) in obj {
        match k.as_str() {
            k if ANNOTATIONS.contains(&k) => {}
            "$defs" => {}
            "$ref" => {
                let target = s
                    .as_str()
                    .and_then(|r| r.strip_prefix("#/$defs/"))
                    .and_then(|name| root["$defs"].get(name));
                match target {
                    Some(t) => check(root, t, v, at, errors),
                    None => errors.push(format!("{at}: unresolvable $ref {s}")),
                }
            }
            "type" => {
                let ok = match s {
                    Value::String(t) => type_matches(t, v),
                    Value::Array(ts) => ts
                        .iter()
                        .filter_map(Value::as_str)
                        .any(|t| type_matches(t, v)),
                    _ => false,
                };
                if !ok {
                    errors.push(format!("{at}: {v} is not of type {s}"));
                }
            }
            "properties" => {
                if let (Some(props), Some(fields)) = (s.as_object(), v.as_object()) {
                    for (name, sub) in props {
                        if let Some(fv) = fields.get(name) {
                            check(root, sub, fv, &format!("{at}.{name}"), errors);
                        }
                    }
                }
            }
            "additionalProperties" => {
                if let Some(fields) = v.as_object() {
                    let known = obj.get("properties").and_then(Value::as_object);
                    for (name, fv) in fields {
                        if known.is_some_and(|p| p.contains_key(name)) {
                            continue;
                        }
                        match s {
                            Value::Bool(false) => {
                                errors.push(format!("{at}: unknown key `{name}`"))
                            }
                            other => check(root, other, fv, &format!("{at}.{name}"), errors),
                        }
                    }
                }
            }
            "required" => {
                if let Some(fields) = v.as_object() {
                    for name in s.as_array().into_iter().flatten().filter_map(Value::as_str) {
                        if !fields.contains_key(name) {
                            errors.push(format!("{at}: `{name}` is required"));
                        }
                    }
                }
            }
            "items" => {
                if let Some(items) = v.as_array() {
                    for (i, item) in items.iter().enumerate() {
                        check(root, s, item, &format!("{at}[{i}]"), errors);
                    }
                }
            }
            "anyOf" | "oneOf" => {
                let mut passing = 0;
                let mut why = Vec::new();
                for sub in s.as_array().into_iter().flatten() {
                    let mut e = Vec::new();
                    check(root, sub, v, at, &mut e);
                    if e.is_empty() {
                        passing += 1;
                    }
                    why.extend(e);
                }
                let ok = if k == "anyOf" {
                    passing >= 1
                } else {
                    passing == 1
                };
                if !ok {
                    errors.push(format!(
                        "{at}: {v} matches {passing} of the {k} alternatives ({})",
                        why.join("; ")
                    ));
                }
            }
            "allOf" => {
                for sub in s.as_array().into_iter().flatten() {
                    check(root, sub, v, at, errors);
                }
            }
            "enum" => {
                if !s.as_array().is_some_and(|a| a.contains(v)) {
                    errors.push(format!("{at}: {v} is not one of {s}"));
                }
            }
            "const" => {
                if s != v {
                    errors.push(format!("{at}: {v} is not {s}"));
                }
            }
            "minimum" | "maximum" => {
                if let (Some(limit), Some(n)) = (s.as_f64(), v.as_f64()) {
                    if (k == "minimum" && n < limit) || (k == "maximum" && n > limit) {
                        errors.push(format!("{at}: {n} is out of range ({k} {limit})"));
                    }
                }
            }
            other => errors.push(format!(
                "{at}: the test validator does not know the keyword `{other}`: teach it \
                 (tests/schema.rs)"
            )),
        }
    }
}
