//! The end-to-end harness: [`TestGateway`] starts the real `gateway` binary on an ephemeral
//! loopback port with a config written into a temp dir and real plugin `.so` files; [`Lark`]
//! builds, encrypts and signs deliveries exactly as Lark does; [`post`] is a plain HTTP client that
//! returns any status as a value.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::{cargo_build, Profile};

mod configs;
mod http;
mod lark;
mod procs;

pub use configs::{base_config, kit_config, with_admin};
pub use http::{agent, connect_from, get, post, request, Answer};
pub use lark::Lark;
pub use procs::{children, kill_the_plugin_process, parent_of, processes, status_field};

/// The binaries and plugin libraries the e2e tests run.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub gateway: PathBuf,
    pub logger: PathBuf,
    pub testkit: PathBuf,
    pub notifier: PathBuf,
    pub payout: PathBuf,
}

/// Builds (once per process) the gateway binary and every plugin, debug profile.
pub fn binaries() -> &'static Binaries {
    static BINARIES: OnceLock<Binaries> = OnceLock::new();
    BINARIES.get_or_init(|| {
        let artifacts = cargo_build(
            &["gateway", "logger", "testkit", "notifier", "payout"],
            Profile::Debug,
        )
        .unwrap_or_else(|e| panic!("building the gateway and plugins failed:\n{e}"));
        let find_lib = |name: &str| {
            artifacts
                .iter()
                .filter(|a| a.name == name)
                .find_map(|a| a.shared_library().map(Path::to_path_buf))
                .unwrap_or_else(|| panic!("cargo built no shared library for {name}"))
        };
        let gateway = artifacts
            .iter()
            .find_map(|a| {
                (a.name == "gateway")
                    .then(|| a.executable.clone())
                    .flatten()
            })
            .expect("cargo built no gateway executable");
        Binaries {
            gateway,
            logger: find_lib("logger"),
            testkit: find_lib("testkit"),
            notifier: find_lib("notifier"),
            payout: find_lib("payout"),
        }
    })
}

/// A running gateway process.
#[derive(Debug)]
pub struct TestGateway {
    child: Option<Child>,
    /// The public webhook address.
    pub addr: SocketAddr,
    /// The admin listener (`/healthz`, `/readyz`, `/metrics`).
    pub admin: Option<SocketAddr>,
    /// The folder holding `gateway.toml` and the store.
    pub dir: PathBuf,
    log: Arc<Mutex<String>>,
    /// The output streams (stderr, stdout) still being copied into `log`: [`TestGateway::wait`]
    /// waits (briefly) for their end, so the last lines before an exit are in `log`.
    streams_open: Arc<std::sync::atomic::AtomicUsize>,
    /// The environment given at spawn (`${VAR}`s of the config), reused by [`TestGateway::cli`].
    env: Vec<(String, String)>,
}

/// The address in a "… listening on http://ADDR" log line (text or JSON format).
fn listening(line: &str, marker: &str) -> Option<SocketAddr> {
    let at = line.find(marker)? + marker.len();
    let addr: String = line[at..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    addr.parse().ok()
}

impl TestGateway {
    /// Writes `config` to `dir/gateway.toml` and starts `gateway run` on it; waits until it
    /// listens. Panics (with the gateway's output) if it does not start within 30 s.
    pub fn spawn(dir: &Path, config: &str) -> TestGateway {
        Self::spawn_with_env(dir, config, &[])
    }

    pub fn spawn_with_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> TestGateway {
        Self::spawn_full(dir, config, env, &[])
    }

    /// Like [`TestGateway::spawn_with_env`], with extra `run` flags (e.g. `--watch`).
    pub fn spawn_full(
        dir: &Path,
        config: &str,
        env: &[(&str, &str)],
        run_args: &[&str],
    ) -> TestGateway {
        Self::try_spawn_full(dir, config, env, run_args)
            .unwrap_or_else(|log| panic!("gateway exited before it listened:\n{log}"))
    }

    /// Like [`TestGateway::spawn`], for a gateway that may die before it prints its listening
    /// line (a restart that recovers a crashing delivery at once): `Err` carries its output
    /// when it exited. Panics if it neither listens nor exits within 30 s.
    pub fn try_spawn(dir: &Path, config: &str) -> Result<TestGateway, String> {
        Self::try_spawn_full(dir, config, &[], &[])
    }

    /// Like [`TestGateway::spawn`], started by `sh -c '<setup>; exec "$0" "$@"'`: the gateway
    /// (the same pid) inherits what `setup` changed, e.g. `trap '' XFSZ` (a signal ignored).
    pub fn spawn_after(dir: &Path, config: &str, setup: &str) -> TestGateway {
        Self::try_spawn_inner(dir, config, &[], &[], Some(setup))
            .unwrap_or_else(|log| panic!("gateway exited before it listened:\n{log}"))
    }

    fn try_spawn_full(
        dir: &Path,
        config: &str,
        env: &[(&str, &str)],
        run_args: &[&str],
    ) -> Result<TestGateway, String> {
        Self::try_spawn_inner(dir, config, env, run_args, None)
    }

    fn try_spawn_inner(
        dir: &Path,
        config: &str,
        env: &[(&str, &str)],
        run_args: &[&str],
        setup: Option<&str>,
    ) -> Result<TestGateway, String> {
        let path = dir.join("gateway.toml");
        std::fs::write(&path, config).expect("write gateway.toml");
        let mut cmd = match setup {
            None => Command::new(&binaries().gateway),
            Some(setup) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("{setup}; exec \"$0\" \"$@\""))
                    .arg(&binaries().gateway);
                sh
            }
        };
        cmd.arg("--config")
            .arg(&path)
            .arg("run")
            .args(run_args)
            .env("RUST_LOG", "info,gateway=debug")
            .env_remove("GATEWAY_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start gateway");
        let log = Arc::new(Mutex::new(String::new()));
        let streams_open = Arc::new(std::sync::atomic::AtomicUsize::new(2));
        let (tx, rx) = std::sync::mpsc::channel();
        // Everything goes to stderr (the log); stdout is kept only to show stray output.
        let stderr = child.stderr.take().expect("stderr");
        let stdout = child.stdout.take().expect("stdout");
        for (stream, tx) in [
            (Box::new(stderr) as Box<dyn std::io::Read + Send>, Some(tx)),
            (Box::new(stdout), None),
        ] {
            let (log, open) = (log.clone(), streams_open.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Ok(mut l) = log.lock() {
                        l.push_str(&line);
                        l.push('\n');
                    }
                    if let Some(tx) = &tx {
                        let _ = tx.send(line);
                    }
                }
                open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut admin = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    // `https://` when `[admin] tls` is set (tests/e2e/tls.rs builds its URLs).
                    if let Some(a) = listening(&line, "admin listening on http://")
                        .or_else(|| listening(&line, "admin listening on https://"))
                    {
                        admin = Some(a);
                    }
                    // `https://` when `[server] tls` is set (tests/e2e/tls.rs).
                    let webhook = listening(&line, "gateway listening on http://")
                        .or_else(|| listening(&line, "gateway listening on https://"));
                    if let Some(addr) = webhook {
                        // The gateway accepted this config: the JSON Schema must too.
                        crate::schema::assert_config_matches_schema(&path, config);
                        return Ok(TestGateway {
                            child: Some(child),
                            addr,
                            admin,
                            dir: dir.to_path_buf(),
                            log,
                            streams_open,
                            env: env
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_string()))
                                .collect(),
                        });
                    }
                }
                Err(e) => {
                    let exited = e == std::sync::mpsc::RecvTimeoutError::Disconnected;
                    if !exited {
                        let _ = child.kill();
                    }
                    let status = child.wait();
                    // The reader threads may still hold the last lines.
                    std::thread::sleep(Duration::from_millis(100));
                    let log = log.lock().map(|l| l.clone()).unwrap_or_default();
                    if exited {
                        return Err(format!("{status:?}\n{log}"));
                    }
                    panic!("gateway did not start within 30 s:\n{log}");
                }
            }
        }
    }

    /// `http://addr/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://admin/path`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin.expect("admin listener"))
    }

    /// Everything the gateway printed so far (stdout and stderr).
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `kill -9`: no cleanup at all.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal (`TERM`, `INT`, `HUP`) with the `kill` command.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit (up to `timeout`) and returns its status, once the lines
    /// it wrote before exiting are in [`TestGateway::log`] (its output streams ended; at most
    /// 1 s more: a plugin process that outlives the gateway may hold them open).
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.child.as_mut()?;
            if let Ok(Some(status)) = c.try_wait() {
                self.child = None;
                let open = &self.streams_open;
                wait_until(Duration::from_secs(1), || {
                    open.load(std::sync::atomic::Ordering::SeqCst) == 0
                });
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs another `gateway` subcommand on the same config, with the same environment (every
    /// subcommand validates the whole config, `${VAR}`s included); returns (exit code, stdout,
    /// stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        run_cli_with_env(&self.dir.join("gateway.toml"), args, &env)
    }
}

impl TestGateway {
    /// POSTs a plain (unencrypted) schema 2.0 event `id` of `event_type` (`event` is
    /// `{"n": id}`) carrying `token` to `/hook`, and asserts the answer is 200.
    pub fn send_plain(&self, token: &str, id: &str, event_type: &str) {
        let lark = Lark::plain(token);
        let a = lark.send(
            &self.url("/hook"),
            &lark.event_v2(id, event_type, serde_json::json!({"n": id})),
        );
        assert_eq!(a.status, 200, "{id}: {}", a.body);
    }

    /// The stored delivery of `event_id` to `plugin`, as `gateway events show` prints it;
    /// `null` when the event has none for that plugin.
    pub fn delivery(&self, event_id: &str, plugin: &str) -> serde_json::Value {
        let (code, out, err) = self.cli(&["events", "show", event_id]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("events show prints JSON");
        v["deliveries"]
            .as_array()
            .and_then(|ds| ds.iter().find(|d| d["plugin"] == plugin).cloned())
            .unwrap_or(serde_json::Value::Null)
    }

    /// Waits (up to 30 s) until the delivery of `event_id` to `plugin` is marked started in the
    /// store (`"running": true`): its plugin call holds a permit and runs, or is about to. Tests
    /// that act "while the call runs" wait for this rather than sleeping: on a loaded machine
    /// the hand-over from the answered request to the call can take longer than any fixed sleep.
    /// Panics with the gateway's log if it never shows.
    pub fn wait_running(&self, event_id: &str, plugin: &str) {
        assert!(
            wait_until(Duration::from_secs(30), || self.delivery(event_id, plugin)
                ["running"]
                == true),
            "the call of {event_id} to {plugin} never started: {}\n{}",
            self.delivery(event_id, plugin),
            self.log()
        );
    }

    /// The calls a `testkit` instance recorded in `data/<name>.jsonl` (its shutdown records
    /// left out).
    pub fn calls(&self, name: &str) -> Vec<serde_json::Value> {
        read_jsonl(&self.dir.join(format!("data/{name}.jsonl")))
            .into_iter()
            .filter(|l| l["outcome"] != "shutdown")
            .collect()
    }
}

/// Runs `gateway --config <config> <args>`; returns (exit code, stdout, stderr).
pub fn run_cli(config: &Path, args: &[&str]) -> (i32, String, String) {
    run_cli_with_env(config, args, &[])
}

/// [`run_cli`] with extra environment variables.
pub fn run_cli_with_env(
    config: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (i32, String, String) {
    let mut cmd = Command::new(&binaries().gateway);
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env_remove("GATEWAY_CONFIG")
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run gateway cli");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Reads a JSON Lines file (missing file = no lines). Only complete lines count: a plugin
/// may be appending while a test polls, and a read can see part of that write, so text after
/// the last newline is left for the next read. A malformed complete line still panics.
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let end = bytes.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    let complete = std::str::from_utf8(&bytes[..end])
        .unwrap_or_else(|e| panic!("{} is not UTF-8: {e}", path.display()));
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Like [`read_jsonl`], for a file a plugin was appending to when its process was killed: a
/// write cut by the kill leaves part of a line, which the plugin ends with a newline when it
/// opens the file again (so nothing later is glued to it). Returns the whole lines and how
/// many lines were not JSON; the caller bounds that by the number of kills.
pub fn read_jsonl_torn(path: &Path) -> (Vec<serde_json::Value>, usize) {
    let bytes = std::fs::read(path).unwrap_or_default();
    let end = bytes.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    let mut torn = 0;
    let lines = String::from_utf8_lossy(&bytes[..end])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let parsed = serde_json::from_str(l).ok();
            torn += usize::from(parsed.is_none());
            parsed
        })
        .collect();
    (lines, torn)
}

/// A delivery's attempt history (as `events show` and the API print it) as (generation,
/// attempt, outcome), oldest first.
pub fn attempts(delivery: &serde_json::Value) -> Vec<(u64, u64, String)> {
    delivery["history"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            (
                a["generation"].as_u64().unwrap_or(u64::MAX),
                a["attempt"].as_u64().unwrap_or(u64::MAX),
                a["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Polls `check` every 20 ms until it returns true or `timeout` passes; returns the last result.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads one sample from Prometheus text: the value of the line starting with `series` (name
/// plus exact label set as printed, e.g. `gateway_requests_total{app="a",status="200",reason="stored"}`).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}
