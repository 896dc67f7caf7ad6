//! The wire unit of the long connection: one protobuf (proto2) `Frame` per binary WebSocket
//! message. Field numbers and types are Lark's (spec §11); every `required` field is encoded even
//! when zero, as Lark's own proto2 decoder insists.
//!
//! Control frames (`method = 0`) carry `type = ping | pong`; data frames (`method = 1`) carry
//! `type = event | card`, `message_id`, `sum`, `seq` and `trace_id` headers. An ack is the data
//! frame that completed a message, sent back with a `biz_rt` header and a `{"code":N}` payload.

use prost::Message;

/// Header names used by the protocol.
pub mod headers {
    /// `ping`, `pong`, `event` or `card`.
    pub const TYPE: &str = "type";
    /// Groups the fragments of one message.
    pub const MESSAGE_ID: &str = "message_id";
    /// How many fragments the message has.
    pub const SUM: &str = "sum";
    /// This fragment's 0-based index.
    pub const SEQ: &str = "seq";
    /// Lark's trace id (the gateway logs it with each message's lines, for Lark support).
    pub const TRACE_ID: &str = "trace_id";
    /// Added to an ack: how long handling took, in milliseconds.
    pub const BIZ_RT: &str = "biz_rt";
}

/// The most headers a frame may have. Lark's carry five (`type`, `message_id`, `sum`, `seq`,
/// `trace_id`), an ack one more (`biz_rt`); each header decodes to a 48-byte [`Header`]
/// whatever its size on the wire (2 bytes when empty), so without a bound a frame would decode
/// to some 24 times its size.
pub const MAX_HEADERS: usize = 256;

/// A `key = value` header of a frame.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct Header {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(string, required, tag = "2")]
    pub value: String,
}

/// One long-connection frame.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct Frame {
    #[prost(uint64, required, tag = "1")]
    pub seq_id: u64,
    #[prost(uint64, required, tag = "2")]
    pub log_id: u64,
    /// The `service_id` of the connection URL's query.
    #[prost(int32, required, tag = "3")]
    pub service: i32,
    /// 0 control, 1 data.
    #[prost(int32, required, tag = "4")]
    pub method: i32,
    #[prost(message, repeated, tag = "5")]
    pub headers: Vec<Header>,
    #[prost(string, optional, tag = "6")]
    pub payload_encoding: Option<String>,
    #[prost(string, optional, tag = "7")]
    pub payload_type: Option<String>,
    #[prost(bytes = "vec", optional, tag = "8")]
    pub payload: Option<Vec<u8>>,
    #[prost(string, optional, tag = "9")]
    pub log_id_new: Option<String>,
}

/// What `method` says a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Control,
    Data,
    Unknown(i32),
}

/// What the `type` header says a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Ping,
    Pong,
    Event,
    Card,
    /// Absent or not one of the above.
    Other,
}

/// A binary message that is not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a long-connection frame: {0}")]
pub struct FrameError(String);

impl Frame {
    /// Decodes one binary WebSocket message. One with more than [`MAX_HEADERS`] headers is
    /// refused before anything is decoded.
    pub fn decode_bytes(bytes: &[u8]) -> Result<Frame, FrameError> {
        let headers = count_headers(bytes);
        if headers > MAX_HEADERS {
            return Err(FrameError(format!(
                "more than {MAX_HEADERS} headers ({headers})"
            )));
        }
        Frame::decode(bytes).map_err(|e| FrameError(e.to_string()))
    }

    /// A ping for the connection's `service_id`.
    pub fn ping(service_id: i32) -> Frame {
        // `method` 0, a control frame, is the default.
        Frame {
            service: service_id,
            headers: vec![Header {
                key: headers::TYPE.into(),
                value: "ping".into(),
            }],
            ..Frame::default()
        }
    }

    pub fn method(&self) -> Method {
        match self.method {
            0 => Method::Control,
            1 => Method::Data,
            n => Method::Unknown(n),
        }
    }

    pub fn message_type(&self) -> MessageType {
        match self.header(headers::TYPE) {
            Some("ping") => MessageType::Ping,
            Some("pong") => MessageType::Pong,
            Some("event") => MessageType::Event,
            Some("card") => MessageType::Card,
            _ => MessageType::Other,
        }
    }

    /// The first header named `key`.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.key == key)
            .map(|h| h.value.as_str())
    }

    /// A numeric header; `None` when absent or not a number.
    pub fn header_u32(&self, key: &str) -> Option<u32> {
        self.header(key)?.trim().parse().ok()
    }

    /// Sets `key` (replacing an existing value) .
    pub fn set_header(&mut self, key: &str, value: String) {
        match self.headers.iter_mut().find(|h| h.key == key) {
            Some(h) => h.value = value,
            None => self.headers.push(Header {
                key: key.to_owned(),
                value,
            }),
        }
    }

    /// Turns the data frame that completed a message into its ack: the same frame with a
    /// `biz_rt` header (handling time in ms) and the payload `{"code":code}`.
    pub fn into_ack(mut self, code: u16, biz_rt_ms: u64) -> Frame {
        self.set_header(headers::BIZ_RT, biz_rt_ms.to_string());
        self.payload = Some(format!("{{\"code\":{code}}}").into_bytes());
        self
    }

    /// The `code` of an ack's payload (for the tests' stand-in server and diagnostics).
    pub fn ack_code(&self) -> Option<i64> {
        let payload = self.payload.as_deref()?;
        serde_json::from_slice::<serde_json::Value>(payload)
            .ok()?
            .get("code")?
            .as_i64()
    }
}

/// The headers (field 5) of the top-level message in `bytes`, counted on the wire without
/// decoding anything, up to the end or the first byte that is not a field (the decoder then
/// says what is wrong). Fields inside a group are not the frame's.
fn count_headers(mut bytes: &[u8]) -> usize {
    fn varint(bytes: &mut &[u8]) -> Option<u64> {
        let mut value = 0u64;
        for (i, byte) in bytes.iter().take(10).enumerate() {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                *bytes = &bytes[i + 1..];
                return Some(value);
            }
        }
        None
    }
    let mut headers = 0;
    let mut depth = 0usize;
    while !bytes.is_empty() {
        let Some(key) = varint(&mut bytes) else {
            break;
        };
        let skip = match key & 7 {
            0 => varint(&mut bytes).map(|_| 0),
            1 => Some(8),
            2 => {
                let len = varint(&mut bytes).and_then(|n| usize::try_from(n).ok());
                if key >> 3 == 5 && depth == 0 {
                    headers += 1;
                }
                len
            }
            3 => {
                depth += 1;
                Some(0)
            }
            4 if depth > 0 => {
                depth -= 1;
                Some(0)
            }
            5 => Some(4),
            _ => None,
        };
        match skip.and_then(|n| bytes.get(n..)) {
            Some(rest) => bytes = rest,
            None => break,
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes written by hand from the proto2 definition (spec §11), so a wrong tag or wire
    /// type in the derive fails here rather than against Lark.
    #[test]
    fn field_numbers_match_the_spec() {
        let frame = Frame {
            seq_id: 1,
            log_id: 2,
            service: 3,
            method: 1,
            headers: vec![Header {
                key: "k".into(),
                value: "v".into(),
            }],
            payload_encoding: Some("e".into()),
            payload_type: Some("t".into()),
            payload: Some(b"p".to_vec()),
            log_id_new: Some("n".into()),
        };
        let expected: &[u8] = &[
            0x08, 1, // 1 SeqID varint
            0x10, 2, // 2 LogID varint
            0x18, 3, // 3 service varint
            0x20, 1, // 4 method varint
            0x2a, 6, 0x0a, 1, b'k', 0x12, 1, b'v', // 5 headers { 1 key, 2 value }
            0x32, 1, b'e', // 6 payload_encoding
            0x3a, 1, b't', // 7 payload_type
            0x42, 1, b'p', // 8 payload
            0x4a, 1, b'n', // 9 LogIDNew
        ];
        assert_eq!(frame.encode_to_vec(), expected);
        assert_eq!(Frame::decode_bytes(expected), Ok(frame));
    }

    #[test]
    fn required_fields_are_encoded_even_when_zero() {
        let bytes = Frame::ping(7).encode_to_vec();
        // SeqID 0, LogID 0, service 7, method 0, then the `type = ping` header.
        assert_eq!(&bytes[..8], &[0x08, 0, 0x10, 0, 0x18, 7, 0x20, 0]);
        let back = Frame::decode_bytes(&bytes).expect("decodes");
        assert_eq!(back.method(), Method::Control);
        assert_eq!(back.message_type(), MessageType::Ping);
        assert_eq!(back.service, 7);
    }

    #[test]
    fn ack_keeps_the_frame_and_adds_biz_rt_and_code() {
        let mut data = Frame {
            seq_id: 9,
            method: 1,
            service: 4,
            ..Frame::default()
        };
        data.set_header(headers::TYPE, "event".into());
        data.set_header(headers::MESSAGE_ID, "m1".into());
        data.payload = Some(b"{\"schema\":\"2.0\"}".to_vec());
        let ack = data.clone().into_ack(200, 12);
        assert_eq!(ack.seq_id, 9);
        assert_eq!(ack.service, 4);
        assert_eq!(ack.header(headers::MESSAGE_ID), Some("m1"));
        assert_eq!(ack.header(headers::BIZ_RT), Some("12"));
        assert_eq!(ack.ack_code(), Some(200));
        assert_eq!(data.into_ack(500, 0).ack_code(), Some(500));
    }

    #[test]
    fn set_header_replaces() {
        let mut f = Frame::default();
        f.set_header("sum", "1".into());
        f.set_header("sum", "3".into());
        assert_eq!(f.headers.len(), 1);
        assert_eq!(f.header_u32("sum"), Some(3));
        f.set_header("seq", "x".into());
        assert_eq!(f.header_u32("seq"), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&[0xff_u8, 0xff, 0xff][..], &[0x2a, 200, 1], &[0x0a]] {
            assert!(Frame::decode_bytes(bytes).is_err(), "{bytes:?}");
        }
        assert_eq!(
            Frame::decode_bytes(&[]).map(|f| f.method()),
            Ok(Method::Control)
        );
    }

    #[test]
    fn the_type_header_names_the_message_type() {
        let typed = |value: Option<&str>| {
            let mut f = Frame::ping(1);
            f.headers.clear();
            if let Some(v) = value {
                f.set_header(headers::TYPE, v.into());
            }
            f.message_type()
        };
        assert_eq!(typed(Some("ping")), MessageType::Ping);
        assert_eq!(typed(Some("pong")), MessageType::Pong);
        assert_eq!(typed(Some("event")), MessageType::Event);
        assert_eq!(typed(Some("card")), MessageType::Card);
        assert_eq!(typed(Some("Event")), MessageType::Other);
        assert_eq!(typed(None), MessageType::Other);
        let ping = Frame::ping(7);
        assert_eq!(
            (ping.service, ping.method(), ping.message_type()),
            (7, Method::Control, MessageType::Ping)
        );
    }

    /// The pre-decoding count steps over every wire type the way the decoder does: fixed-size
    /// fields whose bytes look like headers, lengths of several varint bytes, groups (nested,
    /// their headers not the frame's), and stops at an end-group outside any group.
    #[test]
    fn headers_are_counted_over_every_wire_type() {
        const EMPTY_HEADER: [u8; 2] = [0x2a, 0];
        let mut bytes = vec![0x08, 1]; // 1: varint
        bytes.push(0x71); // 14: fixed64, its bytes four empty headers
        bytes.extend_from_slice(&EMPTY_HEADER.repeat(4));
        bytes.push(0x7d); // 15: fixed32, its bytes two empty headers
        bytes.extend_from_slice(&EMPTY_HEADER.repeat(2));
        bytes.extend_from_slice(&[0x2a, 0xc8, 0x01]); // a header of 200 bytes (2-byte length)
        bytes.extend_from_slice(&EMPTY_HEADER.repeat(100));
        bytes.push(0x5b); // 11: start group
        bytes.push(0x63); // 12: start group, inside it
        bytes.extend_from_slice(&EMPTY_HEADER);
        bytes.push(0x64); // 12: end group
        bytes.extend_from_slice(&EMPTY_HEADER); // still inside group 11
        bytes.push(0x5c); // 11: end group
        bytes.extend_from_slice(&EMPTY_HEADER.repeat(2));
        assert_eq!(count_headers(&bytes), 3);
        // An end-group outside any group is where counting stops (the decoder refuses it).
        bytes.push(0x5c);
        bytes.extend_from_slice(&EMPTY_HEADER);
        assert_eq!(count_headers(&bytes), 3);
    }

    /// Found reading the decoder (the `frame` fuzz target's allocation check fails on it: 2,004
    /// bytes of empty headers allocated 73,728): every header is a 48-byte `Header` however few
    /// bytes it takes on the wire (2 for an empty one), so a frame of 4 MiB, the connection's
    /// bound, decoded to some 100-200 MiB of headers, kept with the frame until its ack (up to
    /// 256 in flight). A frame with more than `MAX_HEADERS` headers is refused before decoding.
    #[test]
    fn a_frame_with_too_many_headers_is_refused_before_decoding() {
        let frame = |headers: usize| {
            let mut bytes = vec![0x08, 1, 0x20, 1];
            for _ in 0..headers {
                bytes.extend_from_slice(&[0x2a, 0]); // 5 headers, an empty Header
            }
            bytes.extend_from_slice(&[0x42, 1, b'p']);
            bytes
        };
        let most = Frame::decode_bytes(&frame(MAX_HEADERS)).expect("decodes");
        assert_eq!(most.headers.len(), MAX_HEADERS);
        let err = Frame::decode_bytes(&frame(MAX_HEADERS + 1)).expect_err("refused");
        assert!(err.to_string().contains("headers"), "{err}");
        assert!(Frame::decode_bytes(&frame(2_000_000)).is_err());
        // Headers inside an unknown group or a length-delimited field are not headers.
        let mut nested = vec![0x08, 1, 0x5b]; // 11 start group
        for _ in 0..MAX_HEADERS + 1 {
            nested.extend_from_slice(&[0x2a, 0]);
        }
        nested.push(0x5c); // 11 end group
        nested.extend_from_slice(&[0x52, 4, 0x2a, 0, 0x2a, 0]); // 10 unknown bytes field
        let f = Frame::decode_bytes(&nested).expect("decodes");
        assert!(f.headers.is_empty());
    }
}
