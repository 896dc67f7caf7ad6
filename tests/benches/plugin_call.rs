//! One `handle` round trip through the plugin C ABI for a ~1 KiB delivery: the host serialises
//! nothing here (the JSON is made once), so each iteration is host → `handle` → SDK parses the
//! delivery → plugin → outcome (+ detail buffer) → host. Plugins are built in release.
//!
//! - `testkit_ok`: the SDK's fixed cost (ABI crossing + parsing the delivery), no I/O.
//! - `logger_fsync_never`: the logger appending each delivery to a temp file, no fsync.
//! - `raw_ok`: a raw-ABI plugin that does not parse JSON: the ABI crossing alone.
//!
//! Run: `cargo bench -p gateway-e2e --bench plugin_call`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use gateway_e2e::{build_plugins_release, delivery_json_of_size, raw_fixtures};
use gateway_plugin::host::{CallOutcome, Instance, Library, LogSink};
use gateway_plugin::Level;
use serde_json::json;

const EVENT_BYTES: usize = 1024;
/// The logger's file is truncated every this many calls (outside the timed part).
const TRUNCATE_EVERY: u64 = 20_000;

fn instance(path: &Path, config: serde_json::Value, dir: &Path) -> Instance {
    let sink: LogSink = Arc::new(|_: &str, _: Level, _: &str| {});
    Library::open(path)
        .unwrap_or_else(|e| panic!("load {}: {e}", path.display()))
        .instantiate("bench", &config, dir, sink)
        .unwrap_or_else(|e| panic!("start {}: {e}", path.display()))
}

fn plugin_call(c: &mut Criterion) {
    let plugins = build_plugins_release();
    let raw = raw_fixtures(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let dir = tempfile::tempdir().expect("tempdir");
    let json = delivery_json_of_size(1, "hire.referral_account.assets_update_v1", EVENT_BYTES);

    let testkit = instance(&plugins.testkit, json!({"mode": "ok"}), dir.path());
    let out = dir.path().join("bench.jsonl");
    let logger = instance(
        &plugins.logger,
        json!({"path": &out, "fsync": "never"}),
        dir.path(),
    );
    let raw = instance(&raw.counting, json!({}), dir.path());
    for inst in [&testkit, &logger, &raw] {
        assert_eq!(inst.handle(&json), CallOutcome::Ok);
    }

    let mut group = c.benchmark_group("plugin_call");
    group.throughput(Throughput::Bytes(json.len() as u64));
    group.bench_function("testkit_ok", |b| {
        b.iter(|| black_box(testkit.handle(black_box(&json))))
    });
    group.bench_function("raw_ok", |b| {
        b.iter(|| black_box(raw.handle(black_box(&json))))
    });
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&out)
        .expect("logger output");
    group.bench_function("logger_fsync_never", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(TRUNCATE_EVERY);
                let start = Instant::now();
                for _ in 0..n {
                    black_box(logger.handle(black_box(&json)));
                }
                timed += start.elapsed();
                file.set_len(0).expect("truncate the logger's file");
                left -= n;
            }
            timed
        })
    });
    group.finish();
}

criterion_group!(benches, plugin_call);
criterion_main!(benches);
