//! What the `plugin_cli` tests share: running the binary with no config, writing files, a
//! file's SHA-256. Part of `plugin_cli.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

use gateway_e2e::harness::binaries;

/// Runs `gateway <args>` with no gateway config anywhere; returns (exit code, stdout, stderr).
pub(crate) fn gateway(args: &[&str]) -> (i32, String, String) {
    gateway_with(args, &[])
}

/// [`gateway`] with more environment variables (`env`).
pub(crate) fn gateway_with(args: &[&str], env: &[(&str, &Path)]) -> (i32, String, String) {
    let out = Command::new(&binaries().gateway)
        .args(args)
        .env_remove("GATEWAY_CONFIG")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("run gateway");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(crate) fn text(p: &Path) -> String {
    p.display().to_string()
}

pub(crate) fn write(path: &Path, content: &str) -> PathBuf {
    std::fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path.to_path_buf()
}

pub(crate) fn sha256(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
