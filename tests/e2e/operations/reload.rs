//! Reloads: SIGHUP (a broken config kept out, a plugin and route added, requests in flight
//! across reloads, a library changed on disk refused), `--watch` following an editor's rename,
//! and a dead letter replayed once a reload fixed its plugin. Part of `operations.rs`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gateway_e2e::harness::{
    self, base_config, binaries, get, metric, wait_until, Lark, TestGateway,
};

use super::helpers::{app, recorded, reload, route, send, testkit, TOKEN};

#[test]
fn sighup_reloads_safely() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = format!("{}{}", base_config(), app());
    let v1 = format!(
        "{base}{}{}",
        testkit("first", "record = \"data/first.jsonl\""),
        route("\"t.a\"", "\"first\""),
    );
    let gw = TestGateway::spawn(dir.path(), &v1);
    assert_eq!(send(&gw, "a1", "t.a"), 200);
    assert!(wait_until(Duration::from_secs(5), || recorded(
        &gw,
        "first.jsonl"
    )
    .len()
        == 1));

    // A broken config is refused; the old routes keep working.
    reload(
        &gw,
        &format!("{v1}\n[[routes]]\nevents = [\"t.b\"]\nplugins = [\"ghost\"]\n"),
        "reload refused",
    );
    assert!(
        gw.log().contains("unknown plugin \"ghost\""),
        "{}",
        gw.log()
    );
    assert_eq!(send(&gw, "a2", "t.a"), 200);
    assert!(wait_until(Duration::from_secs(5), || recorded(
        &gw,
        "first.jsonl"
    )
    .len()
        == 2));

    // Adding a plugin and a route starts delivering to it; requests in flight across several
    // reloads all succeed.
    let v2 = format!(
        "{v1}{}{}",
        testkit("second", "record = \"data/second.jsonl\""),
        route("\"t.b\"", "\"second\""),
    );
    let failures = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let url = gw.url("/hook");
    let senders: Vec<_> = (0..4)
        .map(|t| {
            let (failures, sent, url) = (failures.clone(), sent.clone(), url.clone());
            std::thread::spawn(move || {
                let lark = Lark::plain(TOKEN);
                for i in 0..50 {
                    let id = format!("flight-{t}-{i}");
                    let (body, headers) =
                        lark.wrap(&lark.event_v2(&id, "t.a", serde_json::json!({})));
                    match harness::post(&url, &headers, &body) {
                        Ok(a) if a.status == 200 => {}
                        _ => {
                            failures.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for config in [&v2, &v1, &v2] {
        reload(&gw, config, "config reloaded");
    }
    for s in senders {
        s.join().expect("sender");
    }
    assert_eq!(sent.load(Ordering::SeqCst), 200);
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "requests failed during reloads"
    );
    assert_eq!(send(&gw, "b1", "t.b"), 200);
    let second = |outcome: &str| {
        recorded(&gw, "second.jsonl")
            .iter()
            .filter(|l| l["outcome"] == outcome)
            .count()
    };
    assert!(wait_until(Duration::from_secs(5), || second("ok") == 1));
    // Removed by the v1 reload: its instance was shut down (and a fresh one made by the last v2).
    assert_eq!(second("shutdown"), 1);
    assert!(wait_until(Duration::from_secs(10), || recorded(
        &gw,
        "first.jsonl"
    )
    .len()
        == 202));

    // A library replaced at the same path is refused: libraries are never unloaded.
    let lib = dir.path().join("libcopy.so");
    std::fs::copy(&binaries().testkit, &lib).expect("copy");
    let v3 = format!(
        "{v2}\n[[plugins]]\nname = \"copy\"\nlibrary = \"{}\"\nconfig = {{ mode = \"ok\" }}\n",
        lib.display()
    );
    reload(&gw, &v3, "config reloaded");
    std::thread::sleep(Duration::from_millis(20));
    // The same bytes installed again (a new file): the instance is kept; and a change of its
    // config is served by the library loaded then (it was refused "changed on disk").
    std::fs::remove_file(&lib).expect("remove");
    std::fs::copy(&binaries().testkit, &lib).expect("copy again");
    reload(&gw, &v3, "config reloaded");
    let at = v3
        .rfind("config = { mode = \"ok\" }")
        .expect("copy's config");
    let retagged = format!(
        "{}config = {{ mode = \"ok\", tag = \"v3b\" }}{}",
        &v3[..at],
        &v3[at + "config = { mode = \"ok\" }".len()..]
    );
    reload(&gw, &retagged, "config reloaded");
    assert!(!gw.log().contains("changed on disk"), "{}", gw.log());
    // Other bytes, even with the entry unchanged (a rebuild installed over the path, then a
    // reload): the instance was kept silently on the old library.
    std::fs::remove_file(&lib).expect("remove");
    std::fs::copy(&binaries().logger, &lib).expect("copy another library");
    reload(&gw, &v3, "changed on disk since this gateway loaded it");
    reload(
        &gw,
        &v3.replace("mode = \"ok\"", "mode = \"reject\""),
        "changed on disk since this gateway loaded it",
    );
}

#[test]
fn dead_letter_replayed_after_the_plugin_is_fixed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = format!("{}{}", base_config(), app());
    let broken = format!(
        "{base}{}{}",
        testkit("payer", "mode = \"reject\", record = \"data/payer.jsonl\""),
        route("\"t.pay\"", "\"payer\""),
    );
    let gw = TestGateway::spawn(dir.path(), &broken);
    assert_eq!(send(&gw, "p1", "t.pay"), 200);
    assert!(wait_until(Duration::from_secs(5), || {
        gw.cli(&["dead-letters", "--json"]).1.lines().count() == 1
    }));
    reload(
        &gw,
        &broken.replace("mode = \"reject\", ", ""),
        "config reloaded",
    );
    let (code, out, err) = gw.cli(&["replay", "--dead-letters", "--plugin", "payer"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 deliveries queued again"), "{out}");
    assert!(wait_until(Duration::from_secs(10), || {
        recorded(&gw, "payer.jsonl")
            .iter()
            .any(|l| l["outcome"] == "ok")
    }));
    assert!(gw.cli(&["dead-letters", "--json"]).1.trim().is_empty());
    let m = get(&gw.admin_url("/metrics")).expect("metrics").body;
    assert_eq!(
        metric(&m, r#"gateway_replays_total{plugin="payer"}"#),
        1.0,
        "{m}"
    );
    // `--since` takes RFC 3339 too: the event came after the epoch, not after 2100.
    assert_eq!(
        gw.cli(&[
            "events",
            "list",
            "--since",
            "1970-01-02T00:00:00+08:00",
            "--json"
        ])
        .1
        .lines()
        .count(),
        1
    );
    assert!(gw
        .cli(&["events", "list", "--since", "2100-01-01", "--json"])
        .1
        .trim()
        .is_empty());
    let (code, out, _) = gw.cli(&["store", "check"]);
    assert_eq!(code, 0);
    assert!(out.contains("sound"), "{out}");
}

#[test]
fn watch_reloads_when_an_editor_replaces_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = format!("{}{}", base_config(), app());
    let v1 = format!(
        "{base}{}{}",
        testkit("first", "record = \"data/first.jsonl\""),
        route("\"t.a\"", "\"first\"")
    );
    let gw = TestGateway::spawn_full(dir.path(), &v1, &[], &["--watch"]);
    assert_eq!(send(&gw, "w1", "t.b"), 200, "unrouted at first");
    // Write a new file and rename it over the config, as editors and git do.
    let v2 = format!("{v1}{}", route("\"t.b\"", "\"first\""));
    let tmp = dir.path().join(".gateway.toml.swp");
    std::fs::write(&tmp, v2).expect("write");
    std::fs::rename(&tmp, dir.path().join("gateway.toml")).expect("rename");
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .log()
            .contains("config reloaded")),
        "{}",
        gw.log()
    );
    assert!(gw.log().contains("config file changed"), "{}", gw.log());
    assert_eq!(send(&gw, "w2", "t.b"), 200);
    assert!(wait_until(Duration::from_secs(5), || {
        recorded(&gw, "first.jsonl")
            .iter()
            .any(|l| l["event_id"] == "w2")
    }));
}

/// `--watch` reloads an edit made while the gateway was starting (its plugin's `init` takes
/// 3 s): the file's first stamp is the one taken before it was read. It was taken once the
/// gateway was up, so that edit looked like the file as read and was never applied.
#[test]
fn watch_reloads_an_edit_made_while_the_gateway_started() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = format!("{}{}", base_config(), app());
    let v1 = format!(
        "{base}{}{}",
        testkit(
            "first",
            "record = \"data/first.jsonl\", init_sleep_ms = 3000"
        ),
        route("\"t.a\"", "\"first\"")
    );
    let v2 = format!("{v1}{}", route("\"t.b\"", "\"first\""));
    let path = dir.path().join("gateway.toml");
    // The harness writes v1 and starts the gateway; v2 comes a second later, during `init`.
    let editor = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1_000));
        let tmp = path.with_extension("swp");
        std::fs::write(&tmp, v2).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
    });
    let gw = TestGateway::spawn_full(dir.path(), &v1, &[], &["--watch"]);
    editor.join().expect("the editor");
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .log()
            .contains("config reloaded")),
        "the edit made during the start was not applied: {}",
        gw.log()
    );
    assert_eq!(send(&gw, "started-1", "t.b"), 200);
    assert!(wait_until(Duration::from_secs(5), || {
        recorded(&gw, "first.jsonl")
            .iter()
            .any(|l| l["event_id"] == "started-1")
    }));
}

/// The very file a library loaded from, rewritten in place (the same inode, other bytes), was
/// taken by a reload that made a new instance of it (a changed config), even pinned to the new
/// bytes: the library loaded before served it. Refused, as other bytes in a new file are.
#[test]
fn a_library_rewritten_in_place_is_refused_for_a_new_instance() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = dir.path().join("libcopy.so");
    std::fs::copy(&binaries().testkit, &lib).expect("copy");
    let cfg = |tag: &str| {
        format!(
            "{}{}\n[[plugins]]\nname = \"copy\"\nlibrary = \"{}\"\nconfig = {{ tag = \"{tag}\" }}\n{}",
            base_config(),
            app(),
            lib.display(),
            route("\"t.a\"", "\"copy\""),
        )
    };
    let gw = TestGateway::spawn(dir.path(), &cfg("a"));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&lib)
        .expect("open");
    f.write_all(b"a rebuild written into the loaded file")
        .expect("append");
    drop(f);
    reload(
        &gw,
        &cfg("b"),
        "changed on disk since this gateway loaded it",
    );
    assert!(!gw.log().contains("config reloaded"), "{}", gw.log());
}

/// A stop while a reload still runs (a new instance's `init` taking 20 s) waits for it only
/// within `shutdown_grace`, says so, and exits: the reload's new instances install nothing.
#[test]
fn a_stop_waits_for_a_running_reload_only_within_its_grace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = format!("{}{}", base_config(), app());
    let v1 = format!(
        "{base}{}{}",
        testkit("first", "record = \"data/first.jsonl\""),
        route("\"t.a\"", "\"first\""),
    );
    let mut gw = TestGateway::spawn(dir.path(), &v1);
    let v2 = format!(
        "{v1}{}{}",
        testkit(
            "slow",
            "record = \"data/slow.jsonl\", init_sleep_ms = 20000"
        ),
        route("\"t.b\"", "\"slow\""),
    );
    std::fs::write(dir.path().join("gateway.toml"), v2).expect("write config");
    gw.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .log()
            .contains("reloading config")),
        "{}",
        gw.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    let started = std::time::Instant::now();
    gw.signal("TERM");
    let exited = gw.wait(Duration::from_secs(40));
    let took = started.elapsed();
    assert!(exited.is_some(), "{}", gw.log());
    // shutdown_grace is 5 s.
    assert!(
        took < Duration::from_secs(9),
        "the stop took {took:?}: {}",
        gw.log()
    );
    assert!(
        gw.log()
            .contains("a reload was still running when the stop's grace ran out"),
        "{}",
        gw.log()
    );
}

/// What a reload cannot change without a restart is said (and kept as it runs): the webhook
/// listener's address alone, then the admin listener's alone, each gets the note, and the
/// gateway goes on serving where it listens. A changed retention is said to apply from the
/// next purge, only when it changed.
#[test]
fn a_reload_says_what_waits_for_a_restart_or_the_next_purge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v1 = format!(
        "{}{}{}{}",
        base_config(),
        app(),
        testkit("first", "record = \"data/first.jsonl\""),
        route("\"t.a\"", "\"first\""),
    );
    let gw = TestGateway::spawn(dir.path(), &v1);
    let note = "listen addresses change only on restart; still on the old ones";
    for (n, changed) in [
        "[server]\nlisten = \"127.0.0.1:1\"",
        "[admin]\nlisten = \"127.0.0.1:1\"",
    ]
    .into_iter()
    .enumerate()
    {
        let section = &changed[..changed.find('\n').expect("a line")];
        let v2 = v1.replacen(&format!("{section}\nlisten = \"127.0.0.1:0\""), changed, 1);
        assert_ne!(v2, v1, "{changed}");
        reload(&gw, &v2, "config reloaded");
        assert_eq!(
            gw.log().matches(note).count(),
            n + 1,
            "{changed}: {}",
            gw.log()
        );
        assert_eq!(send(&gw, &format!("still-{n}"), "t.a"), 200);
        // Back to the running addresses for the next one.
        reload(&gw, &v1, "config reloaded");
    }
    // A new retention applies from the next purge: said when it changes, only then.
    let purge_note = "retentions apply from the next purge";
    assert!(!gw.log().contains(purge_note), "{}", gw.log());
    let store = "[store]\npath = \"data/gateway.db\"";
    let v3 = v1.replacen(store, &format!("{store}\nretention = \"2d\""), 1);
    assert_ne!(v3, v1);
    reload(&gw, &v3, "config reloaded");
    assert_eq!(gw.log().matches(purge_note).count(), 1, "{}", gw.log());
}
