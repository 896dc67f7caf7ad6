//! The delivery JSON handed to a plugin's `handle` (the fields of `gateway_plugin::Delivery`):
//! built here and only here, so the engine and `gateway plugins call` hand plugins the same
//! bytes. Pure: no I/O, no store.

use serde::de::IgnoredAny;
use serde::Serialize;

use super::delivery_id;

/// One delivery of one event to one plugin instance.
#[derive(Debug, Clone, Copy)]
pub struct Payload<'a> {
    /// `header.event_id` (2.0) or `uuid` (1.0).
    pub event_id: &'a str,
    /// The plugin instance name (`[[plugins]] name`); with the event id, it makes the stable
    /// `delivery_id`.
    pub plugin: &'a str,
    /// The app (`[[apps]] name`) the event arrived on.
    pub app: &'a str,
    pub event_type: &'a str,
    /// When the event was durably accepted, Unix milliseconds.
    pub received_at_ms: i64,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The (decrypted) envelope as stored, byte-exact.
    pub body: &'a str,
    /// `body` is known to be JSON (parsed by this process); otherwise it is checked here.
    pub parsed: bool,
}

/// The wire shape but for the envelope, which follows as `"event"`, its text as is (field order
/// is the SDK's `Delivery`).
#[derive(Serialize)]
struct Head<'a> {
    delivery_id: String,
    attempt: u32,
    plugin: &'a str,
    app: &'a str,
    event_id: &'a str,
    event_type: &'a str,
    received_at: i64,
}

impl Payload<'_> {
    /// The JSON bytes; an error (said as a dead letter's reason) when the body is not JSON.
    pub fn to_json(self) -> Result<Vec<u8>, String> {
        if !self.parsed {
            serde_json::from_str::<IgnoredAny>(self.body)
                .map_err(|e| format!("stored event is not JSON: {e}"))?;
        }
        // Sized once: the envelope and about 200 bytes of fields (to_vec would start at 128
        // bytes and grow, copying, several times).
        let mut out = Vec::with_capacity(self.body.len() + 256);
        serde_json::to_writer(
            &mut out,
            &Head {
                delivery_id: delivery_id(self.event_id, self.plugin),
                attempt: self.attempt,
                plugin: self.plugin,
                app: self.app,
                event_id: self.event_id,
                event_type: self.event_type,
                received_at: self.received_at_ms,
            },
        )
        .map_err(|e| format!("cannot build delivery: {e}"))?;
        // `{...}` becomes `{...,"event":<body>}`.
        if out.pop() != Some(b'}') {
            return Err("cannot build delivery: not an object".into());
        }
        out.extend_from_slice(b",\"event\":");
        out.extend_from_slice(self.body.as_bytes());
        out.push(b'}');
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::Payload;

    fn payload(body: &str, parsed: bool) -> Payload<'_> {
        Payload {
            event_id: "e1",
            plugin: "audit",
            app: "demo",
            event_type: "t",
            received_at_ms: 7,
            attempt: 2,
            body,
            parsed,
        }
    }

    #[test]
    fn the_delivery_keeps_the_envelope_byte_exact_and_names_the_delivery() {
        let body = r#"{"schema":"2.0", "header":{"event_id":"e1"},"event":{"amount":1.10}}"#;
        for parsed in [true, false] {
            let json = payload(body, parsed).to_json().expect("builds");
            let text = String::from_utf8(json).expect("utf-8");
            assert_eq!(
                text,
                format!(
                    r#"{{"delivery_id":"e1:audit","attempt":2,"plugin":"audit","app":"demo","event_id":"e1","event_type":"t","received_at":7,"event":{body}}}"#
                )
            );
            let d: gateway_plugin::Delivery = serde_json::from_str(&text).expect("an SDK Delivery");
            assert_eq!(d.event_json(), body);
        }
    }

    #[test]
    fn a_stored_body_that_is_not_json_is_an_error() {
        for body in ["{not json", "{} {}", ""] {
            let err = payload(body, false).to_json().expect_err("refused");
            assert!(err.starts_with("stored event is not JSON"), "{err}");
        }
    }
}
