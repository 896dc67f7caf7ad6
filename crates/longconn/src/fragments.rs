//! Reassembly of data messages Lark splits across frames (`message_id`, `sum`, `seq`).
//!
//! Fragments may arrive in any order. A message is released once every `seq` in `0..sum` is
//! in, joined in `seq` order, and its entry is dropped at once, so a late duplicate fragment
//! can never complete it a second time. Each fragment restarts its message's timer (`ttl`); an
//! entry whose timer ran out is dropped (a missing fragment means the message is never
//! dispatched: Lark re-sends what is not acked).
//!
//! A message of several fragments found too large is refused once: the error is returned for
//! the fragment that made it too large, and its other fragments are ignored (`Ok(None)`) for
//! `ttl` after that, so the caller acks it once (spec §11: one ack per message); a message sent
//! again after that is examined afresh (and refused again, with another ack).
//!
//! Bounds: one message at most `max_message_bytes` and [`MAX_FRAGMENTS`] fragments, its id at
//! most [`MAX_MESSAGE_ID_BYTES`]; at most `max_entries` incomplete messages and
//! `max_total_bytes` buffered in all — past those the oldest incomplete message other than the
//! one the fragment belongs to is evicted.
//! Memory is therefore bounded whatever a peer sends: a held fragment is kept in a buffer of its
//! own length (a decoder's spare capacity is given back), so the bytes counted are the bytes
//! held.
//!
//! Every incomplete message dropped (expired or evicted) is reported once through
//! [`Reassembler::take_dropped`], so the caller can count and log it: a message that vanishes
//! is never acked, and Lark re-sends it. Except a copy of a message released within the last
//! `ttl` (a late duplicate fragment, or a re-send cut short): it is held like any message, and
//! completed it is released again (the caller's dedup answers it), but dropped incomplete it is
//! dropped quietly: the message was whole once and went to the caller, which stored or refused
//! it (if its ack did not reach Lark, Lark sends it again, whole).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The most fragments one message may declare.
pub const MAX_FRAGMENTS: u32 = 1024;

/// The longest `message_id` of a message held (Lark's are a few dozen bytes): the ids held are
/// counted nowhere else, an entry's, a refusal's and each drop reported keep one.
pub const MAX_MESSAGE_ID_BYTES: usize = 256;

/// A fragment that cannot belong to any message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    #[error("fragment header sum={sum} is out of range 1..={MAX_FRAGMENTS}")]
    BadSum { sum: u32 },
    #[error("fragment seq={seq} is not below sum={sum}")]
    BadSeq { seq: u32, sum: u32 },
    #[error("fragment says sum={got} but earlier fragments of the message said {expected}")]
    SumChanged { expected: u32, got: u32 },
    #[error("message is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("fragment message_id is {len} bytes, more than {MAX_MESSAGE_ID_BYTES}")]
    IdTooLong { len: usize },
}

/// Why an incomplete message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// No fragment of it came for the ttl.
    Expired,
    /// Room was needed (entry count or byte bound) and it was the oldest.
    Evicted,
    /// A fragment of it announced another fragment count: what was held cannot complete.
    Inconsistent,
}

impl DropReason {
    /// `expired`, `evicted` or `inconsistent` (metric labels, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Expired => "expired",
            DropReason::Evicted => "evicted",
            DropReason::Inconsistent => "inconsistent",
        }
    }
}

/// An incomplete message the reassembler dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub message_id: String,
    pub reason: DropReason,
    /// Fragments received of `sum`.
    pub received: usize,
    pub sum: usize,
}

struct Entry {
    parts: Vec<Option<Vec<u8>>>,
    missing: usize,
    bytes: usize,
    deadline: Instant,
    /// Arrival order of the entry's first fragment, for evicting the oldest.
    order: u64,
    /// The message was released within `ttl` before this entry began: a copy of it.
    copy: bool,
}

/// The buffer of incomplete messages of one connection.
pub struct Reassembler {
    entries: HashMap<String, Entry>,
    ttl: Duration,
    max_entries: usize,
    max_message_bytes: usize,
    max_total_bytes: usize,
    total_bytes: usize,
    next_order: u64,
    /// Messages refused as too large, with when their other fragments stop being ignored (at
    /// most `max_entries`).
    refused: HashMap<String, Instant>,
    /// Messages released, with when a copy of them stops being one (at most `max_entries`).
    released: HashMap<String, Instant>,
    /// Incomplete messages dropped because their timer ran out or room was needed.
    pub dropped: u64,
    /// The drops not yet taken by [`Reassembler::take_dropped`] (at most
    /// [`MAX_UNTAKEN_DROPS`]; past that only `dropped` counts them).
    untaken: Vec<Dropped>,
}

/// Drops kept for [`Reassembler::take_dropped`] when the caller does not take them.
pub const MAX_UNTAKEN_DROPS: usize = 1024;

impl std::fmt::Debug for Reassembler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reassembler")
            .field("entries", &self.entries.len())
            .field("total_bytes", &self.total_bytes)
            .field("dropped", &self.dropped)
            .finish()
    }
}

impl Reassembler {
    pub fn new(
        ttl: Duration,
        max_entries: usize,
        max_message_bytes: usize,
        max_total_bytes: usize,
    ) -> Reassembler {
        Reassembler {
            entries: HashMap::new(),
            ttl,
            max_entries: max_entries.max(1),
            max_message_bytes,
            max_total_bytes: max_total_bytes.max(max_message_bytes),
            total_bytes: 0,
            next_order: 0,
            refused: HashMap::new(),
            released: HashMap::new(),
            dropped: 0,
            untaken: Vec::new(),
        }
    }

    /// Changes the size bounds (a reload changed the limit): they apply from the next
    /// fragment; what is held stays, and a message past the new bound is refused when its
    /// next fragment comes.
    pub fn set_limits(&mut self, max_message_bytes: usize, max_total_bytes: usize) {
        self.max_message_bytes = max_message_bytes;
        self.max_total_bytes = max_total_bytes.max(max_message_bytes);
    }

    /// The largest message accepted.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// Incomplete messages held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held in incomplete messages.
    pub fn buffered_bytes(&self) -> usize {
        self.total_bytes
    }

    /// Adds one fragment. Returns the whole message when this fragment completed it.
    pub fn push(
        &mut self,
        message_id: &str,
        sum: u32,
        seq: u32,
        mut payload: Vec<u8>,
        now: Instant,
    ) -> Result<Option<Vec<u8>>, FragmentError> {
        if sum == 0 || sum > MAX_FRAGMENTS {
            return Err(FragmentError::BadSum { sum });
        }
        if seq >= sum {
            return Err(FragmentError::BadSeq { seq, sum });
        }
        self.expire(now);
        if sum > 1 && self.refused.contains_key(message_id) {
            return Ok(None);
        }
        if sum == 1 {
            return if payload.len() > self.max_message_bytes {
                Err(FragmentError::TooLarge {
                    limit: self.max_message_bytes,
                })
            } else {
                Ok(Some(payload))
            };
        }
        if message_id.len() > MAX_MESSAGE_ID_BYTES {
            return Err(FragmentError::IdTooLong {
                len: message_id.len(),
            });
        }
        if let Some(entry) = self.entries.get_mut(message_id) {
            if entry.parts.len() != sum as usize {
                let expected = entry.parts.len() as u32;
                self.drop_entry(message_id, DropReason::Inconsistent);
                return Err(FragmentError::SumChanged { expected, got: sum });
            }
            if entry.parts[seq as usize].is_some() {
                // A fragment sent again: the copy held stands; only the timer restarts.
                entry.deadline = now + self.ttl;
                return Ok(None);
            }
            if entry.bytes + payload.len() > self.max_message_bytes {
                self.remove(message_id);
                return Err(self.refuse(message_id, now));
            }
        } else {
            if payload.len() > self.max_message_bytes {
                return Err(self.refuse(message_id, now));
            }
            while self.entries.len() >= self.max_entries {
                self.evict_oldest();
            }
            let order = self.next_order;
            self.next_order += 1;
            self.entries.insert(
                message_id.to_owned(),
                Entry {
                    parts: vec![None; sum as usize],
                    missing: sum as usize,
                    bytes: 0,
                    // Set below, as for every fragment held.
                    deadline: now,
                    order,
                    copy: self.released.contains_key(message_id),
                },
            );
        }
        while self.total_bytes + payload.len() > self.max_total_bytes {
            if !self.evict_oldest_except(Some(message_id)) {
                break;
            }
        }
        let Some(entry) = self.entries.get_mut(message_id) else {
            return Ok(None);
        };
        entry.deadline = now + self.ttl;
        let slot = &mut entry.parts[seq as usize];
        if slot.is_none() {
            // Held in a buffer of its own length: only the length counts against the bounds,
            // and a decoder may hand over a larger buffer (prost reuses the buffer of a field
            // sent twice: 1 byte in one of 4 MiB).
            payload.shrink_to_fit();
            entry.bytes += payload.len();
            entry.missing -= 1;
            self.total_bytes += payload.len();
            *slot = Some(payload);
        }
        if entry.missing > 0 {
            return Ok(None);
        }
        let Some(entry) = self.entries.remove(message_id) else {
            return Ok(None);
        };
        self.total_bytes -= entry.bytes;
        remember(
            &mut self.released,
            self.max_entries,
            message_id,
            now + self.ttl,
        );
        let mut whole = Vec::with_capacity(entry.bytes);
        for part in entry.parts.into_iter().flatten() {
            whole.extend_from_slice(&part);
        }
        Ok(Some(whole))
    }

    /// Remembers `message_id` as refused (its other fragments are ignored); the error to return.
    fn refuse(&mut self, message_id: &str, now: Instant) -> FragmentError {
        remember(
            &mut self.refused,
            self.max_entries,
            message_id,
            now + self.ttl,
        );
        FragmentError::TooLarge {
            limit: self.max_message_bytes,
        }
    }

    /// Moves every timer `by` later: for time the caller spent not reading (backpressure),
    /// which must not count against a message whose next fragments wait unread in the socket.
    pub fn postpone(&mut self, by: Duration) {
        for entry in self.entries.values_mut() {
            entry.deadline += by;
        }
        for until in self.refused.values_mut().chain(self.released.values_mut()) {
            *until += by;
        }
    }

    /// Drops every entry whose timer ran out; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        self.refused.retain(|_, until| *until > now);
        self.released.retain(|_, until| *until > now);
        let expired: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &expired {
            self.drop_entry(k, DropReason::Expired);
        }
        expired.len()
    }

    /// The incomplete messages dropped since the last call, oldest first.
    pub fn take_dropped(&mut self) -> Vec<Dropped> {
        std::mem::take(&mut self.untaken)
    }

    /// Removes an incomplete message that will not complete, and reports it (unless it is a
    /// copy of one released: nothing is lost).
    fn drop_entry(&mut self, message_id: &str, reason: DropReason) {
        if let Some(e) = self.entries.remove(message_id) {
            self.total_bytes -= e.bytes;
            if e.copy {
                return;
            }
            self.dropped += 1;
            if self.untaken.len() < MAX_UNTAKEN_DROPS {
                self.untaken.push(Dropped {
                    message_id: message_id.to_owned(),
                    reason,
                    received: e.parts.len() - e.missing,
                    sum: e.parts.len(),
                });
            }
        }
    }

    fn remove(&mut self, message_id: &str) {
        if let Some(e) = self.entries.remove(message_id) {
            self.total_bytes -= e.bytes;
        }
    }

    fn evict_oldest(&mut self) {
        self.evict_oldest_except(None);
    }

    /// Evicts the oldest entry other than `keep` (any id, the empty one included); false when
    /// there is none.
    fn evict_oldest_except(&mut self, keep: Option<&str>) -> bool {
        let oldest = self
            .entries
            .iter()
            .filter(|(k, _)| Some(k.as_str()) != keep)
            .min_by_key(|(_, e)| e.order)
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => {
                self.drop_entry(&k, DropReason::Evicted);
                true
            }
            None => false,
        }
    }
}

/// Puts `id` in `map` until `until`, making room first by forgetting the id that expires
/// soonest when `map` holds `max` already.
fn remember(map: &mut HashMap<String, Instant>, max: usize, id: &str, until: Instant) {
    if map.len() >= max && !map.contains_key(id) {
        let soonest = map
            .iter()
            .min_by_key(|(_, until)| **until)
            .map(|(k, _)| k.clone());
        if let Some(k) = soonest {
            map.remove(&k);
        }
    }
    map.insert(id.to_owned(), until);
}

#[cfg(test)]
mod tests;
