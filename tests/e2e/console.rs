//! The web console in a real headless Chromium, driven through chromedriver's W3C WebDriver HTTP
//! API (a few JSON calls with `ureq`, no WebDriver crate): the overview with its chart, finding an
//! event by id, its deliveries and attempts, replaying a dead letter from the page and seeing it
//! delivered, replaying a full page of dead letters with long ids at once, the plugins page, and
//! logging in when a token is set. Every page is saved as a
//! screenshot in the test's temp dir (`GATEWAY_KEEP_SCREENSHOTS=DIR` copies them to DIR;
//! `GATEWAY_UPDATE_DOCS_SCREENSHOT=1` refreshes `docs/console.png`).
//!
//! Chromium and chromedriver (Debian's `chromium` and `chromium-driver`, installed by `.ci/run`)
//! are required: without them these tests fail saying so, they never skip.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use gateway_e2e::harness::{kit_config, with_admin, Lark, TestGateway};
use gateway_e2e::workspace_root;
use serde_json::{json, Value};

const TOKEN: &str = "verif-token-never-shown";
const ADMIN_TOKEN: &str = "console-admin-token-0123456789";
/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .map(|d| d.join(n))
            .find(|p| p.is_file())
    })
}

/// A chromedriver process and one browser session.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    shots: PathBuf,
}

impl Browser {
    fn start(shots: &Path) -> Browser {
        let chromium = find_program(&["chromium", "chromium-browser", "google-chrome"])
            .unwrap_or_else(|| {
                panic!(
                    "the console tests need Chromium: `apt-get install -y chromium chromium-driver` \
                     (.ci/run installs them); not found on PATH"
                )
            });
        let chromedriver = find_program(&["chromedriver"]).unwrap_or_else(|| {
            panic!(
                "the console tests need chromedriver: `apt-get install -y chromium-driver` \
                 (.ci/run installs it); not found on PATH"
            )
        });
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = ureq::get(&format!("{base}/status"))
                .call()
                .ok()
                .and_then(|r| r.into_json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = shots.join("chromium-profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            shots: shots.to_path_buf(),
        };
        let v = browser.call("POST", "/session", Some(caps));
        browser.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_owned();
        browser
    }

    /// One WebDriver command; returns its `value` (panics on a WebDriver error).
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let req = ureq::request(method, &url).timeout(Duration::from_secs(60));
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let v: Value = match res {
            Ok(r) => r.into_json().expect("WebDriver JSON"),
            Err(ureq::Error::Status(_, r)) => {
                let v: Value = r.into_json().unwrap_or(Value::Null);
                panic!("WebDriver {method} {path}: {v}");
            }
            Err(e) => panic!("WebDriver {method} {path}: {e}"),
        };
        v.get("value").cloned().unwrap_or(Value::Null)
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    fn url(&self) -> String {
        self.call("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn try_find(&self, css: &str) -> Option<String> {
        let url = format!("{}/session/{}/elements", self.base, self.session);
        let v: Value = ureq::post(&url)
            .send_json(json!({"using": "css selector", "value": css}))
            .ok()?
            .into_json()
            .ok()?;
        v["value"][0][ELEMENT].as_str().map(str::to_owned)
    }

    /// Waits up to 10 s for an element.
    fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = self.try_find(css) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no element {css:?} on {}: {}",
                self.url(),
                self.call("GET", "/source", None)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.call("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.call("GET", &format!("/element/{e}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits up to `secs` for `css`'s text to satisfy `ok`, reloading the page between looks
    /// when `reload`.
    fn wait_text(&self, css: &str, secs: u64, reload: bool, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let t = self
                .try_find(css)
                .map(|_| self.text(css))
                .unwrap_or_default();
            if ok(&t) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "{css:?} on {} still says {t:?}",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(250));
            if reload {
                self.call("POST", "/refresh", Some(json!({})));
            }
        }
    }

    /// Saves a screenshot of the page as `<name>.png` in the shots folder; returns its path.
    fn screenshot(&self, name: &str) -> PathBuf {
        let data = self.call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .expect("a base64 PNG");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        if let Some(keep) = std::env::var_os("GATEWAY_KEEP_SCREENSHOTS") {
            let _ = std::fs::create_dir_all(&keep);
            let _ = std::fs::copy(&path, Path::new(&keep).join(format!("{name}.png")));
        }
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = ureq::delete(&format!("{}/session/{}", self.base, self.session)).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn config(admin_extra: &str) -> String {
    let kit = r#"{ mode = "ok", modes = { "test.flaky" = "retry_then_ok" }, retries = 1, record = "data/kit.jsonl" }"#;
    format!(
        "{}\n[delivery]\nmax_attempts = 1\n",
        with_admin(&kit_config(TOKEN, kit), admin_extra)
    )
}

fn send(gw: &TestGateway, id: &str, event_type: &str) {
    let lark = Lark::plain(TOKEN);
    let a = lark.send(
        &gw.url("/hook"),
        &lark.event_v2(
            id,
            event_type,
            json!({"n": id, "note": "shown pretty-printed"}),
        ),
    );
    assert_eq!(a.status, 200, "{id}: {}", a.body);
}

#[test]
fn overview_search_event_attempts_and_replaying_a_dead_letter_from_the_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config(""));
    for i in 0..8 {
        send(&gw, &format!("ev-ok-{i}"), "test.ok");
    }
    let browser = Browser::start(dir.path());

    // The overview: cards, plugin health, and the chart drawn by the script.
    browser.go(&gw.admin_url("/"));
    browser.find("#chart svg polyline.series-stored");
    browser.wait_text("#plugin-health", 15, true, |t| {
        t.contains("kit") && t.contains("healthy")
    });
    // A failure after the page was drawn shows without reloading it: the dead letter's count
    // and the plugin's health (which stayed "healthy" until a reload before).
    send(&gw, "ev-flaky", "test.flaky");
    browser.wait_text("#dead", 15, false, |t| t == "1");
    browser.wait_text("#plugin-health", 15, false, |t| {
        t.contains("failing") && t.contains("testkit: retry 1 of 1")
    });
    let overview = browser.screenshot("overview");
    if std::env::var_os("GATEWAY_UPDATE_DOCS_SCREENSHOT").is_some() {
        std::fs::copy(&overview, workspace_root().join("docs/console.png"))
            .expect("copy to docs/console.png");
    }

    // Find the event by id, open it, see its attempts and error.
    browser.go(&gw.admin_url("/events"));
    assert!(browser.text("#events").contains("ev-ok-3"));
    browser.screenshot("events");
    browser.type_into("#f-id", "ev-flaky");
    browser.click("#search-submit");
    browser.wait_text("#event-id", 10, false, |t| t == "ev-flaky");
    assert!(
        browser.url().ends_with("/events/ev-flaky"),
        "{}",
        browser.url()
    );
    assert_eq!(browser.text("#deliveries tr.delivery td.attempts"), "1");
    let row = browser.text("#deliveries tr.delivery");
    assert!(
        row.contains("dead") && row.contains("testkit: retry 1 of 1"),
        "{row}"
    );
    let attempt = browser.text("#attempts tr.attempt");
    assert!(
        attempt.contains("kit") && attempt.contains("retry") && attempt.contains(" ms"),
        "{attempt}"
    );
    let envelope = browser.text("#envelope");
    assert!(
        envelope.contains("\"event_id\": \"ev-flaky\""),
        "{envelope}"
    );
    assert!(envelope.contains("<redacted>") && !envelope.contains(TOKEN));
    browser.screenshot("event-dead");

    // Dead letters: select it, replay, see it delivered.
    browser.go(&gw.admin_url("/dead-letters"));
    assert!(browser.text("#dead-letters").contains("ev-flaky"));
    browser.click("input.pick[data-event='ev-flaky']");
    browser.screenshot("dead-letters");
    browser.click("#replay-selected");
    browser.wait_text("#result", 10, false, |t| {
        t.contains("1 deliveries queued again")
    });
    browser.screenshot("dead-letters-replayed");
    browser.go(&gw.admin_url("/events/ev-flaky"));
    browser.wait_text("#deliveries tr.delivery td.state", 15, true, |t| {
        t == "done"
    });
    // The history shows both generations: the failed attempt, then the replayed success.
    let outcomes = browser.text("#attempts tbody");
    assert!(
        outcomes.contains("retry") && outcomes.contains("ok"),
        "{outcomes}"
    );
    browser.screenshot("event-delivered");

    // Plugins: descriptor, config, health.
    browser.go(&gw.admin_url("/plugins"));
    let section = browser.text("#plugin-kit");
    assert!(
        section.contains("testkit") && section.contains("data/kit.jsonl"),
        "{section}"
    );
    browser.screenshot("plugins");
    for name in [
        "overview",
        "events",
        "event-dead",
        "dead-letters",
        "event-delivered",
        "plugins",
    ] {
        assert!(
            dir.path().join(format!("{name}.png")).is_file(),
            "{name}.png"
        );
    }
}

#[test]
fn with_a_token_the_console_asks_to_log_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn_with_env(
        dir.path(),
        &config("token = \"${ADMIN_TOKEN}\""),
        &[("ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    send(&gw, "ev-1", "test.ok");
    let browser = Browser::start(dir.path());
    browser.go(&gw.admin_url("/events"));
    browser.find("#login");
    assert!(browser.url().contains("/login?next="), "{}", browser.url());
    browser.screenshot("login");
    browser.type_into("#token", "not-the-token");
    browser.click("#login-submit");
    browser.wait_text("#login-error", 10, false, |t| t.contains("wrong token"));
    browser.type_into("#token", ADMIN_TOKEN);
    browser.click("#login-submit");
    browser.wait_text("#events", 10, false, |t| t.contains("ev-1"));
    assert!(browser.url().ends_with("/events"), "{}", browser.url());
    // The session cookie is HttpOnly: the page's script cannot read it.
    let cookie = browser.call(
        "POST",
        "/execute/sync",
        Some(json!({"script": "return document.cookie;", "args": []})),
    );
    assert_eq!(cookie, "", "document.cookie is empty");
    browser.screenshot("events-logged-in");
    browser.click("form.logout button");
    browser.find("#login");
}

/// "Replay selected" on a full page of dead letters (500, the page's most) with ids of 256
/// bytes: the request (about 150 KB) is within the API's body limit (it was 64 KiB, so the
/// whole selection was refused with 413).
#[test]
fn replaying_a_full_page_of_dead_letters_with_long_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config(""));
    for i in 0..500 {
        send(&gw, &format!("{i:03}-{}", "x".repeat(252)), "test.flaky");
    }
    let browser = Browser::start(dir.path());
    browser.go(&gw.admin_url("/"));
    browser.wait_text("#dead", 60, true, |t| t == "500");
    browser.go(&gw.admin_url("/dead-letters"));
    browser.click("#pick-all");
    browser.click("#replay-selected");
    browser.wait_text("#result", 20, false, |t| {
        t.contains("500 deliveries queued again")
    });
}
