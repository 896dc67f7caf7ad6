//! What the admin API's end-to-end tests share (`api.rs`, `admin_limits.rs`): the gateway's
//! config, and an HTTP client that follows no redirect, keeps every header and checks that no
//! answer ever holds a token.
#![allow(dead_code)] // each test file uses its own part

use std::time::Duration;

use gateway_e2e::harness::{kit_config, with_admin, Lark, TestGateway};
use serde_json::{json, Value};

pub const TOKEN: &str = "verif-token-never-shown";
pub const ADMIN_TOKEN: &str = "admin-token-0123456789-never-shown";

pub fn config(admin_extra: &str) -> String {
    let kit = r#"{ mode = "ok", modes = { "test.bad" = "reject", "test.flaky" = "retry_then_ok" }, retries = 1, record = "data/kit.jsonl" }"#;
    format!(
        "{}\n[delivery]\nmax_attempts = 1\n\n[[apps]]\nname = \"other\"\npath = \"/other\"\nverification_token = \"{TOKEN}\"\n",
        with_admin(&kit_config(TOKEN, kit), admin_extra)
    )
}

/// An HTTP answer with its headers.
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A client that does not follow redirects, keeps every header, and checks that no answer
/// ever holds a token.
pub fn call(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&str>) -> Reply {
    let agent = ureq::AgentBuilder::new()
        .redirects(0)
        .timeout(Duration::from_secs(20))
        .build();
    let mut req = agent.request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let res = match body {
        Some(b) => req.send_string(b),
        None => req.call(),
    };
    let res = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = res.status();
    let headers = res
        .headers_names()
        .into_iter()
        .flat_map(|n| {
            res.all(&n)
                .into_iter()
                .map(|v| (n.clone(), v.to_owned()))
                .collect::<Vec<_>>()
        })
        .collect();
    let body = res.into_string().expect("body");
    for secret in [TOKEN, ADMIN_TOKEN] {
        assert!(
            !body.contains(secret),
            "{method} {url} answered a secret: {body}"
        );
    }
    Reply {
        status,
        body,
        headers,
    }
}

pub fn get(gw: &TestGateway, path: &str) -> Reply {
    call("GET", &gw.admin_url(path), &[], None)
}

pub fn post_json(gw: &TestGateway, path: &str, body: Value) -> Reply {
    call(
        "POST",
        &gw.admin_url(path),
        &[("Content-Type", "application/json")],
        Some(&body.to_string()),
    )
}

pub fn send(gw: &TestGateway, app_path: &str, id: &str, event_type: &str) {
    let lark = Lark::plain(TOKEN);
    let a = lark.send(
        &gw.url(app_path),
        &lark.event_v2(id, event_type, json!({"n": id})),
    );
    assert_eq!(a.status, 200, "{id}: {}", a.body);
}

pub fn state(gw: &TestGateway, id: &str) -> String {
    get(gw, &format!("/api/v1/events/{id}")).json()["deliveries"][0]["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Requests with a NUL byte in an id or name, answered alike on either store and before any
/// store query (PostgreSQL would fail the query: a 503): 400, or 404 for an event's own path (no
/// event id holds a NUL), each saying so. `plugin` and `app` are a configured plugin and app
/// (a replay by names that exist gets as far as the store before the fix).
pub fn assert_nul_refused(gw: &TestGateway, app: &str, plugin: &str) {
    let gets: &[(String, u16)] = &[
        (format!("/api/v1/events?app={app}%00"), 400),
        ("/api/v1/events?type=test.ok%00".to_owned(), 400),
        ("/api/v1/events?cursor=1700000000000.ev%00".to_owned(), 400),
        (format!("/api/v1/deliveries?plugin={plugin}%00"), 400),
        ("/api/v1/dead-letters?plugin=%00".to_owned(), 400),
        ("/api/v1/events/ev%00x".to_owned(), 404),
        // The console, which reads through the same handlers (HTML error pages).
        ("/events/ev%00x".to_owned(), 404),
        ("/events?id=ev%00x".to_owned(), 400),
        (format!("/events?app={app}%00"), 400),
        ("/events?cursor=1700000000000.ev%00".to_owned(), 400),
        ("/dead-letters?plugin=%00".to_owned(), 400),
    ];
    for (path, status) in gets {
        let r = get(gw, path);
        assert_eq!(r.status, *status, "GET {path}: {}", r.body);
        assert!(r.body.contains("NUL byte"), "GET {path}: {}", r.body);
    }
    for body in [
        json!({"event_ids": ["ev\u{0}x"]}),
        json!({"event_ids": ["ev-1", "ev\u{0}"], "dry_run": true}),
        json!({"deliveries": [{"event_id": "ev\u{0}", "plugin": plugin}]}),
        json!({"deliveries": [{"event_id": "ev-1", "plugin": format!("{plugin}\u{0}")}]}),
        json!({"dead_letters": true, "plugin": format!("{plugin}\u{0}")}),
    ] {
        let r = post_json(gw, "/api/v1/replay", body.clone());
        assert_eq!(r.status, 400, "replay {body}: {}", r.body);
        assert!(
            r.json()["error"]
                .as_str()
                .is_some_and(|e| e.contains("NUL byte")),
            "{}",
            r.body
        );
    }
}
