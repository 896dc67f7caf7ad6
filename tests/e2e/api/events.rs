//! Reading the store through the API: events by filter and cursor page, one event with its
//! deliveries and attempt history (the token redacted), deliveries by state and plugin, dead
//! letters a page at a time, and errors as JSON. Part of `api.rs`.

use std::time::Duration;

use gateway_e2e::harness::{wait_until, TestGateway};
use serde_json::{json, Value};

use super::admin_client::*;

#[test]
fn events_filter_and_page_by_cursor_and_one_event_shows_its_deliveries_redacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config(""));
    for i in 0..5 {
        send(&gw, "/hook", &format!("ok-{i}"), "test.ok");
    }
    send(&gw, "/other", "other-1", "test.ok");
    send(&gw, "/hook", "bad-1", "test.bad");
    assert!(wait_until(Duration::from_secs(10), || state(&gw, "bad-1")
        == "dead"
        && state(&gw, "ok-4") == "done"));

    // Filters: app, type, state; each answer is a page with a cursor.
    let all = get(&gw, "/api/v1/events").json();
    assert_eq!(all["events"].as_array().map(Vec::len), Some(7), "{all}");
    assert_eq!(all["next_cursor"], Value::Null);
    let other = get(&gw, "/api/v1/events?app=other").json();
    assert_eq!(other["events"][0]["id"], "other-1");
    assert_eq!(other["events"].as_array().map(Vec::len), Some(1));
    let bad = get(&gw, "/api/v1/events?type=test.bad").json();
    assert_eq!(bad["events"][0]["id"], "bad-1");
    let dead = get(&gw, "/api/v1/events?state=dead").json();
    assert_eq!(dead["events"].as_array().map(Vec::len), Some(1));
    assert_eq!(dead["events"][0]["dead"], 1);
    let none = get(&gw, "/api/v1/events?since=2099-01-01").json();
    assert_eq!(none["events"].as_array().map(Vec::len), Some(0));
    // A name that exists nowhere is an error, as in the CLI, not an empty list.
    for path in [
        "/api/v1/events?app=nosuch",
        "/api/v1/events?type=test.nosuch",
        "/api/v1/deliveries?plugin=nosuch",
        "/api/v1/dead-letters?plugin=nosuch",
    ] {
        let answer = get(&gw, path);
        assert_eq!(answer.status, 404, "{path}: {}", answer.body);
    }

    // Pagination: pages of 2 visit every event once, newest first.
    let mut seen = Vec::new();
    let mut url = "/api/v1/events?app=hire&limit=2".to_owned();
    loop {
        let page = get(&gw, &url).json();
        let ids: Vec<String> = page["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert!(ids.len() <= 2);
        seen.extend(ids);
        match page["next_cursor"].as_str() {
            Some(c) => {
                url = format!(
                    "/api/v1/events?app=hire&limit=2&cursor={}",
                    c.replace('%', "%25")
                        .replace('&', "%26")
                        .replace('+', "%2B")
                )
            }
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert_eq!(sorted.len(), 6, "no event twice: {seen:?}");

    // One event: its deliveries and the envelope, the verification token redacted.
    let e = get(&gw, "/api/v1/events/bad-1").json();
    assert_eq!(e["app"], "hire");
    assert_eq!(e["deliveries"][0]["plugin"], "kit");
    assert_eq!(e["deliveries"][0]["state"], "dead");
    assert_eq!(e["deliveries"][0]["attempts"], 1);
    assert!(
        e["deliveries"][0]["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("testkit: reject"),
        "{e}"
    );
    assert_eq!(e["envelope"]["header"]["token"], "<redacted>");
    assert_eq!(e["envelope"]["header"]["event_id"], "bad-1");
    // Its attempt history: the one attempt, how it ended, when and how long.
    let history = e["deliveries"][0]["history"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(history.len(), 1, "{e}");
    let a = &history[0];
    assert_eq!(
        (&a["generation"], &a["attempt"], &a["outcome"]),
        (&json!(0), &json!(1), &json!("reject")),
        "{a}"
    );
    assert!(
        a["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("testkit: reject"),
        "{a}"
    );
    assert!(
        a["duration_ms"].is_u64() && a["started_at"].is_string(),
        "{a}"
    );
    assert!(
        a["started_at_ms"].as_i64() <= a["recorded_at_ms"].as_i64(),
        "{a}"
    );

    // Deliveries by state and plugin, dead letters, plugins.
    let d = get(&gw, "/api/v1/deliveries?state=dead&plugin=kit").json();
    assert_eq!(d["deliveries"][0]["event_id"], "bad-1");
    let d = get(&gw, "/api/v1/deliveries?state=pending").json();
    assert_eq!(d["deliveries"].as_array().map(Vec::len), Some(0));
    let dl = get(&gw, "/api/v1/dead-letters").json();
    assert_eq!(dl["dead_letters"][0]["event_id"], "bad-1");
    let p = get(&gw, "/api/v1/plugins").json();
    assert_eq!(p["plugins"][0]["name"], "kit");
    assert_eq!(p["plugins"][0]["status"]["consecutive_failures"], 1);
    assert_eq!(p["plugins"][0]["config"]["record"], "data/kit.jsonl");
    assert_eq!(p["plugins"][0]["descriptor"]["name"], "testkit");
    let o = get(&gw, "/api/v1/overview").json();
    assert_eq!(o["dead_letters"], 1);
    assert_eq!(o["last_hour"].as_array().map(Vec::len), Some(60));

    // Errors are JSON with 4xx codes.
    let table: &[(&str, u16, &str)] = &[
        ("/api/v1/events/nope", 404, "no event \"nope\""),
        ("/api/v1/events?state=weird", 400, "state"),
        ("/api/v1/events?limit=0", 400, "limit"),
        ("/api/v1/dead-letters?limit=501", 400, "limit"),
        ("/api/v1/events?cursor=zzz", 400, "cursor"),
        ("/api/v1/events?since=yesterday-ish", 400, "since"),
        ("/api/v1/nothing", 404, "no API endpoint"),
        ("/api/v1/replay", 405, "method not allowed"),
    ];
    for (path, status, says) in table {
        let r = get(&gw, path);
        assert_eq!(r.status, *status, "{path}: {}", r.body);
        assert!(
            r.json()["error"]
                .as_str()
                .unwrap_or_default()
                .contains(says),
            "{path}: {}",
            r.body
        );
    }

    // Dead letters come a page at a time: the newest `limit`, and whether there are more.
    send(&gw, "/hook", "bad-2", "test.bad");
    assert!(wait_until(Duration::from_secs(10), || state(&gw, "bad-2") == "dead"));
    let dl = get(&gw, "/api/v1/dead-letters?limit=1").json();
    assert_eq!(dl["dead_letters"].as_array().map(Vec::len), Some(1), "{dl}");
    assert_eq!(dl["dead_letters"][0]["event_id"], "bad-2", "newest first");
    assert_eq!(dl["truncated"], true);
    let dl = get(&gw, "/api/v1/dead-letters").json();
    assert_eq!(dl["dead_letters"].as_array().map(Vec::len), Some(2), "{dl}");
    assert_eq!(dl["truncated"], false);
}
