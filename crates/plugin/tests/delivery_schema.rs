//! `delivery.schema.json` (what non-Rust plugins read) against the `Delivery` the host serialises:
//! a delivery built the way the gateway builds its payload validates, the schema lists exactly
//! the fields the host sends, each documented, and its example is a real delivery.
//!
//! The validator is the small subset of JSON Schema 2020-12 the file uses (`type`, `required`,
//! `properties`, `additionalProperties`, `minimum`, `minLength`, and annotations); it refuses any
//! other keyword, so the schema cannot grow a rule this test silently ignores. A full validator
//! crate would add dozens of dependencies for four keywords.

use gateway_plugin::Delivery;
use serde_json::value::RawValue;
use serde_json::{json, Value};

const SCHEMA: &str = include_str!("../delivery.schema.json");
const SEED: &str = include_str!("../../../fixtures/assets_update_v1.json");

fn schema() -> Value {
    serde_json::from_str(SCHEMA).expect("delivery.schema.json is JSON")
}

/// Keywords that only annotate (never make a value invalid).
const ANNOTATIONS: &[&str] = &["$schema", "$comment", "title", "description", "examples"];

/// Every way `value` breaks `schema`, as "`path`: what" lines (empty: valid).
fn validate(schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(schema, value, "$", &mut errors);
    errors
}

fn check(schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(rules) = schema.as_object() else {
        panic!("{at}: a schema must be an object, found {schema}");
    };
    for (keyword, rule) in rules {
        match keyword.as_str() {
            k if ANNOTATIONS.contains(&k) => {}
            "type" => {
                let allowed: Vec<&str> = match rule {
                    Value::String(t) => vec![t.as_str()],
                    Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                    other => panic!("{at}: `type` must be a string or an array, found {other}"),
                };
                if !allowed.iter().any(|t| has_type(value, t)) {
                    errors.push(format!(
                        "{at}: expected {}, found {value}",
                        allowed.join(" or ")
                    ));
                }
            }
            "required" => {
                let names = rule.as_array().expect("`required` is an array");
                if let Some(obj) = value.as_object() {
                    for name in names.iter().filter_map(Value::as_str) {
                        if !obj.contains_key(name) {
                            errors.push(format!("{at}: `{name}` is required"));
                        }
                    }
                }
            }
            "properties" => {
                let props = rule.as_object().expect("`properties` is an object");
                if let Some(obj) = value.as_object() {
                    for (name, sub) in props {
                        if let Some(v) = obj.get(name) {
                            check(sub, v, &format!("{at}.{name}"), errors);
                        }
                    }
                }
            }
            "additionalProperties" => {
                let listed = rules.get("properties").and_then(Value::as_object);
                if let Some(obj) = value.as_object() {
                    for (name, v) in obj {
                        if listed.is_some_and(|p| p.contains_key(name)) {
                            continue;
                        }
                        match rule {
                            Value::Bool(true) => {}
                            Value::Bool(false) => {
                                errors.push(format!("{at}: `{name}` is not allowed"))
                            }
                            sub => check(sub, v, &format!("{at}.{name}"), errors),
                        }
                    }
                }
            }
            "minimum" => {
                let min = rule.as_f64().expect("`minimum` is a number");
                if let Some(n) = value.as_f64() {
                    if n < min {
                        errors.push(format!("{at}: {n} is less than {min}"));
                    }
                }
            }
            "minLength" => {
                let min = rule.as_u64().expect("`minLength` is an integer");
                if let Some(s) = value.as_str() {
                    if (s.chars().count() as u64) < min {
                        errors.push(format!("{at}: {s:?} is shorter than {min}"));
                    }
                }
            }
            other => panic!("{at}: keyword `{other}` is not supported by this test's validator"),
        }
    }
}

fn has_type(value: &Value, t: &str) -> bool {
    match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "number" => value.is_number(),
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        other => panic!("unknown type `{other}`"),
    }
}

/// A delivery as the gateway makes it (`crates/gateway/src/delivery/payload.rs`, whose wire
/// struct has `Delivery`'s fields in `Delivery`'s order): the stored envelope as raw JSON,
/// `delivery_id` = `<event_id>:<plugin>`. The bytes the real gateway hands over are checked
/// against the schema's field list by `tests/e2e/examples.rs` (the C example writes them out).
fn host_delivery(envelope: &str, attempt: u32) -> Value {
    let event = RawValue::from_string(envelope.to_owned()).expect("the envelope is JSON");
    let d = Delivery {
        delivery_id: "5e3702a84e847582be8db7fb73283c02:payout".into(),
        attempt,
        plugin: "payout".into(),
        app: "hire".into(),
        event_id: "5e3702a84e847582be8db7fb73283c02".into(),
        event_type: "hire.referral_account.assets_update_v1".into(),
        received_at: 1_685_431_415_123,
        event,
    };
    let bytes = serde_json::to_vec(&d).expect("a Delivery serialises");
    serde_json::from_slice(&bytes).expect("and reads back")
}

#[test]
fn a_delivery_as_the_host_builds_it_validates() {
    let schema = schema();
    for attempt in [1, 2, 12] {
        let d = host_delivery(SEED, attempt);
        assert_eq!(validate(&schema, &d), Vec::<String>::new(), "{d}");
    }
    // A schema 1.0 envelope too (no header): only the outer fields are required.
    let v1 = r#"{"uuid":"u-1","token":"t","ts":"1","type":"event_callback","event":{"type":"x"}}"#;
    assert_eq!(
        validate(&schema, &host_delivery(v1, 1)),
        Vec::<String>::new()
    );
}

#[test]
fn the_schema_lists_exactly_the_fields_the_host_sends_each_documented() {
    let schema = schema();
    let sent: Vec<String> = host_delivery(SEED, 1)
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect();
    let props = schema["properties"].as_object().expect("properties");
    let mut listed: Vec<String> = props.keys().cloned().collect();
    let mut required: Vec<String> = schema["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let mut sent_sorted = sent.clone();
    sent_sorted.sort();
    listed.sort();
    required.sort();
    assert_eq!(
        listed, sent_sorted,
        "schema properties vs the host's fields"
    );
    assert_eq!(
        required, sent_sorted,
        "every field the host sends is required"
    );
    for (name, sub) in props {
        let doc = sub["description"].as_str().unwrap_or_default();
        assert!(
            doc.len() > 20,
            "`{name}` needs a description saying what it is"
        );
    }
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
}

#[test]
fn the_schema_example_is_a_delivery_the_sdk_reads() {
    let schema = schema();
    let examples = schema["examples"].as_array().expect("examples");
    assert!(!examples.is_empty());
    for example in examples {
        assert_eq!(validate(&schema, example), Vec::<String>::new());
        let d: Delivery = serde_json::from_value(example.clone()).expect("a Delivery");
        let ev = d
            .event::<gateway_plugin::events::AssetsUpdateV1>()
            .expect("the example is an assets update");
        assert_eq!(ev.cash[0].amount.to_string(), "100.00");
    }
}

#[test]
fn the_validator_catches_what_the_schema_forbids() {
    let schema = schema();
    let good = host_delivery(SEED, 1);
    // (field, its new value or `None` to remove it, an error expected).
    let cases = [
        ("event_id", None, "$: `event_id` is required"),
        ("attempt", Some(json!(0)), "$.attempt: 0 is less than 1"),
        ("attempt", Some(json!("1")), "$.attempt: expected integer"),
        (
            "received_at",
            Some(json!(1.5)),
            "$.received_at: expected integer",
        ),
        (
            "plugin",
            Some(json!("")),
            "$.plugin: \"\" is shorter than 1",
        ),
        ("event", Some(json!("{}")), "$.event: expected object"),
        (
            "event",
            Some(json!({"header": {"event_id": 7}})),
            "$.event.header.event_id: expected string",
        ),
    ];
    for (field, value, needle) in cases {
        let mut d = good.clone();
        let obj = d.as_object_mut().expect("object");
        match value {
            Some(v) => obj.insert(field.to_owned(), v),
            None => obj.remove(field),
        };
        let errors = validate(&schema, &d);
        assert!(
            errors.iter().any(|e| e.contains(needle)),
            "{needle}: {errors:?}"
        );
    }
    // Open to fields a later ABI 1.x may append.
    let mut more = good.clone();
    more.as_object_mut()
        .expect("object")
        .insert("added_in_1_2".into(), json!(true));
    assert_eq!(validate(&schema, &more), Vec::<String>::new());
    let closed = json!({"properties": {"a": {}}, "additionalProperties": false});
    assert_eq!(
        validate(&closed, &json!({"a": 1, "b": 2})),
        ["$: `b` is not allowed"]
    );
}
