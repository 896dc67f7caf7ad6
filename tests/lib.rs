//! Helpers for the end-to-end tests and benchmarks in this package (see `e2e/` and `benches/`):
//! find the workspace, build the real plugin libraries with cargo (once per process), compile the
//! raw-ABI fixture libraries of `raw-plugins/` with rustc, and make deliveries.
//!
//! Everything a test needs is built on demand, so `cargo test` works on a clean clone. These are
//! test helpers: on a failed build they panic with the compiler's output.

pub mod harness;
pub mod hostkit;
pub mod pgkit;
pub mod schema;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use gateway_plugin::Delivery;
use serde_json::{json, value::RawValue};

/// The workspace root (the folder holding the root `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// Which cargo profile to build with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `dev` (the default of `cargo build`): fast to build, what the tests use.
    Debug,
    /// `release`: what the benchmarks use.
    Release,
    /// `panic-abort` (the workspace's profile): a plugin whose panics abort the process.
    PanicAbort,
}

/// One artifact reported by `cargo build --message-format=json`.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The target's name (`logger`, `testkit`, `gateway`...).
    pub name: String,
    /// The target's kinds (`cdylib`, `rlib`, `bin`...).
    pub kinds: Vec<String>,
    /// Every file cargo produced for it.
    pub filenames: Vec<PathBuf>,
    /// The executable, for binaries.
    pub executable: Option<PathBuf>,
}

impl Artifact {
    /// The shared library among `filenames` (`lib<name>.so` on Linux), if any.
    pub fn shared_library(&self) -> Option<&Path> {
        self.filenames
            .iter()
            .find(|f| {
                f.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.starts_with(std::env::consts::DLL_PREFIX)
                        && n.ends_with(std::env::consts::DLL_SUFFIX)
                })
            })
            .map(PathBuf::as_path)
    }
}

/// Runs `cargo build -p <each package>` in the workspace and returns the artifacts cargo reports.
/// Uses `$CARGO` when set (it is, under `cargo test`), else `cargo`; the target directory is
/// cargo's usual one (`CARGO_TARGET_DIR` and cargo config are respected).
pub fn cargo_build(packages: &[&str], profile: Profile) -> Result<Vec<Artifact>, String> {
    let root = workspace_root();
    cargo_build_manifest(&root.join("Cargo.toml"), None, packages, profile)
}

/// [`cargo_build`] for any manifest (another workspace's, such as `examples/plugin-template`),
/// into `target_dir` when given. With no `packages`, builds the manifest's default members.
pub fn cargo_build_manifest(
    manifest: &Path,
    target_dir: Option<&Path>,
    packages: &[&str],
    profile: Profile,
) -> Result<Vec<Artifact>, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(manifest.parent().unwrap_or(Path::new(".")))
        .arg("build")
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--message-format=json-render-diagnostics");
    if let Some(dir) = target_dir {
        cmd.arg("--target-dir").arg(dir);
    }
    // `cargo test` gives the test process the package's own variables (CARGO_MANIFEST_DIR,
    // CARGO_PKG_*, ...). Build scripts such as ring's track some of them, so passing them on
    // would make this build differ from a plain `cargo build` and recompile half the tree.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let keep = [
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_TERM_",
            "CARGO_BUILD_",
            "CARGO_NET_",
            "CARGO_REGISTR",
            "CARGO_HTTP_",
            "CARGO_INCREMENTAL",
            "CARGO_PROFILE_",
        ];
        if key.starts_with("CARGO_") && !keep.iter().any(|k| key.starts_with(k)) || key == "OUT_DIR"
        {
            cmd.env_remove(key);
        }
    }
    match profile {
        Profile::Debug => {}
        Profile::Release => {
            cmd.arg("--release");
        }
        Profile::PanicAbort => {
            cmd.args(["--profile", "panic-abort"]);
        }
    }
    for p in packages {
        cmd.args(["-p", p]);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", Path::new(&cargo).display()))?;
    if !out.status.success() {
        return Err(format!(
            "`cargo build --manifest-path {} -p {}` failed ({}):\n{}",
            manifest.display(),
            packages.join(" -p "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut artifacts = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        artifacts.push(Artifact {
            name: msg["target"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            kinds: strings(&msg["target"]["kind"]),
            filenames: strings(&msg["filenames"])
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            executable: msg["executable"].as_str().map(PathBuf::from),
        });
    }
    Ok(artifacts)
}

/// The plugin libraries built from this workspace.
#[derive(Debug, Clone)]
pub struct PluginPaths {
    /// `plugins/logger`.
    pub logger: PathBuf,
    /// `tests/fixture-plugins/testkit`.
    pub testkit: PathBuf,
}

fn build_plugin_paths(profile: Profile) -> Result<PluginPaths, String> {
    let artifacts = cargo_build(&["logger", "testkit"], profile)?;
    let find = |name: &str| {
        artifacts
            .iter()
            .filter(|a| a.name == name)
            .find_map(Artifact::shared_library)
            .map(Path::to_path_buf)
            .ok_or_else(|| format!("cargo built no shared library for `{name}`"))
    };
    Ok(PluginPaths {
        logger: find("logger")?,
        testkit: find("testkit")?,
    })
}

fn plugins_once(
    cell: &'static OnceLock<Result<PluginPaths, String>>,
    profile: Profile,
) -> PluginPaths {
    match cell.get_or_init(|| build_plugin_paths(profile)) {
        Ok(paths) => paths.clone(),
        Err(e) => panic!("building the plugins failed: {e}"),
    }
}

/// Builds `logger` and `testkit` (debug profile) once per process and returns their `.so` paths.
///
/// # Panics
/// When the build fails, with cargo's output.
pub fn build_plugins() -> PluginPaths {
    static DEBUG: OnceLock<Result<PluginPaths, String>> = OnceLock::new();
    plugins_once(&DEBUG, Profile::Debug)
}

/// As [`build_plugins`], with the release profile (for benchmarks).
///
/// # Panics
/// When the build fails, with cargo's output.
pub fn build_plugins_release() -> PluginPaths {
    static RELEASE: OnceLock<Result<PluginPaths, String>> = OnceLock::new();
    plugins_once(&RELEASE, Profile::Release)
}

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

/// The `testkit` plugin built with `panic = "abort"` (once per process): a panic in it ends the
/// process, as a plugin built against the SDK's advice would.
///
/// # Panics
/// When the build fails, with cargo's output.
pub fn testkit_panic_abort() -> PathBuf {
    static KIT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = KIT.get_or_init(|| {
        cargo_build(&["testkit"], Profile::PanicAbort)?
            .iter()
            .filter(|a| a.name == "testkit")
            .find_map(Artifact::shared_library)
            .map(Path::to_path_buf)
            .ok_or_else(|| "cargo built no shared library for testkit".to_owned())
    });
    match built {
        Ok(p) => p.clone(),
        Err(e) => panic!("building testkit with panic = \"abort\" failed: {e}"),
    }
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

/// The out-of-tree Rust plugin template, `examples/plugin-template`, built the way its README
/// tells an author to: the folder copied out of the repository (to `<target>/tmp/plugin-template`),
/// its `gateway-plugin` path dependency pointed at this checkout's `crates/plugin`, and built as
/// a workspace of its own into `<target>/template`. The copy gets the workspace's `Cargo.lock`,
/// so it resolves to the crates the workspace already uses (no registry access needed once they
/// are downloaded). Once per process; returns the `.so`.
///
/// `target_tmp` is the test's `env!("CARGO_TARGET_TMPDIR")` (`<target>/tmp`).
///
/// # Panics
/// When the copy or the build fails, with cargo's output.
pub fn plugin_template(target_tmp: &Path) -> PathBuf {
    static TEMPLATE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = TEMPLATE.get_or_init(|| build_plugin_template(target_tmp));
    match built {
        Ok(p) => p.clone(),
        Err(e) => panic!("building examples/plugin-template failed: {e}"),
    }
}

/// The template's dependency line on the SDK, as committed.
const TEMPLATE_SDK_LINE: &str = r#"gateway-plugin = { path = "../../crates/plugin" }"#;

fn build_plugin_template(target_tmp: &Path) -> Result<PathBuf, String> {
    let root = workspace_root();
    let template = root.join("examples/plugin-template");
    let copy = target_tmp.join("plugin-template");
    if copy.exists() {
        std::fs::remove_dir_all(&copy)
            .map_err(|e| format!("cannot clear {}: {e}", copy.display()))?;
    }
    copy_tree(&template, &copy)?;
    let manifest = copy.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
    if !text.lines().any(|l| l.trim() == TEMPLATE_SDK_LINE) {
        return Err(format!(
            "{} no longer has the line `{TEMPLATE_SDK_LINE}` this test rewrites",
            template.join("Cargo.toml").display()
        ));
    }
    let sdk = root.join("crates/plugin");
    let sdk = serde_json::to_string(&sdk.to_string_lossy())
        .map_err(|e| format!("cannot quote {}: {e}", sdk.display()))?;
    let text = text.replace(
        TEMPLATE_SDK_LINE,
        &format!("gateway-plugin = {{ path = {sdk} }}"),
    );
    std::fs::write(&manifest, text)
        .map_err(|e| format!("cannot write {}: {e}", manifest.display()))?;
    std::fs::copy(root.join("Cargo.lock"), copy.join("Cargo.lock"))
        .map_err(|e| format!("cannot copy Cargo.lock: {e}"))?;
    let target = target_tmp.parent().unwrap_or(target_tmp).join("template");
    cargo_build_manifest(&manifest, Some(&target), &[], Profile::Debug)?
        .iter()
        .filter(|a| a.name == "plugin_template")
        .find_map(Artifact::shared_library)
        .map(Path::to_path_buf)
        .ok_or_else(|| "cargo built no shared library for plugin_template".to_owned())
}

/// Copies the files of `from` into `to` (created), leaving out build output and lock files.
fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("cannot create {}: {e}", to.display()))?;
    let entries =
        std::fs::read_dir(from).map_err(|e| format!("cannot list {}: {e}", from.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list {}: {e}", from.display()))?;
        let name = entry.file_name();
        if name == "target" || name == "Cargo.lock" {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        if src.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(|e| format!("cannot copy {}: {e}", src.display()))?;
        }
    }
    Ok(())
}

/// A delivery as the gateway would make it: number `n` of event type `event_type`, whose envelope
/// carries `padding` extra bytes of payload.
pub fn delivery(n: u64, event_type: &str, padding: usize) -> Delivery {
    let envelope = json!({
        "schema": "2.0",
        "header": {
            "event_id": format!("ev-{n}"),
            "event_type": event_type,
            "create_time": "1700000000000",
            "token": "v-token",
            "app_id": "cli_demo",
            "tenant_key": "tenant-1",
        },
        "event": {"n": n, "padding": "x".repeat(padding)},
    });
    let event = RawValue::from_string(envelope.to_string())
        .unwrap_or_else(|e| panic!("an envelope from json! is valid JSON: {e}"));
    Delivery {
        delivery_id: format!("dl-{n}"),
        attempt: 1,
        plugin: "under-test".to_owned(),
        app: "demo".to_owned(),
        event_id: format!("ev-{n}"),
        event_type: event_type.to_owned(),
        received_at: 1_700_000_000_000 + n,
        event,
    }
}

/// The JSON the host passes to `handle` for `d`.
pub fn delivery_json(d: &Delivery) -> Vec<u8> {
    serde_json::to_vec(d).unwrap_or_else(|e| panic!("a Delivery always serialises: {e}"))
}

/// A delivery whose JSON is about `bytes` long (within a few bytes, for `bytes` ≥ ~350).
pub fn delivery_json_of_size(n: u64, event_type: &str, bytes: usize) -> Vec<u8> {
    let base = delivery_json(&delivery(n, event_type, 0)).len();
    delivery_json(&delivery(n, event_type, bytes.saturating_sub(base)))
}
