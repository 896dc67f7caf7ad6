//! No silent traps: a value the gateway cannot honour is refused at `gateway check`, at its key
//! path, and no refusal shows a secret.

use super::tests::{load, problems};
use super::*;

#[test]
fn a_malformed_variable_reference_never_shows_the_secret() {
    for (value, what) in [
        ("tok-SUPERSECRET${", "unterminated"),
        ("tok-SUPERSECRET${SUPER-SECRET}", "invalid variable name"),
    ] {
        let p = problems(&format!(
            "[[apps]]\nname = \"a\"\npath = \"/a\"\nverification_token = \"{value}\"\n"
        ));
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(
            p[0].starts_with("apps[0].verification_token: ") && p[0].contains(what),
            "{p:#?}"
        );
        assert!(!p[0].contains("SECRET"), "{p:#?}");
    }
}

#[test]
fn a_domain_password_is_never_shown() {
    let p = problems(
        r#"
[[apps]]
name = "ws"
mode = "websocket"
app_id = "cli"
app_secret = "s"
domain = "https://user:DOMAINPASSWORD@open.feishu.cn"
"#,
    );
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(p[0].starts_with("apps[0].domain: "), "{p:#?}");
    assert!(!p[0].contains("DOMAINPASSWORD"), "{p:#?}");
    assert!(p[0].contains("open.feishu.cn"), "{p:#?}");
}

/// A secret written without quotes is a type error, which serde words with the value in it.
#[test]
fn a_secret_of_the_wrong_type_is_never_shown() {
    for (table, key, value) in [
        (
            "[[apps]]\nname = \"a\"\npath = \"/a\"",
            "verification_token",
            "8374920193",
        ),
        (
            "[[apps]]\nname = \"a\"\npath = \"/a\"",
            "encrypt_key",
            "83749201938475629",
        ),
        (
            "[[apps]]\nname = \"a\"\nmode = \"websocket\"\napp_id = \"c\"",
            "app_secret",
            "48151623",
        ),
        ("[admin]", "token", "1234567890123456789"),
        ("[store]", "url", "998877665544"),
        (
            "[[apps]]\nname = \"a\"\npath = \"/a\"",
            "encrypt_key",
            "4242.4242",
        ),
        (
            "[[apps]]\nname = \"a\"\npath = \"/a\"",
            "encrypt_key",
            "[\"x\", 4242424242]",
        ),
    ] {
        let text = format!("{table}\n{key} = {value}\n");
        let Err(e @ ConfigError::Syntax { .. }) = load(&text, &[]) else {
            panic!("{key} = {value} must be refused");
        };
        let shown = e.to_string();
        for digits in value.split(|c: char| !c.is_ascii_digit()) {
            assert!(digits.len() < 4 || !shown.contains(digits), "{shown}");
        }
        assert!(shown.contains("line ") && shown.contains(key), "{shown}");
    }
}
