//! Writes over every dead letter (a replay, a purge), and the orphan rule over a removed
//! plugin's backlog, go in steps of `DEAD_LETTER_STEP` keys
//! (3 in the tests), each its own write: every dead letter asked for is taken once, across
//! steps; one made after the request is left for the next; the steps finish when their caller
//! goes away.

use super::running_tests::{at, dead, record, shown, timed_out_dead_letter};
use super::tests::{accepted, event, rt};
use super::*;

/// A replay of every dead letter is written in steps of `DEAD_LETTER_STEP` keys (3 in the
/// tests): every dead letter of the plugin asked for, across steps, once; one whose call runs
/// left out unless forced; other plugins' and pending deliveries untouched.
#[test]
fn a_replay_of_every_dead_letter_takes_each_once_in_steps() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let mut keys = Vec::new();
        for i in 0..10 {
            let key = accepted(&store, event(&format!("d{i}"), &["p", "q"])).await;
            keys.push(key);
        }
        // Dead letters: p of d0..d7 (d8, d9 stay pending), q of d0 only.
        let mut deaths = Vec::new();
        for k in &keys[..8] {
            deaths.push(record(k[0].0, at(0, false, false), 1, dead("no"), "reject"));
        }
        deaths.push(record(
            keys[0][1].0,
            at(0, false, false),
            1,
            dead("no"),
            "reject",
        ));
        let applied = store.finish_many(deaths).await.expect("finish");
        assert!(applied.iter().all(|a| *a), "{applied:?}");
        // And one whose call hangs (a key past the others).
        timed_out_dead_letter(&store, "hung").await;

        let all_p = |force| ReplaySelector::DeadLetters {
            plugin: Some("p".into()),
            force,
        };
        assert_eq!(store.replay(all_p(false)).await.expect("replay"), 8);
        for (i, state) in [(0, "pending"), (7, "pending"), (8, "pending")] {
            let d = shown(&store, &format!("d{i}"));
            assert_eq!(d.state, state, "d{i}: {d:?}");
        }
        let q = store.event("d0").expect("read").expect("d0");
        let q = q.deliveries.iter().find(|d| d.plugin == "q").expect("q");
        assert_eq!(q.state, "dead", "another plugin's dead letter stays");
        assert_eq!(shown(&store, "hung").state, "dead", "a running one is left");
        // Nothing left but the running one; forced, it goes too.
        assert_eq!(store.replay(all_p(false)).await.expect("replay"), 0);
        assert_eq!(store.replay(all_p(true)).await.expect("replay"), 1);
        // No dead letter of p at all: nothing, at once.
        assert_eq!(store.replay(all_p(false)).await.expect("replay"), 0);
    });
}

/// Sent whole as one write (the steps are `Store::replay`'s), a replay of every dead letter
/// is one step over every key, with the same rule.
#[test]
fn a_replay_of_every_dead_letter_sent_whole_is_one_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        dead_letters_of_p(&store, 5, &["p", "q"]).await;
        let whole = |plugin: Option<&str>| {
            let selector = ReplaySelector::DeadLetters {
                plugin: plugin.map(str::to_owned),
                force: false,
            };
            store.submit(|r| Write::Replay(selector, r))
        };
        assert_eq!(whole(Some("p")).await.expect("replay"), 5);
        assert_eq!(whole(None).await.expect("replay"), 0, "q's are pending");
        assert_eq!(store.dead_letters(None, None).expect("list").len(), 0);
        store.close();
    });
}

/// A purge of dead letters goes in the same steps: every one asked for, across steps.
#[test]
fn a_purge_of_dead_letters_takes_each_in_steps() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        dead_letters_of_p(&store, 8, &["p", "q"]).await;
        // Died after the cutoff: none.
        assert_eq!(store.purge_dead_letters(None, 0).await.expect("purge"), 0);
        assert_eq!(
            store
                .purge_dead_letters(Some("p".into()), i64::MAX)
                .await
                .expect("purge"),
            8
        );
        assert!(store.dead_letters(None, None).expect("list").is_empty());
        assert_eq!(
            store
                .purge_dead_letters(None, i64::MAX)
                .await
                .expect("purge"),
            0
        );
        // The pending deliveries of q stay.
        assert_eq!(store.backlog().await.expect("backlog").pending, 8);
    });
}

/// A purge without a cutoff of its own takes only what was dead when it was asked for: a
/// delivery that dies while its steps run (here: one stamped a minute after the request) is
/// left for the next purge (review finding: the steps deleted it unseen, for good; its event
/// then had no delivery to replay).
#[test]
fn a_purge_leaves_a_dead_letter_made_after_it_was_asked_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    rt().block_on(async {
        let store = SqliteStore::open(&path).expect("open");
        dead_letters_of_p(&store, 4, &["p"]).await;
        let later = rusqlite::Connection::open(&path).expect("other");
        later
            .execute(
                "UPDATE deliveries SET updated_at = ?1 WHERE event_seq =
                     (SELECT seq FROM events WHERE id = 'd3')",
                [now_ms() + 60_000],
            )
            .expect("stamp");
        let n = store
            .purge_dead_letters(Some("p".into()), i64::MAX)
            .await
            .expect("purge");
        assert_eq!(n, 3, "the dead letters there when asked");
        assert_eq!(shown(&store, "d3").state, "dead");
    });
}

/// From an operator command (a store opened beside the gateway's), the steps pause between
/// them, so a gateway waiting for the write lock in SQLite's busy handler gets it (review
/// finding: back to back, a gateway's accept waited up to 831 ms of its 1 s).
#[test]
fn an_operator_commands_steps_leave_the_lock_free_between_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    rt().block_on(async {
        let store = SqliteStore::open(&path).expect("open");
        dead_letters_of_p(&store, 9, &["p"]).await;
        store.close();
        drop(store);
        let operator = SqliteStore::open_existing(&path).expect("operator");
        let started = std::time::Instant::now();
        let n = operator
            .purge_dead_letters(None, i64::MAX)
            .await
            .expect("purge");
        assert_eq!(n, 9);
        // Three steps of three keys: two pauses.
        assert!(
            started.elapsed() >= super::replay::OPERATOR_STEP_PAUSE * 2,
            "{:?}",
            started.elapsed()
        );
        operator.close();
    });
}

/// A replay of every dead letter whose caller goes away after its first step (an admin request
/// whose client closed: hyper drops the handler's future) still takes every dead letter: the
/// steps run on a task of their own (review finding: it stopped half-way, silently).
#[test]
fn an_abandoned_replay_of_every_dead_letter_still_takes_them_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        dead_letters_of_p(&store, 9, &["p"]).await;
        let pending = |s: &SqliteStore| {
            s.read_blocking(|c| {
                Ok(c.query_row(
                    "SELECT COUNT(*) FROM deliveries WHERE state = 'pending'",
                    [],
                    |r| r.get::<_, i64>(0),
                )?)
            })
            .expect("count")
        };
        let mut replay = store.replay(ReplaySelector::DeadLetters {
            plugin: None,
            force: false,
        });
        // Polled until its first step is in, then dropped.
        while pending(&store) == 0 {
            let polled = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(replay.as_mut().poll(cx).is_ready())
            });
            assert!(!polled.await, "done before it could be dropped");
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        drop(replay);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while pending(&store) < 9 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            pending(&store),
            9,
            "the replay stopped when its caller went away"
        );
    });
}

/// A delivery that becomes a dead letter while a replay of every dead letter is on its way (in
/// a range of keys not reached yet) is left for the next replay, as on PostgreSQL (review
/// finding: it was replayed too; a payout `Reject` seconds after the request would run again).
#[test]
fn a_dead_letter_made_during_the_steps_is_left_for_the_next_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    rt().block_on(async {
        let store = SqliteStore::open(&path).expect("open");
        let mut keys = Vec::new();
        for i in 0..6 {
            keys.push(accepted(&store, event(&format!("d{i}"), &["p"])).await[0].0);
        }
        let deaths: Vec<_> = [0, 1, 2, 4, 5]
            .iter()
            .map(|&i| record(keys[i], at(0, false, false), 1, dead("no"), "reject"))
            .collect();
        store.finish_many(deaths).await.expect("finish");
        let (d3, first) = (keys[3], keys[0]);
        let other = std::sync::Mutex::new(rusqlite::Connection::open(&path).expect("other"));
        let asked = now_ms();
        let n = store
            .dead_letter_steps("replay", None, move |range, r| {
                if range.0 > first {
                    // Between the first step and the second: d3's attempt is rejected.
                    let c = other.lock().expect("lock");
                    c.execute(
                        "UPDATE deliveries SET state = 'dead', last_error = 'rejected later',
                             updated_at = ?2
                         WHERE key = ?1 AND state = 'pending'",
                        [d3, asked + 1_000],
                    )
                    .expect("die");
                }
                Write::ReplayDeadRange(None, false, range, asked, r)
            })
            .await
            .expect("replay");
        assert_eq!(n, 5, "the five dead letters asked for");
        let d = shown(&store, "d3");
        assert_eq!(d.state, "dead", "{d:?}");
    });
}

/// The steps go through the windows of keys that hold a dead letter of the plugin asked for,
/// not through every key between its first dead letter and its last, nor through another
/// plugin's (review finding: 100 steps here for two dead letters, a key span of millions made
/// thousands of empty steps, each 120 ms apart from the command line).
#[test]
fn the_steps_skip_keys_that_hold_no_dead_letter_of_the_plugin() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let mut keys = Vec::new();
        for i in 0..150 {
            keys.push(accepted(&store, event(&format!("d{i}"), &["p", "q"])).await);
        }
        // p's dead letters: the first event's and the last's; q's: one in the middle.
        let deaths = vec![
            record(keys[0][0].0, at(0, false, false), 1, dead("no"), "reject"),
            record(keys[149][0].0, at(0, false, false), 1, dead("no"), "reject"),
            record(keys[75][1].0, at(0, false, false), 1, dead("no"), "reject"),
        ];
        store.finish_many(deaths).await.expect("finish");
        let steps = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = steps.clone();
        let asked = now_ms();
        let n = store
            .dead_letter_steps("replay", Some("p".into()), move |range, r| {
                seen.lock().expect("lock").push(range);
                Write::ReplayDeadRange(Some("p".into()), false, range, asked, r)
            })
            .await
            .expect("replay");
        assert_eq!(n, 2, "p's two dead letters");
        let steps = steps.lock().expect("lock").clone();
        assert_eq!(
            steps.len(),
            2,
            "one step per dead letter's window: {steps:?}"
        );
        let d75 = store.event("d75").expect("read").expect("event");
        let q = d75
            .deliveries
            .iter()
            .find(|d| d.plugin == "q")
            .expect("q's");
        assert_eq!(q.state, "dead", "q's is not p's");
        for (i, key) in [(0, keys[0][0].0), (1, keys[149][0].0)] {
            let (lo, hi) = steps[i];
            assert!(lo <= key && key <= hi, "{key} in {lo}..={hi}");
            assert!(hi - lo < 3, "DEAD_LETTER_STEP keys at most: {lo}..={hi}");
        }
        let purged = store
            .purge_dead_letters(None, i64::MAX)
            .await
            .expect("purge");
        assert_eq!(purged, 1, "q's dead letter, the only one left");
    });
}

/// Accepts events d0.. d`n-1` routed to `plugins` and makes each one's delivery to `p` (the
/// first) a dead letter (a rejection).
async fn dead_letters_of_p(store: &SqliteStore, n: usize, plugins: &[&str]) {
    let mut deaths = Vec::new();
    for i in 0..n {
        let key = accepted(store, event(&format!("d{i}"), plugins)).await;
        deaths.push(record(
            key[0].0,
            at(0, false, false),
            1,
            dead("no"),
            "reject",
        ));
    }
    let applied = store.finish_many(deaths).await.expect("finish");
    assert!(applied.iter().all(|a| *a), "{applied:?}");
}

/// The dead-letter listing read a page at a time (`DeadLetterQuery::after`): pages of 4 over
/// 11 dead letters that died in two writes (so most share their `updated_at`) give each once,
/// newest first, in the one order; a cursor made from a time alone takes only those that died
/// before it; a plugin filter holds across pages.
#[test]
fn dead_letters_read_in_pages_give_each_once_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let mut keys = Vec::new();
        for i in 0..6 {
            keys.push(accepted(&store, event(&format!("d{i}"), &["p", "q"])).await);
        }
        let deaths = |ks: &[Vec<(i64, String)>], plugins: usize| {
            ks.iter()
                .flat_map(|k| k[..plugins].iter())
                .map(|(key, _)| record(*key, at(0, false, false), 1, dead("no"), "reject"))
                .collect::<Vec<_>>()
        };
        // d0..d2 die first (p and q), then d3..d5 (p and q of d3, d4; p of d5) a moment later.
        store
            .finish_many(deaths(&keys[..3], 2))
            .await
            .expect("first");
        std::thread::sleep(std::time::Duration::from_millis(5));
        let mut later = deaths(&keys[3..5], 2);
        later.extend(deaths(&keys[5..], 1));
        store.finish_many(later).await.expect("second");

        let read_all = |mut query: DeadLetterQuery| {
            let store = &store;
            async move {
                query.limit = Some(4);
                let mut all = Vec::new();
                loop {
                    let page = Store::dead_letters(store, query.clone())
                        .await
                        .expect("page");
                    let Some(last) = page.last() else { break all };
                    query.after = Some(crate::store::DeadLetterCursor::after(last));
                    all.extend(page);
                }
            }
        };
        let paged = read_all(DeadLetterQuery::default()).await;
        // (The inherent `dead_letters` is the tests' own shorthand: the trait's is the query.)
        let whole = Store::dead_letters(&store, DeadLetterQuery::default())
            .await
            .expect("all");
        let names = |ds: &[DeliveryRecord]| {
            ds.iter()
                .map(|d| format!("{}:{}", d.event_id, d.plugin))
                .collect::<Vec<_>>()
        };
        assert_eq!(whole.len(), 11);
        assert_eq!(names(&paged), names(&whole), "each once, in the one order");
        assert_eq!(
            names(&paged[..5]),
            ["d5:p", "d4:q", "d4:p", "d3:q", "d3:p"],
            "newest first, ties by event id then plugin, descending"
        );
        // Those that died before the second write (its oldest): the first six.
        let second = paged[4].updated_at_ms;
        let before = read_all(DeadLetterQuery {
            after: Some(crate::store::DeadLetterCursor::before(second)),
            ..DeadLetterQuery::default()
        })
        .await;
        assert_eq!(
            names(&before),
            ["d2:q", "d2:p", "d1:q", "d1:p", "d0:q", "d0:p"]
        );
        let only_q = read_all(DeadLetterQuery {
            plugin: Some("q".into()),
            ..DeadLetterQuery::default()
        })
        .await;
        assert_eq!(names(&only_q), ["d4:q", "d3:q", "d2:q", "d1:q", "d0:q"]);
        store.close();
    });
}

/// The orphan rule over a removed plugin's backlog goes in steps of `DEAD_LETTER_STEP` keys
/// too (a backlog of millions in one transaction held the write lock for seconds): every
/// pending delivery of that plugin, across steps, once; another plugin's untouched.
#[test]
fn the_orphan_rule_takes_a_removed_plugins_backlog_in_steps() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let mut keys = Vec::new();
        for i in 0..10 {
            keys.push(accepted(&store, event(&format!("o{i}"), &["p", "q"])).await[0].0);
        }
        let gone = store.dead_letter_plugin("p".into(), "removed".into(), i64::MAX, Vec::new());
        let mut gone: Vec<i64> = gone
            .await
            .expect("orphans")
            .orphans
            .iter()
            .map(|o| o.key)
            .collect();
        gone.sort_unstable();
        assert_eq!(gone, keys, "every pending delivery of p, once");
        for i in 0..10 {
            let e = store.event(&format!("o{i}")).expect("read").expect("event");
            let state = |name: &str| {
                let d = e
                    .deliveries
                    .iter()
                    .find(|d| d.plugin == name)
                    .expect("delivery");
                d.state.clone()
            };
            assert_eq!((state("p"), state("q")), ("dead".into(), "pending".into()));
        }
        // Nothing pending of p left: nothing, at once.
        let again = store.dead_letter_plugin("p".into(), "removed".into(), i64::MAX, Vec::new());
        assert!(again.await.expect("orphans").orphans.is_empty());
    });
}

/// A step of the orphan rule that fails after others went in leaves their dead letters
/// committed: the answer lists them (with the error), so the engine can put them back when a
/// reload brought the name back meanwhile. It used to be an error alone, the dead letters
/// already made unknown to the caller.
#[test]
fn an_orphan_step_that_fails_lists_the_dead_letters_of_the_steps_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    rt().block_on(async {
        let store = SqliteStore::open(&path).expect("open");
        let mut keys = Vec::new();
        for i in 0..10 {
            keys.push(accepted(&store, event(&format!("o{i}"), &["p"])).await[0].0);
        }
        // The step holding the 8th key fails (a full disk, an I/O error: here a trigger).
        let other = Connection::open(&path).expect("open");
        other
            .execute_batch(&format!(
                "CREATE TRIGGER refuse BEFORE UPDATE OF state ON deliveries
                 WHEN NEW.key = {} BEGIN SELECT RAISE(ABORT, 'refused'); END;",
                keys[7]
            ))
            .expect("trigger");
        drop(other);
        let run = store
            .dead_letter_plugin("p".into(), "removed".into(), i64::MAX, Vec::new())
            .await
            .expect("some steps went in");
        let stopped = run.stopped.expect("stopped part-way");
        assert!(stopped.0.contains("refused"), "{stopped}");
        let mut listed: Vec<i64> = run.orphans.iter().map(|o| o.key).collect();
        listed.sort_unstable();
        let dead: Vec<i64> = keys
            .iter()
            .enumerate()
            .filter(|(i, _)| shown(&store, &format!("o{i}")).state == "dead")
            .map(|(_, k)| *k)
            .collect();
        assert!(!dead.is_empty(), "the steps before the failure went in");
        assert!(dead.len() < keys.len(), "the failed step's did not");
        assert_eq!(listed, dead, "every dead letter made is listed");
    });
}
