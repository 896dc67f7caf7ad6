//! What the replica tests share: a replica's config and start, the events they send and how,
//! and the calls the replicas' `testkit` instances recorded.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gateway_e2e::harness::{binaries, post, read_jsonl, Lark, TestGateway};

/// A replica's config: its own ports and folder, the shared database from `${PG_URL}`, and a
/// `testkit` instance `audit` recording every call in `data/audit.jsonl`.
pub fn replica_config(lease: &str, mode: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "5s"

[admin]
listen = "127.0.0.1:0"

[store]
url = "${{PG_URL}}"
lease = "{lease}"

[delivery]
timeout = "1s"
initial_backoff = "100ms"
max_batch = 8

[[apps]]
name = "hire"
path = "/hook"
verification_token = "tok"
encrypt_key = "key"

[[plugins]]
name = "audit"
library = "{testkit}"
config = {{ {mode}, record = "data/audit.jsonl" }}
max_concurrency = 2

[[routes]]
events = ["*"]
plugins = ["audit"]
"#,
        testkit = binaries().testkit.display(),
    )
}

/// `n` replicas on `url` with `config`, each in a folder of its own, and their webhook URLs.
pub fn replicas(
    n: usize,
    config: &str,
    url: &str,
) -> (Vec<tempfile::TempDir>, Vec<TestGateway>, Arc<Vec<String>>) {
    let dirs: Vec<tempfile::TempDir> = (0..n).map(|_| tempfile::tempdir().expect("tmp")).collect();
    let gws: Vec<TestGateway> = dirs.iter().map(|d| spawn(d.path(), config, url)).collect();
    let urls = Arc::new(gws.iter().map(|g| g.url("/hook")).collect::<Vec<_>>());
    (dirs, gws, urls)
}

pub fn spawn(dir: &Path, config: &str, url: &str) -> TestGateway {
    TestGateway::spawn_with_env(dir, config, &[("PG_URL", url)])
}

/// Every event id `audit` recorded in these replicas' folders, with how many calls each got.
pub fn calls(dirs: &[&Path]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for d in dirs {
        for l in read_jsonl(&d.join("data/audit.jsonl")) {
            if let Some(id) = l["event_id"].as_str() {
                *counts.entry(id.to_owned()).or_default() += 1;
            }
        }
    }
    counts
}

/// `(id, plaintext)` for `n` assets-update events named `{prefix}-{i}`.
pub fn events(prefix: &str, n: usize) -> Arc<Vec<(String, String)>> {
    let lark = Lark::encrypted("tok", "key");
    Arc::new(
        (0..n)
            .map(|i| {
                let id = format!("{prefix}-{i:05}");
                let text = lark.assets_update(
                    &id,
                    &format!("acc-{i}"),
                    i as u64,
                    r#"[{"currency_type":"CNY","amount":0.1}]"#,
                    i as u64,
                );
                (id, text)
            })
            .collect(),
    )
}

/// Sends each event to `targets(i)` in turn, from 8 threads, re-sending (as Lark does) until
/// each answers 200; returns how many answers were 503.
pub fn send(
    bodies: &Arc<Vec<(String, String)>>,
    urls: Arc<Vec<String>>,
    targets: fn(usize) -> Vec<usize>,
) -> usize {
    let next = Arc::new(AtomicUsize::new(0));
    let unavailable = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (next, unavailable, bodies, urls) = (
                next.clone(),
                unavailable.clone(),
                bodies.clone(),
                urls.clone(),
            );
            std::thread::spawn(move || {
                let lark = Lark::encrypted("tok", "key");
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some((id, plaintext)) = bodies.get(i) else {
                        break;
                    };
                    for target in targets(i) {
                        let url = &urls[target];
                        let deadline = std::time::Instant::now() + Duration::from_secs(60);
                        loop {
                            let (body, headers) = lark.wrap(plaintext);
                            match post(url, &headers, &body) {
                                Ok(a) if a.status == 200 => break,
                                Ok(a) if a.status == 503 => {
                                    unavailable.fetch_add(1, Ordering::SeqCst);
                                }
                                Ok(a) => panic!("{id} to {url}: {} {}", a.status, a.body),
                                Err(e) => panic!("{id} to {url}: {e}"),
                            }
                            assert!(std::time::Instant::now() < deadline, "{id} never accepted");
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("sender thread");
    }
    unavailable.load(Ordering::SeqCst)
}
