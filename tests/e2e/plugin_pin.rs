//! What is loaded is what was checked. A library is opened once, hashed from that open file and
//! loaded from it (`gateway_plugin::host::LibraryFile`): another file renamed over the path after
//! the check is not what runs. A library refused at load and then fixed at the same path is
//! loaded by the next reload (the loader names each file by its descriptor, so `dlopen` cannot
//! hand back the refused object). A loaded file rewritten in place is refused. An isolated
//! plugin's child checks the pin itself, on the file it loads.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use gateway_e2e::harness::{base_config, binaries, wait_until, Lark, TestGateway};
use gateway_e2e::{build_plugins, raw_fixtures};
use gateway_plugin::host::{Library, LibraryFile, LoadError};

fn sha256(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Puts a copy of `from` at `to` the way deploy tools do: written beside it, renamed over it
/// (a new file; whatever had the old one open keeps it).
fn install(from: &Path, to: &Path) {
    let tmp = to.with_extension("so.tmp");
    std::fs::copy(from, &tmp).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    std::fs::rename(&tmp, to).unwrap_or_else(|e| panic!("rename to {}: {e}", to.display()));
}

#[test]
fn the_library_loaded_is_the_file_that_was_hashed_not_the_one_at_the_path_now() {
    let plugins = build_plugins();
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = dir.path().join("libkit.so");
    install(&plugins.testkit, &lib);

    let opened = LibraryFile::open(&lib).expect("open");
    assert_eq!(opened.sha256(), sha256(&plugins.testkit));
    // Between the check and the load, another valid plugin is renamed over the path.
    install(&plugins.logger, &lib);
    let loaded = opened.load().expect("load");
    assert_eq!(
        loaded.name(),
        "testkit",
        "the file that was hashed is loaded"
    );
    assert_eq!(loaded.path(), lib.as_path());

    // Opened anew, the path holds the other plugin, and that is what loads.
    let now = LibraryFile::open(&lib).expect("open again");
    assert_eq!(now.sha256(), sha256(&plugins.logger));
    assert_eq!(now.load().expect("load the new file").name(), "logger");
}

#[test]
fn a_library_refused_at_load_and_then_fixed_at_the_same_path_loads_the_fix() {
    let plugins = build_plugins();
    let raw = raw_fixtures(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = dir.path().join("libfixed.so");
    install(&raw.bad_major, &lib);
    let refused = Library::open(&lib).expect_err("ABI 2.0 is refused");
    assert!(
        matches!(refused, LoadError::AbiMajor { found: 2, .. }),
        "{refused}"
    );
    install(&plugins.testkit, &lib);
    let fixed = Library::open(&lib).expect("the fixed file loads");
    assert_eq!(fixed.name(), "testkit");
}

#[test]
fn a_loaded_library_rewritten_in_place_is_refused() {
    let plugins = build_plugins();
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = dir.path().join("libkit.so");
    install(&plugins.testkit, &lib);
    let loaded = LibraryFile::open(&lib).expect("open").load().expect("load");
    assert_eq!(loaded.name(), "testkit");
    // The same file (inode) gets other content. Appended bytes leave the mapped code as it was,
    // so this process stays sound; the loader must not pass the loaded code off as these bytes.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&lib)
        .expect("open for append");
    file.write_all(b"appended after the load").expect("append");
    drop(file);
    let opened = LibraryFile::open(&lib).expect("open");
    assert_eq!(opened.sha256(), sha256(&lib));
    let err = opened.load().expect_err("rewritten in place");
    assert!(matches!(err, LoadError::ChangedInPlace { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&lib.display().to_string()), "{msg}");
    assert!(msg.contains("rename it over the path"), "{msg}");
}

/// Starts `gateway plugin-host --library LIB`, sends it an `Init` frame with `sha256` (a pin),
/// and returns its answer: `Ok(())` for `InitOk`, `Err(message)` for `InitErr`.
fn child_init(library: &Path, sha256: &str, config_dir: &Path) -> Result<(), String> {
    let mut child = Command::new(&binaries().gateway)
        .arg("plugin-host")
        .arg("--library")
        .arg(library)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the plugin-host child");
    let init = serde_json::json!({
        "name": "kit",
        "config": {},
        "config_dir": config_dir.display().to_string(),
        "sha256": sha256,
        // The gateway says whether the hash it sends is the config's pin.
        "pinned": true,
    });
    let body = serde_json::to_vec(&init).expect("json");
    let mut frame = u32::try_from(body.len() + 1)
        .expect("small")
        .to_le_bytes()
        .to_vec();
    frame.push(1);
    frame.extend_from_slice(&body);
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(&frame).expect("send init");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut len = [0u8; 4];
    stdout.read_exact(&mut len).expect("an answer");
    let mut answer = vec![0u8; u32::from_le_bytes(len) as usize];
    stdout.read_exact(&mut answer).expect("the answer's body");
    drop(stdin); // the child leaves when its stdin closes
    let _ = child.wait();
    match answer.first() {
        Some(10) => Ok(()),
        Some(11) => Err(String::from_utf8_lossy(&answer[2..]).into_owned()),
        other => panic!("unexpected frame {other:?}"),
    }
}

/// The child is the one that loads an isolated plugin, so it checks the pin on the file it
/// opens: a file that does not match is never loaded there, whatever the gateway checked
/// before starting it.
#[test]
fn the_isolated_child_refuses_a_library_that_does_not_match_its_pin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = dir.path().join("libkit.so");
    install(&binaries().testkit, &lib);
    let wrong = sha256(&binaries().logger);
    let err = child_init(&lib, &wrong, dir.path()).expect_err("a wrong pin is refused");
    assert!(
        err.contains(&format!(
            "does not match its pinned sha256: expected {wrong}, found {}",
            sha256(&lib)
        )),
        "{err}"
    );
    child_init(&lib, &sha256(&lib), dir.path()).expect("the right pin loads");
}

fn config(plugins: &str) -> String {
    format!(
        r#"{base}
[[apps]]
name = "a"
path = "/hook"
verification_token = "t"

[delivery]
initial_backoff = "50ms"
max_backoff = "100ms"
{plugins}
[[routes]]
events = ["*"]
plugins = ["late"]
"#,
        base = base_config()
    )
}

fn late(library: &Path, extra: &str) -> String {
    format!(
        "[[plugins]]\nname = \"late\"\nlibrary = \"{}\"\nconfig = {{ record = \"data/late.jsonl\" }}\n{extra}\n",
        library.display()
    )
}

fn reload(gw: &TestGateway, config: &str, expect: &str) {
    let before = gw.log().matches(expect).count();
    std::fs::write(gw.dir.join("gateway.toml"), config).expect("write config");
    gw.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(10), || gw.log().matches(expect).count()
            > before),
        "no {expect:?} after SIGHUP:\n{}",
        gw.log()
    );
}

fn delivered(gw: &TestGateway, id: &str) -> bool {
    let lark = Lark::plain("t");
    let status = lark
        .send(
            &gw.url("/hook"),
            &lark.event_v2(id, "t.any", serde_json::json!({})),
        )
        .status;
    assert_eq!(status, 200);
    wait_until(Duration::from_secs(10), || {
        gw.calls("late").iter().any(|c| c["event_id"] == id)
    })
}

/// A reload refused for the library's descriptor, then the file fixed at the same path and the
/// same config sent again: the fixed library is loaded (no restart needed). The same after a
/// refusal for a wrong sha256.
#[test]
fn a_reload_loads_a_library_fixed_at_the_path_where_it_was_refused() {
    let raw = raw_fixtures(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let dir = tempfile::tempdir().expect("tempdir");
    let first: PathBuf = dir.path().join("libfirst.so");
    install(&binaries().testkit, &first);
    let gw = TestGateway::spawn(dir.path(), &config(&late(&first, "")));
    assert!(delivered(&gw, "ev-1"));

    // A new library that the loader refuses (ABI 2.0); the running config stays.
    let lib = dir.path().join("liblate.so");
    install(&raw.bad_major, &lib);
    let v2 = config(&late(&lib, ""));
    reload(&gw, &v2, "reload refused");
    assert!(gw.log().contains("incompatible plugin"), "{}", gw.log());
    // Fixed at the same path: the same config is taken now.
    install(&binaries().testkit, &lib);
    reload(&gw, &v2, "config reloaded");
    assert!(delivered(&gw, "ev-2"), "{}", gw.log());

    // Pinned, and a file with other content at the path: refused before loading; fixed, taken.
    let pinned = dir.path().join("libpinned.so");
    install(&binaries().logger, &pinned);
    let pin = format!("sha256 = \"{}\"", sha256(&binaries().testkit));
    let v3 = config(&late(&pinned, &pin));
    reload(&gw, &v3, "does not match its pinned sha256");
    install(&binaries().testkit, &pinned);
    reload(&gw, &v3, "config reloaded");
    assert!(delivered(&gw, "ev-3"), "{}", gw.log());
}
