//! An isolated logger's config at `gateway check`: a refusal is reported once (it was
//! "plugin `audit` refused its config: plugin `audit` refused its config: ...", then a warning
//! that the process died while no call ran), and `stdout = true` is refused there (the child's
//! standard output is the gateway's log stream, where long lines of two processes interleave).

use gateway_e2e::harness::{base_config, binaries, run_cli, run_cli_with_env};

fn check(logger_config: &str) -> (i32, String) {
    check_with(logger_config, "process", &[])
}

fn check_with(logger_config: &str, isolation: &str, env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    let cfg = format!(
        "{}\n[[apps]]\nname = \"hire\"\npath = \"/hook\"\n\n[[plugins]]\nname = \"audit\"\nlibrary = \"{}\"\nisolation = \"{isolation}\"\nconfig = {logger_config}\n",
        base_config(),
        binaries().logger.display()
    );
    std::fs::write(&path, cfg).expect("write");
    let (code, out, err) = if env.is_empty() {
        run_cli(&path, &["check"])
    } else {
        run_cli_with_env(&path, &["check"], env)
    };
    (code, format!("{out}{err}"))
}

#[test]
fn an_isolated_loggers_refusal_is_said_once_and_stdout_is_refused() {
    let (code, out) = check(r#"{ path = "out/b.jsonl", colour = 1 }"#);
    assert_ne!(code, 0, "{out}");
    assert_eq!(out.matches("refused its config").count(), 1, "{out}");
    assert!(
        out.contains("plugin `audit` refused its config: logger config: unknown field `colour`"),
        "{out}"
    );
    assert!(!out.contains("died while no call was running"), "{out}");

    let (code, out) = check("{ stdout = true }");
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("`stdout = true` cannot be used with isolation = \"process\""),
        "{out}"
    );
    // A path is what an isolated logger writes to.
    let (code, out) = check(r#"{ path = "out/b.jsonl" }"#);
    assert_eq!(code, 0, "{out}");
    // In process, a marker inherited by the gateway (exported in a shell, say) is not taken
    // for isolation: the gateway removes it from its own environment.
    let (code, out) = check_with(
        "{ stdout = true }",
        "none",
        &[("GATEWAY_PLUGIN_ISOLATED", "1")],
    );
    assert_eq!(code, 0, "{out}");
}
