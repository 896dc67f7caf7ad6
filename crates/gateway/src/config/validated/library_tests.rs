//! Plugin libraries: bare names resolved in `[libraries] dir` (`lib<name>.so` before
//! `<name>.so`), why that key is not `[plugins] dir`, and `sha256` pins checked and kept
//! lowercase; the bound on plugin calls (`max_concurrency`, one entry and all together); a
//! plugin config in a file of its own (`gateway plugins call --config`); where a plugin runs
//! (`isolation`).

use super::tests::{load, problems, MINIMAL};
use super::*;

/// `[libraries] dir` (relative to the config's folder) and bare `library` names in it:
/// `lib<name>.so` before `<name>.so`; a name that is in neither is a problem listing both.
#[test]
fn library_names_resolve_in_the_libraries_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = dir.path().join("plugins.d");
    std::fs::create_dir(&folder).expect("mkdir");
    for file in ["liba.so", "a.so", "b.so"] {
        std::fs::write(folder.join(file), "").expect("write");
    }
    let path = dir.path().join("gateway.toml");
    let write = |plugins: &str| {
        std::fs::write(
            &path,
            format!("{MINIMAL}\n[libraries]\ndir = \"plugins.d\"\n{plugins}"),
        )
        .expect("write");
    };
    write(
        "[[plugins]]\nname = \"one\"\nlibrary = \"a\"\n\
         [[plugins]]\nname = \"two\"\nlibrary = \"b\"\n\
         [[plugins]]\nname = \"three\"\nlibrary = \"plugins.d/b.so\"\n",
    );
    let c = Config::load_with_env(&path, &|_| Err(std::env::VarError::NotPresent)).expect("valid");
    assert_eq!(c.library_dir.as_deref(), Some(folder.as_path()));
    let libs: Vec<&Path> = c.plugins.iter().map(|p| p.library.as_path()).collect();
    assert_eq!(
        libs,
        [
            folder.join("liba.so"),
            folder.join("b.so"),
            folder.join("b.so")
        ]
    );
    write("[[plugins]]\nname = \"one\"\nlibrary = \"c\"\n");
    let Err(ConfigError::Invalid { problems, .. }) =
        Config::load_with_env(&path, &|_| Err(std::env::VarError::NotPresent))
    else {
        panic!("a name in neither file is refused")
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("plugins[0].library: no plugin library \"c\" in [libraries] dir")
            && problems[0].contains(&format!(
                "tried {} and {}",
                folder.join("libc.so").display(),
                folder.join("c.so").display()
            )),
        "{problems:?}"
    );
}

/// Why the key is `[libraries] dir` and not the `[plugins] dir` first proposed: TOML cannot
/// hold a `[plugins]` table beside `[[plugins]]` entries.
#[test]
fn a_plugins_table_cannot_sit_beside_plugins_entries() {
    let text = format!(
        "{MINIMAL}\n[plugins]\ndir = \"plugins.d\"\n[[plugins]]\nname = \"a\"\nlibrary = \"a\"\n"
    );
    assert!(matches!(load(&text, &[]), Err(ConfigError::Syntax { .. })));
}

#[test]
fn sha256_pins_are_checked_and_kept_lowercase() {
    let pin = "AB".repeat(32);
    let c = load(
        &format!(
            "{MINIMAL}\n[[plugins]]\nname = \"a\"\nlibrary = \"/x/liba.so\"\nsha256 = \"{pin}\"\n"
        ),
        &[],
    )
    .expect("valid");
    assert_eq!(
        c.plugins[0].sha256.as_deref(),
        Some("ab".repeat(32).as_str())
    );
    let p = problems(&format!(
        "{MINIMAL}\n[[plugins]]\nname = \"a\"\nlibrary = \"/x/liba.so\"\nsha256 = \"abc\"\n"
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("plugins[0].sha256: must be the library's SHA-256"),
        "{p:?}"
    );
}

/// Every plugin call holds one of the gateway's blocking threads until it returns: one entry's
/// `max_concurrency`, and all entries' together, are at most [`MAX_PLUGIN_CALLS`], the error at
/// the entry that takes the sum past it.
#[test]
fn plugin_calls_are_bounded_by_the_threads_kept_for_them() {
    let entry = |name: &str, n: usize| {
        format!("[[plugins]]\nname = \"{name}\"\nlibrary = \"/nonexistent/p.so\"\nmax_concurrency = {n}\n")
    };
    let at_most = format!("{MINIMAL}{}{}", entry("a", 1000), entry("b", 24));
    let c = load(&at_most, &[]).expect("1024 in all");
    assert_eq!(c.plugins[1].max_concurrency, 24);

    let p = problems(&format!(
        "{MINIMAL}{}{}{}",
        entry("a", 1000),
        entry("b", 25),
        entry("c", 4)
    ));
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(
        p[0].starts_with("plugins[1].max_concurrency: the [[plugins]] entries' max_concurrency add up to 1029, more than 1024"),
        "{p:#?}"
    );
    let one = load(&format!("{MINIMAL}{}", entry("a", 1024)), &[]).expect("1024 alone");
    assert_eq!(one.plugins[0].max_concurrency, 1024);
    let p = problems(&format!("{MINIMAL}{}", entry("a", 1025)));
    assert_eq!(
        p,
        ["plugins[0].max_concurrency: must be at most 1024"],
        "one entry past the bound is that entry's problem only"
    );
}

/// `plugins call --config FILE`: a `.json` file is the object as written, a `.toml` file the
/// keys of a `config` table; anything else, or JSON that is not an object, is refused.
#[test]
fn a_plugin_config_file_is_json_as_written_or_toml_as_a_config_table() {
    let dir = tempfile::tempdir().expect("dir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let json = write("p.json", r#"{"path": "x.jsonl", "n": [1, 2.5]}"#);
    assert_eq!(
        load_plugin_config(&json).expect("json"),
        serde_json::json!({"path": "x.jsonl", "n": [1, 2.5]})
    );
    let toml = write("p.toml", "path = \"x.jsonl\"\n[limits]\nn = 3\n");
    assert_eq!(
        load_plugin_config(&toml).expect("toml"),
        serde_json::json!({"path": "x.jsonl", "limits": {"n": 3}})
    );
    for (name, text, says) in [
        ("list.json", "[1]", "must hold a JSON object"),
        ("bad.json", "{", "EOF"),
        ("p.yaml", "path: x", "must end in .toml"),
    ] {
        let e = load_plugin_config(&write(name, text)).expect_err(name);
        assert!(e.to_string().contains(says), "{name}: {e}");
    }
}

/// `isolation` is "none" (the default) or "process", and shows as written (`check`, the admin
/// API); any other value is refused with its location.
#[test]
fn isolation_is_none_or_process() {
    let entry = |line: &str| {
        format!("{MINIMAL}[[plugins]]\nname = \"a\"\nlibrary = \"/nonexistent/p.so\"\n{line}")
    };
    for (line, isolation) in [
        ("", Isolation::None),
        ("isolation = \"none\"\n", Isolation::None),
        ("isolation = \"process\"\n", Isolation::Process),
    ] {
        let c = load(&entry(line), &[]).expect("valid");
        assert_eq!(c.plugins[0].isolation, isolation, "{line:?}");
    }
    assert_eq!(Isolation::None.as_str(), "none");
    assert_eq!(Isolation::Process.as_str(), "process");
    let p = problems(&entry("isolation = \"sandbox\"\n"));
    assert_eq!(
        p,
        ["plugins[0].isolation: \"sandbox\" is neither \"none\" nor \"process\""]
    );
}

/// A reload keeps an instance whose entry changed only in `max_concurrency` (the engine's
/// limit) or `init_timeout` (its next starts); any other key makes a new instance.
#[test]
fn an_instance_is_kept_across_limits_only() {
    let c = load(
        &format!("{MINIMAL}[[plugins]]\nname = \"a\"\nlibrary = \"/nonexistent/p.so\"\n"),
        &[],
    )
    .expect("valid");
    let spec = &c.plugins[0];
    assert!(spec.same_instance(spec));
    let mut limits = spec.clone();
    limits.max_concurrency += 3;
    limits.init_timeout += Duration::from_secs(5);
    assert!(spec.same_instance(&limits) && limits.same_instance(spec));
    let mut config = spec.clone();
    config.config = serde_json::json!({ "path": "elsewhere.log" });
    assert!(!spec.same_instance(&config));
    let mut pinned = limits.clone();
    pinned.sha256 = Some("ab".repeat(32));
    assert!(!spec.same_instance(&pinned));
}

/// `gateway plugins list` reads `[libraries] dir` (relative to the config's folder) from a
/// config whose other keys have problems; none set is `None`; a problem in the key itself is
/// the error.
#[test]
fn the_library_dir_is_read_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    let broken_route = "[[routes]]\nevents = [\"*\"]\nplugins = [\"nobody\"]\n";
    std::fs::write(
        &path,
        format!("{MINIMAL}{broken_route}[libraries]\ndir = \"plugins.d\"\n"),
    )
    .expect("write");
    assert!(Config::load(&path).is_err(), "the route is a problem");
    assert_eq!(
        Config::library_dir_of(&path).expect("the dir alone"),
        Some(dir.path().join("plugins.d"))
    );
    std::fs::write(&path, format!("{MINIMAL}{broken_route}")).expect("write");
    assert_eq!(Config::library_dir_of(&path).expect("no dir"), None);
    std::fs::write(
        &path,
        format!("{MINIMAL}[libraries]\ndir = \"${{GATEWAY_TEST_NEVER_SET_9F2C}}\"\n"),
    )
    .expect("write");
    let Err(ConfigError::Invalid { problems, .. }) = Config::library_dir_of(&path) else {
        panic!("an unset variable in the dir is refused")
    };
    assert_eq!(
        problems,
        ["libraries.dir: environment variable GATEWAY_TEST_NEVER_SET_9F2C is not set"]
    );
}
