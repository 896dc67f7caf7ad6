//! Shared by the fuzz targets and the seed writer (`seed.rs`): a counting allocator, the
//! encoding of the `reassemble` target's input, and real-looking frames.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use lark_longconn::frame::headers;
use lark_longconn::Frame;

/// The system allocator, counting the bytes live and the most live since [`reset_peak`]. A
/// target that declares it `#[global_allocator]` can check what the code under test holds and
/// what it allocated at its worst. Only Rust allocations go through it (libFuzzer's own are
/// C++ ones).
#[derive(Debug)]
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            // Counted as the allocator may do it: the new block before the old is freed.
            grew(new_size);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

/// Bytes live now (through [`Counting`]).
pub fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Starts a new peak at what is live now.
pub fn reset_peak() {
    PEAK.store(live(), Ordering::Relaxed);
}

/// The most bytes live since the last [`reset_peak`].
pub fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// One step of the `reassemble` target. Encoded as one opcode byte (taken modulo 6) and
/// little-endian fields; see [`Op::parse`] and [`Op::encode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `0, len:u16, bytes[len]`: one binary WebSocket message, handled as the session does:
    /// decoded, and a data `event` frame pushed with its `message_id` (empty when absent), `sum`
    /// (1 when absent or not a number), `seq` (0 likewise) and payload.
    Message(Vec<u8>),
    /// `1, ms:u16`: the clock moves on.
    Advance(u16),
    /// `2`: the session's housekeeping tick (`expire` now).
    Expire,
    /// `3, ms:u16`: backpressure: the session read nothing for `ms` (the clock moves on and
    /// every timer is postponed by as much).
    Stall(u16),
    /// `4, message:u16, total:u16`: a reload changed the limits (`set_limits`).
    Limits(u16, u16),
    /// `5, id:u8, sum:u16, seq:u16, len:u16, spare:u16`: a fragment without the protobuf:
    /// message id `m<id>` (`id` 0: the empty id), `len` payload bytes all `seq as u8`, in a
    /// buffer with `spare` bytes of unused capacity (as a decoder may hand over).
    Fragment {
        id: u8,
        sum: u16,
        seq: u16,
        len: u16,
        spare: u16,
    },
}

fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*data.get(at)?, *data.get(at + 1)?]))
}

impl Op {
    /// The ops of an input, until its end or a truncated op.
    pub fn parse(mut data: &[u8]) -> Vec<Op> {
        let mut ops = Vec::new();
        while let Some((&code, rest)) = data.split_first() {
            let (op, used) = match code % 6 {
                0 => {
                    let Some(len) = u16_at(rest, 0) else { break };
                    let end = 2 + len as usize;
                    let Some(bytes) = rest.get(2..end) else { break };
                    (Op::Message(bytes.to_vec()), end)
                }
                1 => match u16_at(rest, 0) {
                    Some(ms) => (Op::Advance(ms), 2),
                    None => break,
                },
                2 => (Op::Expire, 0),
                3 => match u16_at(rest, 0) {
                    Some(ms) => (Op::Stall(ms), 2),
                    None => break,
                },
                4 => match (u16_at(rest, 0), u16_at(rest, 2)) {
                    (Some(m), Some(t)) => (Op::Limits(m, t), 4),
                    _ => break,
                },
                _ => {
                    let (Some(&id), Some(sum), Some(seq), Some(len), Some(spare)) = (
                        rest.first(),
                        u16_at(rest, 1),
                        u16_at(rest, 3),
                        u16_at(rest, 5),
                        u16_at(rest, 7),
                    ) else {
                        break;
                    };
                    (
                        Op::Fragment {
                            id,
                            sum,
                            seq,
                            len,
                            spare,
                        },
                        9,
                    )
                }
            };
            ops.push(op);
            data = &rest[used..];
        }
        ops
    }

    /// Appends this op's encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Op::Message(bytes) => {
                let len = u16::try_from(bytes.len()).expect("a message of at most 64 KiB");
                out.push(0);
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(bytes);
            }
            Op::Advance(ms) => {
                out.push(1);
                out.extend_from_slice(&ms.to_le_bytes());
            }
            Op::Expire => out.push(2),
            Op::Stall(ms) => {
                out.push(3);
                out.extend_from_slice(&ms.to_le_bytes());
            }
            Op::Limits(m, t) => {
                out.push(4);
                out.extend_from_slice(&m.to_le_bytes());
                out.extend_from_slice(&t.to_le_bytes());
            }
            Op::Fragment {
                id,
                sum,
                seq,
                len,
                spare,
            } => {
                out.push(5);
                out.push(*id);
                for v in [sum, seq, len, spare] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
}

/// The message id of an [`Op::Fragment`].
pub fn fragment_id(id: u8) -> String {
    if id == 0 {
        String::new()
    } else {
        format!("m{id}")
    }
}

/// A data frame as Lark sends one (the tests' stand-in's layout): the `type`, `message_id`,
/// `sum`, `seq` and `trace_id` headers, and the payload.
pub fn data_frame(
    seq_id: u64,
    kind: &str,
    message_id: &str,
    sum: u32,
    seq: u32,
    payload: &[u8],
) -> Frame {
    let mut frame = Frame {
        seq_id,
        log_id: seq_id,
        service: 33_554_678,
        method: 1,
        payload: Some(payload.to_vec()),
        ..Frame::default()
    };
    frame.set_header(headers::TYPE, kind.to_owned());
    frame.set_header(headers::MESSAGE_ID, message_id.to_owned());
    frame.set_header(headers::SUM, sum.to_string());
    frame.set_header(headers::SEQ, seq.to_string());
    frame.set_header(headers::TRACE_ID, format!("trace-{message_id}"));
    frame
}

/// A pong carrying `payload` (a ClientConfig JSON, or nothing).
pub fn pong(payload: Option<&[u8]>) -> Frame {
    let mut frame = Frame::ping(33_554_678);
    frame.set_header(headers::TYPE, "pong".to_owned());
    frame.payload = payload.map(<[u8]>::to_vec);
    frame
}

/// A schema 2.0 event body of about `size` bytes (padded in a string field).
pub fn event_body(event_id: &str, size: usize) -> Vec<u8> {
    let head = format!(
        r#"{{"schema":"2.0","header":{{"event_id":"{event_id}","token":"v","create_time":"1752346850000","event_type":"im.message.receive_v1","tenant_key":"t","app_id":"cli_a"}},"event":{{"text":""#
    );
    let tail = r#""}}"#;
    let pad = size.saturating_sub(head.len() + tail.len());
    let mut body = head.into_bytes();
    body.extend(std::iter::repeat_n(b'x', pad));
    body.extend_from_slice(tail.as_bytes());
    body
}
