//! The stand-in's own frame encoding (proto2 by hand, every required field written), kept
//! independent of `lark_longconn`'s derive so a wrong tag on either side shows up in the tests.
//! Part of `lark_ws.rs`.

use super::*;

/// A data frame from the stand-in (takes the next SeqID/LogID), encoded.
pub(super) fn data_frame(
    s: &mut State,
    kind: &str,
    message_id: &str,
    sum: u32,
    seq: u32,
    payload: &[u8],
    overrides: &[(&str, &str)],
) -> Vec<u8> {
    let id = s.next_seq_id;
    s.next_seq_id += 1;
    let mut frame = Frame {
        seq_id: id,
        log_id: id,
        service: LarkWs::SERVICE_ID,
        method: 1,
        payload: Some(payload.to_vec()),
        ..Frame::default()
    };
    frame.set_header(h::TYPE, kind.to_owned());
    frame.set_header(h::MESSAGE_ID, message_id.to_owned());
    frame.set_header(h::SUM, sum.to_string());
    frame.set_header(h::SEQ, seq.to_string());
    frame.set_header(h::TRACE_ID, format!("trace-{message_id}"));
    for (key, value) in overrides {
        frame.set_header(key, (*value).to_owned());
    }
    encode(&frame)
}

/// Encodes `frame` as Lark's proto2 `Frame` (spec §11): the four required scalars always, then
/// the headers and the optional fields present.
pub fn encode(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + frame.payload.as_ref().map_or(0, Vec::len));
    put_varint_field(&mut out, 1, frame.seq_id);
    put_varint_field(&mut out, 2, frame.log_id);
    // int32 is sign-extended to 64 bits on the wire.
    put_varint_field(&mut out, 3, i64::from(frame.service) as u64);
    put_varint_field(&mut out, 4, i64::from(frame.method) as u64);
    for header in &frame.headers {
        let mut inner = Vec::new();
        put_bytes_field(&mut inner, 1, header.key.as_bytes());
        put_bytes_field(&mut inner, 2, header.value.as_bytes());
        put_bytes_field(&mut out, 5, &inner);
    }
    if let Some(v) = &frame.payload_encoding {
        put_bytes_field(&mut out, 6, v.as_bytes());
    }
    if let Some(v) = &frame.payload_type {
        put_bytes_field(&mut out, 7, v.as_bytes());
    }
    if let Some(v) = &frame.payload {
        put_bytes_field(&mut out, 8, v);
    }
    if let Some(v) = &frame.log_id_new {
        put_bytes_field(&mut out, 9, v.as_bytes());
    }
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint_field(out: &mut Vec<u8>, tag: u64, v: u64) {
    put_varint(out, tag << 3);
    put_varint(out, v);
}

fn put_bytes_field(out: &mut Vec<u8>, tag: u64, bytes: &[u8]) {
    put_varint(out, (tag << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}
