//! Races between replicas on the shared PostgreSQL store, forced into their worst interleaving
//! rather than waited for (a throwaway cluster from [`gateway_e2e::pgkit`]):
//!
//! - a retention purge that decided an event was finished, while a replay makes its delivery
//!   pending again, must not delete the event (and the replayed delivery with it);
//! - a replica whose outcome write is slow (here: held for two leases) keeps its claim, so no
//!   replica calls the delivery a second time meanwhile; and so does a replica whose call hangs
//!   past its timeout (the lease, not the gate, is what is tested there);
//! - an outcome write the gateway gave up on while the database still held it, and which then
//!   committed, counts as applied when written again (the call's late success is the delivery).
//!
//! **The gate.** A statement is held at a chosen point by a row-level-security policy whose
//! function waits on an advisory lock that the test's own connection holds, for the statements
//! whose text matches a pattern the test arms. Row security is evaluated while rows are read,
//! after the statement took its snapshot and before it locks or changes the row, which is where
//! these races live ([`Gate::install_on_insert`] holds one where it inserts a row instead, after
//! what it changed before). The gateways connect as a role that owns the tables and is no superuser
//! (superusers bypass row security); the test's connection is the superuser `gateway`.

#[path = "pg_races_kit.rs"]
mod kit;

use kit::*;

/// The race: the purge's statement has seen the event's only delivery finished; a replay makes
/// it pending again and commits; the purge then locks the event (nobody holds it any more) and
/// deletes it — and, by the cascade, the delivery just replayed, which is never delivered.
/// The purge must look again once it holds the lock.
#[test]
fn a_purge_that_saw_an_event_finished_keeps_it_when_a_replay_commits_meanwhile() {
    let pg = PgCluster::start();
    let url = replica_database(&pg, "purge_replay");
    let first = tempfile::tempdir().expect("tmp");
    let gw = spawn(first.path(), &config("30s", r#"mode = "ok""#), &url);
    send(&gw, "old-1");
    assert!(
        wait_until(Duration::from_secs(20), || pg
            .sql("purge_replay", "SELECT state FROM deliveries")
            == "done"),
        "delivered"
    );
    drop(gw);
    // Past the retention (7 days by default).
    pg.sql(
        "purge_replay",
        "UPDATE events SET received_at = received_at - 30::BIGINT * 86400000",
    );

    // The purge runs at start; it waits at the gate while it reads the old event, after it took
    // its snapshot. The purging gateway's own call of the replayed delivery waits for a file,
    // so the delivery stays pending until the test says so.
    let mut gate = Gate::install(&pg, "purge_replay", "events");
    gate.arm("%e.id = ANY($1) AND NOT EXISTS%SKIP LOCKED%");
    let second = tempfile::tempdir().expect("tmp");
    let purger = spawn(
        second.path(),
        &config("30s", r#"mode = "gate", gate = "data/open""#),
        &url,
    );
    gate.wait_for_one();
    gate.disarm();
    let (code, out, err) = purger.cli(&["replay", "--force", "old-1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        gate.row("SELECT state || '|' || generation FROM deliveries")
            .as_deref(),
        Some("pending|1"),
        "replayed and committed while the purge waited"
    );
    gate.open();
    assert!(
        wait_until(Duration::from_secs(20), || gate
            .row(
                "SELECT COUNT(*)::text FROM pg_stat_activity
                 WHERE application_name = 'lark-gateway' AND state <> 'idle'
                   AND query LIKE '%NOT EXISTS%'"
            )
            .as_deref()
            == Some("0")),
        "the purge finished"
    );
    assert_eq!(
        gate.row("SELECT id FROM events").as_deref(),
        Some("old-1"),
        "the purge deleted an event whose delivery had just been replayed: the replay is lost"
    );

    std::fs::write(second.path().join("data/open"), "").expect("open the plugin's gate");
    assert!(
        wait_until(Duration::from_secs(20), || gate
            .row("SELECT state || '|' || generation FROM deliveries")
            .as_deref()
            == Some("done|1")),
        "the replay was delivered"
    );
    assert_eq!(calls(&[second.path()]), 1, "once");
}

/// The race: a replica called the plugin and writes the outcome, and that write is slow (held
/// here for more than two leases). Its claim must hold meanwhile: no replica counts the attempt
/// as crashed and calls the delivery again beside the first call.
#[test]
fn a_replica_keeps_its_claim_while_its_outcome_write_is_slow() {
    let pg = PgCluster::start();
    let url = replica_database(&pg, "renew");
    let cfg = config("3s", r#"mode = "ok""#);
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let a = spawn(a_dir.path(), &cfg, &url);
    let mut gate = Gate::install(&pg, "renew", "deliveries");
    let _b = spawn(b_dir.path(), &cfg, &url);
    let dirs = [a_dir.path(), b_dir.path()];

    // Outcome writes (and only they) wait at the gate.
    gate.arm("%g_attempts%");
    send(&a, "slow-1");
    gate.wait_for_one();
    assert_eq!(calls(&dirs), 1, "called once, outcome not yet written");
    let held = Instant::now();
    while held.elapsed() < Duration::from_millis(7_500) {
        let row = gate
            .row(
                "SELECT crashes::text, (lease_until > (EXTRACT(EPOCH FROM clock_timestamp())
                        * 1000)::BIGINT)::text FROM deliveries",
            )
            .unwrap_or_default();
        assert_eq!(
            (calls(&dirs), row.as_str()),
            (1, "0|true"),
            "{:?} into the write: the claim lapsed or another call started",
            held.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    gate.disarm();
    gate.open();
    assert!(
        wait_until(Duration::from_secs(20), || gate
            .row("SELECT state FROM deliveries")
            .as_deref()
            == Some("done")),
        "the outcome was recorded"
    );
    assert_eq!(
        gate.row("SELECT string_agg(outcome, ',' ORDER BY id) FROM attempts")
            .as_deref(),
        Some("ok"),
        "one attempt, no crash counted"
    );
    std::thread::sleep(Duration::from_millis(1_500)); // a late second call would show by now
    assert_eq!(calls(&dirs), 1, "called once");
}

/// The race: a replica's outcome write has changed (so locked) the delivery's row, is then
/// held past the lease (here at its history row) and given up on at the gateway's 10 s limit
/// (cancelled: rolled back). The renewals skip a locked row, so the row's lease ran out
/// meanwhile, and another replica, whose crash count waited for that lock, took the delivery
/// as crashed the moment the write rolled back: a second call beside a live replica, whose
/// outcome was then refused.
#[test]
fn a_replica_keeps_its_claim_when_its_outcome_write_holds_the_row_and_is_given_up() {
    let pg = PgCluster::start();
    let url = replica_database(&pg, "heldrow");
    let cfg = config("3s", r#"mode = "ok""#);
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let a = spawn(a_dir.path(), &cfg, &url);
    let mut gate = Gate::install_on_insert(&pg, "heldrow", "attempts");
    let _b = spawn(b_dir.path(), &cfg, &url);
    let dirs = [a_dir.path(), b_dir.path()];
    let sql = |q: &str| pg.sql("heldrow", q);

    // The outcome write's history row waits at the gate, its delivery row already changed.
    gate.arm("%g_attempts%");
    send(&a, "held-1");
    gate.wait_for_one();
    assert_eq!(calls(&dirs), 1, "called once, outcome not yet written");
    assert!(
        wait_until(Duration::from_secs(20), || a
            .log()
            .contains("could not record delivery outcomes")),
        "the gateway gave up waiting for the write:\n{}",
        a.log()
    );
    std::thread::sleep(Duration::from_millis(1_500)); // another replica's take-over shows by now
    gate.disarm();
    gate.open();
    assert!(
        wait_until(Duration::from_secs(20), || sql(
            "SELECT state FROM deliveries"
        ) == "done"),
        "delivered"
    );
    std::thread::sleep(Duration::from_millis(1_500)); // a second call would show by now
    assert_eq!(
        (
            sql("SELECT string_agg(outcome, ',' ORDER BY id) FROM attempts"),
            calls(&dirs)
        ),
        ("ok".to_owned(), 1),
        "one attempt, no crash counted; called once"
    );
}

/// A call hung past its timeout (in-process: native code cannot be stopped) still runs, and
/// its delivery stays "running" in its replica, which renews the claim: no other replica calls
/// it beside the hung call once the lease has passed. The late success is then the delivery.
#[test]
fn a_replica_keeps_its_claim_while_a_call_hangs_past_its_timeout() {
    let pg = PgCluster::start();
    let url = replica_database(&pg, "hung");
    let cfg = config("3s", r#"mode = "gate", gate = "data/open""#);
    let (a, _b, a_dir, b_dir) = hung_and_free(&cfg, &url);
    let dirs = [a_dir.path(), b_dir.path()];
    let sql = |q: &str| pg.sql("hung", q);

    send(&a, "hung-1");
    assert!(
        wait_until(Duration::from_secs(20), || sql(
            "SELECT string_agg(outcome, ',') FROM attempts"
        ) == "timeout"),
        "the timeout was recorded (a retry)"
    );
    let holder = sql("SELECT claimed_by FROM deliveries");
    let hung = Instant::now();
    while hung.elapsed() < Duration::from_millis(7_500) {
        let row = sql(
            "SELECT claimed_by || '|' || (lease_until > (EXTRACT(EPOCH FROM clock_timestamp())
                    * 1000)::BIGINT) FROM deliveries",
        );
        assert_eq!(
            (calls(&dirs), row),
            (0, format!("{holder}|true")),
            "{:?} into the hang: the claim lapsed or another replica called it",
            hung.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::write(a_dir.path().join("data/open"), "").expect("the hung call returns");
    assert!(
        wait_until(Duration::from_secs(20), || sql(
            "SELECT state FROM deliveries"
        ) == "done"),
        "the late success was recorded"
    );
    assert_eq!(
        sql("SELECT string_agg(outcome, ',' ORDER BY id) FROM attempts"),
        "timeout,late ok"
    );
    std::thread::sleep(Duration::from_millis(1_500)); // a second call would show by now
    assert_eq!(calls(&dirs), 1, "called once");
}

/// A call hung past its timeout on its last attempt is a dead letter while it still runs; a
/// replay of that dead letter must not be run by another replica beside it: the dead letter
/// keeps the claim of the replica running the call (renewed while it runs), so it shows as
/// running and a replay needs `--force`; forced, that replica runs the replay once the hung
/// call has returned. (The claim used to be cleared with the dead letter: the other replica's
/// sweeper called the replay at once.)
#[test]
fn a_replay_of_a_dead_letter_whose_call_still_hangs_is_not_run_beside_it() {
    let pg = PgCluster::start();
    let url = replica_database(&pg, "hungdead");
    let cfg = config("3s", r#"mode = "gate", gate = "data/open""#).replace(
        "initial_backoff = \"100ms\"",
        "initial_backoff = \"100ms\"\nmax_attempts = 1",
    );
    let (a, _b, a_dir, b_dir) = hung_and_free(&cfg, &url);
    let dirs = [a_dir.path(), b_dir.path()];
    let sql = |q: &str| pg.sql("hungdead", q);

    hang_into_a_dead_letter(&a, "hungdead-1", sql);
    // Its call still runs: shown running, so left out of an unforced replay.
    let (code, out, err) = a.cli(&["replay", "--dead-letters"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("skipped:") && err.contains("its call is running"),
        "{err}"
    );
    assert_eq!(sql("SELECT state FROM deliveries"), "dead", "left out");
    let (code, out, err) = a.cli(&["replay", "--dead-letters", "--force"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(sql("SELECT state FROM deliveries"), "pending", "replayed");
    let hung = Instant::now();
    while hung.elapsed() < Duration::from_millis(7_500) {
        assert_eq!(
            calls(&dirs),
            0,
            "{:?} into the hang: another replica ran the replay beside the hung call",
            hung.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    the_replay_runs_once_the_hang_ends(a_dir.path(), &dirs, sql);
}

/// A replica stopped (SIGTERM) while a call hangs past its timeout keeps that delivery's claim:
/// the call runs until the process exits, so the shutdown's release of claims leaves it alone
/// (it used to free it: the timeout's retry had cleared the "started" mark, and another replica
/// could take the delivery while the stopping process still ran the call). The claim then
/// lapses with its lease, once the process is gone.
#[test]
fn a_stopping_replica_keeps_the_claim_of_a_call_still_hung() {
    let pg = PgCluster::start();
    let url = replica_database(&pg, "stophung");
    let cfg = config("30s", r#"mode = "gate", gate = "data/open""#)
        .replace("shutdown_grace = \"5s\"", "shutdown_grace = \"1s\"");
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = spawn(dir.path(), &cfg, &url);
    let sql = |q: &str| pg.sql("stophung", q);

    send(&a, "stophung-1");
    assert!(
        wait_until(Duration::from_secs(20), || sql(
            "SELECT state || '|' || string_agg(outcome, ',') FROM deliveries, attempts
             GROUP BY state"
        ) == "pending|timeout"),
        "the timeout was recorded as a retry"
    );
    let holder = sql("SELECT claimed_by FROM deliveries");
    assert!(!holder.is_empty(), "claimed");
    a.signal("TERM");
    assert!(a.wait(Duration::from_secs(20)).is_some(), "{}", a.log());
    assert_eq!(
        sql("SELECT coalesce(claimed_by, 'released') FROM deliveries"),
        holder,
        "{}",
        a.log()
    );
}

/// A reload removes the instance whose call hangs on replica A; A's orphan rule dead-letters
/// the delivery while the call still runs. The dead letter keeps A's claim (renewed while the
/// call runs), so a replay of it is not run by replica B, which still has the instance, beside
/// the hung call. (The orphan rule used to clear the claim: B ran the replay at once.)
#[test]
fn an_orphan_dead_letter_whose_call_still_hangs_keeps_its_claim() {
    let pg = PgCluster::start();
    let url = replica_database(&pg, "orphanhung");
    let cfg = config("25s", r#"mode = "gate", gate = "data/open""#).replace(
        "timeout = \"1s\"",
        "timeout = \"20s\"\nremoved_plugin_grace = \"1s\"",
    );
    let without = {
        let plugins = cfg.find("[[plugins]]").expect("a plugin block");
        cfg[..plugins].to_owned()
    };
    let (a, b, a_dir, b_dir) = hung_and_free(&cfg, &url);
    let dirs = [a_dir.path(), b_dir.path()];
    let sql = |q: &str| pg.sql("orphanhung", q);

    send(&a, "orphanhung-1");
    assert!(
        wait_until(Duration::from_secs(20), || sql(
            "SELECT started FROM deliveries"
        ) == "1"),
        "A started the call"
    );
    let holder = sql("SELECT claimed_by FROM deliveries");
    std::fs::write(a_dir.path().join("gateway.toml"), &without).expect("write");
    a.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(20), || sql(
            "SELECT state FROM deliveries"
        ) == "dead"),
        "the orphan rule dead-lettered it: {}",
        a.log()
    );
    // Its call still runs: shown running, so left out of an unforced replay (by B's config,
    // which still configures the plugin: by A's, its dead letter is left out anyway).
    let (code, out, err) = b.cli(&["replay", "--dead-letters"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("skipped:") && err.contains("its call is running"),
        "{err}"
    );
    assert_eq!(sql("SELECT state FROM deliveries"), "dead", "left out");
    let (code, out, err) = b.cli(&["replay", "--dead-letters", "--force"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(sql("SELECT state FROM deliveries"), "pending", "replayed");
    let hung = Instant::now();
    while hung.elapsed() < Duration::from_millis(5_000) {
        assert_eq!(
            (
                calls(&dirs),
                sql("SELECT coalesce(claimed_by, 'none') FROM deliveries")
            ),
            (0, holder.clone()),
            "{:?} into the hang: the claim was dropped or B ran the replay",
            hung.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::write(a_dir.path().join("data/open"), "").expect("the hung call returns");
}

/// A replay takes effect within a lease when the replica that held the delivery died: its
/// retry's claim ran to the retry's `next_at` plus a lease (here five minutes on), and the
/// replay left it, so no other replica touched the replayed delivery until then.
#[test]
fn a_replay_after_the_holder_died_is_taken_by_another_replica_within_a_lease() {
    let pg = PgCluster::start();
    let url = replica_database(&pg, "replayheld");
    let cfg = config(
        "3s",
        r#"mode = "retry_then_ok", retries = 1, retry_after_ms = 300000"#,
    )
    .replace(
        "initial_backoff = \"100ms\"",
        "initial_backoff = \"100ms\"\nmax_backoff = \"10m\"",
    );
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let mut a = spawn(a_dir.path(), &cfg, &url);
    let b = spawn(b_dir.path(), &cfg, &url);
    let sql = |q: &str| pg.sql("replayheld", q);
    send(&a, "held-1");
    assert!(
        wait_until(Duration::from_secs(20), || sql(
            "SELECT state || '|' || attempts FROM deliveries"
        ) == "pending|1"),
        "A's first call answered retry"
    );
    a.kill9();
    let (code, out, err) = b.cli(&["replay", "held-1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        wait_until(Duration::from_secs(15), || calls(&[b_dir.path()]) >= 1),
        "B never called the replayed delivery: {}",
        sql("SELECT state || '|' || claimed_by || '|' || (lease_until - (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT) FROM deliveries")
    );
}

/// The search for crashed attempts, which every replica runs at each sweep, reads an index of
/// the started attempts, not every pending delivery.
#[test]
fn the_crashed_attempt_search_has_an_index() {
    let pg = PgCluster::start();
    let url = replica_database(&pg, "crashidx");
    let dir = tempfile::tempdir().expect("tmp");
    let _gw = spawn(dir.path(), &config("3s", r#"mode = "ok""#), &url);
    let plan = pg.sql(
        "crashidx",
        "SET enable_seqscan = off; EXPLAIN SELECT key FROM deliveries
         WHERE state = 'pending' AND started > 0 AND started >= attempts AND lease_until < 5",
    );
    assert!(plan.contains("deliveries_started"), "{plan}");
}

/// A PostgreSQL store keeps the lease it was opened with until a restart: a reload whose
/// `[delivery] timeout` derives a longer lease is accepted while the timeout stays under the
/// running lease, and the next reload is checked against that running lease, not against the
/// one the previous config derived (30 s → 45 s → 70 s passed with 60 s running).
#[test]
fn reloads_are_checked_against_the_running_lease() {
    let pg = PgCluster::start();
    let url = replica_database(&pg, "leasereload");
    let dir = tempfile::tempdir().expect("tmp");
    let with_timeout = |t: &str| {
        config("3s", r#"mode = "ok""#)
            .replace("lease = \"3s\"\n", "")
            .replace("timeout = \"1s\"", &format!("timeout = \"{t}\""))
    };
    let gw = spawn(dir.path(), &with_timeout("30s"), &url); // lease 60 s (derived)
    let reload = |t: &str| {
        std::fs::write(dir.path().join("gateway.toml"), with_timeout(t)).expect("write");
        gw.signal("HUP");
    };
    reload("45s"); // derives 90 s; the running 60 s still covers it
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .log()
            .contains("the store's lease stays 60s")),
        "{}",
        gw.log()
    );
    reload("70s");
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .log()
            .contains("is not shorter than the running store's lease (60s)")),
        "{}",
        gw.log()
    );
}

/// An outcome write the gateway gave up on (its 10 s limit ran out while the database held the
/// statement) but which the database then committed is retried; the retry must learn that the
/// first try applied. Here the write is a hung call's timeout, recorded as a retry: had it been
/// taken as "not applied", the call's late success would be refused (its guard names the
/// attempt before the timeout) and the delivery run a second time.
#[test]
fn an_outcome_the_database_committed_after_the_gateway_gave_up_counts_as_applied() {
    let pg = PgCluster::start();
    let url = replica_database(&pg, "ambiguous");
    let cfg = config("3s", r#"mode = "gate", gate = "data/open""#);
    let dir = tempfile::tempdir().expect("tmp");
    let gw = spawn(dir.path(), &cfg, &url);
    let sql = |q: &str| pg.sql("ambiguous", q);
    // The outcome write's history row waits at the gate, its delivery row already changed
    // (and locked) by the same statement.
    let mut gate = Gate::install_on_insert(&pg, "ambiguous", "attempts");
    gate.arm("%g_attempts%");
    send(&gw, "ambiguous-1");
    gate.wait_for_one();
    assert!(
        wait_until(Duration::from_secs(20), || gw
            .log()
            .contains("could not record delivery outcomes")),
        "the gateway gave up waiting for the write:\n{}",
        gw.log()
    );
    gate.disarm();
    gate.open();
    assert!(
        wait_until(Duration::from_secs(20), || sql(
            "SELECT string_agg(outcome, ',') FROM attempts"
        ) == "timeout"),
        "the timeout was recorded (once)"
    );
    std::thread::sleep(Duration::from_millis(500)); // the retry of the write has run by now
    std::fs::write(dir.path().join("data/open"), "").expect("the hung call returns");
    assert!(
        wait_until(Duration::from_secs(20), || sql(
            "SELECT state FROM deliveries"
        ) == "done"),
        "delivered"
    );
    std::thread::sleep(Duration::from_millis(1_500)); // a second call would show by now
    assert_eq!(
        (
            sql("SELECT string_agg(outcome, ',' ORDER BY id) FROM attempts"),
            calls(&[dir.path()])
        ),
        ("timeout,late ok".to_owned(), 1),
        "the late success is the delivery; called once"
    );
}

/// The orphan rule on a backlog of several steps: the pending deliveries of a plugin instance
/// no longer configured become dead letters once its grace is over, however many there are.
/// In one statement a backlog of about a million outgrew the operation's 10 s limit (as the
/// replay and purge of every dead letter did): the statement was cancelled and rolled back at
/// every sweep, and the deliveries stayed pending for ever. That size takes minutes to set up,
/// so this test covers the steps (three of 20,000 keys) and the million was run by hand (the
/// commit message says what it showed).
#[test]
fn the_orphan_rule_dead_letters_a_large_backlog() {
    const N: u32 = 50_000;
    let pg = PgCluster::start();
    let url = replica_database(&pg, "orphanbig");
    let cfg = config("3s", r#"mode = "ok""#).replace(
        "initial_backoff = \"100ms\"",
        "initial_backoff = \"100ms\"\nremoved_plugin_grace = \"1s\"",
    );
    let dir = tempfile::tempdir().expect("tmp");
    let gw = spawn(dir.path(), &cfg, &url);
    let sql = |q: &str| pg.sql("orphanbig", q);
    // A backlog of an instance `gone` that no config names any more.
    sql(&format!(
        "INSERT INTO events (id, app, event_type, schema, received_at, body, routed)
           SELECT 'e' || g, 'hire', 'x.y_v1', '2.0',
                  (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT, '{{}}', true
           FROM generate_series(1, {N}) g;
         INSERT INTO deliveries (event_id, plugin, state, attempts, next_at, updated_at)
           SELECT 'e' || g, 'gone', 'pending', 0, 0, 0 FROM generate_series(1, {N}) g;"
    ));
    let dead = wait_until(Duration::from_secs(120), || {
        sql("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'") == "0"
    });
    assert!(
        dead,
        "still pending after 2 min: {} of {N}\n{}",
        sql("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'"),
        gw.log()
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("error"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
