//! The plain app: the challenge, schema 1 events, unrouted events stored, and its refusals (an
//! encrypted body, a missing token, a body that is no JSON object); an app pinned to an
//! `app_id`. Part of `ingress.rs`.

use std::time::Duration;

use gateway_e2e::harness::{self, post, wait_until, Lark};

use super::helpers::{audit_ids, start, PINNED_APP, PLAIN_TOKEN};

#[test]
fn plain_app_schema_1_unrouted_and_refusals() {
    let (_dir, gw) = start();
    let url = gw.url("/plain");
    let lark = Lark::plain(PLAIN_TOKEN);

    let a = lark.send(
        &url,
        &format!(r#"{{"challenge":"pc","token":"{PLAIN_TOKEN}","type":"url_verification"}}"#),
    );
    assert_eq!((a.status, a.body.as_str()), (200, r#"{"challenge":"pc"}"#));

    let v1 = format!(
        r#"{{"ts":"1502199207.7171419","uuid":"v1-uuid","token":"{PLAIN_TOKEN}","type":"event_callback","event":{{"type":"approval","app_id":"cli_x","tenant_key":"tk"}}}}"#
    );
    assert_eq!(lark.send(&url, &v1).status, 200);

    let unrouted = lark.event_v2(
        "ev-unrouted",
        "im.message.receive_v1",
        serde_json::json!({}),
    );
    assert_eq!(lark.send(&url, &unrouted).status, 200);

    let encrypted = Lark::encrypted(PLAIN_TOKEN, "some-key").wrap(&unrouted);
    let a = post(&url, &encrypted.1, &encrypted.0).expect("post");
    assert_eq!(a.status, 400);
    assert_eq!(
        a.msg(),
        "body is encrypted but no encrypt_key is configured for this app"
    );

    let no_token = r#"{"schema":"2.0","header":{"event_id":"e","event_type":"t"}}"#;
    let a = lark.send(&url, no_token);
    assert_eq!(
        (a.status, a.msg().as_str()),
        (401, "verification token missing")
    );

    let a = lark.send(&url, "[1,2]");
    assert_eq!(
        (a.status, a.msg().as_str()),
        (400, "body is not a JSON object")
    );

    assert!(
        wait_until(Duration::from_secs(10), || audit_ids(&gw) == ["v1-uuid"]),
        "{:?}",
        audit_ids(&gw)
    );

    let (code, out, err) = gw.cli(&["events", "show", "ev-unrouted"]);
    assert_eq!(code, 0, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(shown["deliveries"].as_array().map(Vec::len), Some(0));
    assert_eq!(shown["schema"], "2.0");

    let metrics = harness::get(&gw.admin_url("/metrics"))
        .expect("metrics")
        .body;
    assert_eq!(
        harness::metric(&metrics, r#"gateway_unrouted_events_total{app="plain"}"#),
        1.0
    );
    assert_eq!(
        harness::metric(&metrics, r#"gateway_events_stored_total{app="plain"}"#),
        2.0
    );
    assert_eq!(
        harness::metric(
            &metrics,
            r#"gateway_requests_total{app="plain",status="400",reason="encrypted_body_for_plain_app"}"#
        ),
        1.0
    );
    assert_eq!(
        harness::metric(
            &metrics,
            r#"gateway_requests_total{app="plain",status="401",reason="missing_token"}"#
        ),
        1.0
    );
}

/// An app pinned to an `app_id` refuses another app's events (401), and a schema 2.0 event that
/// names no app (Lark's 2.0 header always carries one: it was let through); a 1.0 event is
/// checked when it names its app.
#[test]
fn a_pinned_app_refuses_events_of_another_app_or_of_none() {
    let (_dir, gw) = start();
    let url = gw.url("/pinned");
    let lark = Lark::plain(PLAIN_TOKEN);
    let mine = lark.event_v2("pin-mine", "approval", serde_json::json!({}));
    assert!(mine.contains(PINNED_APP));
    assert_eq!(lark.send(&url, &mine).status, 200);
    let other = lark
        .event_v2("pin-other", "approval", serde_json::json!({}))
        .replace(PINNED_APP, "cli_other");
    let a = lark.send(&url, &other);
    assert_eq!(
        (a.status, a.msg().as_str()),
        (401, "event app_id does not match this app")
    );
    let mut none: serde_json::Value =
        serde_json::from_str(&lark.event_v2("pin-none", "approval", serde_json::json!({})))
            .expect("json");
    none["header"]
        .as_object_mut()
        .expect("header")
        .remove("app_id");
    let a = lark.send(&url, &none.to_string());
    assert_eq!(
        (a.status, a.msg().as_str()),
        (
            401,
            "event has no header.app_id, and this app is pinned to one"
        )
    );
    let v1 = |uuid: &str, app: &str| {
        format!(
            r#"{{"ts":"1502199207.7171419","uuid":"{uuid}","token":"{PLAIN_TOKEN}","type":"event_callback","event":{{"type":"approval"{app}}}}}"#
        )
    };
    assert_eq!(lark.send(&url, &v1("pin-v1-none", "")).status, 200);
    let a = lark.send(&url, &v1("pin-v1-other", r#","app_id":"cli_other""#));
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let ids = audit_ids(&gw);
            ids.contains(&"pin-mine".to_owned()) && ids.contains(&"pin-v1-none".to_owned())
        }),
        "{:?}",
        audit_ids(&gw)
    );
    let ids = audit_ids(&gw);
    for refused in ["pin-other", "pin-none", "pin-v1-other"] {
        assert!(!ids.contains(&refused.to_owned()), "{refused}: {ids:?}");
    }
}
