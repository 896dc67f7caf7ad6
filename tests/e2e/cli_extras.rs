//! The commands that describe the gateway rather than run it, none of which reads a config:
//! `completions SHELL` (clap_complete), `man` (clap_mangen; the shipped deploy/man/gateway.1
//! must be its output) and `config schema` (the JSON Schema of gateway.toml). The schema is
//! checked against the shipped configs and the TOML examples in the docs; every config an e2e
//! test starts the gateway with is checked too, by the harness. Also what the store commands
//! print about one delivery, which must not depend on the command asked.

use std::process::Command;
use std::time::Duration;

use gateway_e2e::harness::{binaries, kit_config, wait_until, TestGateway};
use gateway_e2e::schema::{gateway_schema, validate_toml};
use gateway_e2e::workspace_root;

/// Runs `gateway ARGS` with a config path that does not exist (none is needed); returns (exit
/// code, stdout, stderr).
fn gateway(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(&binaries().gateway)
        .args(["--config", "/nonexistent/gateway.toml"])
        .args(args)
        .env_remove("GATEWAY_CONFIG")
        .output()
        .expect("run gateway");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn completions_print_a_script_naming_the_subcommands() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef gateway"),
        ("fish", "complete -c gateway"),
    ] {
        let (code, out, err) = gateway(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(out.contains(marker), "{shell}: {out}");
        for sub in [
            "run",
            "check",
            "dead-letters",
            "replay",
            "events",
            "plugins",
            "completions",
            "schema",
        ] {
            assert!(out.contains(sub), "{shell} completes `{sub}`");
        }
    }
}

#[test]
fn an_unknown_shell_is_refused() {
    let (code, out, err) = gateway(&["completions", "tcsh"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("invalid value 'tcsh'") && err.contains("bash"),
        "{err}"
    );
    let (code, _, err) = gateway(&["completions"]);
    assert_eq!(code, 2, "{err}");
}

/// `send --raw` sends the file as is, so an `--event-id` beside it cannot be honoured: refused
/// (it was dropped without a word).
#[test]
fn send_refuses_an_event_id_it_would_not_use() {
    let (code, out, err) = gateway(&["send", "--raw", "--event-id", "x"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("--event-id") && err.contains("--raw"), "{err}");
}

/// deploy/man/gateway.1 is `gateway man`'s output: a CLI change without regenerating the page
/// fails here.
#[test]
fn the_shipped_man_page_is_the_current_cli() {
    let (code, page, err) = gateway(&["man"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        page.starts_with(".ie") && page.contains(".TH gateway 1"),
        "{page}"
    );
    for needed in [
        "\\-\\-config",
        "GATEWAY_CONFIG",
        "dead\\-letters",
        "EXIT STATUS",
        "SIGHUP",
    ] {
        assert!(page.contains(needed), "the page mentions {needed}");
    }
    let path = workspace_root().join("deploy/man/gateway.1");
    let shipped = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        shipped == page,
        "{} is out of date with the CLI: regenerate it with\n  \
         cargo run -q -p gateway -- man > deploy/man/gateway.1",
        path.display()
    );
}

#[test]
fn the_config_schema_describes_gateway_toml_and_refuses_unknown_keys() {
    let (code, out, err) = gateway(&["config", "schema"]);
    assert_eq!(code, 0, "{err}");
    let schema: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(&schema, gateway_schema());
    assert_eq!(schema["title"], "gateway.toml");
    assert_eq!(schema["additionalProperties"], false);

    for file in ["gateway.toml", "tests/load/gateway.toml"] {
        let text = std::fs::read_to_string(workspace_root().join(file)).expect(file);
        if let Err(e) = validate_toml(&schema, &text) {
            panic!("{file} does not satisfy the schema:\n  {}", e.join("\n  "));
        }
    }

    // What the parser refuses, the schema refuses (a table at a time).
    for (bad, says) in [
        (
            "[server]\nlisten_addr = \"127.0.0.1:1\"\n",
            "unknown key `listen_addr`",
        ),
        ("[server]\nmax_body_bytes = \"1MB\"\n", "is not of type"),
        (
            "[server]\ntls = { cert = \"a.pem\" }\n",
            "`key` is required",
        ),
        (
            "[server]\ntls = { cert = \"a\", key = \"b\", ca = \"c\" }\n",
            "unknown key `ca`",
        ),
        ("[[apps]]\npath = \"/x\"\n", "`name` is required"),
        (
            "[[routes]]\nevents = \"x\"\nplugins = [\"p\"]\n",
            "is not of type",
        ),
        ("[delivery]\nmax_attempts = -1\n", "out of range"),
        ("[logging]\nlevel = \"info\"\n", "unknown key `logging`"),
    ] {
        let errors = validate_toml(&schema, bad).expect_err(bad);
        assert!(errors.iter().any(|e| e.contains(says)), "{bad}: {errors:?}");
    }
    // The plugin's own table is free-form.
    let ok =
        "[[plugins]]\nname = \"a\"\nlibrary = \"x\"\nconfig = { anything = [1, { b = true }] }\n";
    assert_eq!(validate_toml(&schema, ok), Ok(()));
}

/// Every ```toml block in the docs that is a gateway config (not a plugin's own config file)
/// satisfies the schema: the docs show keys that exist.
#[test]
fn the_toml_examples_in_the_docs_satisfy_the_schema() {
    let schema = gateway_schema();
    let mut checked = 0;
    for doc in ["README.md", "docs/plugins.md"] {
        let text = std::fs::read_to_string(workspace_root().join(doc)).expect(doc);
        for (n, block) in text.split("```toml\n").skip(1).enumerate() {
            let block = block.split("```").next().unwrap_or_default();
            // Plugin config files (`plugins call --config`) are not gateway configs.
            let Ok(value) = gateway_e2e::schema::toml_to_json(block) else {
                continue;
            };
            let top_level_ok = value
                .as_object()
                .is_some_and(|o| o.keys().all(|k| schema["properties"].get(k).is_some()));
            if !top_level_ok {
                continue;
            }
            if let Err(e) = validate_toml(schema, block) {
                panic!(
                    "{doc}, toml block {}:\n{block}\n  {}",
                    n + 1,
                    e.join("\n  ")
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} config examples found");
}

/// `dead-letters --json` and `events show` printed `next_at_ms` for finished deliveries, which
/// `deliveries list` (and the API) leave out; and a single delivery's log lines carried its span
/// twice (`delivery{..}:delivery{..}`). The plugin's own lines during a call of one delivery
/// carry that delivery's span (its event id), not a batch's.
#[test]
fn a_finished_delivery_shows_no_next_attempt_and_its_log_lines_one_span() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kit = r#"{ mode = "ok", log = true, modes = { "test.bad" = "reject", "test.wait" = "retry_always" } }"#;
    let gw = TestGateway::spawn(dir.path(), &kit_config("tok", kit));
    gw.send_plain("tok", "n-bad", "test.bad");
    gw.send_plain("tok", "n-wait", "test.wait");
    let show = |id: &str| -> serde_json::Value {
        let (code, out, err) = gw.cli(&["events", "show", id]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(&out).expect("json")
    };
    assert!(wait_until(Duration::from_secs(10), || {
        show("n-bad")["deliveries"][0]["state"] == "dead"
            && show("n-wait")["deliveries"][0]["attempts"].as_u64() >= Some(1)
    }));
    let log = gw.log();
    assert!(log.contains("delivery{event_id=n-bad"), "{log}");
    assert!(
        !log.contains("}:delivery{"),
        "one delivery span per line:\n{log}"
    );
    let own = log
        .lines()
        .find(|l| l.contains("testkit handling n-bad"))
        .unwrap_or_else(|| panic!("no plugin line for n-bad:\n{log}"));
    assert!(
        own.contains("delivery{event_id=n-bad plugin=kit attempt=1}"),
        "{own}"
    );
    let dead = &show("n-bad")["deliveries"][0];
    assert!(
        dead.get("next_at_ms").is_none(),
        "events show, dead: {dead}"
    );
    let pending = &show("n-wait")["deliveries"][0];
    assert!(
        pending["next_at_ms"].is_i64(),
        "events show, pending: {pending}"
    );
    let (code, out, err) = gw.cli(&["dead-letters", "--json"]);
    assert_eq!(code, 0, "{err}");
    let row: serde_json::Value =
        serde_json::from_str(out.lines().next().unwrap_or("{}")).expect("json");
    assert_eq!(row["event_id"], "n-bad", "{out}");
    assert!(
        row.get("next_at_ms").is_none(),
        "dead-letters --json: {row}"
    );
}
