//! The Lark/Feishu event protocol, as pure functions and types.
//!
//! This crate holds everything the gateway and plugins need to *understand* what Lark sends:
//!
//! - [`crypto`]: the AES-256-CBC body encryption ([`crypto::Cipher`]) and the request signature
//!   ([`crypto::sign`], [`crypto::verify_signature`]), plus [`crypto::tokens_match`] for the
//!   verification token. Every secret comparison is constant time.
//! - [`envelope`]: raw body bytes → [`envelope::Envelope`] (encrypted, challenge, schema 2.0 or 1.0
//!   event), keeping the event byte-exact.
//! - [`money`]: exact decimal amounts ([`money::Money`]), never floating point.
//! - [`event`]: typed events, starting with [`event::AssetsUpdateV1`].
//! - [`redact`]: the envelope with its verification token replaced, for copies that leave the
//!   store (logs, the CLI).
//!
//! Invariant: this crate performs no I/O, spawns nothing, logs nothing and never panics on input.
//! It is safe to call from any thread and from plugins.

pub mod crypto;
pub mod envelope;
pub mod event;
pub mod money;
pub mod redact;

pub use crypto::{Cipher, DecryptError};
pub use envelope::{Envelope, EnvelopeError, Event, Schema};
pub use event::{AssetsUpdateV1, CashBonus, EventError};
pub use money::{Money, MoneyError};
