//! The operator queries on the embedded store: event and delivery listings with their filters
//! and cursor, plugin names, and the integrity check finding a damaged file.

use super::tests::{rt, trace_of};
use super::*;
use crate::store::{Finish, Guard};

fn new_event(id: &str, app: &str, event_type: &str, at: i64, plugins: &[&str]) -> NewEvent {
    NewEvent {
        id: id.into(),
        app: app.into(),
        event_type: event_type.into(),
        schema: "2.0",
        received_at_ms: at,
        body: Arc::from("{}"),
        plugins: plugins.iter().map(|p| p.to_string()).collect(),
    }
}

async fn keys(store: &SqliteStore, e: NewEvent) -> Vec<i64> {
    match store.accept(e).await.expect("accept") {
        Accepted::New { deliveries } => deliveries.into_iter().map(|(k, _)| k).collect(),
        Accepted::Duplicate => panic!("duplicate"),
    }
}

async fn finish(store: &SqliteStore, key: i64, finish: Finish) {
    let record = FinishRecord {
        write: crate::store::WriteId::fresh(),
        key,
        guard: Guard {
            generation: 0,
            attempts: 0,
            dead_too: false,
            own_mark: false,
        },
        attempts: 1,
        trace: trace_of(&finish),
        finish,
    };
    assert_eq!(
        store.finish_many(vec![record]).await.expect("finish"),
        [true]
    );
}

fn ids(events: &[EventSummary]) -> Vec<&str> {
    events.iter().map(|e| e.id.as_str()).collect()
}

#[test]
fn listings_filter_page_and_name_plugins() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let a = keys(&store, new_event("a", "hire", "t.one", 100, &["p", "q"])).await;
        let b = keys(&store, new_event("b", "hire", "t.two", 200, &["p"])).await;
        keys(&store, new_event("c", "other", "t.one", 300, &[])).await;
        finish(&store, a[0], Finish::Dead { error: "no".into() }).await;
        let retry = Finish::Retry {
            next_at_ms: i64::MAX,
            error: "later".into(),
        };
        finish(&store, b[0], retry).await;
        let list = |f: EventFilter| {
            let store = store.clone();
            async move {
                store
                    .list_events(EventFilter { limit: 10, ..f })
                    .await
                    .expect("list")
            }
        };

        let all = list(EventFilter::default()).await;
        assert_eq!(ids(&all), ["c", "b", "a"], "newest first");
        assert_eq!((all[2].deliveries, all[2].pending, all[2].dead), (2, 1, 1));
        let hire = EventFilter {
            app: Some("hire".into()),
            ..Default::default()
        };
        assert_eq!(ids(&list(hire).await), ["b", "a"]);
        let one = EventFilter {
            event_type: Some("t.one".into()),
            ..Default::default()
        };
        assert_eq!(ids(&list(one).await), ["c", "a"]);
        let since = EventFilter {
            since_ms: 200,
            ..Default::default()
        };
        assert_eq!(ids(&list(since).await), ["c", "b"]);
        let dead = EventFilter {
            state: Some("dead".into()),
            ..Default::default()
        };
        assert_eq!(ids(&list(dead).await), ["a"]);
        let page = store
            .list_events(EventFilter {
                limit: 2,
                ..Default::default()
            })
            .await
            .expect("page");
        assert_eq!(ids(&page), ["c", "b"]);
        let cursor = page.last().map(|e| (e.received_at_ms, e.id.clone()));
        let rest = list(EventFilter {
            before: cursor,
            ..Default::default()
        })
        .await;
        assert_eq!(ids(&rest), ["a"], "the next page starts after the cursor");

        let deliveries = |state: &str, retrying: bool, plugin: Option<&str>| {
            let store = store.clone();
            let f = DeliveryFilter {
                state: state.into(),
                retrying,
                plugin: plugin.map(str::to_owned),
                limit: 10,
            };
            async move {
                store
                    .list_deliveries(f)
                    .await
                    .expect("deliveries")
                    .into_iter()
                    .map(|d| (d.event_id, d.plugin))
                    .collect::<Vec<_>>()
            }
        };
        let pair = |e: &str, p: &str| (e.to_owned(), p.to_owned());
        assert_eq!(deliveries("dead", false, None).await, [pair("a", "p")]);
        let pending = deliveries("pending", false, None).await;
        assert_eq!(pending.len(), 2, "{pending:?}");
        assert_eq!(deliveries("pending", true, None).await, [pair("b", "p")]);
        assert_eq!(
            deliveries("pending", false, Some("q")).await,
            [pair("a", "q")]
        );

        assert_eq!(store.plugin_names().await.expect("names"), ["p", "q"]);
        assert!(store.check().await.expect("check").is_empty(), "sound");
        store.close();
    });
}

#[test]
fn the_check_reports_a_damaged_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    rt().block_on(async {
        let store = SqliteStore::open(&path).expect("open");
        for i in 0..300 {
            keys(
                &store,
                new_event(&format!("e{i:04}"), "hire", "t", i, &["p"]),
            )
            .await;
        }
        store.close();
    });
    // Garbage over the cell contents of a few pages in the middle of the file, their headers
    // left alone (the WAL was checkpointed at close).
    let mut bytes = std::fs::read(&path).expect("read");
    assert!(bytes.len() > 8 * 4096, "{} bytes", bytes.len());
    for page in 4..7 {
        for b in &mut bytes[page * 4096 + 1024..(page + 1) * 4096] {
            *b = 0x5a;
        }
    }
    std::fs::write(&path, bytes).expect("write");
    let damaged = rt().block_on(async {
        let store = SqliteStore::open_existing(&path).expect("the schema pages are intact");
        let found = store.check().await;
        store.close();
        found
    });
    assert!(
        !matches!(&damaged, Ok(problems) if problems.is_empty()),
        "{damaged:?}"
    );
}

/// A damaged page well inside the events table: the check used to stop at its scan of the
/// events ("database disk image is malformed") and drop what SQLite's integrity check had
/// already found. The findings come first now, and the scans that fail are findings too.
#[test]
fn a_damaged_events_page_is_reported_with_the_integrity_checks_findings() {
    const MARK: &str = "page-marker-";
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    rt().block_on(async {
        let store = SqliteStore::open(&path).expect("open");
        for i in 0..3000 {
            let mut e = new_event(&format!("e{i:05}"), "hire", "t", i, &["p"]);
            e.body = Arc::from(format!("{{\"m\":\"{MARK}{i:05}{}\"}}", "x".repeat(150)));
            keys(&store, e).await;
        }
        store.close();
    });
    // The events' bodies hold the marker (the WAL was checkpointed at close): garbage over a
    // whole page of them in the middle of the table, its header included.
    let mut bytes = std::fs::read(&path).expect("read");
    let page_size = 4096;
    let pages: Vec<usize> = (1..bytes.len() / page_size)
        .filter(|p| {
            let page = &bytes[p * page_size..(p + 1) * page_size];
            page.windows(MARK.len()).any(|w| w == MARK.as_bytes())
        })
        .collect();
    assert!(pages.len() > 20, "{} pages of events", pages.len());
    let victim = pages[pages.len() / 2];
    bytes[victim * page_size..(victim + 1) * page_size].fill(0x5a);
    std::fs::write(&path, bytes).expect("write");
    let found = rt().block_on(async {
        let store = SqliteStore::open_existing(&path).expect("the schema pages are intact");
        let found = store.check().await;
        store.close();
        found
    });
    let problems = found.expect("a report, not an error");
    let page_no = (victim + 1).to_string();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("page") && p.contains(&page_no)),
        "no integrity finding about page {page_no}: {problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("malformed")),
        "the failed scan is not reported: {problems:?}"
    );
}

/// The replay's own write keeps the operator's rules, whatever changed since the listing the
/// command checked: a delivery that succeeded meanwhile is not run again without `done_too`,
/// and a dead-letter pick made on a stale page replays only what is still a dead letter.
#[test]
fn a_replay_write_skips_what_succeeded_or_stopped_being_dead_since_it_was_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let k = keys(&store, new_event("e1", "hire", "t", 1_000, &["a", "b"])).await;
        finish(&store, k[0], Finish::Done).await;
        let events = |done_too, dead_only| ReplaySelector::Events {
            ids: vec!["e1".into()],
            plugin: None,
            force: done_too,
            dead_only,
        };
        // b is pending (say, running): a dead-letter pick of it is stale.
        assert_eq!(store.replay(events(false, true)).await.expect("replay"), 0);
        // Without done_too only b (pending) is replayed; a, done, stays done.
        assert_eq!(store.replay(events(false, false)).await.expect("replay"), 1);
        let states: Vec<(String, String)> = store
            .event("e1")
            .expect("read")
            .expect("stored")
            .deliveries
            .into_iter()
            .map(|d| (d.plugin, d.state))
            .collect();
        let want = [("a", "done"), ("b", "pending")].map(|(p, s)| (p.to_owned(), s.to_owned()));
        assert_eq!(states, want);
        assert_eq!(store.replay(events(true, false)).await.expect("replay"), 2);
        store.close();
    });
}

/// A page of dead letters after a cursor searches the partial index from the cursor on. The
/// bound used to sit inside `?4 IS NULL OR (...)`, which is no index range: each page scanned
/// every newer dead letter first, so listing them all (`dead-letters`, `replay --dead-letters`
/// and its `--dry-run`) was quadratic: 1 min 55 s for 429,000 dead letters, the last pages
/// ~0.45 s each.
#[test]
fn a_dead_letter_page_searches_the_index_from_its_cursor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
    let plan = store
        .read_blocking(|c| {
            let mut stmt = c.prepare(&format!(
                "EXPLAIN QUERY PLAN {}",
                inspect::dead_letters_sql()
            ))?;
            let rows = stmt.query_map(
                rusqlite::params![None::<String>, None::<i64>, 1000, 5_000_i64, "ev", "p"],
                |r| r.get::<_, String>(3),
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .expect("plan");
    let dead = plan
        .iter()
        .find(|l| l.contains(" d "))
        .cloned()
        .unwrap_or_default();
    assert!(
        dead.starts_with("SEARCH d USING INDEX deliveries_dead") && dead.contains("updated_at<?"),
        "{plan:?}"
    );
    store.close();
}
