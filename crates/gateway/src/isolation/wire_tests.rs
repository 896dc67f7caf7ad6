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
    assert_eq!(batch_groups(&refs).len(), 1);
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
