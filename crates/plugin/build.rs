//! Records the compiler and target into `GATEWAY_PLUGIN_BUILD_TAG`, which every plugin's descriptor
//! carries so a mismatch can be diagnosed from `gateway check` output.

use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "rustc unknown".into());
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown-target".into());
    let sdk = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rustc-env=GATEWAY_PLUGIN_BUILD_TAG=gateway-plugin {sdk}; {version}; {target}");
    println!("cargo:rerun-if-env-changed=RUSTC");
}
