//! Typed views of event bodies. Each type parses from the full envelope text (`Event::raw`), so a
//! plugin that receives the raw event can opt into the typed form.

mod assets_update;

pub use assets_update::{AssetsUpdateV1, CashBonus};

/// Why an event body does not have the documented shape of its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("event body is not valid JSON of the expected shape: {0}")]
    Shape(String),
    #[error("event is of type {found:?}, expected {expected:?}")]
    WrongType {
        expected: &'static str,
        found: String,
    },
    #[error("`{field}`: {reason}")]
    Field { field: String, reason: String },
}
