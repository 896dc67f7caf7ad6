//! The pipe protocol between the gateway and a plugin-host child: length-prefixed binary frames
//! (`u32` length, little endian, then a tag byte and the body). Deliveries travel as the same
//! JSON bytes the ABI takes, never re-encoded; the rest is small.
//!
//! Gateway → child: `Init` (JSON `{name, config, config_dir, sha256, pinned}`) or `Describe`
//! (JSON `{sha256, pinned}`: load, report, exit), then `Batch` (id, deliveries). `sha256` is the
//! hash of the file the gateway examined: the child loads the library only if the file it opens
//! hashes to it. Child → gateway: `InitOk` (JSON: the descriptor and the SHA-256 of the file
//! loaded), `InitErr` (a load refused, an `init` refused or panicked), `Described` (the same JSON
//! as `InitOk`), `Outcomes` (id, JSON outcomes), `BatchPanicked` (id, message), `Log` (level,
//! message). Both ends are the same binary. Nothing here panics on input: a bad frame is an
//! error.

use std::io::{self, Read, Write};

use gateway_plugin::host::{CallOutcome, DescriptorSummary};
use serde::{Deserialize, Serialize};

/// No frame is larger than this (a batch of `max_batch` deliveries of `max_body_bytes` fits).
const MAX_FRAME: usize = 1 << 30;

/// `deliveries` in consecutive groups whose `Batch` frame each fits [`MAX_FRAME`] (a batch of
/// `max_batch` large deliveries may not: the child would refuse the frame and end). A single
/// delivery too large for a frame is a group of its own (its write fails: a retry).
pub(super) fn batch_groups<'a>(deliveries: &'a [&'a [u8]]) -> Vec<&'a [&'a [u8]]> {
    groups_within(deliveries, MAX_FRAME)
}

fn groups_within<'a>(deliveries: &'a [&'a [u8]], limit: usize) -> Vec<&'a [&'a [u8]]> {
    let mut groups = Vec::new();
    let (mut start, mut size) = (0, 12usize);
    for (i, d) in deliveries.iter().enumerate() {
        let add = d.len().saturating_add(4);
        if i > start && size.saturating_add(add) > limit {
            groups.push(&deliveries[start..i]);
            (start, size) = (i, 12);
        }
        size = size.saturating_add(add);
    }
    // The last group (never empty unless the batch is: `start` only ever names a delivery).
    groups.push(&deliveries[start..]);
    groups
}

/// The largest body of a child's batch answer (`Outcomes`, `BatchPanicked`): outcomes carry
/// reasons, which the engine cuts to 4 KiB anyway, and which the child cuts further when a
/// large batch's answer would not fit otherwise ([`reason_budget`]).
const MAX_ANSWER: usize = 64 << 20;

/// The largest body of every other frame (`Init`, `Describe`, `InitOk`, `InitErr`,
/// `Described`, `Log`): a config, a descriptor, one message. What a child may make the gateway
/// buffer is bounded by its kind, not only by [`MAX_FRAME`].
const MAX_SMALL: usize = 1 << 20;

/// The largest body a frame to the child with `tag` may have; `None`: no such frame.
fn to_child_limit(tag: u8) -> Option<usize> {
    match tag {
        2 => Some(MAX_FRAME),
        1 | 3 => Some(MAX_SMALL),
        _ => None,
    }
}

/// The largest body a frame from the child with `tag` may have; `None`: no such frame (a
/// child's stray bytes that look like a gateway's `Batch` do not get a gigabyte read).
fn from_child_limit(tag: u8) -> Option<usize> {
    match tag {
        12 | 13 => Some(MAX_ANSWER),
        10 | 11 | 14 | 15 => Some(MAX_SMALL),
        _ => None,
    }
}

/// How many bytes each reason of an answer of `count` outcomes may keep: the engine's cap, or
/// less when the answer would not fit [`MAX_ANSWER`] (JSON may write a byte of a reason as six).
fn reason_budget(count: usize) -> usize {
    crate::delivery::detail::MAX_DETAIL.min((MAX_ANSWER / 2) / (6 * count.max(1)))
}

/// JSON of a frame's body: a malformed one is bad data (never taken for the stream's end, as
/// serde's error for a body cut short would be).
fn json<T: serde::de::DeserializeOwned>(body: &[u8]) -> io::Result<T> {
    serde_json::from_slice(body).map_err(|e| bad(&format!("bad JSON in a frame: {e}")))
}

/// A message to the child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToChild {
    Init(InitRequest),
    Batch {
        id: u64,
        deliveries: Vec<Vec<u8>>,
    },
    /// Load the library, answer `Described` (or `InitErr`) and exit: `gateway check`.
    Describe(DescribeRequest),
}

/// What the child needs to create the instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitRequest {
    pub name: String,
    pub config: serde_json::Value,
    pub config_dir: String,
    /// The SHA-256 of the file the gateway examined: the child checks it on the file it opens,
    /// and loads that file.
    pub sha256: String,
    /// Whether `sha256` is the config's `[[plugins]] sha256` pin (for the refusal's wording).
    #[serde(default)]
    pub pinned: bool,
}

/// What the child needs to load the library and report its descriptor, without an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeRequest {
    /// As [`InitRequest::sha256`].
    pub sha256: String,
    #[serde(default)]
    pub pinned: bool,
}

/// What the child loaded: the file's SHA-256 (hashed from the open file that loaded) and its
/// descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loaded {
    pub sha256: String,
    pub descriptor: DescriptorSummary,
}

/// Why a child could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitFailure {
    /// The plugin's `init` refused (or the config could not be passed).
    Refused,
    /// The plugin's `init` panicked.
    Panicked,
    /// The library was not loaded: missing, not the file the gateway examined, or refused by
    /// the loader (ABI, descriptor). Nothing of it ran beyond its load-time code.
    Load,
}

impl InitFailure {
    fn code(self) -> u8 {
        match self {
            InitFailure::Refused => 0,
            InitFailure::Panicked => 1,
            InitFailure::Load => 2,
        }
    }

    fn from_code(code: u8) -> io::Result<InitFailure> {
        match code {
            0 => Ok(InitFailure::Refused),
            1 => Ok(InitFailure::Panicked),
            2 => Ok(InitFailure::Load),
            _ => Err(bad("unknown init failure")),
        }
    }
}

/// A message from the child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromChild {
    InitOk(Loaded),
    InitErr { kind: InitFailure, message: String },
    Described(Loaded),
    Outcomes { id: u64, outcomes: Vec<CallOutcome> },
    BatchPanicked { id: u64, message: String },
    Log { level: u32, message: String },
}

/// An outcome on the wire.
#[derive(Serialize, Deserialize)]
struct WireOutcome {
    /// 0 ok, 1 retry, 2 reject, 3 panicked.
    code: u32,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    retry_after_ms: Option<u64>,
}

/// The most outcomes an answer may hold: a batch's largest size (`[delivery] max_batch` is at
/// most 10,000). A frame of `{"code":0},` repeated fits millions in its 64 MiB and would make
/// the gateway hold about ten times that while it is parsed: refused at the first past this.
const MAX_OUTCOMES: usize = 10_000;

/// An answer's outcomes, at most [`MAX_OUTCOMES`] of them.
struct Capped(Vec<WireOutcome>);

impl<'de> Deserialize<'de> for Capped {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Capped, D::Error> {
        struct Seq;
        impl<'de> serde::de::Visitor<'de> for Seq {
            type Value = Capped;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "a list of at most {MAX_OUTCOMES} outcomes")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Capped, A::Error> {
                let mut out = Vec::new();
                while let Some(o) = seq.next_element::<WireOutcome>()? {
                    if out.len() == MAX_OUTCOMES {
                        return Err(serde::de::Error::custom(format!(
                            "more than {MAX_OUTCOMES} outcomes"
                        )));
                    }
                    out.push(o);
                }
                Ok(Capped(out))
            }
        }
        d.deserialize_seq(Seq)
    }
}

fn to_wire(o: &CallOutcome, budget: usize) -> WireOutcome {
    let (code, reason, retry_after_ms) = match o {
        CallOutcome::Ok => (0, String::new(), None),
        CallOutcome::Retry {
            reason,
            retry_after,
        } => (1, reason.clone(), retry_after.map(|d| d.as_millis() as u64)),
        CallOutcome::Reject { reason } => (2, reason.clone(), None),
        CallOutcome::Panicked { message } => (3, message.clone(), None),
    };
    WireOutcome {
        code,
        // The engine keeps no more (and the answer's frame has a limit).
        reason: crate::delivery::detail::cap_to(reason, budget),
        retry_after_ms,
    }
}

fn from_wire(w: WireOutcome) -> CallOutcome {
    match w.code {
        0 => CallOutcome::Ok,
        1 => CallOutcome::Retry {
            reason: w.reason,
            retry_after: w.retry_after_ms.map(std::time::Duration::from_millis),
        },
        3 => CallOutcome::Panicked { message: w.reason },
        _ => CallOutcome::Reject { reason: w.reason },
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

fn frame(out: &mut impl Write, tag: u8, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len() + 1).map_err(|_| bad("frame too large"))?;
    let mut buf = Vec::with_capacity(body.len() + 5);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.push(tag);
    buf.extend_from_slice(body);
    out.write_all(&buf)?;
    out.flush()
}

/// Reads one frame: `None` at a clean end of stream. The tag is read first, so that a frame of
/// a kind this direction never carries, or a body too large for its kind (`limit`), is refused
/// before anything is allocated for it.
fn read_frame(
    input: &mut impl Read,
    limit: fn(u8) -> Option<usize>,
) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 || len > MAX_FRAME + 1 {
        return Err(bad("bad frame length"));
    }
    let mut tag = [0u8; 1];
    input.read_exact(&mut tag)?;
    let tag = tag[0];
    let Some(max) = limit(tag) else {
        return Err(bad("unknown frame"));
    };
    if len - 1 > max {
        return Err(bad("frame too large for its kind"));
    }
    let mut body = vec![0u8; len - 1];
    input.read_exact(&mut body)?;
    Ok(Some((tag, body)))
}

/// Takes `n` bytes off the front of `body`.
fn take<'a>(body: &mut &'a [u8], n: usize) -> io::Result<&'a [u8]> {
    if body.len() < n {
        return Err(bad("truncated frame"));
    }
    let (head, rest) = body.split_at(n);
    *body = rest;
    Ok(head)
}

fn u32_at(body: &mut &[u8]) -> io::Result<u32> {
    let b = take(body, 4)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(body: &mut &[u8]) -> io::Result<u64> {
    let b = take(body, 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(u64::from_le_bytes(a))
}

impl ToChild {
    pub fn write(&self, out: &mut impl Write) -> io::Result<()> {
        match self {
            ToChild::Init(init) => frame(out, 1, &serde_json::to_vec(init)?),
            ToChild::Batch { id, deliveries } => {
                let size: usize = deliveries.iter().map(|d| d.len() + 4).sum();
                let mut body = Vec::with_capacity(12 + size);
                body.extend_from_slice(&id.to_le_bytes());
                let count = u32::try_from(deliveries.len()).map_err(|_| bad("batch too large"))?;
                body.extend_from_slice(&count.to_le_bytes());
                for d in deliveries {
                    let len = u32::try_from(d.len()).map_err(|_| bad("delivery too large"))?;
                    body.extend_from_slice(&len.to_le_bytes());
                    body.extend_from_slice(d);
                }
                frame(out, 2, &body)
            }
            ToChild::Describe(describe) => frame(out, 3, &serde_json::to_vec(describe)?),
        }
    }

    pub fn read(input: &mut impl Read) -> io::Result<Option<ToChild>> {
        let Some((tag, body)) = read_frame(input, to_child_limit)? else {
            return Ok(None);
        };
        let mut b = body.as_slice();
        Ok(Some(match tag {
            1 => ToChild::Init(json(b)?),
            2 => {
                let id = u64_at(&mut b)?;
                let count = u32_at(&mut b)? as usize;
                let mut deliveries = Vec::with_capacity(count.min(10_000));
                for _ in 0..count {
                    let len = u32_at(&mut b)? as usize;
                    deliveries.push(take(&mut b, len)?.to_vec());
                }
                ToChild::Batch { id, deliveries }
            }
            3 => ToChild::Describe(json(b)?),
            _ => return Err(bad("unknown frame to the child")),
        }))
    }
}

impl FromChild {
    pub fn write(&self, out: &mut impl Write) -> io::Result<()> {
        match self {
            FromChild::InitOk(loaded) => frame(out, 10, &serde_json::to_vec(loaded)?),
            FromChild::InitErr { kind, message } => {
                let mut body = vec![kind.code()];
                body.extend_from_slice(message.as_bytes());
                frame(out, 11, &body)
            }
            FromChild::Described(loaded) => frame(out, 15, &serde_json::to_vec(loaded)?),
            FromChild::Outcomes { id, outcomes } => {
                let mut body = id.to_le_bytes().to_vec();
                let budget = reason_budget(outcomes.len());
                let wire: Vec<WireOutcome> = outcomes.iter().map(|o| to_wire(o, budget)).collect();
                serde_json::to_writer(&mut body, &wire)?;
                frame(out, 12, &body)
            }
            FromChild::BatchPanicked { id, message } => {
                let mut body = id.to_le_bytes().to_vec();
                let message = crate::delivery::detail::cap_to(message.clone(), MAX_SMALL);
                body.extend_from_slice(message.as_bytes());
                frame(out, 13, &body)
            }
            FromChild::Log { level, message } => {
                let mut body = level.to_le_bytes().to_vec();
                body.extend_from_slice(message.as_bytes());
                frame(out, 14, &body)
            }
        }
    }

    pub fn read(input: &mut impl Read) -> io::Result<Option<FromChild>> {
        let Some((tag, body)) = read_frame(input, from_child_limit)? else {
            return Ok(None);
        };
        let mut b = body.as_slice();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Ok(Some(match tag {
            10 => FromChild::InitOk(json(b)?),
            11 => {
                let kind = InitFailure::from_code(take(&mut b, 1)?[0])?;
                FromChild::InitErr {
                    kind,
                    message: text(b),
                }
            }
            15 => FromChild::Described(json(b)?),
            12 => {
                let id = u64_at(&mut b)?;
                let Capped(wire) = json(b)?;
                FromChild::Outcomes {
                    id,
                    outcomes: wire.into_iter().map(from_wire).collect(),
                }
            }
            13 => {
                let id = u64_at(&mut b)?;
                FromChild::BatchPanicked {
                    id,
                    message: text(b),
                }
            }
            14 => {
                let level = u32_at(&mut b)?;
                FromChild::Log {
                    level,
                    message: text(b),
                }
            }
            _ => return Err(bad("unknown frame from the child")),
        }))
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
