//! The reassembler's unit tests (in a file of their own: `fragments.rs` stays readable).

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
    let dropped = r.take_dropped();
    assert_eq!(dropped.len(), 1, "and reported: {dropped:?}");
    assert_eq!(dropped[0].reason, DropReason::Inconsistent);
    assert_eq!((dropped[0].received, dropped[0].sum), (1, 2));
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

#[test]
fn postponed_timers_do_not_run_while_the_caller_was_not_reading() {
    let mut r = buffer();
    let t0 = Instant::now();
    r.push("m", 2, 0, b"a".to_vec(), t0).expect("ok");
    r.push("big", 2, 0, vec![0; 101], t0).expect_err("refused");
    // Ten seconds without reading (backpressure), then the rest arrives.
    r.postpone(Duration::from_secs(10));
    let t12 = t0 + Duration::from_secs(12);
    assert_eq!(r.expire(t12), 0, "3 s of reading time: within the ttl");
    assert_eq!(
        r.push("big", 2, 1, vec![0; 1], t12),
        Ok(None),
        "still refused: its other fragments are ignored"
    );
    assert_eq!(
        r.push("m", 2, 1, b"b".to_vec(), t12),
        Ok(Some(b"ab".to_vec()))
    );
    r.push("n", 2, 0, b"a".to_vec(), t12).expect("ok");
    assert_eq!(r.expire(t12 + Duration::from_secs(5)), 1, "not postponed");
}

#[test]
fn every_incomplete_message_dropped_is_reported_once() {
    let mut r = buffer();
    let t0 = Instant::now();
    for id in ["a", "b", "c", "d"] {
        r.push(id, 3, 0, b"x".to_vec(), t0).expect("ok");
    }
    r.push("a", 3, 1, b"x".to_vec(), t0).expect("ok");
    // A fifth incomplete message evicts the oldest.
    r.push("e", 2, 0, b"x".to_vec(), t0).expect("ok");
    assert_eq!(
        r.take_dropped(),
        [Dropped {
            message_id: "a".into(),
            reason: DropReason::Evicted,
            received: 2,
            sum: 3
        }]
    );
    assert!(r.take_dropped().is_empty(), "reported once");
    r.push("e", 2, 1, b"y".to_vec(), t0).expect("completes");
    let t6 = t0 + Duration::from_secs(6);
    assert_eq!(r.expire(t6), 3);
    let mut expired: Vec<(String, DropReason)> = r
        .take_dropped()
        .into_iter()
        .map(|d| (d.message_id, d.reason))
        .collect();
    expired.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        expired,
        [
            ("b".to_owned(), DropReason::Expired),
            ("c".to_owned(), DropReason::Expired),
            ("d".to_owned(), DropReason::Expired)
        ]
    );
    assert_eq!(r.dropped, 4);
    assert_eq!(DropReason::Expired.as_str(), "expired");
}

/// Drops nobody takes are kept up to [`MAX_UNTAKEN_DROPS`]; past that only `dropped` counts.
#[test]
fn untaken_drops_are_bounded() {
    let mut r = buffer();
    let t0 = Instant::now();
    let n = MAX_UNTAKEN_DROPS + 10;
    for i in 0..n + 4 {
        r.push(&format!("m{i}"), 2, 0, b"x".to_vec(), t0)
            .expect("ok");
    }
    assert_eq!(r.dropped, n as u64);
    assert_eq!(r.take_dropped().len(), MAX_UNTAKEN_DROPS);
}

#[test]
fn new_limits_apply_from_the_next_fragment() {
    let mut r = buffer();
    let now = Instant::now();
    assert!(r.push("m", 1, 0, vec![0; 150], now).is_err());
    r.set_limits(200, 300);
    assert_eq!(r.max_message_bytes(), 200);
    assert_eq!(r.push("m", 1, 0, vec![0; 150], now), Ok(Some(vec![0; 150])));
    r.push("n", 2, 0, vec![0; 150], now).expect("held");
    r.set_limits(100, 150);
    assert_eq!(
        r.push("n", 2, 1, vec![0; 1], now),
        Err(FragmentError::TooLarge { limit: 100 })
    );
}

/// The heap the held fragments really take (their buffers' capacity).
fn held_capacity(r: &Reassembler) -> usize {
    r.entries
        .values()
        .flat_map(|e| e.parts.iter().flatten())
        .map(Vec::capacity)
        .sum()
}

/// Found by the `reassemble` fuzz target (its memory check): a payload buffer with unused
/// capacity was held whole while only its length counted against the bounds. A decoded frame
/// hands over such buffers: prost reuses the buffer of a field sent twice, so a frame whose
/// payload field comes first with 64 KiB and then with 1 byte decodes to 1 byte in a 64 KiB
/// buffer; 64 messages of 1024 such fragments would hold 4 GiB counted as 64 KiB.
#[test]
fn a_fragment_is_held_in_a_buffer_of_its_own_length() {
    use crate::Frame;
    let mut bytes = vec![0x42, 0x80, 0x80, 0x04]; // 8 payload, 65536 bytes
    bytes.resize(bytes.len() + 65_536, b'x');
    bytes.extend_from_slice(&[0x42, 1, b'y']); // 8 payload again, 1 byte
    let payload = Frame::decode_bytes(&bytes)
        .expect("decodes")
        .payload
        .expect("has a payload");
    assert_eq!(payload, b"y");
    assert!(payload.capacity() >= 65_536, "the decoder kept its buffer");

    let mut r = buffer();
    let now = Instant::now();
    assert_eq!(r.push("m", 3, 0, payload, now), Ok(None));
    let mut spare = Vec::with_capacity(10_000);
    spare.extend_from_slice(b"z");
    assert_eq!(r.push("m", 3, 1, spare, now), Ok(None));
    assert_eq!(r.buffered_bytes(), 2);
    assert_eq!(held_capacity(&r), 2, "what is held is what is counted");
    assert_eq!(
        r.push("m", 3, 2, b"!".to_vec(), now),
        Ok(Some(b"yz!".to_vec()))
    );
}

/// Found by the `reassemble` fuzz target (in 8 s; minimised to 35 bytes: new limits, then a
/// fragment of the empty id, one of another message, and the empty id's second, too big for
/// the bytes left). A data frame without a `message_id` header is pushed with the empty id
/// (the session's `unwrap_or("")`), and "keep the empty id" meant "keep nothing" when room was
/// needed: the message could evict itself; its fragment vanished (`Ok(None)`, the message
/// reported evicted) while an older message stayed.
#[test]
fn a_fragment_never_evicts_its_own_message_whatever_its_id() {
    for id in ["", "m"] {
        let mut r = buffer();
        let now = Instant::now();
        r.push(id, 3, 0, vec![0; 10], now).expect("held");
        r.push("a", 2, 0, vec![0; 60], now).expect("held");
        r.push("b", 2, 0, vec![0; 60], now).expect("held");
        // 130 of 150 bytes held: 30 more needs room, taken from the oldest other message.
        assert_eq!(r.push(id, 3, 1, vec![1; 30], now), Ok(None), "{id:?}");
        let dropped: Vec<(String, DropReason)> = r
            .take_dropped()
            .into_iter()
            .map(|d| (d.message_id, d.reason))
            .collect();
        assert_eq!(dropped, [("a".to_owned(), DropReason::Evicted)], "{id:?}");
        let mut whole = vec![0; 10];
        whole.extend([1; 30]);
        whole.push(2);
        assert_eq!(r.push(id, 3, 2, vec![2], now), Ok(Some(whole)), "{id:?}");
    }
}

/// A held message's id is kept (as the key of its entry, then of a refusal, and in each drop
/// reported) but was counted nowhere: 64 ids of a frame's size (4 MiB) each were 256 MiB
/// outside every bound, twice. An id longer than `MAX_MESSAGE_ID_BYTES` is refused; a message
/// of one fragment, never held, passes whatever its id.
#[test]
fn a_message_id_too_long_to_hold_is_refused() {
    let mut r = buffer();
    let now = Instant::now();
    let long = "i".repeat(MAX_MESSAGE_ID_BYTES + 1);
    assert_eq!(
        r.push(&long, 2, 0, b"a".to_vec(), now),
        Err(FragmentError::IdTooLong {
            len: MAX_MESSAGE_ID_BYTES + 1
        })
    );
    assert!(r.is_empty());
    assert_eq!(
        r.push(&long, 1, 0, b"a".to_vec(), now),
        Ok(Some(b"a".to_vec()))
    );
    let longest = "i".repeat(MAX_MESSAGE_ID_BYTES);
    assert_eq!(r.push(&longest, 2, 0, b"a".to_vec(), now), Ok(None));
    assert_eq!(
        r.push(&longest, 2, 1, b"b".to_vec(), now),
        Ok(Some(b"ab".to_vec()))
    );
}

/// A late copy of a fragment of a message already released opened an entry that expired as a
/// dropped message (a warning and a count, for a message that was delivered). Within `ttl` of
/// the release such an entry is a copy: released again if it completes (a whole re-send, for
/// the caller's dedup), dropped quietly if not. After that a fragment is a message again.
#[test]
fn a_copy_of_a_released_message_is_never_reported_dropped() {
    let mut r = buffer();
    let t0 = Instant::now();
    r.push("m", 2, 0, b"a".to_vec(), t0).expect("ok");
    assert_eq!(
        r.push("m", 2, 1, b"b".to_vec(), t0),
        Ok(Some(b"ab".to_vec()))
    );
    // A late duplicate: held, then expired without a report.
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(r.push("m", 2, 1, b"b".to_vec(), t1), Ok(None));
    assert_eq!(r.len(), 1);
    assert_eq!(r.expire(t1 + Duration::from_secs(5)), 1);
    assert!(r.take_dropped().is_empty());
    assert_eq!(r.dropped, 0);
    // A whole re-send within the ttl of the release is released again.
    let t2 = t0 + Duration::from_secs(2);
    r.push("n", 2, 0, b"c".to_vec(), t2).expect("ok");
    assert_eq!(
        r.push("n", 2, 1, b"d".to_vec(), t2),
        Ok(Some(b"cd".to_vec()))
    );
    assert_eq!(r.push("n", 2, 0, b"c".to_vec(), t2), Ok(None));
    assert_eq!(
        r.push("n", 2, 1, b"d".to_vec(), t2),
        Ok(Some(b"cd".to_vec()))
    );
    // Evicted, a copy is not reported either.
    assert_eq!(r.push("n", 2, 0, b"c".to_vec(), t2), Ok(None));
    for id in ["w", "x", "y", "z"] {
        r.push(id, 2, 0, b"e".to_vec(), t2).expect("ok");
    }
    assert!(
        r.take_dropped().is_empty(),
        "the copy of n was evicted quietly"
    );
    // Once the ttl of m's release has passed, a fragment of m is a message of its own again.
    let t9 = t0 + Duration::from_secs(9);
    r.push("m", 2, 0, b"a".to_vec(), t9).expect("ok");
    r.expire(t9 + Duration::from_secs(5));
    let dropped: Vec<String> = r.take_dropped().into_iter().map(|d| d.message_id).collect();
    assert!(dropped.contains(&"m".to_owned()), "{dropped:?}");
}

/// The bounds are inclusive: a message of exactly `max_message_bytes` (one fragment, or two
/// that add up to it, or a first fragment that is all of it), `MAX_FRAGMENTS` fragments, and
/// `max_total_bytes` held in all, are accepted without an eviction.
#[test]
fn every_bound_holds_exactly_its_limit() {
    let mut r = buffer();
    let now = Instant::now();
    assert_eq!(
        r.push("one", 1, 0, vec![0; 100], now)
            .expect("ok")
            .map(|m| m.len()),
        Some(100)
    );
    r.push("a", 2, 0, vec![1; 60], now).expect("ok");
    assert!(!r.is_empty());
    assert_eq!(
        r.push("a", 2, 1, vec![2; 40], now)
            .expect("ok")
            .map(|m| m.len()),
        Some(100)
    );
    r.push("b", 2, 0, vec![0; 100], now)
        .expect("a first fragment of the whole size");
    assert_eq!(
        r.push("b", 2, 1, vec![], now).expect("ok").map(|m| m.len()),
        Some(100)
    );
    r.push("c", 2, 0, vec![0; 60], now).expect("ok");
    r.push("d", 2, 0, vec![0; 90], now).expect("ok");
    assert_eq!(
        (r.len(), r.buffered_bytes()),
        (2, 150),
        "150 held: nothing evicted"
    );
    assert!(r.take_dropped().is_empty());
    let mut many = buffer();
    many.push("m", MAX_FRAGMENTS, MAX_FRAGMENTS - 1, vec![1], now)
        .expect("1024 fragments");
    assert_eq!(
        many.push("m", MAX_FRAGMENTS + 1, 0, vec![1], now),
        Err(FragmentError::BadSum {
            sum: MAX_FRAGMENTS + 1
        })
    );
}

/// A fragment evicts as many of the oldest messages as its bytes need, and a message refused
/// half-way gives its bytes back.
#[test]
fn a_fragment_evicts_as_many_messages_as_it_needs() {
    let mut r = buffer();
    let now = Instant::now();
    for id in ["a", "b", "c"] {
        r.push(id, 2, 0, vec![0; 50], now).expect("ok");
    }
    r.push("d", 2, 0, vec![0; 100], now).expect("ok");
    assert_eq!((r.len(), r.buffered_bytes()), (2, 150), "a and b evicted");
    let dropped: Vec<String> = r.take_dropped().into_iter().map(|d| d.message_id).collect();
    assert_eq!(dropped, ["a", "b"]);
    r.push("c", 2, 1, vec![0; 51], now)
        .expect_err("c is past 100 bytes: refused");
    assert_eq!(
        (r.len(), r.buffered_bytes()),
        (1, 100),
        "c's 50 bytes given back"
    );
}

/// A refusal and a release are remembered for exactly `ttl`: at its end the id is a message
/// like any other (held, not ignored; completed, reported when dropped).
#[test]
fn a_refusal_and_a_release_last_exactly_the_ttl() {
    let mut r = buffer();
    let t0 = Instant::now();
    r.push("big", 2, 0, vec![0; 101], t0).expect_err("refused");
    r.push("done", 2, 0, vec![1], t0).expect("held");
    assert_eq!(r.push("done", 2, 1, vec![2], t0), Ok(Some(vec![1, 2])));
    r.push("done", 2, 0, vec![1], t0).expect("a copy, held");
    r.expire(t0 + Duration::from_secs(5));
    assert!(r.take_dropped().is_empty(), "a copy's drop is quiet");
    let t5 = t0 + Duration::from_secs(5);
    assert_eq!(r.push("big", 2, 0, vec![0; 10], t5), Ok(None));
    assert_eq!(r.len(), 1, "held again, not ignored");
    r.push("done", 2, 0, vec![1], t5).expect("held");
    r.expire(t5 + Duration::from_secs(5));
    let dropped: Vec<String> = r.take_dropped().into_iter().map(|d| d.message_id).collect();
    assert_eq!(dropped.len(), 2, "no longer copies: {dropped:?}");
}

/// What is remembered is bounded by `max_entries`: past it the id that expires soonest is
/// forgotten, and an id remembered again keeps its place.
#[test]
fn refusals_remembered_are_bounded_and_the_soonest_forgotten() {
    let mut r = buffer();
    let t0 = Instant::now();
    for (i, id) in ["r0", "r1", "r2", "r3", "r4"].iter().enumerate() {
        r.push(id, 2, 0, vec![0; 101], t0 + Duration::from_millis(i as u64))
            .expect_err("refused");
    }
    let t = t0 + Duration::from_millis(10);
    assert_eq!(r.push("r0", 2, 1, vec![0; 1], t), Ok(None));
    assert_eq!(r.len(), 1, "r0 was forgotten: its fragment is held");
    for id in ["r2", "r3", "r4"] {
        assert_eq!(r.push(id, 2, 1, vec![0; 1], t), Ok(None));
    }
    assert_eq!(r.len(), 1, "the four newest are still refused");
}
