//! Reloads at their edges: a reload's plugin starts (native code that may kill the process)
//! wait for a delivery running alone; a reload asked through the API runs to its end however
//! its client leaves; a stop during a reload installs nothing and shuts the instances down; a
//! reload that comes before a hanging call's timeout still hands its permit over.
//! Part of `invariants.rs`.

use std::io::Write;
use std::time::{Duration, Instant};

use gateway_e2e::harness::{get, read_jsonl, wait_until, TestGateway};

use super::helpers::*;

/// `cfg` with its `boom` instance from the testkit built with `panic = "abort"`: a panic of it
/// aborts the process.
fn aborting_boom(cfg: &str) -> String {
    let at = cfg.rfind("name = \"boom\"").expect("boom");
    let (head, tail) = cfg.split_at(at);
    let lib = tail
        .lines()
        .find_map(|l| l.strip_prefix("library = "))
        .expect("its library")
        .to_owned();
    let abort = gateway_e2e::testkit_panic_abort().display().to_string();
    format!("{head}{}", tail.replacen(&lib, &format!("{abort:?}"), 1))
}

/// A delivery with a crash behind it runs alone, so a second crash is charged to it only. A
/// reload whose new instance's `init` aborts the process ran beside it: the delivery was
/// charged (and, at `max_crashes`, dead-lettered) for a crash it had no part in. The reload now
/// starts its instances once that call has ended (and its outcome is recorded).
#[test]
fn a_reload_init_that_crashes_is_not_charged_to_a_delivery_running_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = "timeout = \"60s\"\nmax_crashes = 2";
    let v1 = config(
        settings,
        &[("kit", r#"mode = "gate", gate = "data/open""#, "")],
    );
    let mut gw = TestGateway::spawn(dir.path(), &v1);
    send(&gw, "lone-1", "test.kit");
    gw.wait_running("lone-1", "kit");
    gw.kill9(); // crash 1, during its call
    let mut gw = TestGateway::spawn(dir.path(), &v1);
    // It runs alone now (one crash behind it), held at its gate.
    gw.wait_running("lone-1", "kit");
    // Its `new` aborts the process.
    let v2 = aborting_boom(&config(
        settings,
        &[
            ("kit", r#"mode = "gate", gate = "data/open""#, ""),
            ("boom", r#"mode = "panic_new""#, ""),
        ],
    ));
    std::fs::write(dir.path().join("gateway.toml"), v2).expect("write");
    gw.signal("HUP");
    assert!(wait_until(WAIT, || gw.log().contains("reloading config")));
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        gw.wait(Duration::ZERO).is_none(),
        "the reload's init ran beside the delivery running alone: {}",
        gw.log()
    );
    // The call ends, its outcome is recorded, then the reload's `init` aborts the process.
    std::fs::write(dir.path().join("data/open"), "").expect("open the gate");
    let status = gw.wait(Duration::from_secs(30));
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    std::fs::write(dir.path().join("gateway.toml"), &v1).expect("write");
    let gw = TestGateway::spawn(dir.path(), &v1);
    assert!(wait_until(WAIT, || ["done", "dead"]
        .contains(&state(&gw, "lone-1", "kit").as_str())));
    let d = delivery(&gw, "lone-1", "kit");
    assert_eq!(d["state"], "done", "charged with the reload's crash: {d:#}");
    assert_eq!(d["crashes"], 1, "{d:#}");
}

/// `POST /api/v1/reload` whose client hangs up before the answer (a proxy's or curl's timeout
/// during a slow `init`): the reload went on unseen, its refusal neither logged nor counted.
#[test]
fn an_api_reload_whose_client_hangs_up_is_still_logged_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v1 = config("", &[("kit", r#"mode = "ok""#, "")]);
    let gw = TestGateway::spawn(dir.path(), &v1);
    std::fs::create_dir_all(dir.path().join("data")).expect("mkdir");
    std::fs::write(dir.path().join("data/no"), "").expect("write");
    let v2 = config(
        "",
        &[
            ("kit", r#"mode = "ok""#, ""),
            (
                "bad",
                r#"mode = "ok", init_sleep_ms = 2000, refuse_new_while = "data/no""#,
                "",
            ),
        ],
    );
    std::fs::write(dir.path().join("gateway.toml"), v2).expect("write");
    let admin = gw.admin.expect("an admin listener");
    let mut s = std::net::TcpStream::connect(admin).expect("connect");
    write!(
        s,
        "POST /api/v1/reload HTTP/1.1\r\nHost: {admin}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
    )
    .expect("send");
    std::thread::sleep(Duration::from_millis(500));
    drop(s);
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .log()
            .contains("reload refused")),
        "{}",
        gw.log()
    );
    let metrics = get(&gw.admin_url("/metrics")).expect("metrics").body;
    assert!(
        metrics.contains("gateway_reloads_total{result=\"refused\"} 1"),
        "{metrics}"
    );
}

/// SIGTERM while a reload's new instance runs its `init`: the reload installs nothing, and the
/// running instances are shut down before the exit (the reload's hold on them kept every one
/// from it).
#[test]
fn a_stop_during_a_reload_still_shuts_the_instances_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v1 = config("", &[("kit", r#"mode = "ok""#, "")]);
    let mut gw = TestGateway::spawn(dir.path(), &v1);
    send(&gw, "s-1", "test.kit");
    assert!(wait_until(WAIT, || calls(&gw, "kit").len() == 1));
    let v2 = config(
        "",
        &[
            ("kit", r#"mode = "ok""#, ""),
            ("slow", r#"mode = "ok", init_sleep_ms = 2500"#, ""),
        ],
    );
    std::fs::write(dir.path().join("gateway.toml"), v2).expect("write");
    gw.signal("HUP");
    assert!(wait_until(WAIT, || gw.log().contains("reloading config")));
    std::thread::sleep(Duration::from_millis(300));
    let asked = Instant::now();
    gw.signal("TERM");
    let status = gw.wait(Duration::from_secs(20)).expect("stopped");
    assert!(status.success(), "{status:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    let records = read_jsonl(&dir.path().join("data/kit.jsonl"));
    assert!(
        records.iter().any(|r| r["outcome"] == "shutdown"),
        "kit was not shut down: {records:?}\n{}",
        gw.log()
    );
    let slow = read_jsonl(&dir.path().join("data/slow.jsonl"));
    assert!(
        slow.iter().any(|r| r["outcome"] == "shutdown"),
        "the reload's new instance was not shut down: {slow:?}"
    );
    assert!(
        gw.log()
            .contains("reload refused, keeping the running config: the gateway is stopping"),
        "{}",
        gw.log()
    );
}

/// `/status` after a reload lowers `max_concurrency` while calls run: it counted limit minus
/// free permits, and the lowered limit's surplus takes permits back as calls return, so three
/// running calls showed as one ("1/1").
#[test]
fn status_counts_the_calls_running_after_a_reload_lowers_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let make = |n: u32| {
        config(
            "max_batch = 1\ntimeout = \"60s\"",
            &[(
                "kit",
                r#"mode = "gate", gate = "data/open""#,
                &format!("max_concurrency = {n}"),
            )],
        )
    };
    let gw = TestGateway::spawn(dir.path(), &make(3));
    for id in ["c-1", "c-2", "c-3"] {
        send(&gw, id, "test.kit");
    }
    for id in ["c-1", "c-2", "c-3"] {
        gw.wait_running(id, "kit");
    }
    let status = || {
        let v: serde_json::Value =
            serde_json::from_str(&get(&gw.admin_url("/status")).expect("status").body)
                .expect("json");
        v["plugins"]["kit"].clone()
    };
    assert_eq!(status()["calls_running"], 3, "{}", status());
    std::fs::write(dir.path().join("gateway.toml"), make(1)).expect("write");
    gw.signal("HUP");
    assert!(wait_until(WAIT, || gw.log().contains("config reloaded")));
    let after = status();
    std::fs::write(dir.path().join("data/open"), "").expect("open the gate");
    assert_eq!(after["calls_running"], 3, "{after}");
    assert!(
        wait_until(WAIT, || status()["calls_running"] == 0),
        "{}",
        status()
    );
}

/// An in-process `init` that does not return held the reload lock for good: every later
/// reload (a token rotation, a certificate) waited behind it until a restart. It now fails at
/// `init_timeout`, and the next reload applies.
#[test]
fn a_hung_init_fails_at_its_timeout_and_the_next_reload_applies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v1 = config("", &[("kit", r#"mode = "ok", tag = "v1""#, "")]);
    let gw = TestGateway::spawn(dir.path(), &v1);
    let hung = config(
        "",
        &[
            ("kit", r#"mode = "ok", tag = "v1""#, ""),
            (
                "slow",
                r#"mode = "ok", init_sleep_ms = 600000"#,
                "init_timeout = \"2s\"",
            ),
        ],
    );
    std::fs::write(dir.path().join("gateway.toml"), hung).expect("write");
    let asked = Instant::now();
    gw.signal("HUP");
    assert!(
        wait_until(WAIT, || gw.log().contains("reload refused")),
        "{}",
        gw.log()
    );
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    assert!(
        gw.log()
            .contains("its init did not return within init_timeout (2s)"),
        "{}",
        gw.log()
    );
    let v3 = config("", &[("kit", r#"mode = "ok", tag = "v3""#, "")]);
    std::fs::write(dir.path().join("gateway.toml"), v3).expect("write");
    gw.signal("HUP");
    assert!(
        wait_until(WAIT, || gw.log().contains("config reloaded")),
        "{}",
        gw.log()
    );
    send(&gw, "after", "test.kit");
    assert!(wait_until(WAIT, || calls(&gw, "kit")
        .iter()
        .any(|c| c["tag"] == "v3")));
}

/// A reload that also moves a websocket app (its new settings tried, a bootstrap and a dial,
/// up to 25 s) switched the routes first, then waited for that trial before it removed
/// instances and took the new admin token: for seconds the new routes were live while the
/// removed plugin was still called and the old admin token still the one taken. Everything
/// else now switches together first; the long connections settle last.
#[test]
fn a_long_connection_trial_comes_after_the_rest_of_the_reload() {
    use gateway_e2e::harness::request;
    // Takes the TCP connection (backlog) and never answers: the trial's bootstrap waits.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hung_port = hung.local_addr().expect("addr").port();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_port = closed.local_addr().expect("addr").port();
    drop(closed);
    let dir = tempfile::tempdir().expect("tempdir");
    let make = |port: u16, token: &str, with_gone: bool| {
        let mut plugins = vec![("kit", r#"mode = "ok""#, "")];
        if with_gone {
            plugins.push(("gone", r#"mode = "retry_always""#, ""));
        }
        let mut c = config(
            "initial_backoff = \"100ms\"\nmax_backoff = \"200ms\"\nmax_attempts = 100000",
            &plugins,
        )
        .replacen(
            "[admin]\nlisten = \"127.0.0.1:0\"",
            &format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{token}\""),
            1,
        );
        c.push_str(&format!(
            "\n[[apps]]\nname = \"staff\"\nmode = \"websocket\"\napp_id = \"cli_x\"\napp_secret = \"secret\"\ndomain = \"http://127.0.0.1:{port}\"\n"
        ));
        if !with_gone {
            c.push_str("\n[[routes]]\nevents = [\"test.new\"]\nplugins = [\"kit\"]\n");
        }
        c
    };
    let (old_token, new_token) = ("tokenAAAAAAAAAAAAAAAA", "tokenBBBBBBBBBBBBBBBB");
    let gw = TestGateway::spawn(dir.path(), &make(closed_port, old_token, true));
    send(&gw, "g-1", "test.gone");
    assert!(wait_until(WAIT, || calls(&gw, "gone").len() >= 3));
    std::fs::write(
        dir.path().join("gateway.toml"),
        make(hung_port, new_token, false),
    )
    .expect("write");
    gw.signal("HUP");
    // The routes switched (an event of the new route is delivered) while the trial waits.
    std::thread::sleep(Duration::from_millis(1500));
    send(&gw, "n-1", "test.new");
    assert!(
        wait_until(Duration::from_secs(5), || calls(&gw, "kit")
            .iter()
            .any(|c| c["event_id"] == "n-1")),
        "the new route is not live: {}",
        gw.log()
    );
    let auth = |token: &str| {
        request(
            "GET",
            &gw.admin_url("/api/v1/plugins"),
            &[("Authorization".into(), format!("Bearer {token}"))],
            "",
        )
        .map(|a| a.status)
    };
    assert_eq!(
        (auth(old_token), auth(new_token)),
        (Ok(401), Ok(200)),
        "the admin token did not switch with the routes"
    );
    let gone_then = calls(&gw, "gone").len();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        calls(&gw, "gone").len(),
        gone_then,
        "the removed instance was still called after the new routes were live"
    );
    // The trial was still under way all along.
    assert!(!gw.log().contains("config reloaded"), "{}", gw.log());
    drop(hung);
}

/// A call past its `[delivery] timeout` that returns well within `shutdown_grace`: a SIGTERM
/// did not wait for it (the late wait gave up at the stop), so its late `Ok` was never
/// recorded, and the next start charged the delivery a crash and called the plugin again. It
/// is now waited for within the grace and recorded.
#[test]
fn a_stop_waits_within_its_grace_for_a_call_past_its_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    // base_config's shutdown_grace is 5 s; the call takes 2 s, its timeout is 500 ms.
    let cfg = config(
        "max_attempts = 5\ninitial_backoff = \"10s\"\nmax_backoff = \"10s\"\ntimeout = \"500ms\"",
        &[("late", r#"mode = "slow", sleep_ms = 2000"#, "")],
    );
    let mut gw = TestGateway::spawn(dir.path(), &cfg);
    send(&gw, "sd-1", "test.late");
    assert!(wait_until(WAIT, || delivery(&gw, "sd-1", "late")
        ["history"]
        .as_array()
        .is_some_and(|h| h.iter().any(|a| a["outcome"] == "timeout"))));
    gw.signal("TERM");
    let status = gw.wait(Duration::from_secs(20)).expect("stopped");
    assert!(status.success(), "{status:?}");
    assert_eq!(calls(&gw, "late").len(), 1, "the call was cut off");
    let d = delivery(&gw, "sd-1", "late");
    assert_eq!(d["state"], "done", "{d}");
    assert_eq!(d["crashes"], 0, "{d}");
}

/// The same for a reload that lets an in-process instance go: its `shutdown` (here aborting
/// the process) ran beside a delivery running alone, which was charged with the crash. The
/// reload now lets it go once that call has ended (and its outcome is recorded).
#[test]
fn a_removed_instances_shutdown_that_crashes_is_not_charged_to_a_delivery_running_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = "timeout = \"60s\"\nmax_crashes = 2";
    let kit = ("kit", r#"mode = "gate", gate = "data/open""#, "");
    // Its `shutdown` aborts the process.
    let v1 = aborting_boom(&config(
        settings,
        &[kit, ("boom", "panic_shutdown = true", "")],
    ));
    let mut gw = TestGateway::spawn(dir.path(), &v1);
    send(&gw, "lone-2", "test.kit");
    gw.wait_running("lone-2", "kit");
    gw.kill9(); // crash 1, during its call
    let mut gw = TestGateway::spawn(dir.path(), &v1);
    gw.wait_running("lone-2", "kit");
    // `boom` removed: the reload lets its instance go.
    std::fs::write(dir.path().join("gateway.toml"), config(settings, &[kit])).expect("write");
    gw.signal("HUP");
    assert!(wait_until(WAIT, || gw.log().contains("reloading config")));
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        gw.wait(Duration::ZERO).is_none(),
        "the removed instance's shutdown ran beside the delivery running alone: {}",
        gw.log()
    );
    std::fs::write(dir.path().join("data/open"), "").expect("open the gate");
    let status = gw.wait(Duration::from_secs(30));
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    let gw = TestGateway::spawn(dir.path(), &config(settings, &[kit]));
    assert!(wait_until(WAIT, || ["done", "dead"]
        .contains(&state(&gw, "lone-2", "kit").as_str())));
    let d = delivery(&gw, "lone-2", "kit");
    assert_eq!(
        d["state"], "done",
        "charged with the shutdown's crash: {d:#}"
    );
    assert_eq!(d["crashes"], 1, "{d:#}");
}

/// ARCHITECTURE: "calls hung past their timeout on a replaced instance hand their permits to
/// the new one (a reload meant to fix a hanging plugin takes effect)" — also when the reload
/// comes before the timeout (review finding: the reload found no hung call, the call's timeout
/// came later on an instance no longer in place, and its permit stayed held for as long as it
/// hung: h-b waited for the old call's return, 20 s here, for good with native code that
/// never returns).
#[test]
fn a_reload_before_a_hanging_calls_timeout_still_takes_effect() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The reload must be in place before the 5 s timeout, on a loaded machine too.
    let settings = "timeout = \"5s\"\ninitial_backoff = \"30s\"\nmax_backoff = \"30s\"";
    let plugin = |kit: &str| config(settings, &[("kit", kit, "max_concurrency = 1")]);
    let gw = TestGateway::spawn(
        dir.path(),
        &plugin("mode = \"slow\", sleep_ms = 20000, tag = \"hung\""),
    );
    send(&gw, "h-a", "test.kit");
    gw.wait_running("h-a", "kit");
    std::fs::write(
        dir.path().join("gateway.toml"),
        plugin("mode = \"ok\", tag = \"fixed\""),
    )
    .expect("write");
    gw.signal("HUP");
    assert!(
        wait_until(WAIT, || gw.log().contains("config reloaded")),
        "{}",
        gw.log()
    );
    assert_eq!(
        delivery(&gw, "h-a", "kit")["attempts"],
        0,
        "the reload came before the call's timeout: the test shows nothing"
    );
    // The timeout, on the replaced instance.
    assert!(
        wait_until(WAIT, || delivery(&gw, "h-a", "kit")["attempts"] == 1),
        "{}",
        delivery(&gw, "h-a", "kit")
    );
    let sent = Instant::now();
    send(&gw, "h-b", "test.kit");
    assert!(
        wait_until(Duration::from_secs(6), || state(&gw, "h-b", "kit")
            == "done"),
        "the fixed instance did not take over while the old call hung: {}",
        gw.log()
    );
    assert!(sent.elapsed() < Duration::from_secs(7));
    let b = calls(&gw, "kit");
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0]["tag"], "fixed");
}
