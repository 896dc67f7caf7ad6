//! Fuzz target `envelope`: [`Envelope::parse`] on arbitrary bytes must never panic, and when it
//! yields an [`Event`](lark_core::Event) the typed [`AssetsUpdateV1::from_envelope`] must not
//! panic on that event's raw text either.
//!
//! Beyond "no panic" it checks the envelope's documented promises: an event keeps the body
//! byte-exact, its id and type are non-empty, and a typed event has a non-empty account id.

#![no_main]

use lark_core::{AssetsUpdateV1, Envelope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Envelope::parse(data) {
        Ok(Envelope::Event(event)) => {
            assert_eq!(
                event.raw.as_bytes(),
                data,
                "an event keeps the body byte-exact"
            );
            assert!(!event.id.is_empty(), "event id is non-empty");
            assert!(!event.event_type.is_empty(), "event type is non-empty");
            if let Ok(typed) = AssetsUpdateV1::from_envelope(&event.raw) {
                assert!(!typed.account_id.is_empty(), "account id is non-empty");
                assert!(typed.cash.iter().all(|c| !c.currency.is_empty()));
            }
        }
        Ok(Envelope::Encrypted { .. } | Envelope::Challenge { .. }) | Err(_) => {}
    }
});
