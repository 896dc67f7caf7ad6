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
