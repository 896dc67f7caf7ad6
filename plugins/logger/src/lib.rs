//! `logger`: appends one JSON object per delivery to a JSON Lines file, or writes it to stdout.
//!
//! Config (`[[plugins]] config`):
//! - `path` — the file (relative paths resolve against the gateway config's folder; parent folders
//!   are created). Required unless `stdout = true`.
//! - `stdout` — write to standard output instead of a file (default `false`).
//! - `fsync` — `"always"` (default: each line is on disk before `Ok`; `path` must then be a regular
//!   file) or `"never"`.
//! - `keep_token` — keep Lark's verification token (`header.token`, or `token` in schema 1.0) in
//!   `event` (default `false`: it is written as `"<redacted>"`; the file then holds no secret).
//!
//! Each line: `delivery_id`, `attempt`, `plugin`, `app`, `event_id`, `event_type`, `received_at`
//! (Unix ms), `logged_at` (Unix ms) and `event`, the full envelope exactly as Lark sent it.
//! Lines are written with one `write` call under a lock, so concurrent deliveries never
//! interleave; the file is opened in append mode. A batch (ABI 1.1) is one `write` of all its
//! lines and one sync. With `fsync = "always"` a delivery returns `Ok` only after its line is on
//! disk; concurrent calls share one `fdatasync` (group commit). Failed writes and syncs, and a
//! file deleted or rotated away, are handled as `file` says. Any I/O error is a `Retry`.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use gateway_plugin::{Delivery, Host, Level, Outcome, Plugin};
use serde::{Deserialize, Serialize};

mod file;
mod stdout;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    path: Option<PathBuf>,
    #[serde(default)]
    stdout: bool,
    #[serde(default)]
    fsync: Fsync,
    #[serde(default)]
    keep_token: bool,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum Fsync {
    #[default]
    Always,
    Never,
}

#[derive(Debug)]
enum Sink {
    File(file::FileSink),
    Stdout(stdout::StdoutSink),
}

/// The plugin instance.
#[derive(Debug)]
pub struct Logger {
    sink: Sink,
    keep_token: bool,
    host: Host,
}

#[derive(Serialize)]
struct Line<'a> {
    delivery_id: &'a str,
    attempt: u32,
    plugin: &'a str,
    app: &'a str,
    event_id: &'a str,
    event_type: &'a str,
    received_at: u64,
    logged_at: u64,
}

/// Appends `line` with `"event": event` as its last field. `event` is JSON already (the
/// delivery's, or a redacted or compacted copy of it), so it is copied, not parsed again.
fn write_line(out: &mut Vec<u8>, line: &Line<'_>, event: &str) -> serde_json::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    if out.last() == Some(&b'}') {
        out.pop();
    }
    out.extend_from_slice(b",\"event\":");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"}\n");
    Ok(())
}

impl Plugin for Logger {
    fn new(config: serde_json::Value, host: Host) -> Result<Self, String> {
        let config: Config =
            serde_json::from_value(config).map_err(|e| format!("logger config: {e}"))?;
        let sink = match (config.stdout, config.path) {
            // The process's stdout is the gateway's stderr there (see `Host::isolated`): the
            // lines would mix with the gateway's log, and a batch over 4 KiB written to that
            // pipe can interleave with another process's lines.
            (true, None) if host.isolated() => {
                return Err("logger config: `stdout = true` cannot be used with isolation = \"process\": an isolated plugin's standard output is the gateway's log (stderr), shared with the gateway's own lines and other plugin processes, where long lines can interleave; use `path`, or run the logger in process".into())
            }
            (true, None) => Sink::Stdout(stdout::StdoutSink::open()?),
            (true, Some(_)) => return Err("logger config: set either `path` or `stdout`".into()),
            (false, None) => return Err("logger config: `path` is required".into()),
            (false, Some(path)) => Sink::File(file::FileSink::open(
                host.resolve_path(path),
                config.fsync == Fsync::Always,
            )?),
        };
        Ok(Logger {
            sink,
            keep_token: config.keep_token,
            host,
        })
    }

    fn handle(&self, d: &Delivery) -> Outcome {
        self.handle_batch(std::slice::from_ref(d))
            .pop()
            .unwrap_or_else(|| Outcome::retry("no outcome"))
    }

    /// Appends every line of the batch with one `write` and syncs once.
    fn handle_batch(&self, deliveries: &[Delivery]) -> Vec<Outcome> {
        let mut bytes = Vec::with_capacity(deliveries.len() * 1024);
        let mut outcomes = Vec::with_capacity(deliveries.len());
        // Where each written line ends in `bytes` (none for a line not written).
        let mut ends = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            let redacted = if self.keep_token {
                None
            } else {
                lark_core::redact::redact_token(d.event.get())
            };
            // One delivery, one line: an envelope sent pretty-printed is written compact.
            let event = redacted.as_deref().unwrap_or(d.event.get());
            let compacted = one_line(event);
            let line = Line {
                delivery_id: &d.delivery_id,
                attempt: d.attempt,
                plugin: &d.plugin,
                app: &d.app,
                event_id: &d.event_id,
                event_type: &d.event_type,
                received_at: d.received_at,
                logged_at: now_ms(),
            };
            let mark = bytes.len();
            match write_line(&mut bytes, &line, compacted.as_deref().unwrap_or(event)) {
                Ok(()) => {
                    outcomes.push(Outcome::Ok);
                    ends.push(Some(bytes.len()));
                }
                Err(e) => {
                    bytes.truncate(mark);
                    outcomes.push(Outcome::reject(format!("cannot serialise line: {e}")));
                    ends.push(None);
                }
            }
        }
        if bytes.is_empty() {
            return outcomes;
        }
        if let Err(e) = self.write(&bytes) {
            self.host
                .log(Level::Warn, &format!("logger write failed: {e}"));
            // The lines in the file whole (and durable) before the error stay written: only
            // the others are retried (a retry of them would write them twice).
            for (o, end) in outcomes.iter_mut().zip(&ends) {
                if *o == Outcome::Ok && end.is_none_or(|end| end > e.whole) {
                    *o = Outcome::retry(format!("write failed: {}", e.error));
                }
            }
        }
        outcomes
    }
}

impl Logger {
    fn write(&self, bytes: &[u8]) -> Result<(), file::AppendError> {
        match &self.sink {
            Sink::Stdout(sink) => sink.append(bytes),
            Sink::File(sink) => sink.append(bytes),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

gateway_plugin::export_plugin!(Logger);

/// `json` without the whitespace between its tokens, when it spans several lines (`None` when it
/// is one line already). Whitespace inside strings is kept (a raw line break cannot be in a JSON
/// string, so every one outside them is insignificant).
fn one_line(json: &str) -> Option<String> {
    // Two single-byte searches (each a fast `memchr`) beat one search for either character.
    if !json.contains('\n') && !json.contains('\r') {
        return None;
    }
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            in_string = c == '"';
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(i: u32) -> Delivery {
        serde_json::from_value(serde_json::json!({
            "delivery_id": format!("d{i}"), "attempt": 1, "plugin": "audit", "app": "hire",
            "event_id": format!("e{i}"), "event_type": "t", "received_at": 5,
            "event": {"schema": "2.0", "header": {"event_id": format!("e{i}"), "token": "v-s3cret"}, "n": i}
        }))
        .expect("delivery")
    }

    #[test]
    fn writes_one_line_per_delivery_with_relative_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = Host::for_tests(dir.path(), "audit");
        let logger = Logger::new(serde_json::json!({"path": "sub/out.jsonl"}), host)
            .expect("config accepted");
        assert_eq!(logger.handle(&delivery(1)), Outcome::Ok);
        assert_eq!(logger.handle(&delivery(2)), Outcome::Ok);
        let text = std::fs::read_to_string(dir.path().join("sub/out.jsonl")).expect("file");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(lines.len(), 2);
        let now = u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_millis(),
        )
        .expect("ms");
        let logged_at = lines[1]["logged_at"].as_u64().expect("logged_at");
        assert!(
            logged_at <= now && now - logged_at < 60_000,
            "logged_at {logged_at} is the time of the write (now {now})"
        );
        assert_eq!(lines[1]["event_id"], "e2");
        assert_eq!(lines[1]["event"]["n"], 2);
        assert_eq!(lines[0]["received_at"], 5);
    }

    #[test]
    fn a_batch_is_one_write_and_the_token_is_redacted_unless_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let read = |name: &str| -> Vec<serde_json::Value> {
            std::fs::read_to_string(dir.path().join(name))
                .expect("file")
                .lines()
                .map(|l| serde_json::from_str(l).expect("json line"))
                .collect()
        };
        let host = Host::for_tests(dir.path(), "audit");
        let logger =
            Logger::new(serde_json::json!({"path": "a.jsonl"}), host.clone()).expect("config");
        let batch = [delivery(1), delivery(2), delivery(3)];
        assert_eq!(logger.handle_batch(&batch), vec![Outcome::Ok; 3]);
        let lines = read("a.jsonl");
        assert_eq!(lines.len(), 3);
        assert!(lines
            .iter()
            .all(|l| l["event"]["header"]["token"] == "<redacted>"));
        assert_eq!(lines[2]["event"]["header"]["event_id"], "e3");
        let keep = Logger::new(
            serde_json::json!({"path": "b.jsonl", "keep_token": true}),
            host,
        )
        .expect("config");
        assert_eq!(keep.handle(&delivery(4)), Outcome::Ok);
        assert_eq!(read("b.jsonl")[0]["event"]["header"]["token"], "v-s3cret");
    }

    #[test]
    fn a_file_deleted_or_rotated_away_is_created_again_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/out.jsonl");
        let logger = Logger::new(
            serde_json::json!({"path": "sub/out.jsonl"}),
            Host::for_tests(dir.path(), "audit"),
        )
        .expect("config");
        assert_eq!(logger.handle(&delivery(1)), Outcome::Ok);
        let mode =
            |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(
            (mode(&path), mode(path.parent().expect("dir"))),
            (0o600, 0o700)
        );
        std::fs::rename(&path, dir.path().join("sub/out.jsonl.1")).expect("rotate");
        assert_eq!(logger.handle(&delivery(2)), Outcome::Ok);
        std::fs::remove_file(&path).expect("rm");
        assert_eq!(logger.handle(&delivery(3)), Outcome::Ok);
        let text = std::fs::read_to_string(&path).expect("created again");
        assert!(
            text.contains("\"d3\"") && !text.contains("\"d2\""),
            "{text}"
        );
        let rotated = std::fs::read_to_string(dir.path().join("sub/out.jsonl.1")).expect("old");
        assert!(
            rotated.contains("\"d1\"") && !rotated.contains("\"d2\""),
            "{rotated}"
        );
    }

    #[test]
    fn a_pretty_printed_envelope_is_written_on_one_line() {
        assert_eq!(super::one_line(r#"{"a": 1}"#), None);
        assert_eq!(
            super::one_line("{\r\"a\": 1\r}").as_deref(),
            Some(r#"{"a":1}"#),
            "carriage returns alone break lines too"
        );
        assert_eq!(
            super::one_line("{\n  \"a\": \"x y\\\" z\",\r\n\t\"b\": [1, 2]\n}").as_deref(),
            Some(r#"{"a":"x y\" z","b":[1,2]}"#)
        );
    }

    #[test]
    fn rejects_bad_config() {
        let host = Host::for_tests("/tmp", "x");
        for bad in [
            serde_json::json!({}),
            serde_json::json!({"path": "a", "stdout": true}),
            serde_json::json!({"path": "a", "fsync": "sometimes"}),
            serde_json::json!({"path": "a", "colour": 1}),
        ] {
            assert!(Logger::new(bad.clone(), host.clone()).is_err(), "{bad}");
        }
    }
}
