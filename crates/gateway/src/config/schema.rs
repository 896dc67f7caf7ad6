//! `gateway config schema`: the JSON Schema of `gateway.toml`, derived from the raw config
//! types ([`super::raw`]) so it cannot drift from what the parser accepts: doc comments become
//! descriptions, `deny_unknown_fields` becomes `additionalProperties: false`. Editors (taplo /
//! Even Better TOML) use it to validate and complete the file. It describes the shape only:
//! phase two (`${VAR}`, durations, addresses, cross-references) is `gateway check`'s.

use super::raw::RawConfig;

/// The schema as JSON (draft 2020-12, as schemars emits it).
pub fn json_schema() -> serde_json::Value {
    let mut schema =
        serde_json::to_value(schemars::schema_for!(RawConfig)).unwrap_or(serde_json::Value::Null);
    if let Some(top) = schema.as_object_mut() {
        top.insert("title".into(), "gateway.toml".into());
        top.insert(
            "description".into(),
            "The config file of the Lark/Feishu event gateway (`gateway run --config \
             gateway.toml`). Relative paths resolve against the file's folder; `${VAR}` expands \
             from the environment in any string; durations are like \"30s\", \"10m\", \"1h30m\"."
                .into(),
        );
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every object the schema describes refuses unknown keys, as the parser does; the free-form
    /// plugin `config` table is the one exception.
    #[test]
    fn every_table_refuses_unknown_keys() {
        let schema = json_schema();
        let defs = schema["$defs"].as_object().expect("$defs");
        assert_eq!(schema["additionalProperties"], false);
        for (name, def) in defs {
            if def["type"] == "object" {
                assert_eq!(def["additionalProperties"], false, "{name}: {def}");
            }
        }
        assert!(defs.contains_key("RawTls"), "{defs:?}");
        let plugin_config = &defs["RawPlugin"]["properties"]["config"];
        assert!(
            plugin_config.to_string().contains("object"),
            "{plugin_config}"
        );
    }
}
