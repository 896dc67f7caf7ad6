//! The `stdout = true` sink: lines written straight to the process's standard output (a
//! duplicate of fd 1, unbuffered), one `write` per batch under one lock for the whole process —
//! every instance (two entries, or an instance and the one a reload replaces it with) shares
//! the stream, so their lines never interleave — with the file sink's rule for a write that
//! fails part-way (a full disk under a redirect, a closed pipe): the lines written whole are
//! reported written, the fragment after them is ended before the next batch
//! ([`crate::file::write_lines`]).

use std::fs::File;
use std::os::fd::AsFd;
use std::sync::{Mutex, OnceLock};

use crate::file::{write_lines, AppendError};

/// Standard output, and whether the last write there left a fragment: one per process.
static STDOUT: OnceLock<Mutex<(File, bool)>> = OnceLock::new();

/// An instance's use of the process's standard output.
#[derive(Debug)]
pub(crate) struct StdoutSink {
    out: &'static Mutex<(File, bool)>,
}

impl StdoutSink {
    pub(crate) fn open() -> Result<StdoutSink, String> {
        if let Some(out) = STDOUT.get() {
            return Ok(StdoutSink { out });
        }
        let fd = std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("logger: cannot use standard output: {e}"))?;
        // Two first instances at once: one duplicate is kept, the other closed.
        let out = STDOUT.get_or_init(|| Mutex::new((File::from(fd), false)));
        Ok(StdoutSink { out })
    }

    /// Writes `bytes` (whole lines); see [`write_lines`].
    pub(crate) fn append(&self, bytes: &[u8]) -> Result<(), AppendError> {
        let mut out = self
            .out
            .lock()
            .map_err(|_| std::io::Error::other("standard output lock poisoned"))?;
        let (file, torn) = &mut *out;
        write_lines(file, torn, bytes)
    }
}
