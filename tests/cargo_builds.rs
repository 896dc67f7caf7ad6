//! What the tests build with cargo: any packages of the workspace (or of another manifest) with
//! their artifacts reported, the plugin libraries once per process and profile, `testkit` with
//! `panic = "abort"`, and the out-of-tree plugin template built as its README tells an author to.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::workspace_root;

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
    cargo_run(&["build"], manifest, target_dir, packages, profile, &[])
}

/// Runs `cargo <command> --manifest-path <manifest> ... -- <rustc_args>` (`command` is `build`,
/// or `rustc --lib` with `rustc_args` for the top crate alone) and returns the artifacts.
fn cargo_run(
    command: &[&str],
    manifest: &Path,
    target_dir: Option<&Path>,
    packages: &[&str],
    profile: Profile,
    rustc_args: &[&str],
) -> Result<Vec<Artifact>, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(manifest.parent().unwrap_or(Path::new(".")))
        .args(command)
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
    if !rustc_args.is_empty() {
        cmd.arg("--").args(rustc_args);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", Path::new(&cargo).display()))?;
    if !out.status.success() {
        return Err(format!(
            "`cargo {} --manifest-path {} -p {}` failed ({}):\n{}",
            command.join(" "),
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

/// The out-of-tree Rust plugin template, `examples/plugin-template`, built the way its README
/// tells an author to: the folder copied out of the repository (to
/// `<target>/tmp/plugin-template-<pid>`: one copy per test process, so two processes building it
/// at once do not delete each other's sources mid-build; removed once built), its
/// `gateway-plugin` path dependency pointed at this checkout's `crates/plugin`, and built as a
/// workspace of its own into `<target>/template` (cargo's lock on that folder orders the builds). The copy gets the workspace's `Cargo.lock`,
/// so it resolves to the crates the workspace already uses (no registry access needed once they
/// are downloaded). Once per process; returns the `.so`.
///
/// `target_tmp` is the test's `env!("CARGO_TARGET_TMPDIR")` (`<target>/tmp`).
///
/// # Panics
/// When the copy or the build fails, with cargo's output.
pub fn plugin_template(target_tmp: &Path) -> PathBuf {
    static TEMPLATE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = TEMPLATE.get_or_init(|| build_plugin_template(target_tmp, false));
    match built {
        Ok(p) => p.clone(),
        Err(e) => panic!("building examples/plugin-template failed: {e}"),
    }
}

/// [`plugin_template`] renamed `plugin-template-abort`, its crate `#![forbid(unsafe_code)]`
/// (the SDK's macro must build there), and linked with `panic = "abort"` by
/// `cargo rustc --lib -- -C panic=abort`: the plugin's crate aborts while its dependencies, the
/// SDK too, were built to unwind (as a build system passing flags per crate does). Into the
/// same `<target>/template`, reusing the dependencies already built. Once per process.
///
/// # Panics
/// When the copy or the build fails, with cargo's output.
pub fn plugin_template_abort_linked(target_tmp: &Path) -> PathBuf {
    static TEMPLATE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = TEMPLATE.get_or_init(|| build_plugin_template(target_tmp, true));
    match built {
        Ok(p) => p.clone(),
        Err(e) => panic!("building examples/plugin-template abort-linked failed: {e}"),
    }
}

/// The template's dependency line on the SDK, as committed.
const TEMPLATE_SDK_LINE: &str = r#"gateway-plugin = { path = "../../crates/plugin" }"#;

fn build_plugin_template(target_tmp: &Path, abort_linked: bool) -> Result<PathBuf, String> {
    let root = workspace_root();
    let template = root.join("examples/plugin-template");
    let package = if abort_linked {
        "plugin-template-abort"
    } else {
        "plugin-template"
    };
    let copy = target_tmp.join(format!("{package}-{}", std::process::id()));
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
    let mut text = text.replace(
        TEMPLATE_SDK_LINE,
        &format!("gateway-plugin = {{ path = {sdk} }}"),
    );
    if abort_linked {
        const NAME_LINE: &str = r#"name = "plugin-template""#;
        if !text.lines().any(|l| l.trim() == NAME_LINE) {
            return Err(format!("the template's manifest has no line `{NAME_LINE}`"));
        }
        text = text.replace(NAME_LINE, &format!(r#"name = "{package}""#));
        let lib = copy.join("src/lib.rs");
        let code = std::fs::read_to_string(&lib)
            .map_err(|e| format!("cannot read {}: {e}", lib.display()))?;
        std::fs::write(&lib, format!("#![forbid(unsafe_code)]\n{code}"))
            .map_err(|e| format!("cannot write {}: {e}", lib.display()))?;
    }
    std::fs::write(&manifest, text)
        .map_err(|e| format!("cannot write {}: {e}", manifest.display()))?;
    std::fs::copy(root.join("Cargo.lock"), copy.join("Cargo.lock"))
        .map_err(|e| format!("cannot copy Cargo.lock: {e}"))?;
    let target = target_tmp.parent().unwrap_or(target_tmp).join("template");
    let built = if abort_linked {
        let abort = ["-C", "panic=abort"];
        cargo_run(
            &["rustc", "--lib"],
            &manifest,
            Some(&target),
            &[],
            Profile::Debug,
            &abort,
        )
    } else {
        cargo_build_manifest(&manifest, Some(&target), &[], Profile::Debug)
    };
    // The library is in `target`; the copy served only the build.
    let _ = std::fs::remove_dir_all(&copy);
    let crate_name = package.replace('-', "_");
    built?
        .iter()
        .filter(|a| a.name == crate_name)
        .find_map(Artifact::shared_library)
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("cargo built no shared library for {crate_name}"))
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
