//! Reloads: a changed instance keeps its concurrency and only the new one is called, a body
//! arriving across a reload is routed by the new config, a hung instance is replaced before its
//! call returns; and removed instances: their deliveries dead-lettered after the grace, a late
//! success after that still ends done, a name restored within the grace keeps its deliveries,
//! and one configured again keeps its limit while an old call runs. Part of `invariants.rs`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use gateway_e2e::harness::{wait_until, Lark, TestGateway};

use super::helpers::{call_arrivals, calls, config, delivery, send, state, TOKEN, WAIT};

#[test]
fn a_reload_of_a_changed_instance_keeps_its_concurrency_and_calls_only_the_new_instance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let delivery = "timeout = \"30s\"";
    // Every call waits for the gate file: r-a's call runs until the reload is done, however
    // long the reload takes (a 1 s call once ended first on a loaded machine, and r-b and r-c
    // then ran on the old instance).
    let plugin = |tag: &str| {
        config(
            delivery,
            &[(
                "kit",
                &format!("mode = \"gate\", gate = \"data/open\", tag = \"{tag}\""),
                "max_concurrency = 1",
            )],
        )
    };
    let gw = TestGateway::spawn(dir.path(), &plugin("v1"));
    // r-a's call runs before r-b and r-c arrive (sent at once, the three could share its
    // call), and before the reload.
    send(&gw, "r-a", "test.kit");
    gw.wait_running("r-a", "kit");
    for id in ["r-b", "r-c"] {
        send(&gw, id, "test.kit");
    }
    std::fs::write(dir.path().join("gateway.toml"), plugin("v2")).expect("write");
    gw.signal("HUP");
    assert!(
        wait_until(WAIT, || gw.log().contains("config reloaded")),
        "{}",
        gw.log()
    );
    // A doubled concurrency would have started r-b on the new instance beside r-a by now.
    std::thread::sleep(Duration::from_millis(1000));
    std::fs::write(dir.path().join("data/open"), "").expect("open the gate");
    assert_eq!(
        call_arrivals(&gw, "kit", 3, Duration::from_secs(20)).len(),
        3
    );
    let calls = calls(&gw, "kit");
    assert!(
        calls.iter().all(|c| c["in_flight"] == 1),
        "concurrency doubled: {calls:?}"
    );
    let by_event = |id: &str| {
        calls
            .iter()
            .find(|c| c["event_id"] == id)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        by_event("r-a")["tag"],
        "v1",
        "started before the reload: {calls:?}"
    );
    assert_eq!(
        by_event("r-b")["tag"],
        "v2",
        "started after the reload on the old instance: {calls:?}"
    );
    assert_eq!(by_event("r-c")["tag"], "v2", "{calls:?}");
}

#[test]
fn an_event_whose_body_arrives_across_a_reload_is_routed_by_the_new_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let both = config(
        "",
        &[("a", "mode = \"ok\"", ""), ("b", "mode = \"ok\"", "")],
    )
    .replace("events = [\"test.a\"]", "events = [\"test.ab\"]")
    .replace("events = [\"test.b\"]", "events = [\"test.ab\"]");
    let gw = TestGateway::spawn(dir.path(), &both);
    let lark = Lark::plain(TOKEN);
    let body = lark.event_v2("split-1", "test.ab", serde_json::json!({}));
    let mut conn = TcpStream::connect(gw.addr).expect("connect");
    let (first, rest) = body.split_at(body.len() / 2);
    write!(
        conn,
        "POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{first}",
        body.len()
    )
    .expect("write head");
    // Plugin b goes away while the body is still arriving.
    let only_a = config("", &[("a", "mode = \"ok\"", "")])
        .replace("events = [\"test.a\"]", "events = [\"test.ab\"]");
    std::fs::write(dir.path().join("gateway.toml"), only_a).expect("write");
    gw.signal("HUP");
    assert!(
        wait_until(WAIT, || gw.log().contains("config reloaded")),
        "{}",
        gw.log()
    );
    conn.write_all(rest.as_bytes()).expect("write rest");
    let mut answer = [0u8; 512];
    let n = conn.read(&mut answer).expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(wait_until(WAIT, || state(&gw, "split-1", "a") == "done"));
    assert_eq!(
        state(&gw, "split-1", "b"),
        "none",
        "no delivery for a removed plugin"
    );
}

#[test]
fn a_reload_replacing_a_hung_instance_takes_effect_before_the_hung_call_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = "timeout = \"300ms\"\ninitial_backoff = \"10s\"\nmax_backoff = \"10s\"";
    let plugin = |kit: &str| config(settings, &[("kit", kit, "max_concurrency = 1")]);
    let gw = TestGateway::spawn(
        dir.path(),
        &plugin("mode = \"slow\", sleep_ms = 10000, tag = \"hung\""),
    );
    send(&gw, "h-a", "test.kit");
    gw.wait_running("h-a", "kit");
    // h-b waits for the only permit, which the hung call holds (past its timeout once its
    // attempt is counted).
    send(&gw, "h-b", "test.kit");
    assert!(
        wait_until(WAIT, || delivery(&gw, "h-a", "kit")["attempts"] == 1),
        "{}",
        delivery(&gw, "h-a", "kit")
    );
    std::fs::write(
        dir.path().join("gateway.toml"),
        plugin("mode = \"ok\", tag = \"fixed\""),
    )
    .expect("write");
    let reloaded = Instant::now();
    gw.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(6), || state(&gw, "h-b", "kit")
            == "done"),
        "the fixed instance did not take over while the old call hung: {}",
        gw.log()
    );
    assert!(reloaded.elapsed() < Duration::from_secs(7));
    let b = calls(&gw, "kit");
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0]["tag"], "fixed");
    // The hung call returns Ok at 10 s: that is h-a's delivery, and nothing ran twice.
    assert!(wait_until(Duration::from_secs(20), || state(
        &gw, "h-a", "kit"
    ) == "done"));
    std::thread::sleep(Duration::from_millis(300));
    let all = calls(&gw, "kit");
    assert_eq!(all.len(), 2, "{all:?}");
}

#[test]
fn deliveries_of_a_removed_instance_are_dead_lettered_after_the_grace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings =
        "initial_backoff = \"30s\"\nmax_backoff = \"30s\"\nremoved_plugin_grace = \"1s\"";
    let cfg = config(
        settings,
        &[
            (
                "gone",
                "mode = \"retry_always\", retry_after_ms = 30000",
                "",
            ),
            ("stay", "mode = \"ok\"", ""),
        ],
    );
    let gw = TestGateway::spawn(dir.path(), &cfg);
    send(&gw, "orphan-1", "test.gone");
    assert!(wait_until(WAIT, || calls(&gw, "gone").len() == 1));
    let without = config(settings, &[("stay", "mode = \"ok\"", "")]);
    std::fs::write(dir.path().join("gateway.toml"), without).expect("write");
    gw.signal("HUP");
    assert!(
        wait_until(WAIT, || state(&gw, "orphan-1", "gone") == "dead"),
        "{}",
        delivery(&gw, "orphan-1", "gone")
    );
    let d = delivery(&gw, "orphan-1", "gone");
    let error = d["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("plugin instance `gone` is no longer configured"),
        "{error}"
    );
    let (code, out, _) = gw.cli(&["dead-letters"]);
    assert_eq!(code, 0);
    assert!(out.contains("orphan-1"), "{out}");
    // Counted (the orphan rule's dead letters were in no count).
    let metrics = gateway_e2e::harness::get(&gw.admin_url("/metrics"))
        .expect("metrics")
        .body;
    assert_eq!(
        gateway_e2e::harness::metric(&metrics, r#"gateway_dead_letters_total{plugin="gone"}"#),
        1.0,
        "{metrics}"
    );

    // A replay by the running config leaves it out (the name is not configured).
    let (code, out, err) = gw.cli(&["replay", "--dead-letters"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("0 deliveries queued again") && err.contains("skipped: orphan-1:gone"),
        "{out}{err}"
    );
    // Replayed while the name is still missing, by an operator whose config file still has
    // it, after the orphan rule stopped looking: the sweeper meets it pending for a name
    // without an instance, and once a new grace has run out it is a dead letter again (it
    // used to stay pending until the next reload).
    std::thread::sleep(Duration::from_millis(1500));
    let old = dir.path().join("old.toml");
    std::fs::write(&old, &cfg).expect("write");
    let (code, out, err) =
        gateway_e2e::harness::run_cli_with_env(&old, &["replay", "--dead-letters"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 deliveries queued again"), "{out}{err}");
    assert!(
        wait_until(WAIT, || {
            let d = delivery(&gw, "orphan-1", "gone");
            d["state"] == "dead" && d["attempts"] == 0
        }),
        "{}",
        delivery(&gw, "orphan-1", "gone")
    );
}

/// A delivery dead-lettered as an orphan while a call of its removed instance was still
/// running is delivered if that call then succeeds: the success replaces the orphan's dead
/// letter (it stayed a dead letter, and a replay would have run the delivery a second time).
#[test]
fn a_call_that_succeeds_after_its_orphan_was_dead_lettered_ends_done() {
    orphan_then_success("removed_plugin_grace = \"1s\"\ntimeout = \"30s\"", false);
}

/// The same when the call also outlives its timeout after the orphan rule dead-lettered it:
/// the timeout's retry does not apply to a dead letter, so the attempt count stays, and the
/// late success must still match it (it named the next attempt, and was dropped).
#[test]
fn a_call_that_succeeds_after_its_orphan_was_dead_lettered_and_its_timeout_passed_ends_done() {
    orphan_then_success("removed_plugin_grace = \"1s\"\ntimeout = \"5s\"", true);
}

fn orphan_then_success(settings: &str, past_timeout: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let held = ("held", "mode = \"gate\", gate = \"open\", log = true", "");
    let stay = ("stay", "mode = \"ok\"", "");
    let gw = TestGateway::spawn(dir.path(), &config(settings, &[held, stay]));
    send(&gw, "late-orphan-1", "test.held");
    // The plugin logs as the call begins (the attempt is marked started before that).
    assert!(
        wait_until(WAIT, || gw.log().contains("testkit handling late-orphan-1")),
        "{}",
        gw.log()
    );
    std::fs::write(dir.path().join("gateway.toml"), config(settings, &[stay])).expect("write");
    gw.signal("HUP");
    assert!(
        wait_until(WAIT, || state(&gw, "late-orphan-1", "held") == "dead"),
        "{}",
        delivery(&gw, "late-orphan-1", "held")
    );
    if past_timeout {
        let d = delivery(&gw, "late-orphan-1", "held");
        assert_eq!(d["attempts"], 0, "dead-lettered before the timeout: {d}");
        assert!(
            wait_until(WAIT, || gw.log().contains("timed out after 5000ms")),
            "{}",
            gw.log()
        );
        // The timeout's record is tried against the dead letter (and does not apply).
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(state(&gw, "late-orphan-1", "held"), "dead");
    }
    std::fs::write(dir.path().join("open"), "").expect("open the gate");
    assert!(
        wait_until(WAIT, || state(&gw, "late-orphan-1", "held") == "done"),
        "{}\n{}",
        delivery(&gw, "late-orphan-1", "held"),
        gw.log()
    );
    let d = delivery(&gw, "late-orphan-1", "held");
    assert!(d["last_error"].is_null(), "{d}");
    assert_eq!(d["attempts"], 1, "{d}");
}

/// A name removed and configured again before its grace ends is no orphan: its pending
/// deliveries stay pending past the grace (the sweeper forgets that it went missing).
#[test]
fn an_instance_restored_within_the_grace_keeps_its_pending_deliveries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings =
        "initial_backoff = \"30s\"\nmax_backoff = \"30s\"\nremoved_plugin_grace = \"3s\"";
    let back = (
        "back",
        "mode = \"retry_always\", retry_after_ms = 30000",
        "",
    );
    let stay = ("stay", "mode = \"ok\"", "");
    let gw = TestGateway::spawn(dir.path(), &config(settings, &[back, stay]));
    send(&gw, "restored-1", "test.back");
    assert!(wait_until(WAIT, || calls(&gw, "back").len() == 1));
    let reloads = |gw: &TestGateway| gw.log().matches("config reloaded").count();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config(settings, &[stay])).expect("write");
    gw.signal("HUP");
    assert!(wait_until(WAIT, || reloads(&gw) == 1), "{}", gw.log());
    // The sweeper's next round (the reload wakes it) notes `back` as missing.
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&path, config(settings, &[back, stay])).expect("write");
    gw.signal("HUP");
    assert!(wait_until(WAIT, || reloads(&gw) == 2), "{}", gw.log());
    std::thread::sleep(Duration::from_secs(4));
    let d = delivery(&gw, "restored-1", "back");
    assert_eq!(d["state"], "pending", "{d}");
    assert!(
        !gw.log()
            .contains("deliveries of a removed plugin instance dead-lettered"),
        "{}",
        gw.log()
    );
}

/// `max_concurrency` holds across a reload that removes a name and one that configures it
/// again: a call of the removed instance still running keeps its permit, and the name's new
/// instance waits for it (the name came back with a fresh set of permits and ran beside it).
#[test]
fn a_name_removed_and_configured_again_keeps_its_limit_while_an_old_call_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = "removed_plugin_grace = \"1m\"\ntimeout = \"30s\"";
    let held = (
        "held",
        "mode = \"gate\", gate = \"open\", log = true",
        "max_concurrency = 1",
    );
    let stay = ("stay", "mode = \"ok\"", "");
    let with = config(settings, &[held, stay]);
    let gw = TestGateway::spawn(dir.path(), &with);
    send(&gw, "limit-1", "test.held");
    assert!(
        wait_until(WAIT, || gw.log().contains("testkit handling limit-1")),
        "{}",
        gw.log()
    );
    let reload = |cfg: &str, n: usize| {
        std::fs::write(dir.path().join("gateway.toml"), cfg).expect("write");
        gw.signal("HUP");
        assert!(
            wait_until(WAIT, || gw.log().matches("config reloaded").count() == n),
            "{}",
            gw.log()
        );
    };
    reload(&config(settings, &[stay]), 1);
    reload(&with, 2);
    send(&gw, "limit-2", "test.held");
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(
        !gw.log().contains("testkit handling limit-2"),
        "called beside the removed instance's running call (max_concurrency 1)\n{}",
        gw.log()
    );
    std::fs::write(dir.path().join("open"), "").expect("open the gate");
    assert!(
        wait_until(WAIT, || state(&gw, "limit-2", "held") == "done"
            && state(&gw, "limit-1", "held") == "done"),
        "{}",
        gw.log()
    );
}

/// Regression: a batch waiting for the engine's gate, held alone by a delivery with a crash
/// behind it, when a reload replaced its plugin's instance was handed to the old instance: the
/// dispatcher read the instance before it waited for the gate (which can be as long as the
/// lone call's timeout). Only the new instance is called after a reload. (`kit` is isolated:
/// a reload that starts an in-process instance waits for the call running alone instead, see
/// `reload_edges.rs`.)
#[test]
fn a_call_waiting_for_the_gate_when_a_reload_replaces_its_instance_goes_to_the_new_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = |tag: Option<&str>| {
        suspect_and_kit("60s", tag).replacen(
            "record = \"data/kit.jsonl\" }\n",
            "record = \"data/kit.jsonl\" }\nisolation = \"process\"\n",
            1,
        )
    };
    assert!(
        cfg(Some("v1")).contains("isolation = \"process\""),
        "{}",
        cfg(Some("v1"))
    );
    let gw = lone_call_after_a_crash(dir.path(), &cfg(Some("v1")));
    send(&gw, "g-1", "test.kit");
    // Its dispatcher takes a permit and waits for the gate.
    std::thread::sleep(Duration::from_millis(500));
    assert!(calls(&gw, "kit").is_empty(), "{:?}", calls(&gw, "kit"));
    std::fs::write(dir.path().join("gateway.toml"), cfg(Some("v2"))).expect("write");
    gw.signal("HUP");
    assert!(
        wait_until(WAIT, || gw.log().contains("config reloaded")),
        "{}",
        gw.log()
    );
    std::fs::write(dir.path().join("data/open"), "").expect("open the gate");
    assert!(
        wait_until(WAIT, || state(&gw, "g-1", "kit") == "done"),
        "{}\n{}",
        delivery(&gw, "g-1", "kit"),
        gw.log()
    );
    called_once_on_v2(&gw);
}

/// Regression: a call whose start mark the store refused (another process held its write lock)
/// retried the mark for as long as the store refused it, then called the instance it had read
/// before: a reload meanwhile that replaced the instance did not take effect for it, and one
/// that removed it did not stop it. Here the lone call of a crashed delivery holds the gate
/// until its timeout, so `g-2` waits for the gate while the test takes the store's lock.
#[test]
fn a_call_whose_start_mark_waits_for_the_store_goes_to_the_instance_a_reload_put_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start_mark_waits_across_a_reload(dir.path(), true);
    called_once_on_v2(&gw);
}

#[test]
fn a_call_whose_start_mark_waits_for_the_store_is_not_made_when_a_reload_removes_its_instance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start_mark_waits_across_a_reload(dir.path(), false);
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(
        calls(&gw, "kit").is_empty(),
        "the removed instance was called: {:?}",
        calls(&gw, "kit")
    );
    assert_eq!(state(&gw, "g-2", "kit"), "pending");
}

/// The set-up of the two tests above: `kit` replaced (tag `v2`) or removed by a reload while
/// `g-2`'s start mark waits for the store; returns once the lock is gone and, when `kit` was
/// replaced, `g-2` is done.
fn start_mark_waits_across_a_reload(dir: &std::path::Path, replace: bool) -> TestGateway {
    let cfg = |tag: Option<&str>| suspect_and_kit("3s", tag);
    let gw = lone_call_after_a_crash(dir, &cfg(Some("v1")));
    send(&gw, "g-2", "test.kit");
    std::thread::sleep(Duration::from_millis(300));
    // The store refuses writes from now on; at its timeout the lone call gives the gate up,
    // and g-2's start mark is refused.
    let db = dir.join("data/gateway.db");
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let other = rusqlite::Connection::open(db).expect("open");
        other.execute_batch("BEGIN EXCLUSIVE").expect("lock");
        locked_tx.send(()).expect("locked");
        let _ = release_rx.recv_timeout(Duration::from_secs(60));
        other.execute_batch("ROLLBACK").expect("unlock");
    });
    locked_rx.recv().expect("the lock is held");
    assert!(
        wait_until(WAIT, || gw
            .log()
            .contains("could not mark deliveries as started")),
        "{}",
        gw.log()
    );
    let reloaded = cfg(replace.then_some("v2"));
    std::fs::write(dir.join("gateway.toml"), reloaded).expect("write");
    gw.signal("HUP");
    assert!(
        wait_until(WAIT, || gw.log().contains("config reloaded")),
        "{}",
        gw.log()
    );
    // Held past a mark write in flight at the reload (each waits up to 1 s for the lock): one
    // that then succeeded would be a call that started as the reload came, on the old instance.
    std::thread::sleep(Duration::from_millis(1_500));
    release_tx.send(()).expect("release");
    holder.join().expect("holder");
    std::fs::write(dir.join("data/open"), "").expect("open the gate");
    if replace {
        assert!(
            wait_until(WAIT, || state(&gw, "g-2", "kit") == "done"),
            "{}\n{}",
            delivery(&gw, "g-2", "kit"),
            gw.log()
        );
    }
    gw
}

/// `suspect` (waits for `data/open`) and, with a tag, `kit` (`ok`, that tag); calls time out
/// after `timeout`.
fn suspect_and_kit(timeout: &str, kit_tag: Option<&str>) -> String {
    let kit = kit_tag.map(|tag| format!("mode = \"ok\", tag = \"{tag}\""));
    let mut plugins = vec![("suspect", "mode = \"gate\", gate = \"data/open\"", "")];
    if let Some(kit) = &kit {
        plugins.push(("kit", kit, ""));
    }
    config(&format!("timeout = \"{timeout}\""), &plugins)
}

/// A gateway on `cfg` (see [`suspect_and_kit`]) whose `suspect` delivery had a call running when
/// the previous gateway was killed: restarted, it counts the crash and calls it again alone (the
/// engine's gate held exclusively until the call returns or times out). Returns once that call
/// holds the gate.
fn lone_call_after_a_crash(dir: &std::path::Path, cfg: &str) -> TestGateway {
    let mut gw = TestGateway::spawn(dir, cfg);
    send(&gw, "suspect-1", "test.suspect");
    gw.wait_running("suspect-1", "suspect");
    gw.kill9(); // during the call: the next start counts a crash, and the call then runs alone
    let gw = TestGateway::spawn(dir, cfg);
    // Marked started again after the crash was counted: its call holds the gate alone.
    assert!(
        wait_until(WAIT, || {
            let d = delivery(&gw, "suspect-1", "suspect");
            d["crashes"] == 1 && d["running"] == true
        }),
        "{}\n{}",
        delivery(&gw, "suspect-1", "suspect"),
        gw.log()
    );
    gw
}

/// `kit` was called once, on the instance its reload put in (tag `v2`).
fn called_once_on_v2(gw: &TestGateway) {
    let calls = calls(gw, "kit");
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        calls[0]["tag"], "v2",
        "called on the instance the reload replaced: {calls:?}"
    );
}

/// A reload that changes only `max_concurrency` keeps the instance (a new one used to be
/// created, its `init` run again: for payout a new ledger connection and token, for any plugin
/// its state lost) and applies the new limit to it at once: a second call starts beside the
/// one running.
#[test]
fn a_reload_changing_only_max_concurrency_keeps_the_instance_with_the_new_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = "timeout = \"30s\"";
    let kit = "mode = \"gate\", gate = \"open\", log = true";
    let limited = |n: usize| config(settings, &[("kit", kit, &format!("max_concurrency = {n}"))]);
    let gw = TestGateway::spawn(dir.path(), &limited(1));
    send(&gw, "conc-1", "test.kit");
    assert!(
        wait_until(WAIT, || gw.log().contains("testkit handling conc-1")),
        "{}",
        gw.log()
    );
    std::fs::write(dir.path().join("gateway.toml"), limited(2)).expect("write");
    gw.signal("HUP");
    assert!(
        wait_until(WAIT, || gw.log().contains("config reloaded")),
        "{}",
        gw.log()
    );
    send(&gw, "conc-2", "test.kit");
    assert!(
        wait_until(WAIT, || gw.log().contains("testkit handling conc-2")),
        "the new limit (2) lets a call start beside the running one\n{}",
        gw.log()
    );
    std::fs::write(dir.path().join("open"), "").expect("open the gate");
    assert!(
        wait_until(WAIT, || state(&gw, "conc-1", "kit") == "done"
            && state(&gw, "conc-2", "kit") == "done"),
        "{}",
        gw.log()
    );
    let records = calls(&gw, "kit");
    assert!(
        records.iter().all(|c| c["instance_no"] == 0),
        "one instance served both: {records:?}"
    );
    assert!(
        !records.iter().any(|c| c["outcome"] == "shutdown"),
        "the instance was not shut down: {records:?}"
    );
    assert_eq!(
        gw.log().matches("plugin started").count(),
        1,
        "{}",
        gw.log()
    );
}
