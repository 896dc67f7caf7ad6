//! An isolated plugin's descriptor without an instance, for `gateway check` and `gateway plugins
//! inspect` / `list`: a short-lived
//! child (`gateway plugin-host`, sent `Describe`) loads the library (only if the file it opens
//! hashes to what the gateway examined), reports the descriptor and exits. The library's
//! load-time code runs in that child, never in the process asking; a library the loader refuses
//! comes back as the loader's own message, naming the file.

use std::io::{BufReader, BufWriter};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gateway_plugin::host::DescriptorSummary;

use super::parent::{ended, spawn_host};
use super::wire::{DescribeRequest, FromChild, ToChild};

/// How long the child gets to load the library.
const LOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a child that answered gets to exit before it is killed.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// Loads `library` in a child process and returns its descriptor. `sha256` is the hash of the
/// file the caller examined (`pinned`: the config's pin): the child loads nothing else. The
/// error names the file.
pub fn describe(library: &Path, sha256: &str, pinned: bool) -> Result<DescriptorSummary, String> {
    let shown = library.display();
    let mut child = spawn_host(library).map_err(|e| format!("{shown}: {e}"))?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("{shown}: the plugin process has no pipes"));
    };
    let mut stdin = BufWriter::new(stdin);
    let request = ToChild::Describe(DescribeRequest {
        sha256: sha256.to_owned(),
        pinned,
    });
    let (tx, rx) = mpsc::channel();
    let asked = request.write(&mut stdin);
    // The answer is read on a thread of its own, so a child stuck in the library's load-time
    // code is given up on (and killed) at the timeout.
    let reader = std::thread::spawn(move || {
        let mut out = BufReader::new(stdout);
        loop {
            match FromChild::read(&mut out) {
                Ok(Some(FromChild::Log { .. })) => continue,
                other => {
                    let _ = tx.send(other);
                    return;
                }
            }
        }
    });
    let answer = match &asked {
        Ok(()) => rx.recv_timeout(LOAD_TIMEOUT).ok(),
        // The child went before reading the request: how it ended is told below.
        Err(_) => Some(Ok(None)),
    };
    drop(stdin);
    let result = match answer {
        Some(Ok(Some(FromChild::Described(loaded)))) if loaded.sha256 == sha256 => {
            Ok(loaded.descriptor)
        }
        Some(Ok(Some(FromChild::Described(loaded)))) => Err(format!(
            "{shown}: the plugin process loaded a file with sha256 {}, not the {sha256} examined",
            loaded.sha256
        )),
        Some(Ok(Some(FromChild::InitErr { message, .. }))) => Err(message),
        Some(Ok(Some(_))) => Err(format!("{shown}: the plugin process answered out of turn")),
        Some(Err(e)) if e.kind() != std::io::ErrorKind::UnexpectedEof => Err(format!(
            "{shown}: the plugin process broke the frame protocol ({e})"
        )),
        // The stream ended without an answer: the child died (how is told below).
        Some(_) => Err(String::new()),
        None => Err(format!(
            "{shown}: the plugin process did not load the library within {}s",
            LOAD_TIMEOUT.as_secs()
        )),
    };
    let status = wait_or_kill(&mut child);
    // Not joined: a process the library forked at load may still hold the pipe open; the
    // thread ends with it.
    drop(reader);
    result.map_err(|message| {
        if message.is_empty() {
            format!(
                "{shown}: the plugin process died while loading the library: {}",
                status.unwrap_or_else(|| "it did not end".into())
            )
        } else {
            message
        }
    })
}

/// Waits briefly for the child to exit, then kills it and waits as briefly again (a child stuck
/// in the kernel, say on a hung network mount, is left behind rather than waited for: the
/// command must end); how it ended, when it did.
fn wait_or_kill(child: &mut std::process::Child) -> Option<String> {
    if let Some(status) = wait_for(child, EXIT_WAIT) {
        return Some(status);
    }
    let _ = child.kill();
    wait_for(child, EXIT_WAIT)
}

/// How `child` ended, if it did within `limit`.
fn wait_for(child: &mut std::process::Child, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(ended(status)),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(None) | Err(_) => return None,
        }
    }
}
