//! The fixture libraries compiled without cargo, once per process and reused when present
//! (named after a hash of their inputs): the raw-ABI fixtures of `raw-plugins/` with rustc, and
//! the C plugins (the crashing C fixture, the example in `examples/c-plugin`) with cc.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::workspace_root;

/// The raw-ABI fixture libraries compiled from `raw-plugins/` (see the docs of
/// `raw-plugins/raw_plugin.rs` for what each one does).
#[derive(Debug, Clone)]
pub struct RawFixtures {
    /// Well-formed; counts buffers and `free_buf` calls.
    pub counting: PathBuf,
    /// The same well-formed ABI 1.0 plugin (no batch entry) in a library of its own, so tests
    /// of it never touch `counting`'s counters.
    pub legacy: PathBuf,
    /// ABI major 2.
    pub bad_major: PathBuf,
    /// Descriptor smaller than the host's.
    pub small_struct: PathBuf,
    /// ABI 1.2, newer than the host.
    pub newer_minor: PathBuf,
    /// ABI 1.1 with a descriptor of the 1.0 size.
    pub short_1_1: PathBuf,
    /// ABI 1.1 with a batch entry that can fail on demand.
    pub batch: PathBuf,
    /// Exports `gateway_plugin_v2` only.
    pub wrong_symbol: PathBuf,
    /// The entry returns null.
    pub null_descriptor: PathBuf,
    /// `name` is null.
    pub null_name: PathBuf,
    /// `version` is not UTF-8.
    pub bad_utf8_version: PathBuf,
    /// A plain shared library exporting `add_numbers`.
    pub not_a_plugin: PathBuf,
}

/// Compiles the raw fixtures with `rustc` (`$RUSTC` or `rustc`) into `<out_dir>/raw-plugins/`,
/// once per process. Outputs are named after a hash of their source and variant and reused when
/// present, so runs never overwrite a library another process may have loaded. Pass the test's
/// `env!("CARGO_TARGET_TMPDIR")`.
///
/// # Panics
/// When rustc fails, with its output.
pub fn raw_fixtures(out_dir: &Path) -> RawFixtures {
    static FIXTURES: OnceLock<Result<RawFixtures, String>> = OnceLock::new();
    match FIXTURES.get_or_init(|| compile_raw_fixtures(out_dir)) {
        Ok(f) => f.clone(),
        Err(e) => panic!("compiling the raw fixtures failed: {e}"),
    }
}

/// One raw-ABI fixture, `tests/raw-plugins/<file>` compiled with `--cfg <cfg>` (when given)
/// into `<out_dir>/raw-plugins/lib<name>-<hash>.so`, named after a hash of the source and the
/// cfg and reused when present (a library another process may have loaded is never
/// overwritten). Pass the test's `env!("CARGO_TARGET_TMPDIR")`.
pub fn compile_raw_plugin(
    out_dir: &Path,
    file: &str,
    name: &str,
    cfg: Option<&str>,
) -> Result<PathBuf, String> {
    let source = workspace_root().join("tests/raw-plugins").join(file);
    let text = std::fs::read(&source).map_err(|e| format!("{}: {e}", source.display()))?;
    let dir = out_dir.join("raw-plugins");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let hash = {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        (&text, cfg).hash(&mut h);
        h.finish()
    };
    let lib = dir.join(format!("lib{name}-{hash:016x}.so"));
    if lib.exists() {
        return Ok(lib);
    }
    let tmp = dir.join(format!("{name}-{hash:016x}.{}.tmp", std::process::id()));
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut cmd = Command::new(rustc);
    cmd.args(["--edition", "2021", "--crate-type", "cdylib", "-O"])
        .args(["--crate-name", name, "-o"])
        .arg(&tmp)
        .arg(&source);
    if let Some(cfg) = cfg {
        cmd.args(["--cfg", cfg]);
    }
    let run = cmd.output().map_err(|e| format!("rustc: {e}"))?;
    if !run.status.success() {
        return Err(String::from_utf8_lossy(&run.stderr).into_owned());
    }
    std::fs::rename(&tmp, &lib).map_err(|e| format!("{}: {e}", lib.display()))?;
    Ok(lib)
}

fn compile_raw_fixtures(out_dir: &Path) -> Result<RawFixtures, String> {
    let src = workspace_root().join("tests/raw-plugins");
    let dir = out_dir.join("raw-plugins");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let plugin = src.join("raw_plugin.rs");
    let variants: [(&str, &Path, Option<&str>); 12] = [
        ("counting", &plugin, None),
        ("legacy", &plugin, None),
        ("bad_major", &plugin, Some("bad_major")),
        ("small_struct", &plugin, Some("small_struct")),
        ("newer_minor", &plugin, Some("newer_minor")),
        ("short_1_1", &plugin, Some("short_1_1")),
        ("batch", &plugin, Some("batch")),
        ("wrong_symbol", &plugin, Some("wrong_symbol")),
        ("null_descriptor", &plugin, Some("null_descriptor")),
        ("null_name", &plugin, Some("null_name")),
        ("bad_utf8_version", &plugin, Some("bad_utf8_version")),
        ("not_a_plugin", &src.join("not_a_plugin.rs"), None),
    ];
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut outputs = BTreeMap::new();
    let mut running = Vec::new();
    for (name, source, cfg) in variants {
        let text =
            std::fs::read(source).map_err(|e| format!("cannot read {}: {e}", source.display()))?;
        let hash = {
            use std::hash::{Hash, Hasher};
            let mut h = std::hash::DefaultHasher::new();
            (&text, cfg).hash(&mut h);
            h.finish()
        };
        let output = dir.join(format!(
            "{}{name}-{hash:016x}{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        ));
        outputs.insert(name, output.clone());
        if output.exists() {
            continue;
        }
        let tmp = dir.join(format!("{name}-{hash:016x}.{}.tmp", std::process::id()));
        let mut cmd = Command::new(&rustc);
        cmd.args(["--edition", "2021", "--crate-type", "cdylib", "-O"])
            .args(["-C", "strip=debuginfo", "--crate-name", name])
            .arg("-o")
            .arg(&tmp)
            .arg(source);
        if let Some(cfg) = cfg {
            cmd.args(["--cfg", cfg]);
        }
        let child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", Path::new(&rustc).display()))?;
        running.push((name, child, tmp, output));
    }
    for (name, child, tmp, output) in running {
        let out = child
            .wait_with_output()
            .map_err(|e| format!("rustc for {name}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "rustc failed for {name} ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        std::fs::rename(&tmp, &output)
            .map_err(|e| format!("cannot move {} to {}: {e}", tmp.display(), output.display()))?;
    }
    let mut take = |name: &str| {
        outputs
            .remove(name)
            .ok_or_else(|| format!("no output for {name}"))
    };
    Ok(RawFixtures {
        counting: take("counting")?,
        legacy: take("legacy")?,
        bad_major: take("bad_major")?,
        small_struct: take("small_struct")?,
        newer_minor: take("newer_minor")?,
        short_1_1: take("short_1_1")?,
        batch: take("batch")?,
        wrong_symbol: take("wrong_symbol")?,
        null_descriptor: take("null_descriptor")?,
        null_name: take("null_name")?,
        bad_utf8_version: take("bad_utf8_version")?,
        not_a_plugin: take("not_a_plugin")?,
    })
}

/// `raw-plugins/c_plugin.c` compiled with the C compiler (`$CC` or `cc`) into
/// `<out_dir>/raw-plugins/`, once per process (named after a hash of its source, reused when
/// present): a plugin in C that crashes on demand (see the file).
///
/// # Panics
/// When the compiler fails, with its output.
pub fn c_fixture(out_dir: &Path) -> PathBuf {
    static C: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = C.get_or_init(|| {
        let source = workspace_root().join("tests/raw-plugins/c_plugin.c");
        compile_c_plugin(&source, "cplugin", &["-O1", "-Wall", "-Werror"], out_dir)
    });
    match built {
        Ok(p) => p.clone(),
        Err(e) => panic!("compiling the C fixture failed: {e}"),
    }
}

/// The example plugin in C, `examples/c-plugin/example.c`, compiled as its README says plus
/// `-std=c11 -Wall -Wextra -Werror` into `<out_dir>/raw-plugins/`, once per process (named after
/// a hash of its source, the header and the flags; reused when present).
///
/// # Panics
/// When the compiler fails (a warning included), with its output.
pub fn c_example(out_dir: &Path) -> PathBuf {
    static C: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = C.get_or_init(|| {
        let source = workspace_root().join("examples/c-plugin/example.c");
        let flags = ["-std=c11", "-O1", "-Wall", "-Wextra", "-Werror"];
        compile_c_plugin(&source, "example_c", &flags, out_dir)
    });
    match built {
        Ok(p) => p.clone(),
        Err(e) => panic!("compiling examples/c-plugin/example.c failed: {e}"),
    }
}

/// `cc -shared -fPIC <flags> -I crates/plugin/include -o <out_dir>/raw-plugins/lib<stem>-<hash>.so
/// <source>`, the hash covering the source, the header and the flags, so a changed input never
/// reuses (or overwrites) a library another test process may have loaded.
fn compile_c_plugin(
    source: &Path,
    stem: &str,
    flags: &[&str],
    out_dir: &Path,
) -> Result<PathBuf, String> {
    let include = workspace_root().join("crates/plugin/include");
    let header = include.join("gateway_plugin.h");
    let mut text =
        std::fs::read(source).map_err(|e| format!("cannot read {}: {e}", source.display()))?;
    text.extend(
        std::fs::read(&header).map_err(|e| format!("cannot read {}: {e}", header.display()))?,
    );
    let hash = {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        (&text, flags).hash(&mut h);
        h.finish()
    };
    let dir = out_dir.join("raw-plugins");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let output = dir.join(format!("lib{stem}-{hash:016x}.so"));
    if output.exists() {
        return Ok(output);
    }
    let tmp = dir.join(format!("{stem}-{hash:016x}.{}.tmp", std::process::id()));
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let out = Command::new(&cc)
        .args(["-shared", "-fPIC"])
        .args(flags)
        .arg("-I")
        .arg(&include)
        .arg("-o")
        .arg(&tmp)
        .arg(source)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", Path::new(&cc).display()))?;
    if !out.status.success() {
        return Err(format!(
            "cc failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::rename(&tmp, &output).map_err(|e| format!("cannot move {}: {e}", tmp.display()))?;
    Ok(output)
}
