//! A descriptor as the host reads and shows it: the C header's sizes, offsets and constants equal
//! `abi.rs`, `plugins inspect` prints one without a config or a call, and libraries and
//! instances report theirs through their accessors and `Debug`. Part of `plugin_host.rs`.

use std::path::Path;

use gateway_e2e::build_plugins;
use gateway_e2e::hostkit::{instantiate, open};
use gateway_plugin::abi::{ABI_MINOR, DESCRIPTOR_SIZE_1_0};
use serde_json::json;

use super::helpers::raw;

/// `crates/plugin/include/gateway_plugin.h` and `abi.rs` describe the same ABI: every size,
/// offset and constant the C compiler sees in the header equals Rust's.
#[test]
fn the_c_header_matches_the_rust_abi() {
    use gateway_plugin::abi::{self, GwBuf, GwStr, HostApi, PluginDescriptor};
    use std::mem::{offset_of, size_of};
    let root = gateway_e2e::workspace_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = dir.path().join("header_layout");
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let out = std::process::Command::new(&cc)
        .args(["-Wall", "-Werror", "-I"])
        .arg(root.join("crates/plugin/include"))
        .arg("-o")
        .arg(&exe)
        .arg(root.join("tests/raw-plugins/header_layout.c"))
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = std::process::Command::new(&exe).output().expect("run");
    let c: std::collections::HashMap<String, u64> = String::from_utf8_lossy(&printed.stdout)
        .lines()
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect();
    // (the name the C program prints, Rust's value)
    macro_rules! size {
        ($c:literal, $t:ty) => {
            (concat!("sizeof ", $c), size_of::<$t>() as u64)
        };
    }
    macro_rules! off {
        ($c:literal, $t:ty, $f:ident) => {
            (
                concat!("offsetof ", $c, ".", stringify!($f)),
                offset_of!($t, $f) as u64,
            )
        };
    }
    macro_rules! constant {
        ($c:literal, $v:expr) => {
            (concat!("const ", $c), u64::from($v))
        };
    }
    let rust: Vec<(&str, u64)> = vec![
        size!("GwStr", GwStr),
        off!("GwStr", GwStr, ptr),
        off!("GwStr", GwStr, len),
        size!("GwBuf", GwBuf),
        off!("GwBuf", GwBuf, ptr),
        off!("GwBuf", GwBuf, len),
        off!("GwBuf", GwBuf, cap),
        size!("GwHostApi", HostApi),
        off!("GwHostApi", HostApi, api_major),
        off!("GwHostApi", HostApi, api_minor),
        off!("GwHostApi", HostApi, struct_size),
        off!("GwHostApi", HostApi, ctx),
        off!("GwHostApi", HostApi, log),
        off!("GwHostApi", HostApi, config_dir),
        off!("GwHostApi", HostApi, instance_name),
        size!("GwPluginDescriptor", PluginDescriptor),
        off!("GwPluginDescriptor", PluginDescriptor, abi_major),
        off!("GwPluginDescriptor", PluginDescriptor, abi_minor),
        off!("GwPluginDescriptor", PluginDescriptor, struct_size),
        off!("GwPluginDescriptor", PluginDescriptor, build_tag),
        off!("GwPluginDescriptor", PluginDescriptor, name),
        off!("GwPluginDescriptor", PluginDescriptor, version),
        off!("GwPluginDescriptor", PluginDescriptor, init),
        off!("GwPluginDescriptor", PluginDescriptor, handle),
        off!("GwPluginDescriptor", PluginDescriptor, free_buf),
        off!("GwPluginDescriptor", PluginDescriptor, shutdown),
        off!("GwPluginDescriptor", PluginDescriptor, handle_batch),
        constant!("GW_ABI_MAJOR", abi::ABI_MAJOR),
        constant!("GW_ABI_MINOR", abi::ABI_MINOR),
        constant!("GW_DESCRIPTOR_SIZE_1_0", abi::DESCRIPTOR_SIZE_1_0),
        constant!("GW_INIT_OK", abi::INIT_OK),
        constant!("GW_INIT_ERROR", abi::INIT_ERROR),
        constant!("GW_INIT_PANICKED", abi::INIT_PANICKED),
        constant!("GW_OUTCOME_OK", abi::OUTCOME_OK),
        constant!("GW_OUTCOME_RETRY", abi::OUTCOME_RETRY),
        constant!("GW_OUTCOME_REJECT", abi::OUTCOME_REJECT),
        constant!("GW_OUTCOME_PANICKED", abi::OUTCOME_PANICKED),
        constant!("GW_LOG_ERROR", abi::LOG_ERROR),
        constant!("GW_LOG_WARN", abi::LOG_WARN),
        constant!("GW_LOG_INFO", abi::LOG_INFO),
        constant!("GW_LOG_DEBUG", abi::LOG_DEBUG),
        constant!("GW_LOG_TRACE", abi::LOG_TRACE),
    ];
    for (name, value) in &rust {
        assert_eq!(c.get(*name), Some(value), "{name}: header vs abi.rs");
    }
    assert_eq!(
        c.len(),
        rust.len(),
        "the header program prints what the test checks: {c:?}"
    );
}

#[test]
fn plugins_inspect_shows_a_descriptor_without_a_config_or_a_call() {
    use gateway_e2e::harness::run_cli;
    let nowhere = Path::new("/nonexistent/gateway.toml");
    let kit = build_plugins().testkit;
    let (code, out, err) = run_cli(nowhere, &["plugins", "inspect", &kit.display().to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("name      testkit"), "{out}");
    assert!(out.contains("abi       1.1"), "{out}");
    assert!(out.contains("batch     yes"), "{out}");
    assert!(out.contains("panics contained"), "{out}");
    let legacy = raw().legacy;
    let (code, out, _) = run_cli(
        nowhere,
        &["plugins", "inspect", &legacy.display().to_string()],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("abi       1.0") && out.contains("batch     no"),
        "{out}"
    );
    assert!(out.contains("not contained"), "{out}");
    let (code, _, err) = run_cli(
        nowhere,
        &[
            "plugins",
            "inspect",
            &raw().not_a_plugin.display().to_string(),
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("is not a gateway plugin"), "{err}");
}

/// What the loader read from a descriptor, through the accessors and `Debug` (which the gateway
/// logs and `plugins inspect` print): an SDK plugin of the current ABI and a raw 1.0 one.
#[test]
fn libraries_and_instances_report_their_descriptor_and_name() {
    use gateway_plugin::abi::DESCRIPTOR_SIZE;
    let kit_path = build_plugins().testkit;
    let kit = open(&kit_path);
    assert_eq!(
        (kit.abi_minor(), kit.struct_size(), kit.has_batch_entry()),
        (ABI_MINOR, DESCRIPTOR_SIZE, true)
    );
    let shown = format!("{kit:?}");
    for part in [
        format!("{:?}", kit_path),
        r#"name: "testkit""#.to_owned(),
        format!("version: {:?}", kit.version()),
        format!("build_tag: {:?}", kit.build_tag()),
    ] {
        assert!(shown.contains(&part), "{part} in {shown}");
    }

    let legacy = open(&raw().legacy);
    assert_eq!(
        (
            legacy.abi_minor(),
            legacy.struct_size(),
            legacy.has_batch_entry()
        ),
        (0, DESCRIPTOR_SIZE_1_0, false)
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let inst = instantiate(&kit, "kit-7", json!({}), dir.path());
    assert_eq!(inst.name(), "kit-7");
    assert_eq!(inst.library().name(), "testkit");
    let shown = format!("{inst:?}");
    assert!(
        shown.contains(r#"name: "kit-7""#) && shown.contains(r#"name: "testkit""#),
        "{shown}"
    );
}
