//! Standard output of the CLI commands (never of `run`, which writes only logs, to stderr).
//!
//! `println!` panics when stdout is a pipe whose reader went away (`gateway events list | head`):
//! the process ignores SIGPIPE, as every Rust program does, so the write fails with `EPIPE`.
//! Every command prints through [`outln!`] instead: once the reader is gone the rest of the
//! output is dropped, and the command still finishes what it does (a replay asked for is still
//! queued) and exits with its own code, quietly. Any other write error (a full disk) also drops
//! the rest, and [`finish`] reports it and makes the command fail: its output is incomplete (the
//! message says when the command's work itself succeeded).
//!
//! `main` also installs [`quiet_broken_pipe`] for the commands, in case a `println!` elsewhere
//! meets a closed pipe: that panic becomes a quiet exit 141 (128 + SIGPIPE, what a shell shows
//! for a process SIGPIPE ended).

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// Set once a write failed: nothing more is written.
static STOPPED: AtomicBool = AtomicBool::new(false);
/// The first write error that was not a closed pipe.
static FAILED: OnceLock<String> = OnceLock::new();

/// Exit status of a command whose output pipe closed under a `println!` (128 + SIGPIPE).
pub const EXIT_BROKEN_PIPE: i32 = 141;

/// Writes `args` and a newline to stdout, unless an earlier write failed; records a failure.
pub fn line(args: std::fmt::Arguments<'_>) {
    write(|out| writeln!(out, "{args}"));
}

/// Writes `bytes` to stdout as they are (generated text), like [`line()`].
pub fn bytes(bytes: &[u8]) {
    write(|out| out.write_all(bytes));
}

fn write(f: impl FnOnce(&mut std::io::StdoutLock<'static>) -> std::io::Result<()>) {
    if STOPPED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = f(&mut out) {
        stop(&e);
    }
}

fn stop(e: &std::io::Error) {
    STOPPED.store(true, Ordering::Relaxed);
    if e.kind() != std::io::ErrorKind::BrokenPipe {
        let _ = FAILED.set(e.to_string());
    }
}

/// Flushes stdout at the end of a command. A reader that went away is not an error (`code`
/// stands); any other write error is reported and the command fails.
pub fn finish(code: ExitCode) -> ExitCode {
    if !STOPPED.load(Ordering::Relaxed) {
        if let Err(e) = std::io::stdout().lock().flush() {
            stop(&e);
        }
    }
    match FAILED.get() {
        Some(e) => {
            // Whether the command's work was done is not in doubt: say so, so that an operator
            // does not repeat a replay or a purge that went through.
            if code == ExitCode::SUCCESS {
                eprintln!(
                    "error: cannot write to stdout: {e} (the command itself succeeded: only its \
                     output is incomplete)"
                );
            } else {
                eprintln!("error: cannot write to stdout: {e}");
            }
            ExitCode::FAILURE
        }
        None => code,
    }
}

/// Makes the panic of a `println!` into a closed pipe ("failed printing to stdout: Broken
/// pipe") a quiet exit 141, for the CLI commands (not `run`): the backstop for output that does
/// not go through [`outln!`]. Every other panic is reported as before.
pub fn quiet_broken_pipe() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if is_broken_pipe_panic(message) {
            std::process::exit(EXIT_BROKEN_PIPE);
        }
        previous(info);
    }));
}

/// Whether a panic message is std's for a `print!` into a closed pipe.
fn is_broken_pipe_panic(message: &str) -> bool {
    message.starts_with("failed printing to stdout")
        && message.to_ascii_lowercase().contains("broken pipe")
}

/// `println!` for the CLI commands, through [`line()`]: a closed pipe is not a panic.
macro_rules! outln {
    () => {
        $crate::ops::out::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::ops::out::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

#[cfg(test)]
mod tests {
    use super::is_broken_pipe_panic;

    #[test]
    fn only_a_closed_stdout_is_quiet() {
        let panic = format!(
            "failed printing to stdout: {}",
            std::io::Error::from_raw_os_error(32)
        );
        assert!(is_broken_pipe_panic(&panic), "{panic}");
        assert!(!is_broken_pipe_panic(
            "failed printing to stdout: No space left on device (os error 28)"
        ));
        assert!(!is_broken_pipe_panic(
            "failed printing to stderr: Broken pipe (os error 32)"
        ));
        assert!(!is_broken_pipe_panic("index out of bounds"));
    }
}
