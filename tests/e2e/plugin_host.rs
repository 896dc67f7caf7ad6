//! The plugin host loader (`gateway_plugin::host`) against raw-ABI fixtures compiled from
//! `raw-plugins/` that describe themselves wrongly on purpose, and against the SDK's testkit.
//! One submodule per topic of this target: `refusals` (every loader error with its message, the
//! process surviving them, an `init` that returns no instance), `calls` (buffer ownership across
//! the boundary, outcomes, batches) and `descriptor` (the C header against `abi.rs`, `plugins
//! inspect`, what a library and an instance report); `helpers` holds what they share. Here:
//! where library files are found (a bare file name, the paths `build_plugins` reports).
//! `bare_file_name_is_opened_from_the_current_folder` stays at the root of the target: its
//! child process runs it again by that exact name.

use std::path::Path;

use gateway_e2e::build_plugins;
use gateway_e2e::hostkit::open;

/// A library path given as a bare file name (`library = "libx.so"` in a config in the current
/// folder) names that file, as it does for `exists()`: it must not send `dlopen` searching the
/// system library path. Runs in a child process, whose current folder is a temp dir.
#[test]
fn bare_file_name_is_opened_from_the_current_folder() {
    const CHILD: &str = "GATEWAY_E2E_BARE_NAME_CHILD";
    if let Some(name) = std::env::var_os(CHILD) {
        let lib = open(Path::new(&name));
        assert_eq!(lib.name(), "testkit");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let name = "libbare_testkit.so";
    std::fs::copy(build_plugins().testkit, dir.path().join(name)).expect("copy");
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "bare_file_name_is_opened_from_the_current_folder",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD, name)
        .current_dir(dir.path())
        .output()
        .expect("run child");
    assert!(
        out.status.success(),
        "child failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
}

/// `build_plugins` reports the libraries cargo really built, wherever the target dir is.
#[test]
fn plugin_paths_are_absolute_existing_files() {
    let p = build_plugins();
    for path in [&p.logger, &p.testkit] {
        assert!(path.is_file() && path.is_absolute(), "{}", path.display());
    }
}

#[path = "plugin_host/helpers.rs"]
mod helpers;

#[path = "plugin_host/refusals.rs"]
mod refusals;

#[path = "plugin_host/calls.rs"]
mod calls;

#[path = "plugin_host/descriptor.rs"]
mod descriptor;
