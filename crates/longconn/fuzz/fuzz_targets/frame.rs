//! Fuzz target `frame`: [`Frame::decode_bytes`] on arbitrary bytes (one binary WebSocket
//! message), and what the session does with a decoded frame.
//!
//! Checked:
//!
//! - decoding never panics, and allocates at most a small multiple of the input plus room for
//!   `MAX_HEADERS` headers (counted by the target's allocator: the peak of live bytes during
//!   the decode); a frame with more headers is refused;
//! - a decoded frame encodes and decodes back to itself;
//! - the accessors the session uses (`method`, `message_type`, `header`, `header_u32`,
//!   `ack_code`) never panic, and a pong's payload parses as a ClientConfig update or not at
//!   all, without panicking;
//! - the ack built on it (`into_ack`) keeps every header, adds `biz_rt`, carries the code, and
//!   survives the wire (unless `biz_rt` took it past `MAX_HEADERS`: then it is refused).

#![no_main]

use std::mem::size_of;

use lark_longconn::frame::{headers, MAX_HEADERS};
use lark_longconn::{ClientConfigUpdate, Frame, Header};
use libfuzzer_sys::fuzz_target;
use longconn_fuzz::Counting;
use prost::Message;

#[global_allocator]
static ALLOC: Counting = Counting;

/// What decoding may allocate beyond a multiple of the input: the `Vec<Header>` of at most
/// `MAX_HEADERS` headers (twice, while it grows), and the error's text.
const DECODE_SLACK: usize = 2 * MAX_HEADERS * size_of::<Header>() + 8 * 1024;
/// Decoding copies the input once (payload, header strings); a growing vector at most doubles.
const DECODE_FACTOR: usize = 4;

fuzz_target!(|data: &[u8]| {
    let base = longconn_fuzz::live();
    longconn_fuzz::reset_peak();
    let decoded = Frame::decode_bytes(data);
    let used = longconn_fuzz::peak() - base;
    assert!(
        used <= DECODE_FACTOR * data.len() + DECODE_SLACK,
        "decoding {} bytes allocated {used} bytes at its peak",
        data.len()
    );
    let Ok(frame) = decoded else {
        return;
    };
    assert!(frame.headers.len() <= MAX_HEADERS);

    let again = Frame::decode_bytes(&frame.encode_to_vec()).expect("an encoded frame decodes");
    assert_eq!(again, frame, "encode/decode round trip");

    let _ = (frame.method(), frame.message_type(), frame.ack_code());
    for name in [
        headers::TYPE,
        headers::MESSAGE_ID,
        headers::SUM,
        headers::SEQ,
        headers::TRACE_ID,
    ] {
        let parsed = frame
            .header(name)
            .and_then(|v| v.trim().parse::<u32>().ok());
        assert_eq!(frame.header_u32(name), parsed);
    }
    if let Some(payload) = frame.payload.as_deref() {
        let _ = ClientConfigUpdate::from_payload(payload);
    }

    let ack = frame.clone().into_ack(500, 7);
    if ack.headers.len() > MAX_HEADERS {
        // `biz_rt` added to a frame at the bound: Lark reads it; this crate would not.
        assert!(Frame::decode_bytes(&ack.encode_to_vec()).is_err());
        return;
    }
    let ack = Frame::decode_bytes(&ack.encode_to_vec()).expect("an ack decodes");
    assert_eq!(ack.ack_code(), Some(500));
    assert_eq!(ack.header(headers::BIZ_RT), Some("7"));
    assert_eq!(
        ack.header(headers::MESSAGE_ID),
        frame.header(headers::MESSAGE_ID)
    );
    let added = usize::from(frame.header(headers::BIZ_RT).is_none());
    assert_eq!(ack.headers.len(), frame.headers.len() + added);
    assert_eq!(
        (ack.seq_id, ack.log_id, ack.service, ack.method),
        (frame.seq_id, frame.log_id, frame.service, frame.method)
    );
});
