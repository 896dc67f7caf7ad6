//! The request body envelope (spec §1): raw bytes → [`Envelope`].
//!
//! A body is exactly one of: an encrypted wrapper (`{"encrypt": "..."}`), the `url_verification`
//! challenge, a schema 2.0 event or a schema 1.0 event. Classification looks only at the top-level
//! keys and the few header fields the gateway needs; everything else, including unknown fields Lark
//! may add, is tolerated and kept. An [`Event`] keeps the body text byte-exact so the gateway stores
//! and forwards exactly what Lark sent.
//!
//! Every malformed shape gets its own [`EnvelopeError`]; nothing here panics on any input.

use serde::Deserialize;
use serde_json::value::RawValue;

/// What a body turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope {
    /// `{"encrypt": "<base64>"}`: decrypt with the app's cipher, then parse the plaintext again.
    Encrypted { encrypt: String },
    /// The URL verification handshake; answer `{"challenge": <challenge>}`.
    Challenge {
        challenge: String,
        token: Option<String>,
    },
    /// A schema 2.0 or 1.0 event callback.
    Event(Event),
}

/// Which envelope schema an event used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// `"schema": "2.0"` with a `header` object.
    V2,
    /// The legacy `"type": "event_callback"` shape with a top-level `uuid`.
    V1,
}

impl Schema {
    pub fn as_str(self) -> &'static str {
        match self {
            Schema::V2 => "2.0",
            Schema::V1 => "1.0",
        }
    }
}

/// A parsed event callback: the fields the gateway routes and deduplicates on, plus the raw text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub schema: Schema,
    /// `header.event_id` (2.0) or `uuid` (1.0): the deduplication key.
    pub id: String,
    /// `header.event_type` (2.0) or `event.type` (1.0).
    pub event_type: String,
    /// `header.token` (2.0) or top-level `token` (1.0), if present.
    pub token: Option<String>,
    /// `header.app_id` (2.0) or `event.app_id` (1.0), if present.
    pub app_id: Option<String>,
    /// `header.tenant_key` (2.0) or `event.tenant_key` (1.0), if present.
    pub tenant_key: Option<String>,
    /// `header.create_time` (2.0, ms) or `ts` (1.0, seconds): an opaque decimal string.
    pub create_time: Option<String>,
    /// The whole (decrypted) body exactly as received.
    pub raw: Box<str>,
}

/// Why a body is not a well-formed envelope. Rendered into the 400 response body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("body is not UTF-8")]
    NotUtf8,
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("body is not a JSON object")]
    NotObject,
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("field `{field}` must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("unsupported schema {0:?} (expected \"2.0\")")]
    UnsupportedSchema(String),
    #[error("unsupported 1.0 body type {0:?} (expected \"event_callback\")")]
    UnsupportedType(String),
    #[error("an encrypted body (`encrypt`) must not carry a plain body's fields too (`schema`, `header`, `type`, `challenge`, `uuid` or `event`)")]
    MixedEncrypted,
    /// A url_verification body carrying an event too (`header`, `event`, `uuid`): answered as a
    /// challenge, that event would get 200 unstored.
    #[error("a url_verification challenge must not carry an event (`header`, `event` or `uuid`)")]
    MixedChallenge,
    #[error("body is neither encrypted, a url_verification challenge, nor a schema 2.0/1.0 event")]
    Unrecognised,
}

/// The top-level keys that classify a body. Values stay raw until we know which shape applies.
#[derive(Deserialize)]
struct Top<'a> {
    #[serde(borrow)]
    encrypt: Option<&'a RawValue>,
    #[serde(borrow)]
    schema: Option<&'a RawValue>,
    #[serde(borrow)]
    header: Option<&'a RawValue>,
    #[serde(borrow, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    challenge: Option<&'a RawValue>,
    #[serde(borrow)]
    token: Option<&'a RawValue>,
    #[serde(borrow)]
    uuid: Option<&'a RawValue>,
    #[serde(borrow)]
    ts: Option<&'a RawValue>,
    #[serde(borrow)]
    event: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct V2Header<'a> {
    #[serde(borrow)]
    event_id: Option<&'a RawValue>,
    #[serde(borrow)]
    event_type: Option<&'a RawValue>,
    #[serde(borrow)]
    create_time: Option<&'a RawValue>,
    #[serde(borrow)]
    token: Option<&'a RawValue>,
    #[serde(borrow)]
    app_id: Option<&'a RawValue>,
    #[serde(borrow)]
    tenant_key: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct V1Event<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    app_id: Option<&'a RawValue>,
    #[serde(borrow)]
    tenant_key: Option<&'a RawValue>,
}

impl Envelope {
    /// Classifies and validates a body (spec §1 table).
    pub fn parse(body: &[u8]) -> Result<Envelope, EnvelopeError> {
        let text = std::str::from_utf8(body).map_err(|_| EnvelopeError::NotUtf8)?;
        let trimmed = text.trim_start();
        if !trimmed.starts_with('{') {
            // Distinguish "valid JSON but not an object" from garbage for a clearer message.
            return match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Ok(_) => Err(EnvelopeError::NotObject),
                Err(e) => Err(EnvelopeError::Json(e.to_string())),
            };
        }
        let top: Top<'_> =
            serde_json::from_str(text).map_err(|e| EnvelopeError::Json(e.to_string()))?;

        if let Some(encrypt) = top.encrypt {
            if top.schema.is_some()
                || top.header.is_some()
                || top.kind.is_some()
                || top.challenge.is_some()
                || top.uuid.is_some()
                || top.event.is_some()
            {
                return Err(EnvelopeError::MixedEncrypted);
            }
            let encrypt = string(encrypt, "encrypt")?;
            return Ok(Envelope::Encrypted { encrypt });
        }

        // A 2.0 body has no top-level `type` (spec §1): one that is not a string is an unknown
        // extra field there, tolerated; a challenge's or a 1.0 body's must be a string.
        let kind = match top.kind.map(|k| string(k, "type")) {
            Some(Err(_)) if top.schema.is_some() => None,
            kind => kind.transpose()?,
        };
        if kind.as_deref() == Some("url_verification") {
            if top.header.is_some() || top.event.is_some() || top.uuid.is_some() {
                return Err(EnvelopeError::MixedChallenge);
            }
            let challenge = string(
                top.challenge.ok_or(EnvelopeError::Missing("challenge"))?,
                "challenge",
            )?;
            let token = opt_string(top.token, "token")?;
            return Ok(Envelope::Challenge { challenge, token });
        }

        if let Some(schema) = top.schema {
            let schema = string(schema, "schema")?;
            if schema != "2.0" {
                return Err(EnvelopeError::UnsupportedSchema(schema));
            }
            let header = top.header.ok_or(EnvelopeError::Missing("header"))?;
            let header: V2Header<'_> = serde_json::from_str(header.get())
                .map_err(|e| inner_object(header, "header", e))?;
            let id = string(
                header
                    .event_id
                    .ok_or(EnvelopeError::Missing("header.event_id"))?,
                "header.event_id",
            )?;
            let event_type = string(
                header
                    .event_type
                    .ok_or(EnvelopeError::Missing("header.event_type"))?,
                "header.event_type",
            )?;
            return Ok(Envelope::Event(Event {
                schema: Schema::V2,
                id: non_empty(id, "header.event_id")?,
                event_type: non_empty(event_type, "header.event_type")?,
                token: opt_string(header.token, "header.token")?,
                app_id: opt_string(header.app_id, "header.app_id")?,
                tenant_key: opt_string(header.tenant_key, "header.tenant_key")?,
                create_time: opt_string(header.create_time, "header.create_time")?,
                raw: text.into(),
            }));
        }

        if top.uuid.is_some() || kind.as_deref() == Some("event_callback") {
            match kind.as_deref() {
                Some("event_callback") => {}
                Some(other) => return Err(EnvelopeError::UnsupportedType(other.to_owned())),
                None => return Err(EnvelopeError::Missing("type")),
            }
            let id = string(top.uuid.ok_or(EnvelopeError::Missing("uuid"))?, "uuid")?;
            let event = top.event.ok_or(EnvelopeError::Missing("event"))?;
            let event: V1Event<'_> =
                serde_json::from_str(event.get()).map_err(|e| inner_object(event, "event", e))?;
            let event_type = string(
                event.kind.ok_or(EnvelopeError::Missing("event.type"))?,
                "event.type",
            )?;
            // `ts` is documented as a string; tolerate a bare number by keeping its text.
            let create_time = match top.ts {
                Some(ts) if ts.get().starts_with('"') => Some(string(ts, "ts")?),
                Some(ts) if ts.get() == "null" => None,
                Some(ts) if ts.get().bytes().all(|b| b.is_ascii_digit() || b == b'.') => {
                    Some(ts.get().to_owned())
                }
                Some(_) => {
                    return Err(EnvelopeError::WrongType {
                        field: "ts",
                        expected: "a decimal string or number",
                    })
                }
                None => None,
            };
            return Ok(Envelope::Event(Event {
                schema: Schema::V1,
                id: non_empty(id, "uuid")?,
                event_type: non_empty(event_type, "event.type")?,
                token: opt_string(top.token, "token")?,
                app_id: opt_string(event.app_id, "event.app_id")?,
                tenant_key: opt_string(event.tenant_key, "event.tenant_key")?,
                create_time,
                raw: text.into(),
            }));
        }

        Err(EnvelopeError::Unrecognised)
    }
}

fn string(raw: &RawValue, field: &'static str) -> Result<String, EnvelopeError> {
    serde_json::from_str::<String>(raw.get()).map_err(|_| EnvelopeError::WrongType {
        field,
        expected: "a string",
    })
}

/// Why an inner object (`header`, 1.0's `event`) could not be read: not an object at all, or
/// an object the reader refuses (a key given twice: the serde message says which).
fn inner_object(raw: &RawValue, field: &'static str, e: serde_json::Error) -> EnvelopeError {
    if raw.get().starts_with('{') {
        EnvelopeError::Json(format!("`{field}`: {e}"))
    } else {
        EnvelopeError::WrongType {
            field,
            expected: "an object",
        }
    }
}

fn opt_string(
    raw: Option<&RawValue>,
    field: &'static str,
) -> Result<Option<String>, EnvelopeError> {
    match raw {
        None => Ok(None),
        Some(r) if r.get() == "null" => Ok(None),
        Some(r) => string(r, field).map(Some),
    }
}

/// The longest event id or type taken, in bytes (Lark's ids are 32 characters, its types a few
/// dozen). PostgreSQL refuses an index entry over about 2.7 KB once compressed, and with it the
/// whole group commit the event was part of: one oversized id made 503s for its batch-mates,
/// again at every re-send.
pub const MAX_ID_BYTES: usize = 256;

/// An id or type: a non-empty string of at most [`MAX_ID_BYTES`] without a NUL (`\u0000`
/// decodes to one, and no store's text column may hold it: PostgreSQL refuses the whole write).
fn non_empty(value: String, field: &'static str) -> Result<String, EnvelopeError> {
    if value.is_empty() || value.contains('\0') || value.len() > MAX_ID_BYTES {
        Err(EnvelopeError::WrongType {
            field,
            expected: "a non-empty string of at most 256 bytes without NUL characters",
        })
    } else {
        Ok(value)
    }
}

#[cfg(test)]
mod tests;
