//! A `[libraries] dir`: `plugins list` shows every library of the folder with its sha256, and a
//! bare `library` name resolves there (`lib<name>.so` first, then `<name>.so`). Part of
//! `plugin_cli.rs`.

use std::path::{Path, PathBuf};

use gateway_e2e::harness::{base_config, binaries, run_cli};

use super::helpers::{gateway, sha256, text, write};

/// A folder as an operator fills it: two plugins (one named `lib<name>.so`, one `<name>.so`),
/// a file that is no library, and a file that is no `.so` at all.
fn plugins_folder(dir: &Path) -> PathBuf {
    let folder = dir.join("plugins.d");
    std::fs::create_dir_all(&folder).expect("mkdir");
    std::fs::copy(&binaries().testkit, folder.join("libtestkit.so")).expect("copy testkit");
    std::fs::copy(&binaries().logger, folder.join("logger.so")).expect("copy logger");
    write(&folder.join("notes.so"), "not a library\n");
    write(&folder.join("README.txt"), "what these are\n");
    folder
}

fn folder_config(plugins: &str) -> String {
    format!(
        r#"{}
[[apps]]
name = "a"
path = "/hook"

[libraries]
dir = "plugins.d"
{plugins}"#,
        base_config()
    )
}

#[test]
fn plugins_list_shows_every_library_of_the_folder_with_its_sha256() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = plugins_folder(dir.path());
    let config = write(
        &dir.path().join("gateway.toml"),
        &folder_config(
            "[[plugins]]\nname = \"kit\"\nlibrary = \"testkit\"\n\
             [[plugins]]\nname = \"kit-2\"\nlibrary = \"testkit\"\n",
        ),
    );
    let (code, out, err) = run_cli(&config, &["plugins", "list"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&format!("folder {}", folder.display())),
        "{out}"
    );
    let kit_sha = sha256(&folder.join("libtestkit.so"));
    let logger_sha = sha256(&folder.join("logger.so"));
    // The indented lines under a file's name.
    let block = |name: &str| -> String {
        let lines: Vec<&str> = out.lines().collect();
        let at = lines
            .iter()
            .position(|l| *l == name)
            .unwrap_or_else(|| panic!("{name} in {out}"));
        lines[at + 1..]
            .iter()
            .take_while(|l| l.starts_with("  "))
            .copied()
            .collect::<Vec<_>>()
            .join("\n")
    };
    let kit = block("libtestkit.so");
    for line in [
        "  name      testkit",
        "  abi       1.1",
        "  batch     yes (handle_batch)",
        "  build     gateway-plugin ",
        &format!("  sha256    {kit_sha}"),
        "  used by   kit, kit-2",
    ] {
        assert!(kit.contains(line), "{line:?} in\n{kit}");
    }
    let logger = block("logger.so");
    assert!(logger.contains("  name      logger"), "{logger}");
    assert!(
        logger.contains(&format!("  sha256    {logger_sha}")),
        "{logger}"
    );
    assert!(!logger.contains("used by"), "{logger}");
    let notes = block("notes.so");
    assert!(
        notes.contains("  not a plugin: cannot load plugin library"),
        "{notes}"
    );
    assert!(notes.contains("  sha256    "), "{notes}");
    assert!(!out.contains("README.txt"), "only *.so files: {out}");

    // --dir needs no config; inspect prints the same digest.
    let (code, out, err) = gateway(&["plugins", "list", "--dir", &text(&folder)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("  sha256    {kit_sha}")), "{out}");
    let (code, out, _) = gateway(&["plugins", "inspect", &text(&folder.join("logger.so"))]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("sha256    {logger_sha}")), "{out}");

    // A config whose `library` names nothing in the folder is still listable (that is how one
    // fixes it), with its problems as a warning.
    let broken = write(
        &dir.path().join("broken.toml"),
        &folder_config("[[plugins]]\nname = \"kit\"\nlibrary = \"tetskit\"\n"),
    );
    let (code, out, err) = run_cli(&broken, &["plugins", "list"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("libtestkit.so"), "{out}");
    assert!(err.contains("warning:") && err.contains("tetskit"), "{err}");

    // Without a folder to list: a clear error.
    let plain = write(
        &dir.path().join("plain.toml"),
        &format!(
            "{}\n[[apps]]\nname = \"a\"\npath = \"/hook\"\n",
            base_config()
        ),
    );
    let (code, _, err) = run_cli(&plain, &["plugins", "list"]);
    assert_eq!(code, 2);
    assert!(err.contains("has no [libraries] dir"), "{err}");
    let (code, _, err) = gateway(&["plugins", "list", "--dir", &text(&dir.path().join("nope"))]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot list"), "{err}");
}

#[test]
fn a_bare_library_name_resolves_in_the_libraries_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = plugins_folder(dir.path());
    let config = write(
        &dir.path().join("gateway.toml"),
        &folder_config(
            "[[plugins]]\nname = \"kit\"\nlibrary = \"testkit\"\n\
             [[plugins]]\nname = \"audit\"\nlibrary = \"logger\"\nconfig = { stdout = true }\n\
             [[plugins]]\nname = \"by-path\"\nlibrary = \"plugins.d/libtestkit.so\"\n",
        ),
    );
    let (code, out, err) = run_cli(&config, &["check"]);
    assert_eq!(code, 0, "{out}\n{err}");
    // `lib<name>.so` first, then `<name>.so`; a path stays a path (relative to the config).
    for (name, file) in [
        ("kit", "libtestkit.so"),
        ("audit", "logger.so"),
        ("by-path", "libtestkit.so"),
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("plugin {name} ")))
            .unwrap_or_else(|| panic!("{name} in {out}"));
        assert!(
            line.contains(&format!("({})", folder.join(file).display())),
            "{line}"
        );
    }

    let missing = write(
        &dir.path().join("missing.toml"),
        &folder_config("[[plugins]]\nname = \"kit\"\nlibrary = \"nothere\"\n"),
    );
    let (code, _, err) = run_cli(&missing, &["check"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "plugins[0].library: no plugin library \"nothere\" in [libraries] dir {}: tried {} and {}",
            folder.display(),
            folder.join("libnothere.so").display(),
            folder.join("nothere.so").display()
        )),
        "{err}"
    );

    let no_folder = write(
        &dir.path().join("no-folder.toml"),
        &folder_config("").replace("plugins.d", "plugins.e"),
    );
    let (code, _, err) = run_cli(&no_folder, &["check"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("libraries.dir:") && err.contains("is not a folder"),
        "{err}"
    );
}
