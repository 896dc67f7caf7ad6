//! What the loader refuses, each with its message naming the file: a wrong ABI major or newer
//! minor, a descriptor too small for its version, a missing entry symbol, a plain shared
//! library, null or non-UTF-8 descriptor fields, null entry points, a text file, a missing file;
//! the process surviving them all; and an `init` that returns success without an instance.
//! Part of `plugin_host.rs`.

use std::path::Path;

use gateway_e2e::build_plugins;
use gateway_e2e::hostkit::{call, instantiate, open, quiet};
use gateway_plugin::abi::{ABI_MAJOR, ABI_MINOR, DESCRIPTOR_SIZE_1_0};
use gateway_plugin::host::{CallOutcome, InitError, Library, LoadError};
use serde_json::json;

use super::helpers::raw;

fn load_err(path: &Path) -> (LoadError, String) {
    let err = Library::open(path).expect_err("must be refused");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "message must name the file: {msg}"
    );
    (err, msg)
}

/// "rebuild it against gateway-plugin 1.x" named a crate version that does not exist (the SDK
/// is 0.1.0; 1 is the ABI's major): the message speaks of ABI versions only.
#[test]
fn wrong_abi_major_is_refused_with_both_values() {
    let path = raw().bad_major;
    let (err, msg) = load_err(&path);
    assert_eq!(
        err,
        LoadError::AbiMajor {
            path: path.clone(),
            found: 2,
            minor: 0,
            // The fixture's descriptor stops before `build_tag`.
            build_tag: None,
        }
    );
    assert!(
        msg.contains(&format!(
            "the plugin was built for plugin ABI 2.0; this gateway speaks ABI {ABI_MAJOR}.x \
             ({ABI_MAJOR}.0–{ABI_MAJOR}.{ABI_MINOR})"
        )),
        "{msg}"
    );
    assert!(!msg.contains("gateway-plugin 1.x"), "{msg}");
    assert!(!msg.contains("build tag"), "no tag to show: {msg}");
}

#[test]
fn too_small_descriptor_is_refused_with_both_sizes_and_its_build_tag() {
    let path = raw().small_struct;
    let (err, msg) = load_err(&path);
    // abi_major, abi_minor, struct_size (u32 each), padding, build_tag (a pointer).
    let found = (3 * 4 + 4 + std::mem::size_of::<usize>()) as u32;
    assert!(found < DESCRIPTOR_SIZE_1_0);
    assert_eq!(
        err,
        LoadError::StructSize {
            path: path.clone(),
            found,
            needed: DESCRIPTOR_SIZE_1_0,
            build_tag: Some("raw fixture; small".into()),
        }
    );
    assert!(
        msg.contains(&format!(
            "descriptor is {found} bytes, its ABI version needs at least {DESCRIPTOR_SIZE_1_0}"
        )),
        "{msg}"
    );
    assert!(msg.contains("(build tag: raw fixture; small)"), "{msg}");
}

#[test]
fn newer_abi_minor_is_refused_with_both_versions_and_its_build_tag() {
    let path = raw().newer_minor;
    let (err, msg) = load_err(&path);
    assert_eq!(
        err,
        LoadError::AbiMinor {
            path: path.clone(),
            found: ABI_MINOR + 1,
            build_tag: Some("raw fixture; no SDK".into()),
        }
    );
    assert!(
        msg.contains(&format!(
            "was built for plugin ABI {ABI_MAJOR}.{}; this gateway speaks ABI {ABI_MAJOR}.x \
             ({ABI_MAJOR}.0–{ABI_MAJOR}.{ABI_MINOR})",
            ABI_MINOR + 1
        )),
        "{msg}"
    );
    assert!(msg.contains("(build tag: raw fixture; no SDK)"), "{msg}");
    assert!(!msg.contains("gateway-plugin 1.x"), "{msg}");
}

/// The hint used to say only "build it with gateway_plugin::export_plugin!": authors in C (or
/// any language) get the symbol's C declaration, the header and the C example.
#[test]
fn missing_entry_symbol_is_refused_with_a_hint_for_every_language() {
    let path = raw().wrong_symbol;
    let (err, msg) = load_err(&path);
    assert_eq!(err, LoadError::NoEntry { path: path.clone() });
    assert!(
        msg.contains("does not export the function `gateway_plugin_v1`"),
        "{msg}"
    );
    assert!(
        msg.contains("const GwPluginDescriptor *gateway_plugin_v1(void)"),
        "{msg}"
    );
    assert!(
        msg.contains("crates/plugin/include/gateway_plugin.h"),
        "{msg}"
    );
    assert!(msg.contains("examples/c-plugin/"), "{msg}");
    assert!(msg.contains("export_plugin!"), "{msg}");
}

#[test]
fn plain_shared_library_is_refused() {
    let path = raw().not_a_plugin;
    let (err, msg) = load_err(&path);
    assert_eq!(err, LoadError::NoEntry { path: path.clone() });
    assert!(msg.contains("is not a gateway plugin"), "{msg}");
}

#[test]
fn null_descriptor_is_refused() {
    let path = raw().null_descriptor;
    let (err, _) = load_err(&path);
    assert_eq!(err, LoadError::NullDescriptor { path: path.clone() });
}

#[test]
fn null_or_non_utf8_descriptor_strings_are_refused() {
    let f = raw();
    let (err, _) = load_err(&f.null_name);
    assert_eq!(
        err,
        LoadError::BadString {
            path: f.null_name.clone(),
            field: "name"
        }
    );
    let (err, _) = load_err(&f.bad_utf8_version);
    assert_eq!(
        err,
        LoadError::BadString {
            path: f.bad_utf8_version.clone(),
            field: "version"
        }
    );
}

#[test]
fn text_file_named_so_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("libfake.so");
    std::fs::write(&path, "this is not a shared library\n").expect("write");
    let (err, msg) = load_err(&path);
    match err {
        LoadError::Open { path: p, reason } => {
            assert_eq!(p, path);
            assert!(!reason.is_empty());
        }
        other => panic!("expected Open, got {other:?}"),
    }
    assert!(msg.contains("cannot load plugin library"), "{msg}");
    // A folder is no library either.
    let (err, _) = load_err(dir.path());
    assert!(matches!(err, LoadError::Open { .. }), "{err:?}");
}

#[test]
fn missing_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("libnothere.so");
    let (err, msg) = load_err(&path);
    assert_eq!(err, LoadError::NotFound { path: path.clone() });
    assert!(msg.contains("does not exist"), "{msg}");
}

#[test]
fn the_process_survives_every_load_error_and_still_loads_plugins() {
    let f = raw();
    let dir = tempfile::tempdir().expect("tempdir");
    let text = dir.path().join("libtext.so");
    std::fs::write(&text, "not ELF").expect("write");
    let bad: [&Path; 10] = [
        &f.bad_major,
        &f.small_struct,
        &f.newer_minor,
        &f.wrong_symbol,
        &f.not_a_plugin,
        &f.null_descriptor,
        &f.null_name,
        &f.bad_utf8_version,
        &text,
        &dir.path().join("missing.so"),
    ];
    // Twice: a refused library may be opened again and is refused the same way.
    for _ in 0..2 {
        for path in bad {
            assert!(Library::open(path).is_err(), "{}", path.display());
        }
    }
    let lib = open(&build_plugins().testkit);
    let kit = instantiate(&lib, "kit", json!({}), dir.path());
    assert_eq!(call(&kit, 1, "t"), CallOutcome::Ok);
}

/// A descriptor that claims ABI 1.1 must be as long as the 1.1 layout: a 1.0-sized one would
/// make the host read `handle_batch` past its end.
#[test]
fn a_1_1_descriptor_of_the_1_0_size_is_refused() {
    use gateway_plugin::abi::DESCRIPTOR_SIZE;
    let path = raw().short_1_1;
    let (err, msg) = load_err(&path);
    assert_eq!(
        err,
        LoadError::StructSize {
            path: path.clone(),
            found: DESCRIPTOR_SIZE_1_0,
            needed: DESCRIPTOR_SIZE,
            build_tag: Some("raw fixture; no SDK".into()),
        }
    );
    assert!(
        msg.contains(&format!(
            "descriptor is {DESCRIPTOR_SIZE_1_0} bytes, its ABI version needs at least \
             {DESCRIPTOR_SIZE}"
        )),
        "{msg}"
    );
}

/// `raw-plugins/null_entries.rs` compiled once per process for each of its variants, into
/// `<CARGO_TARGET_TMPDIR>/raw-plugins/` (named after a hash of the source and the variant, so a
/// library another process may have loaded is never overwritten): `(field, library)`.
fn null_entry_fixtures() -> Vec<(&'static str, std::path::PathBuf)> {
    use std::sync::OnceLock;
    static BUILT: OnceLock<Result<Vec<(&'static str, std::path::PathBuf)>, String>> =
        OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR"));
        ["init", "handle", "free_buf", "shutdown"]
            .into_iter()
            .map(|field| {
                let cfg = format!("null_{field}");
                gateway_e2e::compile_raw_plugin(out, "null_entries.rs", &cfg, Some(&cfg))
                    .map(|lib| (field, lib))
            })
            .collect()
    });
    match built {
        Ok(libs) => libs.clone(),
        Err(e) => panic!("compiling raw-plugins/null_entries.rs failed: {e}"),
    }
}

/// A descriptor whose `init`, `handle`, `free_buf` or `shutdown` is null was read into a
/// non-nullable function pointer (undefined behaviour) and crashed the process when called (at
/// the latest at `shutdown`). It is refused at load, with the file and the field named, by the
/// loader, by `plugins inspect` and by `check`, and nothing crashes.
#[test]
fn a_descriptor_with_a_null_entry_point_is_refused_at_load() {
    use gateway_e2e::harness::{base_config, run_cli};
    let nowhere = Path::new("/nonexistent/gateway.toml");
    for (field, lib) in null_entry_fixtures() {
        let (err, msg) = load_err(&lib);
        assert_eq!(
            err,
            LoadError::NullEntry {
                path: lib.clone(),
                field
            },
            "{msg}"
        );
        assert!(msg.contains(&format!("`{field}` is null")), "{msg}");
        let shown = lib.display().to_string();
        let (code, out, err) = run_cli(nowhere, &["plugins", "inspect", &shown]);
        assert_eq!(code, 1, "{field}: refused, not crashed: {out}{err}");
        assert!(
            err.contains(&shown) && err.contains(&format!("`{field}` is null")),
            "{field}: {err}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "{}\n[[apps]]\nname = \"hire\"\npath = \"/hook\"\n\n[[plugins]]\nname = \"bad\"\nlibrary = \"{shown}\"\n",
                base_config()
            ),
        )
        .expect("write gateway.toml");
        let (code, out, err) = run_cli(&config, &["check"]);
        assert_eq!(code, 3, "{field}: refused, not crashed: {out}{err}");
        assert!(
            err.contains(&shown) && err.contains(&format!("`{field}` is null")),
            "{field}: {out}{err}"
        );
    }
}

/// `init` returning success without writing an instance is a refusal, not an instance wrapping a
/// null pointer (every later call would hand the plugin null).
#[test]
fn init_success_without_an_instance_is_refused() {
    let lib = open(&raw().legacy);
    let dir = tempfile::tempdir().expect("tempdir");
    let err = lib
        .instantiate(
            "hollow",
            &json!({"null_instance": true}),
            dir.path(),
            quiet(),
        )
        .expect_err("no instance");
    assert_eq!(
        err,
        InitError::Refused {
            instance: "hollow".into(),
            message: "init returned success but no instance".into()
        }
    );
}
