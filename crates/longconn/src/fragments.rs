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
//! Bounds: one message at most `max_message_bytes`; at most `max_entries` incomplete messages
//! and `max_total_bytes` buffered in all — past those the oldest incomplete message is evicted.
//! Memory is therefore bounded whatever a peer sends.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The most fragments one message may declare.
pub const MAX_FRAGMENTS: u32 = 1024;

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
}

struct Entry {
    parts: Vec<Option<Vec<u8>>>,
    missing: usize,
    bytes: usize,
    deadline: Instant,
    /// Arrival order of the entry's first fragment, for evicting the oldest.
    order: u64,
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
    /// Incomplete messages dropped because their timer ran out or room was needed.
    pub dropped: u64,
}

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
            dropped: 0,
        }
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
        payload: Vec<u8>,
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
        if let Some(entry) = self.entries.get_mut(message_id) {
            if entry.parts.len() != sum as usize {
                let expected = entry.parts.len() as u32;
                self.remove(message_id);
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
                    deadline: now + self.ttl,
                    order,
                },
            );
        }
        while self.total_bytes + payload.len() > self.max_total_bytes {
            if !self.evict_oldest_except(message_id) {
                break;
            }
        }
        let Some(entry) = self.entries.get_mut(message_id) else {
            return Ok(None);
        };
        entry.deadline = now + self.ttl;
        let slot = &mut entry.parts[seq as usize];
        if slot.is_none() {
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
        let mut whole = Vec::with_capacity(entry.bytes);
        for part in entry.parts.into_iter().flatten() {
            whole.extend_from_slice(&part);
        }
        Ok(Some(whole))
    }

    /// Remembers `message_id` as refused (its other fragments are ignored); the error to return.
    fn refuse(&mut self, message_id: &str, now: Instant) -> FragmentError {
        if self.refused.len() >= self.max_entries {
            let soonest = self
                .refused
                .iter()
                .min_by_key(|(_, until)| **until)
                .map(|(k, _)| k.clone());
            if let Some(k) = soonest {
                self.refused.remove(&k);
            }
        }
        self.refused.insert(message_id.to_owned(), now + self.ttl);
        FragmentError::TooLarge {
            limit: self.max_message_bytes,
        }
    }

    /// Drops every entry whose timer ran out; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        self.refused.retain(|_, until| *until > now);
        let expired: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &expired {
            self.remove(k);
        }
        self.dropped += expired.len() as u64;
        expired.len()
    }

    fn remove(&mut self, message_id: &str) {
        if let Some(e) = self.entries.remove(message_id) {
            self.total_bytes -= e.bytes;
        }
    }

    fn evict_oldest(&mut self) {
        self.evict_oldest_except("");
    }

    /// Evicts the oldest entry other than `keep`; false when there is none.
    fn evict_oldest_except(&mut self, keep: &str) -> bool {
        let oldest = self
            .entries
            .iter()
            .filter(|(k, _)| k.as_str() != keep || keep.is_empty())
            .min_by_key(|(_, e)| e.order)
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => {
                self.remove(&k);
                self.dropped += 1;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer() -> Reassembler {
        Reassembler::new(Duration::from_secs(5), 4, 100, 150)
    }

    #[test]
    fn single_fragment_passes_through() {
        let mut r = buffer();
        let now = Instant::now();
        assert_eq!(
            r.push("m", 1, 0, b"abc".to_vec(), now),
            Ok(Some(b"abc".to_vec()))
        );
        assert!(r.is_empty());
    }

    #[test]
    fn out_of_order_fragments_join_in_seq_order_once() {
        let mut r = buffer();
        let now = Instant::now();
        assert_eq!(r.push("m", 3, 2, b"c".to_vec(), now), Ok(None));
        assert_eq!(r.push("m", 3, 0, b"a".to_vec(), now), Ok(None));
        // A duplicate fragment changes nothing.
        assert_eq!(r.push("m", 3, 0, b"X".to_vec(), now), Ok(None));
        assert_eq!(
            r.push("m", 3, 1, b"b".to_vec(), now),
            Ok(Some(b"abc".to_vec()))
        );
        assert!(r.is_empty());
        assert_eq!(r.buffered_bytes(), 0);
        // A late duplicate starts a new entry that never completes by itself.
        assert_eq!(r.push("m", 3, 1, b"b".to_vec(), now), Ok(None));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn a_fragment_sent_again_never_counts_against_the_size_limits() {
        // 60 of the 100 bytes a message may have are held; the same 60-byte fragment again
        // would pass 100 if it counted: it is a copy, the message still completes.
        let mut r = buffer();
        let now = Instant::now();
        let big = vec![b'a'; 60];
        assert_eq!(r.push("m", 2, 0, big.clone(), now), Ok(None));
        assert_eq!(r.push("m", 2, 0, big.clone(), now), Ok(None));
        assert_eq!(r.buffered_bytes(), 60);
        // Nor against the total: with 120 of 150 bytes held in two messages, a copy of one
        // of their fragments evicts neither.
        assert_eq!(r.push("n", 2, 0, big.clone(), now), Ok(None));
        assert_eq!(r.push("n", 2, 0, big.clone(), now), Ok(None));
        assert_eq!(r.len(), 2);
        assert_eq!(r.buffered_bytes(), 120);
        let mut whole = big.clone();
        whole.extend_from_slice(b"b");
        assert_eq!(r.push("m", 2, 1, b"b".to_vec(), now), Ok(Some(whole)));
    }

    #[test]
    fn each_fragment_restarts_the_timer_and_stale_entries_expire() {
        let mut r = buffer();
        let t0 = Instant::now();
        r.push("m", 2, 0, b"a".to_vec(), t0).expect("ok");
        r.push("n", 2, 0, b"a".to_vec(), t0).expect("ok");
        let t4 = t0 + Duration::from_secs(4);
        r.push("m", 2, 0, b"a".to_vec(), t4).expect("ok");
        let t6 = t0 + Duration::from_secs(6);
        assert_eq!(r.expire(t6), 1, "only n ran out");
        assert_eq!(
            r.push("m", 2, 1, b"b".to_vec(), t6),
            Ok(Some(b"ab".to_vec()))
        );
        assert_eq!(
            r.push("n", 2, 1, b"b".to_vec(), t6),
            Ok(None),
            "n was dropped"
        );
        assert_eq!(r.dropped, 1);
    }

    #[test]
    fn bad_headers_are_refused() {
        let mut r = buffer();
        let now = Instant::now();
        assert_eq!(
            r.push("m", 0, 0, vec![], now),
            Err(FragmentError::BadSum { sum: 0 })
        );
        assert_eq!(
            r.push("m", MAX_FRAGMENTS + 1, 0, vec![], now),
            Err(FragmentError::BadSum {
                sum: MAX_FRAGMENTS + 1
            })
        );
        assert_eq!(
            r.push("m", 2, 2, vec![], now),
            Err(FragmentError::BadSeq { seq: 2, sum: 2 })
        );
        r.push("m", 2, 0, b"a".to_vec(), now).expect("ok");
        assert_eq!(
            r.push("m", 3, 1, b"b".to_vec(), now),
            Err(FragmentError::SumChanged {
                expected: 2,
                got: 3
            })
        );
        assert!(r.is_empty(), "the inconsistent message is dropped");
    }

    #[test]
    fn size_and_count_are_bounded() {
        let mut r = buffer();
        let now = Instant::now();
        assert_eq!(
            r.push("big", 1, 0, vec![0; 101], now),
            Err(FragmentError::TooLarge { limit: 100 })
        );
        r.push("m", 2, 0, vec![0; 60], now).expect("ok");
        assert_eq!(
            r.push("m", 2, 1, vec![0; 41], now),
            Err(FragmentError::TooLarge { limit: 100 })
        );
        assert!(r.is_empty());
        // Total bytes: a third 60-byte entry evicts the oldest.
        r.push("a", 2, 0, vec![0; 60], now).expect("ok");
        r.push("b", 2, 0, vec![0; 60], now).expect("ok");
        r.push("c", 2, 0, vec![0; 60], now).expect("ok");
        assert_eq!(r.len(), 2);
        assert!(r.buffered_bytes() <= 150);
        assert_eq!(r.push("a", 2, 1, vec![1], now), Ok(None), "a was evicted");
        // Entry count: at most 4.
        for id in ["w", "x", "y", "z", "q"] {
            r.push(id, 2, 0, vec![], now).expect("ok");
        }
        assert_eq!(r.len(), 4);
    }

    #[test]
    fn a_message_too_large_is_refused_once_and_its_other_fragments_ignored() {
        let mut r = buffer();
        let now = Instant::now();
        r.push("m", 3, 0, vec![0; 60], now).expect("ok");
        assert_eq!(
            r.push("m", 3, 1, vec![0; 41], now),
            Err(FragmentError::TooLarge { limit: 100 })
        );
        assert_eq!(r.push("m", 3, 2, vec![0; 1], now), Ok(None), "ignored");
        let soon = now + Duration::from_secs(4);
        assert_eq!(r.push("m", 3, 1, vec![0; 1], soon), Ok(None), "ignored");
        assert!(r.is_empty());
        // A message of one fragment is never held back: examined as it comes.
        assert_eq!(
            r.push("m", 1, 0, b"y".to_vec(), soon),
            Ok(Some(b"y".to_vec()))
        );
        // A ttl after the refusal (ignored fragments do not extend it), the id is a message
        // like any other.
        let later = now + Duration::from_secs(6);
        assert_eq!(
            r.push("m", 1, 0, b"x".to_vec(), later),
            Ok(Some(b"x".to_vec()))
        );
        // The first fragment alone too large refuses the message the same way.
        assert_eq!(
            r.push("n", 2, 0, vec![0; 101], now),
            Err(FragmentError::TooLarge { limit: 100 })
        );
        assert_eq!(r.push("n", 2, 1, vec![0; 1], now), Ok(None));
    }
}
