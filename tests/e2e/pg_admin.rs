//! The admin API and console on a PostgreSQL store: a NUL byte in an event id, a filter, a
//! cursor or a replay's names is a 4xx as on the embedded store (`api/hardening.rs`), never the
//! 503 of a query PostgreSQL refuses ("invalid byte sequence for encoding UTF8: 0x00").

use std::time::Duration;

use gateway_e2e::harness::{wait_until, Lark};
use gateway_e2e::pgkit::PgCluster;

#[path = "admin_client.rs"]
mod admin_client;
use admin_client::{assert_nul_refused, get};

#[path = "replicas_kit.rs"]
#[allow(dead_code)] // `calls` and `spawn`: the other targets' part
mod kit;
use kit::{events, replica_config, replicas, send};

/// An operator's copy (`operator.toml`) of the replica config in `dir` that also configures
/// testkit instances `names`, which the running gateway does not run: its commands take
/// those names' deliveries (a replay leaves out the names its config does not have).
fn operator_config(dir: &std::path::Path, names: &[&str]) -> std::path::PathBuf {
    let running = std::fs::read_to_string(dir.join("gateway.toml")).expect("config");
    let lib = gateway_e2e::harness::binaries()
        .testkit
        .display()
        .to_string();
    let plugins: String = names
        .iter()
        .map(|n| format!("[[plugins]]\nname = \"{n}\"\nlibrary = \"{lib}\"\n\n"))
        .collect();
    let cli = dir.join("operator.toml");
    std::fs::write(
        &cli,
        running.replace("[[routes]]", &format!("{plugins}[[routes]]")),
    )
    .expect("write");
    cli
}

#[test]
fn a_nul_in_an_id_or_name_is_a_client_error_on_postgresql_too() {
    let pg = PgCluster::start();
    let url = pg.create_database("nul");
    let (_dirs, gws, urls) = replicas(1, &replica_config("30s", r#"mode = "ok""#), &url);
    let gw = &gws[0];
    assert_eq!(send(&events("nul", 1), urls.clone(), |_| vec![0]), 0);
    assert!(wait_until(Duration::from_secs(20), || {
        get(gw, "/api/v1/events/nul-00000").status == 200
    }));
    assert_nul_refused(gw, "hire", "audit");
    // An event id past 256 bytes is refused at intake (400), as on the embedded store: stored,
    // PostgreSQL refused its index entry and the whole group commit with it (503s for every
    // event in that batch, at every re-send).
    let lark = Lark::encrypted("tok", "key");
    let long = "x".repeat(300);
    let a = lark.send(
        &urls[0],
        &lark.event_v2(&long, "test.x", serde_json::json!({})),
    );
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("256 bytes"), "{}", a.body);
    // The store is fine, and the same names without the NUL are served.
    assert_eq!(get(gw, "/api/v1/events?app=hire").status, 200);
    assert_eq!(get(gw, "/api/v1/deliveries?plugin=audit").status, 200);
    assert!(!gw.log().contains("0x00"), "no store error was logged");
}

/// More dead letters than one step (20,000 keys): `replay --dead-letters` and `dead-letters
/// --purge` go in steps, each its own short transaction, and take every one once. In one
/// statement past about 600,000 they outgrew the 10 s deadline: the replay was rolled back
/// every time, and the purge said it failed and then committed on the server anyway. Made by
/// hand (plain SQL): 45,000 dead letters of a plugin this gateway does not run.
#[test]
fn every_dead_letter_is_replayed_and_purged_in_steps_on_postgresql() {
    let pg = PgCluster::start();
    let url = pg.create_database("steps");
    let (dirs, gws, urls) = replicas(1, &replica_config("30s", r#"mode = "ok""#), &url);
    let gw = &gws[0];
    assert_eq!(send(&events("steps", 1), urls, |_| vec![0]), 0);
    pg.sql(
        "steps",
        "INSERT INTO events (id, app, event_type, schema, received_at, body, routed)
         SELECT 'gone-' || g, 'hire', 'test.gone', '2.0',
                (extract(epoch FROM clock_timestamp()) * 1000)::bigint, '{}', true
         FROM generate_series(1, 45000) g;
         INSERT INTO deliveries (event_id, plugin, state, attempts, next_at, last_error, updated_at)
         SELECT 'gone-' || g, 'gone', 'dead', 1, 0, 'made by hand',
                (extract(epoch FROM clock_timestamp()) * 1000)::bigint - 60000
         FROM generate_series(1, 45000) g;",
    );
    // Every dead letter (all of them `gone`'s), by an operator whose config names `gone` (a
    // replay leaves out the dead letters of names its config does not have); the gateway
    // does not run it, so they stay pending to be counted.
    let cli = operator_config(dirs[0].path(), &["gone"]);
    let (code, out, err) = gateway_e2e::harness::run_cli_with_env(
        &cli,
        &["replay", "--dead-letters"],
        &[("PG_URL", &url)],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with("45000 deliveries queued again\n"), "{err}");
    assert_eq!(
        pg.sql(
            "steps",
            "SELECT COUNT(*) FROM deliveries WHERE plugin = 'gone' AND state = 'pending' \
             AND generation = 1"
        ),
        "45000",
        "each once"
    );
    pg.sql(
        "steps",
        "UPDATE deliveries SET state = 'dead', updated_at = updated_at - 120000 \
         WHERE plugin = 'gone'",
    );
    let (code, out, err) = gw.cli(&[
        "dead-letters",
        "--purge",
        "--plugin",
        "gone",
        "--older-than",
        "1m",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), r#"{"deleted":45000}"#);
    assert_eq!(
        pg.sql(
            "steps",
            "SELECT COUNT(*) FROM deliveries WHERE plugin = 'gone'"
        ),
        "0"
    );
    assert!(gw.log().contains("gateway listening"), "still serving");
}

/// `gateway check` (the unit's `ExecStartPre`) against a server that takes the connection but
/// answers nothing (here: the schema table locked by another session) gives up after 10 s with
/// an error; it waited for ever, and with it every start.
#[test]
fn check_gives_up_on_a_database_that_does_not_answer() {
    let pg = PgCluster::start();
    let url = pg.create_database("quiet");
    let (dirs, gws, _urls) = replicas(1, &replica_config("30s", r#"mode = "ok""#), &url);
    let config = dirs[0].path().join("gateway.toml");
    std::thread::scope(|s| {
        let holder = s.spawn(|| {
            pg.sql(
                "quiet",
                "BEGIN; LOCK TABLE gateway_schema IN ACCESS EXCLUSIVE MODE; \
                 SELECT pg_sleep(14); COMMIT;",
            )
        });
        std::thread::sleep(Duration::from_secs(1));
        let started = std::time::Instant::now();
        let (code, out, err) = gateway_e2e::harness::run_cli_with_env(
            &config,
            &["check"],
            &[("PG_URL", url.as_str())],
        );
        let took = started.elapsed();
        assert_ne!(code, 0, "{out}{err}");
        assert!(
            err.contains("no answer within 10 s") || out.contains("no answer within 10 s"),
            "{out}{err}"
        );
        assert!(took < Duration::from_secs(20), "{took:?}");
        holder.join().expect("the lock holder");
    });
    drop(gws);
}

/// `replay --dead-letters` writes one step per configured instance; when a later step fails
/// after earlier ones went in, the command fails saying how many deliveries it had queued
/// (they stay queued), not as if nothing had happened. Here a trigger refuses the writes to
/// the second instance's deliveries (then skips them: a count that differs from the listing's
/// is said to differ).
#[test]
fn a_replay_that_fails_part_way_says_how_many_it_queued() {
    let pg = PgCluster::start();
    let url = pg.create_database("partway");
    let (dirs, _gws, urls) = replicas(1, &replica_config("30s", r#"mode = "ok""#), &url);
    assert_eq!(send(&events("partway", 1), urls, |_| vec![0]), 0);
    pg.sql(
        "partway",
        "INSERT INTO events (id, app, event_type, schema, received_at, body, routed)
         SELECT id, 'hire', 'test.gone', '2.0',
                (extract(epoch FROM clock_timestamp()) * 1000)::bigint, '{}', true
         FROM (VALUES ('pw-1'), ('pw-2')) AS v(id);
         INSERT INTO deliveries (event_id, plugin, state, attempts, next_at, last_error, updated_at)
         VALUES ('pw-1', 'first', 'dead', 1, 0, 'made by hand', 0),
                ('pw-2', 'second', 'dead', 1, 0, 'made by hand', 0);
         CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$;
         CREATE TRIGGER refuse BEFORE UPDATE ON deliveries FOR EACH ROW
           WHEN (OLD.plugin = 'second') EXECUTE FUNCTION refuse();",
    );
    let cli = operator_config(dirs[0].path(), &["first", "second"]);
    let (code, out, err) = gateway_e2e::harness::run_cli_with_env(
        &cli,
        &["replay", "--dead-letters"],
        &[("PG_URL", &url)],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("refused by the test") && err.contains("(after 1 deliveries queued again)"),
        "{err}"
    );
    assert_eq!(
        pg.sql(
            "partway",
            "SELECT plugin || '|' || state FROM deliveries WHERE event_id LIKE 'pw-%' \
             ORDER BY plugin"
        ),
        "first|pending\nsecond|dead",
        "the first step stays"
    );
    // A first step that fails queued nothing, and says nothing of the kind.
    let (code, out, err) = gateway_e2e::harness::run_cli_with_env(
        &cli,
        &["replay", "--dead-letters", "--plugin", "second"],
        &[("PG_URL", &url)],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("refused by the test") && !err.contains("queued again"),
        "{err}"
    );
    // The write takes fewer than the listing showed (here the trigger now skips the row, as a
    // call returning meanwhile would take it out): the count says the list differs.
    pg.sql(
        "partway",
        "CREATE OR REPLACE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN RETURN NULL; END $$;",
    );
    let (code, out, err) = gateway_e2e::harness::run_cli_with_env(
        &cli,
        &["replay", "--dead-letters", "--plugin", "second"],
        &[("PG_URL", &url)],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("replaying pw-2:second")
            && out.contains("0 deliveries queued again (the list above has 1:"),
        "{out}"
    );
}
