//! `testkit`: a test-only gateway plugin whose behaviour is chosen by its config, so the loader
//! tests and the gateway's end-to-end tests can provoke every outcome on demand. Never deploy it.
//!
//! Config (`[[plugins]] config`; every key is optional, unknown keys are refused):
//! - `mode` — what `handle` does (default `"ok"`):
//!   - `"ok"`: returns `Ok`;
//!   - `"retry_then_ok"`: returns `Retry` for the first `retries` calls of each `delivery_id`,
//!     then `Ok` (counted in this instance's memory: a new instance starts again from zero);
//!   - `"reject"`: returns `Reject`;
//!   - `"retry_always"`: returns `Retry`;
//!   - `"panic_handle"`: panics in `handle` (the SDK reports it as `Panicked`);
//!   - `"panic_new"`: panics in `new` (the host sees `InitError::Panicked`);
//!   - `"slow"`: sleeps `sleep_ms`, then returns `Ok`;
//!   - `"gate"`: waits until the file `gate` exists (polled every 10 ms), then returns `Ok`
//!     (or what `gate_then` says);
//!   - `"helper"`: runs the program `sleep 300` (a helper process the plugin starts), appends
//!     its pid and a line break to the file `helper_pids` (required by that mode), waits for
//!     it, then returns `Ok`.
//! - `retries` — for `retry_then_ok` (default 1).
//! - `helper_pids` — for `helper`: a file path, resolved like `record`'s.
//! - `shutdown_sleep_ms` — `shutdown` sleeps this long before it records `shutdown` (default
//!   0): a plugin whose shutdown takes time (it flushes, it commits).
//! - `panic_shutdown` — `shutdown` panics after it recorded `shutdown` (default `false`; built
//!   with `panic = "abort"`, the process aborts there).
//! - `sleep_ms` — for `slow` (default 1000).
//! - `init_sleep_ms` — `new` sleeps this long before it returns (default 0): a slow start.
//! - `restart_sleep_ms` — `new` sleeps this long when it is not the process's first `new` of
//!   testkit (default 0): a slow restart after a panic (or a reload).
//! - `refuse_new_while` — a file path (resolved like `record`'s): `new` refuses to start
//!   (`testkit: refusing to start while {path} exists`) while that file exists.
//! - `gate` — for `gate`: a file path, relative paths resolved like `record`'s (required by
//!   that mode).
//! - `gate_then` — for `gate`: what the call returns once the gate opens, `"ok"` (default),
//!   `"retry"` or `"reject"` (reason `testkit: {retry|reject} after the gate for {delivery_id}`),
//!   or `"panic"` (panics as `panic_handle` does, recorded as `"panic"`).
//! - `retry_after_ms` — the `retry_after` put on every `Retry` (default: none).
//! - `only_event_types` — when given, `mode` applies only to deliveries whose `event_type` is in
//!   this list; every other delivery gets `Ok` (so one event can panic while others pass).
//! - `record` — a file (relative paths resolve against the gateway config's folder; parent
//!   folders are created) to which every `handle` call appends, just before it returns (or
//!   panics), one JSON line `{"instance","delivery_id","event_id","event_type","attempt","outcome"}`
//!   with `outcome` one of `"ok"`, `"retry"`, `"reject"`, `"panic"`; and `{"instance","outcome":
//!   "shutdown"}` when the host shuts the instance down. Each line is one write to the file
//!   opened for appending (so instances sharing a file never split each other's lines) and
//!   flushed, so tests can count calls while the gateway runs.
//! - `log` — log one `Info` line per call through the host (default `false`).
//! - `panic_batch` — `handle_batch` panics whatever it is given (default `false`); `handle`
//!   does what `mode` says: a batch entry broken as a whole.
//! - `print` — print one line per call to standard output, `{"testkit":"print","event_id":..}`
//!   (default `false`): a plugin that writes to its stdout.
//! - `tag` — a text copied into every record line (`"tag"`), so tests can tell which config
//!   (before or after a reload) served a call. Every line also carries `"instance_no"`: the
//!   instance's place among this library's instances made in the process (0 for the first),
//!   so tests can tell which instance served a call.
//! - `pad_reason` — this many `x` appended to every `Retry` / `Reject` reason (to test caps).
//! - `pad_log` — this many `x` appended to every `log` line (to test the log frame's cap).
//! - `record_env` — names of environment variables: every record line carries `"env"`, a
//!   table from each name to its value in this process (`null` when unset), so tests can see
//!   which variables a plugin process has.
//! - `modes` — a table from event type to mode, overriding `mode` for those types (so one batch
//!   can mix outcomes).
//!
//! Batches (ABI 1.1): `handle_batch` handles each delivery as `handle` does, in order, and
//! records `"batch"`: how many deliveries the call carried (1 for a plain `handle` call).
//!
//! Every record line also carries `"in_flight"`: how many `handle` calls of this library (all
//! instances together) were running when this one started, itself included.
//!
//! Reasons are fixed texts naming the event, so tests can assert them:
//! `testkit: retry {n} of {retries} for {delivery_id}`, `testkit: retry always for {delivery_id}`,
//! `testkit: reject {delivery_id}`, `testkit: panic in handle for {event_id}` and
//! `testkit: panic in new` (instance `{name}`).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use gateway_plugin::{Delivery, Host, Level, Outcome, Plugin};
use serde::{Deserialize, Serialize};

/// What `handle` does; see the crate docs.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
enum Mode {
    #[default]
    Ok,
    RetryThenOk,
    Reject,
    RetryAlways,
    PanicHandle,
    PanicNew,
    Slow,
    Gate,
    Helper,
}

/// What a `gate` call returns once its gate opens.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
enum GateThen {
    #[default]
    Ok,
    Retry,
    Reject,
    Panic,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    mode: Mode,
    #[serde(default = "one")]
    retries: u32,
    #[serde(default = "one_second")]
    sleep_ms: u64,
    #[serde(default)]
    init_sleep_ms: u64,
    #[serde(default)]
    restart_sleep_ms: u64,
    gate: Option<PathBuf>,
    #[serde(default)]
    gate_then: GateThen,
    refuse_new_while: Option<PathBuf>,
    retry_after_ms: Option<u64>,
    only_event_types: Option<Vec<String>>,
    record: Option<PathBuf>,
    #[serde(default)]
    log: bool,
    #[serde(default)]
    print: bool,
    #[serde(default)]
    panic_batch: bool,
    tag: Option<String>,
    #[serde(default)]
    pad_reason: usize,
    #[serde(default)]
    pad_log: usize,
    #[serde(default)]
    modes: HashMap<String, Mode>,
    helper_pids: Option<PathBuf>,
    #[serde(default)]
    shutdown_sleep_ms: u64,
    #[serde(default)]
    panic_shutdown: bool,
    #[serde(default)]
    record_env: Vec<String>,
}

thread_local! {
    /// The size of the batch the current `handle` runs in (1 outside `handle_batch`).
    static BATCH: std::cell::Cell<usize> = const { std::cell::Cell::new(1) };
}

/// `handle` calls running now, across every instance of this library.
static IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Decrements [`IN_FLIGHT`] when a call ends, however it ends.
struct InFlight(usize);

impl InFlight {
    fn enter() -> InFlight {
        InFlight(IN_FLIGHT.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn one() -> u32 {
    1
}

fn one_second() -> u64 {
    1000
}

/// One line of the `record` file.
#[derive(Serialize)]
struct Record<'a> {
    instance: &'a str,
    delivery_id: &'a str,
    event_id: &'a str,
    event_type: &'a str,
    attempt: u32,
    outcome: &'a str,
    tag: Option<&'a str>,
    in_flight: usize,
    batch: usize,
    instance_no: usize,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    env: std::collections::BTreeMap<&'a str, Option<String>>,
}

/// The plugin instance.
#[derive(Debug)]
pub struct Testkit {
    config: Config,
    host: Host,
    /// `handle` calls so far per `delivery_id` (for `retry_then_ok`).
    calls: Mutex<HashMap<String, u32>>,
    record: Option<(PathBuf, Mutex<File>)>,
    /// This instance's place among the instances of this library made in this process
    /// (`"instance_no"` in its records).
    number: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic never happens while one of these locks is held, but stay usable regardless.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Plugin for Testkit {
    fn new(config: serde_json::Value, host: Host) -> Result<Self, String> {
        let config: Config =
            serde_json::from_value(config).map_err(|e| format!("testkit config: {e}"))?;
        std::thread::sleep(Duration::from_millis(config.init_sleep_ms));
        static INSTANCES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let number = INSTANCES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if number > 0 {
            std::thread::sleep(Duration::from_millis(config.restart_sleep_ms));
        }
        if let Some(path) = &config.refuse_new_while {
            let path = host.resolve_path(path);
            if path.exists() {
                return Err(format!(
                    "testkit: refusing to start while {} exists",
                    path.display()
                ));
            }
        }
        if config.mode == Mode::PanicNew {
            panic!(
                "testkit: panic in new (instance `{}`)",
                host.instance_name()
            );
        }
        let record = match &config.record {
            None => None,
            Some(path) => {
                let path = host.resolve_path(path);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| format!("testkit: cannot create {}: {e}", dir.display()))?;
                }
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| format!("testkit: cannot open {}: {e}", path.display()))?;
                Some((path, Mutex::new(file)))
            }
        };
        Ok(Testkit {
            config,
            host,
            calls: Mutex::new(HashMap::new()),
            record,
            number,
        })
    }

    /// Appends `{"instance", "outcome": "shutdown"}` to the record file, so tests can see when
    /// the host retires an instance.
    fn shutdown(&self) {
        std::thread::sleep(Duration::from_millis(self.config.shutdown_sleep_ms));
        if let Some((_, file)) = &self.record {
            let line = serde_json::json!({
                "instance": self.host.instance_name(),
                "outcome": "shutdown",
                "instance_no": self.number,
            });
            // One write of the whole line: another instance (a reload's) may be appending to
            // the same file at the same moment (`writeln!` wrote it in pieces, which a record
            // of that instance could split).
            let mut f = lock(file);
            let _ = f
                .write_all(format!("{line}\n").as_bytes())
                .and_then(|()| f.flush());
        }
        if self.config.panic_shutdown {
            panic!(
                "testkit: panic in shutdown (instance `{}`)",
                self.host.instance_name()
            );
        }
    }

    fn handle_batch(&self, deliveries: &[Delivery]) -> Vec<Outcome> {
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                BATCH.with(|b| b.set(1));
            }
        }
        let _reset = Reset;
        if self.config.panic_batch {
            panic!("testkit: the whole batch of {} panics", deliveries.len());
        }
        BATCH.with(|b| b.set(deliveries.len()));
        deliveries.iter().map(|d| self.handle(d)).collect()
    }

    fn handle(&self, d: &Delivery) -> Outcome {
        let in_flight = InFlight::enter();
        let pad = "x".repeat(self.config.pad_reason);
        let n = {
            let mut calls = lock(&self.calls);
            let n = calls.entry(d.delivery_id.clone()).or_insert(0);
            *n += 1;
            *n
        };
        if self.config.print {
            println!("{{\"testkit\":\"print\",\"event_id\":{:?}}}", d.event_id);
        }
        if self.config.log {
            self.host.log(
                Level::Info,
                &format!(
                    "testkit handling {} (attempt {}, call {n}){}",
                    d.event_id,
                    d.attempt,
                    "x".repeat(self.config.pad_log)
                ),
            );
        }
        let applies = match &self.config.only_event_types {
            None => true,
            Some(types) => types.contains(&d.event_type),
        };
        let mode = match self.config.modes.get(&d.event_type) {
            Some(m) => *m,
            None if applies => self.config.mode,
            None => Mode::Ok,
        };
        let retry_after = self.config.retry_after_ms.map(Duration::from_millis);
        let outcome = match mode {
            Mode::Ok | Mode::PanicNew => Outcome::Ok,
            Mode::Slow => {
                std::thread::sleep(Duration::from_millis(self.config.sleep_ms));
                Outcome::Ok
            }
            Mode::Helper => match &self.config.helper_pids {
                Some(pids) => {
                    let pids = self.host.resolve_path(pids);
                    match std::process::Command::new("sleep").arg("300").spawn() {
                        Ok(mut helper) => {
                            if let Ok(mut f) =
                                OpenOptions::new().create(true).append(true).open(&pids)
                            {
                                let _ = f.write_all(format!("{}\n", helper.id()).as_bytes());
                            }
                            let _ = helper.wait();
                            Outcome::Ok
                        }
                        Err(e) => Outcome::reject(format!("testkit: cannot start sleep: {e}")),
                    }
                }
                None => Outcome::reject("testkit: mode helper needs helper_pids"),
            },
            Mode::Gate => match &self.config.gate {
                Some(gate) => {
                    let gate = self.host.resolve_path(gate);
                    while !gate.exists() {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    let id = &d.delivery_id;
                    match self.config.gate_then {
                        GateThen::Ok => Outcome::Ok,
                        GateThen::Retry => Outcome::Retry {
                            reason: format!("testkit: retry after the gate for {id}"),
                            retry_after,
                        },
                        GateThen::Reject => {
                            Outcome::reject(format!("testkit: reject after the gate for {id}"))
                        }
                        GateThen::Panic => {
                            if let Err(e) = self.record(d, "panic", in_flight.0) {
                                return Outcome::retry(e);
                            }
                            panic!("testkit: panic in handle for {}", d.event_id);
                        }
                    }
                }
                None => Outcome::reject("testkit: mode gate without a `gate` file"),
            },
            Mode::RetryThenOk if n <= self.config.retries => Outcome::Retry {
                reason: format!(
                    "testkit: retry {n} of {} for {}{pad}",
                    self.config.retries, d.delivery_id
                ),
                retry_after,
            },
            Mode::RetryThenOk => Outcome::Ok,
            Mode::RetryAlways => Outcome::Retry {
                reason: format!("testkit: retry always for {}{pad}", d.delivery_id),
                retry_after,
            },
            Mode::Reject => Outcome::reject(format!("testkit: reject {}{pad}", d.delivery_id)),
            Mode::PanicHandle => {
                if let Err(e) = self.record(d, "panic", in_flight.0) {
                    return Outcome::retry(e);
                }
                panic!("testkit: panic in handle for {}", d.event_id);
            }
        };
        let label = match &outcome {
            Outcome::Ok => "ok",
            Outcome::Retry { .. } => "retry",
            Outcome::Reject { .. } => "reject",
        };
        match self.record(d, label, in_flight.0) {
            Ok(()) => outcome,
            Err(e) => Outcome::retry(e),
        }
    }
}

impl Testkit {
    /// Appends one line to the `record` file, if configured.
    fn record(&self, d: &Delivery, outcome: &str, in_flight: usize) -> Result<(), String> {
        let Some((path, file)) = &self.record else {
            return Ok(());
        };
        let line = Record {
            instance: self.host.instance_name(),
            delivery_id: &d.delivery_id,
            event_id: &d.event_id,
            event_type: &d.event_type,
            attempt: d.attempt,
            outcome,
            tag: self.config.tag.as_deref(),
            in_flight,
            batch: BATCH.with(|b| b.get()),
            instance_no: self.number,
            env: (self.config.record_env.iter())
                .map(|name| (name.as_str(), std::env::var(name).ok()))
                .collect(),
        };
        let mut bytes =
            serde_json::to_vec(&line).map_err(|e| format!("testkit: record line: {e}"))?;
        bytes.push(b'\n');
        let mut f = lock(file);
        f.write_all(&bytes)
            .and_then(|()| f.flush())
            .map_err(|e| format!("testkit: cannot write {}: {e}", path.display()))
    }
}

gateway_plugin::export_plugin!(Testkit);

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(id: &str, event_type: &str) -> Delivery {
        let text = serde_json::json!({
            "delivery_id": id, "attempt": 1, "plugin": "kit", "app": "demo",
            "event_id": format!("e-{id}"), "event_type": event_type, "received_at": 1,
            "event": {"schema": "2.0"}
        })
        .to_string();
        serde_json::from_str(&text).expect("delivery json")
    }

    fn kit(dir: &std::path::Path, config: serde_json::Value) -> Testkit {
        Testkit::new(config, Host::for_tests(dir, "kit")).expect("config accepted")
    }

    #[test]
    fn retry_then_ok_counts_per_delivery_and_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let k = kit(
            dir.path(),
            serde_json::json!({"mode": "retry_then_ok", "retries": 2, "retry_after_ms": 7, "record": "sub/rec.jsonl"}),
        );
        let a = delivery("a", "t");
        let b = delivery("b", "t");
        let retry = |n: u32, id: &str| Outcome::Retry {
            reason: format!("testkit: retry {n} of 2 for {id}"),
            retry_after: Some(Duration::from_millis(7)),
        };
        assert_eq!(k.handle(&a), retry(1, "a"));
        assert_eq!(k.handle(&b), retry(1, "b"));
        assert_eq!(k.handle(&a), retry(2, "a"));
        assert_eq!(k.handle(&a), Outcome::Ok);
        assert_eq!(k.handle(&a), Outcome::Ok);
        let text = std::fs::read_to_string(dir.path().join("sub/rec.jsonl")).expect("record file");
        let outcomes: Vec<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json line");
                format!(
                    "{}:{}",
                    v["delivery_id"].as_str().expect("id"),
                    v["outcome"]
                )
            })
            .collect();
        assert_eq!(
            outcomes,
            [
                "a:\"retry\"",
                "b:\"retry\"",
                "a:\"retry\"",
                "a:\"ok\"",
                "a:\"ok\""
            ]
        );
    }

    #[test]
    fn only_event_types_limits_the_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let k = kit(
            dir.path(),
            serde_json::json!({"mode": "reject", "only_event_types": ["bad"]}),
        );
        assert_eq!(k.handle(&delivery("x", "good")), Outcome::Ok);
        assert_eq!(
            k.handle(&delivery("y", "bad")),
            Outcome::reject("testkit: reject y")
        );
    }

    #[test]
    fn refuses_unknown_keys_and_modes() {
        let host = Host::for_tests("/tmp", "kit");
        for bad in [
            serde_json::json!({"mode": "sometimes"}),
            serde_json::json!({"colour": 1}),
        ] {
            assert!(Testkit::new(bad.clone(), host.clone()).is_err(), "{bad}");
        }
    }
}
