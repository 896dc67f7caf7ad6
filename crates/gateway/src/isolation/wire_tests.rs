//! The frame format's unit tests: batches grouped to fit a frame, every message round-tripping,
//! garbage and oversized frames refused as errors, never panics.

use super::*;

#[test]
fn a_batch_is_grouped_so_that_each_frame_fits() {
    let d: Vec<Vec<u8>> = [10, 10, 10, 30, 5].iter().map(|n| vec![0u8; *n]).collect();
    let refs: Vec<&[u8]> = d.iter().map(Vec::as_slice).collect();
    let sizes = |limit| -> Vec<usize> {
        groups_within(&refs, limit)
            .iter()
            .map(|g| g.len())
            .collect()
    };
    // 12 + 14 per 10-byte delivery: two fit in 40, the 30-byte one goes alone.
    assert_eq!(sizes(40), [2, 1, 1, 1]);
    assert_eq!(sizes(1 << 20), [5]);
    // Too large even alone: a group of its own.
    assert_eq!(sizes(20), [1, 1, 1, 1, 1]);
    assert_eq!(batch_groups(&refs), [refs.as_slice()]);
    let none: [&[u8]; 0] = [];
    assert_eq!(
        groups_within(&none, 40).len(),
        1,
        "an empty batch is one empty group"
    );
}

#[test]
fn every_message_round_trips() {
    let to = [
        ToChild::Init(InitRequest {
            name: "n".into(),
            config: serde_json::json!({"a": [1, "x"]}),
            config_dir: "/etc/gw".into(),
            sha256: "ab".repeat(32),
            pinned: true,
        }),
        ToChild::Describe(DescribeRequest {
            sha256: "cd".repeat(32),
            pinned: false,
        }),
        ToChild::Batch {
            id: 7,
            deliveries: vec![b"{}".to_vec(), Vec::new(), vec![0xff; 3]],
        },
    ];
    let mut buf = Vec::new();
    for m in &to {
        m.write(&mut buf).expect("write");
    }
    let mut r = buf.as_slice();
    for m in &to {
        assert_eq!(ToChild::read(&mut r).expect("read").as_ref(), Some(m));
    }
    assert_eq!(ToChild::read(&mut r).expect("eof"), None);

    let loaded = Loaded {
        sha256: "ef".repeat(32),
        descriptor: DescriptorSummary {
            name: "kit".into(),
            version: "1.2.3".into(),
            build_tag: "tag".into(),
            abi_minor: 1,
            struct_size: 88,
            batch_entry: true,
        },
    };
    let from = [
        FromChild::InitOk(loaded.clone()),
        FromChild::InitErr {
            kind: InitFailure::Refused,
            message: "bad config".into(),
        },
        FromChild::InitErr {
            kind: InitFailure::Panicked,
            message: "boom".into(),
        },
        FromChild::InitErr {
            kind: InitFailure::Load,
            message: "no such file".into(),
        },
        FromChild::Described(loaded),
        FromChild::Outcomes {
            id: 9,
            outcomes: vec![
                CallOutcome::Ok,
                CallOutcome::Retry {
                    reason: "r".into(),
                    retry_after: Some(std::time::Duration::from_millis(1500)),
                },
                CallOutcome::Reject {
                    reason: "no".into(),
                },
                CallOutcome::Panicked {
                    message: "p".into(),
                },
            ],
        },
        FromChild::BatchPanicked {
            id: 3,
            message: "m".into(),
        },
        FromChild::Log {
            level: 3,
            message: "hello".into(),
        },
    ];
    let mut buf = Vec::new();
    for m in &from {
        m.write(&mut buf).expect("write");
    }
    let mut r = buf.as_slice();
    for m in &from {
        assert_eq!(FromChild::read(&mut r).expect("read").as_ref(), Some(m));
    }
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    for bytes in [
        &[0u8, 0, 0, 0][..],
        &[255, 255, 255, 255, 1],
        &[5, 0, 0, 0, 2, 1],
        &[3, 0, 0, 0, 99, 0, 0],
        &[13, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 200, 0, 0, 0],
    ] {
        let mut r = bytes;
        assert!(ToChild::read(&mut r).is_err(), "{bytes:?}");
    }
    let mut r: &[u8] = &[2, 0];
    assert!(
        !matches!(ToChild::read(&mut r), Ok(Some(_))),
        "a truncated length"
    );
    for bytes in [
        &[2u8, 0, 0, 0, 11, 9][..],
        &[2, 0, 0, 0, 10, b'x'],
        &[1, 0, 0, 0, 15],
        &[1, 0, 0, 0, 11],
    ] {
        let mut r = bytes;
        assert!(FromChild::read(&mut r).is_err(), "{bytes:?}");
    }
}

/// A child cannot make the gateway buffer more than a frame's kind allows: a `Log` frame
/// announcing 2 MiB is refused after its tag, before its body is read (the stream here
/// holds no body at all); an `Outcomes` frame of the same size is read.
#[test]
fn a_frame_larger_than_its_kind_allows_is_refused_before_its_body_is_read() {
    let two_mib = (2u32 << 20) + 1;
    let mut log = two_mib.to_le_bytes().to_vec();
    log.push(14);
    let mut r = log.as_slice();
    let e = FromChild::read(&mut r).expect_err("refused");
    assert!(e.to_string().contains("too large for its kind"), "{e}");

    let mut outcomes = two_mib.to_le_bytes().to_vec();
    outcomes.push(12);
    outcomes.extend_from_slice(&7u64.to_le_bytes());
    let mut json = b"[]".to_vec();
    json.resize((2 << 20) - 8, b' ');
    outcomes.extend_from_slice(&json);
    let mut r = outcomes.as_slice();
    assert_eq!(
        FromChild::read(&mut r).expect("read"),
        Some(FromChild::Outcomes {
            id: 7,
            outcomes: Vec::new()
        })
    );
}

/// An answer holding more outcomes than any batch (10,000 at most) is refused while it is
/// parsed, not turned into millions of outcomes first.
#[test]
fn an_answer_with_more_outcomes_than_any_batch_is_refused() {
    let answer = |n: usize| {
        let mut json = b"[".to_vec();
        for i in 0..n {
            if i > 0 {
                json.push(b',');
            }
            json.extend_from_slice(br#"{"code":0}"#);
        }
        json.push(b']');
        let mut frame = ((json.len() + 9) as u32).to_le_bytes().to_vec();
        frame.push(12);
        frame.extend_from_slice(&7u64.to_le_bytes());
        frame.extend_from_slice(&json);
        frame
    };
    match FromChild::read(&mut answer(10_000).as_slice()).expect("read") {
        Some(FromChild::Outcomes { outcomes, .. }) => assert_eq!(outcomes.len(), 10_000),
        other => panic!("{other:?}"),
    }
    let e = FromChild::read(&mut answer(10_001).as_slice()).expect_err("refused");
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    assert!(e.to_string().contains("more than 10000 outcomes"), "{e}");
}

/// Regression: a frame from the child with a tag only the gateway sends (`Batch`) was allowed
/// a gateway's frame size, a gigabyte allocated for a child's stray bytes; each direction now
/// refuses the other's kinds after the tag.
#[test]
fn a_frame_of_a_kind_this_direction_never_carries_is_refused_before_its_body() {
    let gib = (1u32 << 30) + 1;
    let mut stray = gib.to_le_bytes().to_vec();
    stray.push(2);
    let e = FromChild::read(&mut stray.as_slice()).expect_err("refused");
    assert!(e.to_string().contains("unknown frame"), "{e}");
    let mut stray = (2u32 << 20).to_le_bytes().to_vec();
    stray.push(12);
    let e = ToChild::read(&mut stray.as_slice()).expect_err("refused");
    assert!(e.to_string().contains("unknown frame"), "{e}");
}

/// Regression: a whole frame whose JSON is cut short read as the stream's clean end (serde's
/// error for it is `UnexpectedEof`), so a broken child was not seen as one.
#[test]
fn a_frame_with_json_cut_short_is_bad_data_not_the_end() {
    let body = br#"[{"code":0"#;
    let mut frame = ((body.len() + 9) as u32).to_le_bytes().to_vec();
    frame.push(12);
    frame.extend_from_slice(&7u64.to_le_bytes());
    frame.extend_from_slice(body);
    let e = FromChild::read(&mut frame.as_slice()).expect_err("bad");
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
}

/// Regression: reasons were cut to 4 KiB before JSON escaping, which can make a byte six: the
/// answer to a batch of 10,000 such outcomes passed the frame's limit, and the gateway took the
/// child for broken (killed, its batch run again). Each reason now keeps what fits.
#[test]
fn the_answer_to_a_large_batch_of_long_reasons_fits_its_frame() {
    let reason = "\u{1}".repeat(5_000);
    let outcomes: Vec<CallOutcome> = (0..10_000)
        .map(|_| CallOutcome::Reject {
            reason: reason.clone(),
        })
        .collect();
    let mut buf = Vec::new();
    FromChild::Outcomes { id: 3, outcomes }
        .write(&mut buf)
        .expect("write");
    assert!(buf.len() < MAX_ANSWER, "{} bytes", buf.len());
    match FromChild::read(&mut buf.as_slice()).expect("read") {
        Some(FromChild::Outcomes { id: 3, outcomes }) => {
            assert_eq!(outcomes.len(), 10_000);
            assert!(
                matches!(&outcomes[9_999], CallOutcome::Reject { reason } if !reason.is_empty())
            );
        }
        other => panic!("{other:?}"),
    }
    // One outcome keeps the engine's whole cap.
    let mut buf = Vec::new();
    FromChild::Outcomes {
        id: 4,
        outcomes: vec![CallOutcome::Reject { reason }],
    }
    .write(&mut buf)
    .expect("write");
    match FromChild::read(&mut buf.as_slice()).expect("read") {
        Some(FromChild::Outcomes { outcomes, .. }) => assert!(matches!(
            &outcomes[0],
            CallOutcome::Reject { reason } if reason.len() > 4_000
        )),
        other => panic!("{other:?}"),
    }
}

/// The length check's edges: a zero length is refused as such (not read as a body of -1 bytes),
/// a body of exactly its kind's limit is allowed (here cut short: the end of the stream is what
/// stops it), one byte more is refused; and a read that fails is that failure, not the clean
/// end of the stream that only a closed pipe is.
#[test]
fn frame_lengths_are_checked_at_their_edges_and_read_errors_stay_errors() {
    let mut zero: &[u8] = &[0, 0, 0, 0, 14];
    let e = FromChild::read(&mut zero).expect_err("zero length");
    assert!(e.to_string().contains("bad frame length"), "{e}");

    let limit = u32::try_from(MAX_SMALL).expect("small");
    let mut at_limit = (limit + 1).to_le_bytes().to_vec();
    at_limit.push(14);
    let e = FromChild::read(&mut at_limit.as_slice()).expect_err("no body");
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
    let mut over = (limit + 2).to_le_bytes().to_vec();
    over.push(14);
    let e = FromChild::read(&mut over.as_slice()).expect_err("refused");
    assert!(e.to_string().contains("too large for its kind"), "{e}");

    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"))
        }
    }
    let e = FromChild::read(&mut Broken).expect_err("a failed read");
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
}
