//! `loadgen disk`: the latency of this machine's disk for the write pattern of the gateway's
//! store, with nothing else running — the control for the gateway's tail under an open loop.
//!
//! One thread writes `--write` bytes at the next offset of a preallocated file (wrapping at
//! its end, as SQLite reuses its WAL after a checkpoint), then `fsync`s it (the call the
//! store's SQLite makes per commit), for `--duration`. Each write + `fsync` is one sample of an
//! HDR histogram; the report gives its percentiles, how many took over 2 and over 5 ms, and
//! the slowest ones with when they started. The file is removed at the end.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::json;

use crate::stats;

/// How many of the slowest samples the report lists.
const SLOWEST: usize = 10;

/// What to measure.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Folder for the scratch file (on the disk to measure).
    pub dir: PathBuf,
    /// How long to write and sync.
    pub duration: Duration,
    /// Bytes per write (one commit's WAL frames).
    pub write: usize,
    /// Size of the file the writes cycle through.
    pub file: u64,
}

/// What the run measured.
#[derive(Debug)]
pub struct Report {
    plan: Plan,
    elapsed: Duration,
    latency: Histogram<u64>,
    over_2ms: u64,
    over_5ms: u64,
    /// (start from the beginning of the run, latency), slowest first.
    slowest: Vec<(Duration, Duration)>,
}

/// Writes and syncs for `plan.duration` (at least once).
pub fn run(plan: Plan) -> anyhow::Result<Report> {
    anyhow::ensure!(plan.write > 0, "--write must be at least 1 byte");
    anyhow::ensure!(
        plan.file >= plan.write as u64,
        "--file must be at least --write bytes"
    );
    let path = plan
        .dir
        .join(format!("loadgen-disk-{}.tmp", std::process::id()));
    let result = measure(&plan, &path);
    let removed = std::fs::remove_file(&path);
    let report = result?;
    removed.with_context(|| format!("cannot remove {}", path.display()))?;
    Ok(report)
}

fn measure(plan: &Plan, path: &Path) -> anyhow::Result<Report> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    // Allocate every block first, as a WAL that has wrapped once has them.
    let chunk = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < plan.file {
        let n = chunk.len().min((plan.file - at) as usize);
        file.write_all_at(&chunk[..n], at)?;
        at += n as u64;
    }
    file.sync_all()?;

    let frames: Vec<u8> = (0..plan.write).map(|i| (i % 251) as u8).collect();
    let mut latency = stats::histogram();
    let (mut over_2ms, mut over_5ms) = (0, 0);
    let mut slowest: Vec<(Duration, Duration)> = Vec::with_capacity(SLOWEST + 1);
    let mut offset = 0u64;
    let start = Instant::now();
    loop {
        let began = Instant::now();
        file.write_all_at(&frames, offset)?;
        file.sync_all()?;
        let took = began.elapsed();
        latency.saturating_record(stats::micros(took));
        over_2ms += u64::from(took > Duration::from_millis(2));
        over_5ms += u64::from(took > Duration::from_millis(5));
        if slowest.len() < SLOWEST || slowest.last().is_some_and(|s| took > s.1) {
            slowest.push((began - start, took));
            slowest.sort_by_key(|s| std::cmp::Reverse(s.1));
            slowest.truncate(SLOWEST);
        }
        offset = next_offset(offset, plan.write as u64, plan.file);
        if start.elapsed() >= plan.duration {
            break;
        }
    }
    Ok(Report {
        plan: plan.clone(),
        elapsed: start.elapsed(),
        latency,
        over_2ms,
        over_5ms,
        slowest,
    })
}

/// Where the write after one at `offset` goes: right after it, or back at the start when the
/// next write would not fit in the file.
fn next_offset(offset: u64, write: u64, file: u64) -> u64 {
    let next = offset + write;
    if next + write > file {
        0
    } else {
        next
    }
}

impl Report {
    fn syncs(&self) -> u64 {
        self.latency.len()
    }

    fn per_second(&self) -> f64 {
        self.syncs() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn json(&self) -> serde_json::Value {
        let latency: serde_json::Map<String, serde_json::Value> = stats::percentiles(&self.latency)
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        json!({
            "dir": self.plan.dir.display().to_string(),
            "write_bytes": self.plan.write,
            "file_bytes": self.plan.file,
            "duration_s": self.plan.duration.as_secs_f64(),
            "elapsed_s": self.elapsed.as_secs_f64(),
            "syncs": self.syncs(),
            "per_s": self.per_second(),
            "latency_ms": latency,
            "over_2ms": self.over_2ms,
            "over_5ms": self.over_5ms,
            "slowest": self.slowest.iter().map(|(at, took)| json!({
                "at_s": at.as_secs_f64(),
                "ms": took.as_secs_f64() * 1e3,
            })).collect::<Vec<_>>(),
        })
    }

    pub fn text(&self) -> String {
        let p = stats::percentiles(&self.latency);
        let mut out = format!(
            "{} writes of {} bytes + fsync in {:.1} s ({:.0}/s) in {}\n",
            self.syncs(),
            self.plan.write,
            self.elapsed.as_secs_f64(),
            self.per_second(),
            self.plan.dir.display()
        );
        out += &p
            .iter()
            .map(|(k, v)| format!("{k} {v:.3} ms"))
            .collect::<Vec<_>>()
            .join(", ");
        let slowest: Vec<String> = self
            .slowest
            .iter()
            .map(|(at, took)| {
                format!(
                    "{:.1} ms at {:.3} s",
                    took.as_secs_f64() * 1e3,
                    at.as_secs_f64()
                )
            })
            .collect();
        out += &format!(
            "\nover 2 ms: {}, over 5 ms: {}\nslowest: {}\n",
            self.over_2ms,
            self.over_5ms,
            slowest.join(", ")
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(dir: &Path, duration: Duration) -> Plan {
        Plan {
            dir: dir.to_owned(),
            duration,
            write: 4096,
            file: 3 * 4096 + 100,
        }
    }

    #[test]
    fn measures_at_least_one_sync_and_removes_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let report = run(plan(dir.path(), Duration::from_millis(50))).expect("run");
        assert!(report.syncs() >= 1);
        assert!(report.slowest.len() <= SLOWEST);
        assert!(
            report.slowest.windows(2).all(|w| w[0].1 >= w[1].1),
            "slowest first"
        );
        let j = report.json();
        assert_eq!(j["syncs"], json!(report.syncs()));
        assert!(j["latency_ms"]["p99.9"].as_f64().is_some());
        assert!(report.text().contains("fsync"));
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
        assert!(left.is_empty(), "scratch file removed: {left:?}");
    }

    #[test]
    fn writes_cycle_through_the_file_and_never_pass_its_end() {
        // 3 whole writes of 4096 fit in 12,388 bytes: 0, 4096, 8192, then back to 0.
        let (write, file) = (4096, 3 * 4096 + 100);
        let mut at = 0;
        let mut seen = Vec::new();
        for _ in 0..7 {
            assert!(at + write <= file, "{at}");
            seen.push(at);
            at = next_offset(at, write, file);
        }
        assert_eq!(seen, [0, 4096, 8192, 0, 4096, 8192, 0]);
        assert_eq!(next_offset(0, 10, 10), 0, "a file of one write");
    }

    #[test]
    fn refuses_a_file_smaller_than_one_write_and_a_missing_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = plan(dir.path(), Duration::ZERO);
        p.file = 100;
        assert!(run(p).is_err());
        let missing = plan(&dir.path().join("nope"), Duration::ZERO);
        let err = run(missing).expect_err("missing folder");
        assert!(format!("{err:#}").contains("cannot create"), "{err:#}");
    }
}
