//! Unit tests of the Lark client's reply classification and parsing.

use super::reply::trans_time_text;
use super::*;

#[test]
fn segments_are_encoded() {
    assert_eq!(encode_segment("7147998241542539527"), "7147998241542539527");
    assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
    assert_eq!(encode_segment(".."), "%2E%2E");
}

fn reply(status: u16, body: &str) -> Reply {
    Reply {
        status,
        body: body.into(),
        log_id: Some("L1".into()),
        retry_after: None,
    }
}

#[derive(Debug, serde::Deserialize)]
struct Shape {
    x: u64,
}

#[test]
fn a_business_error_whose_data_is_unreadable_is_still_that_error() {
    let got = parse_envelope::<Shape>(
        "withdraw",
        reply(200, r#"{"code":1002001,"msg":"no balance","data":"odd"}"#),
    );
    match got {
        Err(ApiError::Lark {
            code, msg, log_id, ..
        }) => {
            assert_eq!((code, msg.as_str()), (1_002_001, "no balance"));
            assert_eq!(log_id.as_deref(), Some("L1"));
        }
        other => panic!("{other:?}"),
    }
    let readable = parse_envelope::<Shape>(
        "withdraw",
        reply(200, r#"{"code":1002001,"msg":"no balance","data":{"x":1}}"#),
    );
    assert!(matches!(
        readable,
        Err(ApiError::Lark {
            code: 1_002_001,
            ..
        })
    ));
}

#[test]
fn a_success_whose_data_is_unreadable_is_retried_and_a_good_one_is_read() {
    let got = parse_envelope::<Shape>(
        "withdraw",
        reply(200, r#"{"code":0,"msg":"ok","data":"odd"}"#),
    );
    assert!(matches!(got, Err(ApiError::Transient { .. })), "{got:?}");
    let (data, log_id) = parse_envelope::<Shape>(
        "withdraw",
        reply(200, r#"{"code":0,"msg":"ok","data":{"x":7}}"#),
    )
    .expect("readable");
    assert_eq!(data.map(|d| d.x), Some(7));
    assert_eq!(log_id.as_deref(), Some("L1"));
}

#[test]
fn an_unreadable_body_is_retried_after_2xx_and_408_only() {
    assert!(matches!(
        unreadable("withdraw", &reply(200, "<html>")),
        ApiError::Transient { .. }
    ));
    assert!(matches!(
        unreadable("withdraw", &reply(408, "<html>")),
        ApiError::Transient { .. }
    ));
    assert!(matches!(
        unreadable("withdraw", &reply(400, "<html>")),
        ApiError::Unexpected { status: 400, .. }
    ));
    assert!(matches!(
        unreadable("withdraw", &reply(404, "<html>")),
        ApiError::Unexpected { status: 404, .. }
    ));
}

#[test]
fn trans_time_is_kept_as_text_from_a_string_or_a_number() {
    use serde_json::json;
    assert_eq!(
        trans_time_text(json!("1685431415036")).as_deref(),
        Some("1685431415036")
    );
    assert_eq!(
        trans_time_text(json!(1_685_431_415_036u64)).as_deref(),
        Some("1685431415036")
    );
    assert_eq!(trans_time_text(json!(null)), None);
    assert_eq!(trans_time_text(json!({"t": 1})), None);
}

#[test]
fn debug_shows_the_endpoint_and_app_never_the_secret() {
    let client = LarkClient::new(
        "http://127.0.0.1:9",
        "cli_app",
        "app-s3cret",
        Duration::from_secs(1),
    );
    let shown = format!("{client:?}");
    assert!(
        shown.contains("http://127.0.0.1:9") && shown.contains("cli_app"),
        "{shown}"
    );
    assert!(!shown.contains("app-s3cret"), "{shown}");
}

#[test]
fn classification() {
    let lark = |code| ApiError::Lark {
        call: "withdraw",
        code,
        msg: "m".into(),
        log_id: Some("L".into()),
        http_status: 200,
        retry_after: None,
        retry: false,
    };
    assert!(lark(99_991_400).is_transient());
    assert!(lark(99_991_663).is_transient());
    assert!(!lark(1_002_001).is_transient());
    // Codes the operator lists in `retry_codes` are retried; the others stay final.
    let client = LarkClient::new("http://127.0.0.1:9", "a", "s", Duration::from_secs(1))
        .with_retry_codes(vec![1_069, 1_002_001]);
    assert!(client.classify(lark(1_002_001)).is_transient());
    assert!(client.classify(lark(1_069)).is_transient());
    assert!(!client.classify(lark(1_002_002)).is_transient());
    let text = lark(1_002_001).to_string();
    assert!(text.contains("1002001") && text.contains("\"m\"") && text.contains('L'));
}

#[test]
fn a_withdraw_answer_without_its_details_is_unreadable_not_a_zero_payout() {
    let data = |json: &str| serde_json::from_str::<WithdrawData>(json).expect("parses");
    for missing in [
        None,
        Some(data(r#"{"external_order_id":"gw-1","trans_time":"1"}"#)),
    ] {
        match withdrawal(missing, &[1, 2], Some("L1".into())) {
            Err(ApiError::Transient { reason, .. }) => {
                assert!(reason.contains("what was withdrawn is unknown"), "{reason}");
                assert!(reason.contains("L1"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
    let paid = withdrawal(
        Some(data(
            r#"{"external_order_id":"gw-1","trans_time":"1","withdrawal_details":{"point_bonus":5,"cash_bonus":[{"currency_type":"CNY","amount":12.5}]}}"#,
        )),
        &[1, 2],
        None,
    )
    .expect("read");
    assert_eq!(paid.points, 5);
    assert_eq!(paid.external_order_id.as_deref(), Some("gw-1"));
    // Zero points and an empty cash list: a withdrawal of nothing, as Lark said.
    let nothing = withdrawal(
        Some(data(
            r#"{"external_order_id":"gw-2","withdrawal_details":{"point_bonus":0,"cash_bonus":[]}}"#,
        )),
        &[1, 2],
        None,
    )
    .expect("read");
    assert_eq!((nothing.points, nothing.cash.len()), (0, 0));
    // Only points asked for: no cash list needed.
    let points = withdrawal(
        Some(data(
            r#"{"external_order_id":"gw-3","withdrawal_details":{"point_bonus":7}}"#,
        )),
        &[1],
        None,
    )
    .expect("read");
    assert_eq!(points.points, 7);
    // One type given, the other left out (zero points at withdraw time): the missing one is 0.
    let cash_only = withdrawal(
        Some(data(
            r#"{"withdrawal_details":{"cash_bonus":[{"currency_type":"CNY","amount":1}]}}"#,
        )),
        &[1, 2],
        None,
    )
    .expect("read");
    assert_eq!((cash_only.points, cash_only.cash.len()), (0, 1));
    // One type given and the other missing while keys of other names are there (one of them
    // may hold it): unknown, not zero. (Read as no cash, the cash that left Lark was never
    // forwarded.)
    for (json, missing) in [
        (
            r#"{"withdrawal_details":{"point_bonus":5,"cashBonus":[{"currency_type":"CNY","amount":3}]}}"#,
            "without `withdrawal_details.cash_bonus` but with [\"cashBonus\"]",
        ),
        (
            r#"{"withdrawal_details":{"cash_bonus":[],"points":5}}"#,
            "without `withdrawal_details.point_bonus` but with [\"points\"]",
        ),
    ] {
        match withdrawal(Some(data(json)), &[1, 2], None) {
            Err(ApiError::Transient { reason, .. }) => {
                assert!(reason.contains(missing), "{json}: {reason}");
            }
            other => panic!("{json}: {other:?}"),
        }
    }
    // A key of another kind beside one amount changes nothing: the missing one is zero.
    let noted = withdrawal(
        Some(data(
            r#"{"withdrawal_details":{"point_bonus":5,"withdraw_note":"x"}}"#,
        )),
        &[1, 2],
        None,
    )
    .expect("read");
    assert_eq!((noted.points, noted.cash.len()), (5, 0));
    // Other keys beside both amounts change nothing.
    let both = withdrawal(
        Some(data(
            r#"{"withdrawal_details":{"point_bonus":5,"cash_bonus":[],"note":"x"}}"#,
        )),
        &[1, 2],
        None,
    )
    .expect("read");
    assert_eq!(both.points, 5);
    // None of the amounts asked for (no details, the fields under other names) is unknown,
    // not zero: the money may have left Lark.
    for (json, missing) in [
        (r#"{"withdrawal_details":{}}"#, "point_bonus or cash_bonus"),
        (
            r#"{"withdrawal_details":{"pointBonus":100,"cashBonus":[{"currency_type":"CNY","amount":1}]}}"#,
            "point_bonus or cash_bonus",
        ),
        (
            r#"{"withdrawal_details":{"point_bonus":null,"cash_bonus":null}}"#,
            "point_bonus or cash_bonus",
        ),
    ] {
        match withdrawal(Some(data(json)), &[1, 2], None) {
            Err(ApiError::Transient { reason, .. }) => {
                assert!(reason.contains(missing), "{json}: {reason}");
                assert!(reason.contains("what was withdrawn is unknown"), "{reason}");
            }
            other => panic!("{json}: {other:?}"),
        }
    }
}

/// What a failed withdraw says about the money (`withdrew_nothing`, which the covered rule
/// relies on): a 429, a rate-limit or invalid-token code, a listed "nothing to withdraw" code
/// or a failed token call shows no withdrawal; a 5xx, a network error, an unexpected status or
/// any other code does not.
#[test]
fn only_a_turned_away_or_nothing_coded_withdraw_or_a_failed_token_call_withdrew_nothing() {
    const NOTHING: [i64; 1] = [1_002_100];
    let limited = parse_envelope::<Shape>(
        WITHDRAW,
        reply(429, r#"{"code":99991400,"msg":"too many requests"}"#),
    )
    .expect_err("a 429");
    assert!(matches!(limited, ApiError::Throttled { .. }), "{limited:?}");
    assert!(limited.is_transient() && limited.withdrew_nothing(&[]));
    let failed = parse_envelope::<Shape>(WITHDRAW, reply(502, "bad gateway")).expect_err("a 502");
    assert!(matches!(failed, ApiError::Transient { .. }), "{failed:?}");
    assert!(failed.is_transient() && !failed.withdrew_nothing(&NOTHING));
    let lark = |call: &'static str, code: i64| ApiError::Lark {
        call,
        code,
        msg: "m".into(),
        log_id: None,
        http_status: 400,
        retry_after: None,
        retry: false,
    };
    assert!(lark(WITHDRAW, 1_002_100).withdrew_nothing(&NOTHING));
    assert!(
        !lark(WITHDRAW, 1_002_100).withdrew_nothing(&[]),
        "not listed"
    );
    assert!(
        !lark(WITHDRAW, 1_002_001).withdrew_nothing(&NOTHING),
        "another code"
    );
    assert!(
        lark(WITHDRAW, 99_991_400).withdrew_nothing(&[]),
        "rate limit code"
    );
    assert!(
        lark(WITHDRAW, 99_991_663).withdrew_nothing(&[]),
        "invalid token code"
    );
    assert!(lark("tenant_access_token", 10_003).withdrew_nothing(&[]));
    let unreachable = |call: &'static str| ApiError::Transient {
        call,
        reason: "connection reset".into(),
        retry_after: None,
    };
    assert!(!unreachable(WITHDRAW).withdrew_nothing(&NOTHING));
    assert!(unreachable("tenant_access_token").withdrew_nothing(&[]));
    let unexpected = ApiError::Unexpected {
        call: WITHDRAW,
        status: 404,
        log_id: None,
    };
    assert!(!unexpected.withdrew_nothing(&NOTHING));
}
