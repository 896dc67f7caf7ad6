//! Envelope classification: every shape of the spec's table, every malformed shape, no panics.

use super::*;
use proptest::prelude::*;

fn event(body: &str) -> Event {
    match Envelope::parse(body.as_bytes()) {
        Ok(Envelope::Event(e)) => e,
        other => panic!("expected an event from {body}: {other:?}"),
    }
}

fn err(body: &str) -> EnvelopeError {
    Envelope::parse(body.as_bytes()).expect_err(body)
}

#[test]
fn encrypted_body() {
    assert_eq!(
        Envelope::parse(br#"{"encrypt":"abc="}"#),
        Ok(Envelope::Encrypted {
            encrypt: "abc=".into()
        })
    );
    assert_eq!(
        err(r#"{"encrypt":1}"#),
        EnvelopeError::WrongType {
            field: "encrypt",
            expected: "a string"
        }
    );
    assert_eq!(
        err(r#"{"encrypt":"a","schema":"2.0"}"#),
        EnvelopeError::MixedEncrypted
    );
}

/// `encrypt` must stand alone: each classifying key next to it is refused on its own, so no
/// single check can be dropped (or two of them merged into one `&&`) unnoticed.
#[test]
fn encrypt_with_any_classifying_key_is_mixed() {
    for extra in [
        r#""schema":"2.0""#,
        r#""header":{}"#,
        r#""type":"event_callback""#,
        r#""challenge":"c""#,
        r#""uuid":"u""#,
        r#""event":{}"#,
    ] {
        for body in [
            format!(r#"{{"encrypt":"abc=",{extra}}}"#),
            format!(r#"{{{extra},"encrypt":"abc="}}"#),
        ] {
            assert_eq!(err(&body), EnvelopeError::MixedEncrypted, "{body}");
        }
    }
}

#[test]
fn schema_names() {
    assert_eq!(Schema::V2.as_str(), "2.0");
    assert_eq!(Schema::V1.as_str(), "1.0");
}

/// Schema 1.0 `ts`: documented as a string, tolerated as a bare decimal number (kept as its
/// text), `null` or absent means none, anything else is refused.
#[test]
fn schema_1_ts_forms() {
    let body =
        |ts: &str| format!(r#"{{"uuid":"u","type":"event_callback",{ts}"event":{{"type":"t"}}}}"#);
    let accepted: &[(&str, Option<&str>)] = &[
        (r#""ts":"1502199207.7171419","#, Some("1502199207.7171419")),
        (r#""ts":"not checked","#, Some("not checked")),
        (r#""ts":1502199207,"#, Some("1502199207")),
        (r#""ts":1502199207.7171419,"#, Some("1502199207.7171419")),
        (r#""ts":null,"#, None),
        ("", None),
    ];
    for (ts, expected) in accepted {
        let b = body(ts);
        assert_eq!(event(&b).create_time.as_deref(), *expected, "{b}");
    }
    for ts in [
        r#""ts":true,"#,
        r#""ts":-1,"#,
        r#""ts":1e9,"#,
        r#""ts":{},"#,
        r#""ts":[1],"#,
    ] {
        let b = body(ts);
        assert_eq!(
            err(&b),
            EnvelopeError::WrongType {
                field: "ts",
                expected: "a decimal string or number",
            },
            "{b}"
        );
    }
}

/// An optional field sent as `null` is absent, not a type error (both schemas).
#[test]
fn null_optional_fields_are_absent() {
    let v2 = event(
        r#"{"schema":"2.0","header":{"event_id":"e","event_type":"t","token":null,"app_id":null,"tenant_key":null,"create_time":null}}"#,
    );
    assert_eq!(
        (v2.token, v2.app_id, v2.tenant_key, v2.create_time),
        (None, None, None, None)
    );
    let v1 = event(
        r#"{"uuid":"u","type":"event_callback","token":null,"event":{"type":"t","app_id":null,"tenant_key":null}}"#,
    );
    assert_eq!((v1.token, v1.app_id, v1.tenant_key), (None, None, None));
    let c = Envelope::parse(br#"{"type":"url_verification","challenge":"c","token":null}"#);
    assert_eq!(
        c,
        Ok(Envelope::Challenge {
            challenge: "c".into(),
            token: None
        })
    );
}

#[test]
fn challenge() {
    assert_eq!(
        Envelope::parse(
            br#"{"challenge":"ajls384kdjx98XX","token":"xxx","type":"url_verification"}"#
        ),
        Ok(Envelope::Challenge {
            challenge: "ajls384kdjx98XX".into(),
            token: Some("xxx".into())
        })
    );
    assert_eq!(
        err(r#"{"type":"url_verification","token":"x"}"#),
        EnvelopeError::Missing("challenge")
    );
}

#[test]
fn schema_2_seed_sample() {
    let raw = include_str!("../../../../fixtures/assets_update_v1.json");
    let e = event(raw);
    assert_eq!(e.schema, Schema::V2);
    assert_eq!(e.id, "5e3702a84e847582be8db7fb73283c02");
    assert_eq!(e.event_type, "hire.referral_account.assets_update_v1");
    assert_eq!(e.token.as_deref(), Some("rvaYgkND1GOiu5MM0E1rncYC6PLtF7JV"));
    assert_eq!(e.app_id.as_deref(), Some("cli_9f5343c580712544"));
    assert_eq!(e.tenant_key.as_deref(), Some("2ca1d211f64f6438"));
    assert_eq!(e.create_time.as_deref(), Some("1608725989000"));
    assert_eq!(&*e.raw, raw, "kept byte-exact");
}

#[test]
fn schema_1() {
    let body = r#"{"ts":"1502199207.7171419","uuid":"bc447199585340d1f3728d26b1c0297a","token":"41a9425ea7df4536a7623e38fa321bae","type":"event_callback","event":{"type":"approval","app_id":"cli_xxx","tenant_key":"tk","extra":[1]}}"#;
    let e = event(body);
    assert_eq!(e.schema, Schema::V1);
    assert_eq!(e.id, "bc447199585340d1f3728d26b1c0297a");
    assert_eq!(e.event_type, "approval");
    assert_eq!(e.token.as_deref(), Some("41a9425ea7df4536a7623e38fa321bae"));
    assert_eq!(e.app_id.as_deref(), Some("cli_xxx"));
    assert_eq!(e.tenant_key.as_deref(), Some("tk"));
    assert_eq!(e.create_time.as_deref(), Some("1502199207.7171419"));
}

#[test]
fn unknown_fields_tolerated() {
    let e = event(
        r#"{"schema":"2.0","new_top":{"x":1},"header":{"event_id":"e","event_type":"t","future":[1,2]},"event":{}}"#,
    );
    assert_eq!(e.id, "e");
    assert_eq!(e.token, None);
    // A top-level `type` is no 2.0 field: whatever it holds, it is an unknown one (spec §1:
    // tolerated). It was read as the 1.0/challenge `type` first: a number refused the event.
    for kind in ["7", "null", "{}", r#""event_callback""#] {
        let e = event(&format!(
            r#"{{"schema":"2.0","type":{kind},"header":{{"event_id":"e","event_type":"t"}},"event":{{}}}}"#
        ));
        assert_eq!((e.id.as_str(), e.schema), ("e", Schema::V2), "{kind}");
    }
    // A 1.0 body's `type` is still a string.
    assert!(matches!(
        err(r#"{"uuid":"u","type":7,"token":"t","event":{"type":"x"}}"#),
        EnvelopeError::WrongType { field: "type", .. }
    ));
    // An encrypted body tolerates unknown fields too (the signature covers the whole body);
    // only a plain body's own fields beside `encrypt` are refused.
    assert!(matches!(
        Envelope::parse(br#"{"encrypt":"AAAA","future":1}"#),
        Ok(Envelope::Encrypted { .. })
    ));
}

#[test]
fn malformed_shapes_have_precise_errors() {
    use EnvelopeError::*;
    let cases: &[(&str, EnvelopeError)] = &[
        (
            "",
            Json("EOF while parsing a value at line 1 column 0".into()),
        ),
        ("[1]", NotObject),
        ("\"x\"", NotObject),
        (
            "{",
            Json("EOF while parsing an object at line 1 column 1".into()),
        ),
        ("{}", Unrecognised),
        (
            r#"{"schema":"3.0","header":{}}"#,
            UnsupportedSchema("3.0".into()),
        ),
        (
            r#"{"schema":2,"header":{}}"#,
            WrongType {
                field: "schema",
                expected: "a string",
            },
        ),
        (r#"{"schema":"2.0"}"#, Missing("header")),
        (
            r#"{"schema":"2.0","header":[]}"#,
            WrongType {
                field: "header",
                expected: "an object",
            },
        ),
        (
            r#"{"schema":"2.0","header":{}}"#,
            Missing("header.event_id"),
        ),
        (
            r#"{"schema":"2.0","header":{"event_id":5,"event_type":"t"}}"#,
            WrongType {
                field: "header.event_id",
                expected: "a string",
            },
        ),
        (
            r#"{"schema":"2.0","header":{"event_id":"","event_type":"t"}}"#,
            WrongType {
                field: "header.event_id",
                expected: "a non-empty string of at most 256 bytes without NUL characters",
            },
        ),
        (
            r#"{"schema":"2.0","header":{"event_id":"e\u0000","event_type":"t"}}"#,
            WrongType {
                field: "header.event_id",
                expected: "a non-empty string of at most 256 bytes without NUL characters",
            },
        ),
        (
            r#"{"schema":"2.0","header":{"event_id":"e","event_type":"t\u0000x"}}"#,
            WrongType {
                field: "header.event_type",
                expected: "a non-empty string of at most 256 bytes without NUL characters",
            },
        ),
        (
            r#"{"schema":"2.0","header":{"event_id":"e"}}"#,
            Missing("header.event_type"),
        ),
        (
            r#"{"schema":"2.0","header":{"event_id":"e","event_type":"t","token":1}}"#,
            WrongType {
                field: "header.token",
                expected: "a string",
            },
        ),
        (r#"{"uuid":"u","event":{"type":"t"}}"#, Missing("type")),
        (
            r#"{"uuid":"u","type":"other","event":{"type":"t"}}"#,
            UnsupportedType("other".into()),
        ),
        (
            r#"{"type":"event_callback","event":{"type":"t"}}"#,
            Missing("uuid"),
        ),
        (r#"{"uuid":"u","type":"event_callback"}"#, Missing("event")),
        (
            r#"{"uuid":"u","type":"event_callback","event":{}}"#,
            Missing("event.type"),
        ),
        (
            r#"{"uuid":"u","type":"event_callback","event":"x"}"#,
            WrongType {
                field: "event",
                expected: "an object",
            },
        ),
        (
            r#"{"type":7}"#,
            WrongType {
                field: "type",
                expected: "a string",
            },
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(&err(body), expected, "body: {body}");
    }
    assert_eq!(Envelope::parse(&[0xff, b'{']), Err(NotUtf8));
}

proptest! {
    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Envelope::parse(&bytes);
    }

    #[test]
    fn parse_json_like_never_panics(s in r#"[{}\[\]":,a-z0-9.\\ ]{0,200}"#) {
        let _ = Envelope::parse(s.as_bytes());
    }

    #[test]
    fn header_fields_any_value(id in ".{0,20}", ty in ".{0,20}") {
        let body = serde_json::json!({"schema":"2.0","header":{"event_id":id,"event_type":ty}}).to_string();
        match Envelope::parse(body.as_bytes()) {
            Ok(Envelope::Event(e)) => { prop_assert_eq!(e.id, id); prop_assert_eq!(e.event_type, ty); }
            Ok(other) => prop_assert!(false, "unexpected {:?}", other),
            Err(e) => prop_assert!(
                id.is_empty() || ty.is_empty() || id.contains('\0') || ty.contains('\0'),
                "{}", e
            ),
        }
    }
}

/// The delivery payload embeds an event's `raw` text without parsing it again (the gateway's
/// `store::Body::parsed`): that is sound only if `parse` accepts nothing but one whole JSON value.
#[test]
fn an_event_is_one_whole_json_value_and_nothing_after_it() {
    let ok = r#"{"schema":"2.0","header":{"event_id":"e","event_type":"t"},"event":{}}"#;
    assert!(matches!(
        Envelope::parse(ok.as_bytes()),
        Ok(Envelope::Event(_))
    ));
    for bad in [
        format!("{ok} x"),
        format!("{ok}{{}}"),
        format!("{ok},"),
        ok[..ok.len() - 1].to_owned(),
        ok.replace(r#""event":{}"#, r#""event":{"a":tru}"#),
    ] {
        assert!(Envelope::parse(bad.as_bytes()).is_err(), "{bad}");
    }
}

/// Ids and types past [`MAX_ID_BYTES`] are refused (a 400), in both schemas: stored, an
/// oversized id failed a PostgreSQL group commit with every event in it.
#[test]
fn ids_and_types_are_bounded() {
    let at_most = "e".repeat(MAX_ID_BYTES);
    let over = "e".repeat(MAX_ID_BYTES + 1);
    let v2 = |id: &str, t: &str| {
        format!(
            r#"{{"schema":"2.0","header":{{"event_id":"{id}","event_type":"{t}"}},"event":{{}}}}"#
        )
    };
    assert_eq!(event(&v2(&at_most, &at_most)).id, at_most);
    for (body, field) in [
        (v2(&over, "t"), "header.event_id"),
        (v2("e", &over), "header.event_type"),
        (
            format!(r#"{{"uuid":"{over}","type":"event_callback","event":{{"type":"t"}}}}"#),
            "uuid",
        ),
    ] {
        match err(&body) {
            EnvelopeError::WrongType { field: f, .. } => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

/// A challenge body that also carries an event was answered as a challenge: 200, the event
/// never stored. Refused instead (Lark sends neither such a body nor a challenge with these).
#[test]
fn a_challenge_carrying_an_event_is_refused() {
    for extra in [
        r#","schema":"2.0","header":{"event_id":"e","event_type":"t"},"event":{}"#,
        r#","event":{"type":"t"}"#,
        r#","uuid":"u""#,
    ] {
        let body = format!(r#"{{"type":"url_verification","challenge":"c","token":"t"{extra}}}"#);
        assert_eq!(err(&body), EnvelopeError::MixedChallenge, "{body}");
    }
    // `schema` alone does not make an event: still a challenge.
    let plain = r#"{"type":"url_verification","challenge":"c","token":"t","schema":"2.0"}"#;
    assert!(matches!(
        Envelope::parse(plain.as_bytes()),
        Ok(Envelope::Challenge { .. })
    ));
}

/// A key given twice inside `header` (or 1.0's `event`) is refused saying so, not as "must be
/// an object".
#[test]
fn a_key_twice_in_an_inner_object_is_named() {
    let v2 =
        r#"{"schema":"2.0","header":{"event_id":"a","event_id":"b","event_type":"t"},"event":{}}"#;
    match err(v2) {
        EnvelopeError::Json(m) => {
            assert!(m.contains("header") && m.contains("duplicate field"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    let v1 = r#"{"uuid":"u","type":"event_callback","event":{"type":"t","type":"u"}}"#;
    match err(v1) {
        EnvelopeError::Json(m) => {
            assert!(m.contains("event") && m.contains("duplicate field"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    // Not an object at all: as before.
    assert_eq!(
        err(r#"{"schema":"2.0","header":[]}"#),
        EnvelopeError::WrongType {
            field: "header",
            expected: "an object"
        }
    );
}
