//! Fuzz target `reassemble`: a sequence of frames, clock ticks, stalls and reloads through one
//! [`Reassembler`], the way the session drives it (`crates/gateway/src/longconn/session.rs`).
//! The input is a list of [`Op`]s (see `src/lib.rs` for their encoding): raw WebSocket
//! messages decoded as frames, or fragments without the protobuf (so the fuzzer reaches the
//! reassembler's corners quickly).
//!
//! The reassembler's own bounds are checked after every step, from outside:
//!
//! - at most `max_entries` incomplete messages;
//! - a push never takes the bytes held past the byte bound in force (`max_total_bytes`; after
//!   a reload lowered it, what was held may stay, but no push adds to it);
//! - the memory really held (the live bytes of the target's counting allocator, all else
//!   freed) is the bytes it says it holds plus a fixed overhead per entry (its fragment table
//!   and its id, at most `MAX_MESSAGE_ID_BYTES`) and for its two maps: unused capacity of a
//!   payload, an id held past its bound or anything else unaccounted for fails here;
//! - a released message is at most `max_message_bytes`, a single fragment is released as it
//!   came, and fragments are joined in `seq` order;
//! - a fragment never evicts its own message, a single fragment is never held, and every
//!   error matches its cause; every drop reported is of an incomplete message.

#![no_main]

use std::mem::size_of;
use std::time::{Duration, Instant};

use lark_longconn::fragments::{MAX_FRAGMENTS, MAX_MESSAGE_ID_BYTES};
use lark_longconn::frame::headers;
use lark_longconn::{DropReason, FragmentError, Frame, MessageType, Method, Reassembler};
use libfuzzer_sys::fuzz_target;
use longconn_fuzz::{fragment_id, Counting, Op};

#[global_allocator]
static ALLOC: Counting = Counting;

const TTL: Duration = Duration::from_secs(5);
const MAX_ENTRIES: usize = 4;
const MAX_MESSAGE: usize = 256;
const MAX_TOTAL: usize = 512;
/// The two maps' tables (entries, refused ids) for at most `MAX_ENTRIES` keys each.
const TABLES: usize = 2048;
/// Per entry beyond its fragment table and id (its slot in the map is in `TABLES`).
const PER_ENTRY: usize = 64;

struct Run {
    r: Reassembler,
    now: Instant,
    /// The byte bound in force: `max(total, message)` of the last `set_limits`.
    total_bound: usize,
    /// The largest `sum` and id pushed since the reassembler was last empty.
    max_sum: usize,
    max_id: usize,
    /// The longest id pushed (refused ids are remembered for a ttl).
    max_id_ever: usize,
    /// Whether a raw frame was pushed: their payloads follow no pattern.
    raw_pushed: bool,
}

impl Run {
    fn push(&mut self, id: &str, sum: u32, seq: u32, payload: Vec<u8>, patterned: bool) {
        // A longer id is refused, never held.
        let held_id = id.len().min(MAX_MESSAGE_ID_BYTES);
        self.max_sum = self.max_sum.max(sum.min(MAX_FRAGMENTS) as usize);
        self.max_id = self.max_id.max(held_id);
        self.max_id_ever = self.max_id_ever.max(held_id);
        let before = self.r.buffered_bytes();
        let len = payload.len();
        let result = self.r.push(id, sum, seq, payload, self.now);
        for d in self.r.take_dropped() {
            assert!(
                !(d.message_id == id && d.reason == DropReason::Evicted),
                "a fragment of {id:?} evicted its own message: {d:?}"
            );
            check_dropped(&d);
        }
        assert!(
            self.r.buffered_bytes() <= before.max(self.total_bound),
            "a push took the bytes held from {before} to {} (bound {})",
            self.r.buffered_bytes(),
            self.total_bound
        );
        match result {
            Ok(Some(whole)) => {
                assert!(whole.len() <= self.r.max_message_bytes());
                assert!(
                    whole.len() >= len,
                    "the last fragment is part of the message"
                );
                if sum == 1 {
                    assert_eq!(whole.len(), len, "a single fragment passes as it came");
                }
                if patterned && !self.raw_pushed && sum <= 256 {
                    assert!(
                        whole.windows(2).all(|w| w[0] <= w[1]),
                        "fragments joined out of seq order"
                    );
                    assert!(whole.iter().all(|b| u32::from(*b) < sum));
                }
            }
            Ok(None) => assert!(sum > 1, "a single fragment is never held"),
            Err(FragmentError::BadSum { sum: s }) => {
                assert_eq!(s, sum);
                assert!(sum == 0 || sum > MAX_FRAGMENTS);
            }
            Err(FragmentError::BadSeq { seq: q, sum: s }) => {
                assert_eq!((q, s), (seq, sum));
                assert!(seq >= sum);
            }
            Err(FragmentError::SumChanged { expected, got }) => {
                assert_eq!(got, sum);
                assert_ne!(expected, sum);
            }
            Err(FragmentError::TooLarge { limit }) => {
                assert_eq!(limit, self.r.max_message_bytes());
            }
            Err(FragmentError::IdTooLong { len: n }) => {
                assert_eq!(n, id.len());
                assert!(n > MAX_MESSAGE_ID_BYTES && sum > 1);
            }
        }
    }
}

fn check_dropped(d: &lark_longconn::Dropped) {
    assert!(
        d.sum >= 2,
        "only a message of several fragments is held: {d:?}"
    );
    assert!(d.received >= 1 && d.received < d.sum, "{d:?}");
}

fuzz_target!(|data: &[u8]| {
    let ops = Op::parse(data);
    let base = longconn_fuzz::live();
    let mut run = Run {
        r: Reassembler::new(TTL, MAX_ENTRIES, MAX_MESSAGE, MAX_TOTAL),
        now: Instant::now(),
        total_bound: MAX_TOTAL.max(MAX_MESSAGE),
        max_sum: 0,
        max_id: 0,
        max_id_ever: 0,
        raw_pushed: false,
    };
    for op in &ops {
        match op {
            Op::Message(bytes) => {
                let Ok(mut frame) = Frame::decode_bytes(bytes) else {
                    continue;
                };
                if (frame.method(), frame.message_type()) != (Method::Data, MessageType::Event) {
                    continue;
                }
                let id = frame.header(headers::MESSAGE_ID).unwrap_or("").to_owned();
                let sum = frame.header_u32(headers::SUM).unwrap_or(1);
                let seq = frame.header_u32(headers::SEQ).unwrap_or(0);
                let payload = frame.payload.take().unwrap_or_default();
                drop(frame);
                run.raw_pushed = true;
                run.push(&id, sum, seq, payload, false);
            }
            Op::Advance(ms) => run.now += Duration::from_millis(u64::from(*ms)),
            Op::Expire => {
                run.r.expire(run.now);
                for d in run.r.take_dropped() {
                    assert_eq!(d.reason, DropReason::Expired);
                    check_dropped(&d);
                }
            }
            Op::Stall(ms) => {
                let by = Duration::from_millis(u64::from(*ms));
                run.now += by;
                run.r.postpone(by);
            }
            Op::Limits(message, total) => {
                let (message, total) = (usize::from(*message), usize::from(*total));
                run.r.set_limits(message, total);
                run.total_bound = total.max(message);
                assert_eq!(run.r.max_message_bytes(), message);
            }
            &Op::Fragment {
                id,
                sum,
                seq,
                len,
                spare,
            } => {
                let mut payload = Vec::with_capacity(usize::from(len) + usize::from(spare));
                payload.resize(usize::from(len), seq as u8);
                run.push(&fragment_id(id), sum.into(), seq.into(), payload, true);
            }
        }
        assert!(run.r.len() <= MAX_ENTRIES, "{} entries", run.r.len());
        if run.r.is_empty() {
            assert_eq!(run.r.buffered_bytes(), 0);
            run.max_sum = 0;
            run.max_id = 0;
        }
        let held = longconn_fuzz::live() - base;
        let allowance = MAX_ENTRIES
            * (run.max_sum * size_of::<Option<Vec<u8>>>() + run.max_id + PER_ENTRY)
            + MAX_ENTRIES * run.max_id_ever
            + TABLES;
        assert!(
            held <= run.r.buffered_bytes() + allowance,
            "the reassembler holds {held} bytes in memory, says it holds {} (allowance {allowance})",
            run.r.buffered_bytes()
        );
    }
});
