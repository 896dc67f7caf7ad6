//! `${VAR}` expansion from the environment, and `${file:/PATH}` from a file's content (less one
//! final line break), read again at each load: a reload takes a rotated secret from a file, where
//! a process's environment stays what it started with. `$${` writes a literal `${`. A missing
//! variable, or one whose value is not valid UTF-8, is an error naming it, as is a file that
//! cannot be read (its path, never its content); the caller adds the location. No error quotes
//! the text being expanded (it is often a secret): a malformed `${` is given by its byte offset.

use std::env::VarError;

/// Where `${NAME}` values come from: [`from_process`], or a stand-in in tests.
pub type Lookup<'a> = dyn Fn(&str) -> Result<String, VarError> + 'a;

/// Expands every `${NAME}` in `text` using `lookup`.
pub fn expand(text: &str, lookup: &Lookup<'_>) -> Result<String, String> {
    if !text.contains('$') {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let offset = text.len() - rest.len() + pos;
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail
                .find('}')
                .ok_or_else(|| format!("unterminated `${{` at byte {offset} (no `}}` after it)"))?;
            let name = &tail[..end];
            if let Some(path) = name.strip_prefix("file:") {
                out.push_str(&from_file(path)?);
                rest = &tail[end + 1..];
                continue;
            }
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "invalid variable name in the `${{...}}` at byte {offset} (letters, digits \
                     and `_` only; `$${{` writes a literal `${{`)"
                ));
            }
            let value = lookup(name).map_err(|e| match e {
                VarError::NotPresent => format!("environment variable {name} is not set"),
                VarError::NotUnicode(_) => {
                    format!("environment variable {name} is not valid UTF-8")
                }
            })?;
            out.push_str(&value);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The largest file `${file:...}` reads (a secret, not a document).
const MAX_FILE: u64 = 64 * 1024;

/// The content of the regular file at `path` (absolute; it cannot hold a `}`), less one final
/// line break (`\n` or `\r\n`).
fn from_file(path: &str) -> Result<String, String> {
    use std::io::Read;
    let shown = path.escape_debug();
    if !std::path::Path::new(path).is_absolute() {
        return Err(format!(
            "`${{file:{shown}}}` needs an absolute path (it is not resolved against the config's folder)"
        ));
    }
    let cannot = |e: std::io::Error| format!("cannot read file {shown}: {e}");
    // Not a pipe or a device, which could block the load (and a reload) for good.
    if !std::fs::metadata(path).map_err(cannot)?.is_file() {
        return Err(format!("file {shown} is not a regular file"));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE + 1).read_to_end(&mut bytes))
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(format!("file {shown} is larger than {MAX_FILE} bytes"));
    }
    let mut text =
        String::from_utf8(bytes).map_err(|_| format!("file {shown} is not valid UTF-8"))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

/// The names [`from_process`] was asked for since the process started (by any config load, a
/// reload's included): the config's secrets, kept out of isolated plugin processes'
/// environments ([`config_variables`]).
static LOOKED_UP: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Looks a variable up in the process environment, and remembers its name.
pub fn from_process(name: &str) -> Result<String, VarError> {
    LOOKED_UP
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(name.to_owned());
    std::env::var(name)
}

/// Every variable name a config loaded by this process read with `${NAME}`, set or not (the
/// gateway's own secrets and every plugin's): a plugin gets its values through its expanded
/// config, never through the environment of an isolated process.
pub fn config_variables() -> Vec<String> {
    LOOKED_UP
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .cloned()
        .collect()
}

/// How many of the names [`config_variables`] holds are set in this process's environment
/// (which it never changes): it only grows, so a larger count later means a variable that holds
/// a value was read since (an isolated instance started before it holds that value in its
/// environment, and is replaced at reload). A name that is not set holds nothing to hide: a
/// refused reload's typo (`${TYPO}`) replaces no process.
pub fn config_variable_count() -> usize {
    LOOKED_UP
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .filter(|name| std::env::var_os(name).is_some())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Result<String, VarError> {
        match name {
            "A" => Ok("alpha".into()),
            "EMPTY" => Ok(String::new()),
            _ => Err(VarError::NotPresent),
        }
    }

    #[test]
    fn expands() {
        assert_eq!(expand("x${A}y${A}", &env).as_deref(), Ok("xalphayalpha"));
        assert_eq!(expand("${EMPTY}", &env).as_deref(), Ok(""));
        assert_eq!(expand("cost $5", &env).as_deref(), Ok("cost $5"));
        assert_eq!(expand("$${A}", &env).as_deref(), Ok("${A}"));
        assert_eq!(expand("plain", &env).as_deref(), Ok("plain"));
    }

    #[test]
    fn errors_name_the_variable() {
        assert_eq!(
            expand("${MISSING}", &env),
            Err("environment variable MISSING is not set".into())
        );
        assert!(expand("${A", &env).is_err());
        assert!(expand("${a-b}", &env).is_err());
    }

    /// A variable that is set but not UTF-8 is not reported as missing.
    #[test]
    fn a_value_that_is_not_utf8_is_not_called_unset() {
        use std::os::unix::ffi::OsStrExt;
        let name = "GATEWAY_ENV_TEST_NOT_UTF8";
        std::env::set_var(name, std::ffi::OsStr::from_bytes(b"\xff\xfe"));
        let e = expand(&format!("${{{name}}}"), &from_process).expect_err("not UTF-8");
        std::env::remove_var(name);
        assert_eq!(e, format!("environment variable {name} is not valid UTF-8"));
    }

    #[test]
    fn a_file_reference_takes_the_content_less_one_line_break_each_time() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret-one\n").expect("write");
        let reference = format!("Bearer ${{file:{}}}!", path.display());
        assert_eq!(
            expand(&reference, &env).as_deref(),
            Ok("Bearer s3cret-one!")
        );
        // Rotated: the next load reads the new one.
        std::fs::write(&path, "s3cret-two\r\n").expect("write");
        assert_eq!(
            expand(&reference, &env).as_deref(),
            Ok("Bearer s3cret-two!")
        );
        std::fs::write(&path, "a\n\n").expect("write");
        assert_eq!(expand(&reference, &env).as_deref(), Ok("Bearer a\n!"));
    }

    #[test]
    fn a_file_reference_fails_naming_the_file_never_its_content() {
        let dir = tempfile::tempdir().expect("dir");
        let missing = dir.path().join("missing");
        let e = expand(&format!("${{file:{}}}", missing.display()), &env).expect_err("missing");
        assert!(
            e.starts_with("cannot read file ") && e.contains("missing"),
            "{e}"
        );
        let e = expand("${file:relative/token}", &env).expect_err("relative");
        assert!(e.contains("absolute path"), "{e}");
        let e = expand("${file:/dev/null}", &env).expect_err("a device");
        assert!(e.contains("not a regular file"), "{e}");
        let multibyte = dir.path().join("multibyte");
        std::fs::write(&multibyte, "é".repeat(40_000)).expect("write");
        let e = expand(&format!("${{file:{}}}", multibyte.display()), &env).expect_err("big");
        assert!(e.contains("larger than"), "{e}");
        let big = dir.path().join("big");
        std::fs::write(&big, "SECRET".repeat(20_000)).expect("write");
        let e = expand(&format!("${{file:{}}}", big.display()), &env).expect_err("big");
        assert!(e.contains("larger than") && !e.contains("SECRET"), "{e}");
        let binary = dir.path().join("binary");
        std::fs::write(&binary, b"SECRET\xff").expect("write");
        let e = expand(&format!("${{file:{}}}", binary.display()), &env).expect_err("binary");
        assert!(
            e.contains("not valid UTF-8") && !e.contains("SECRET"),
            "{e}"
        );
    }

    #[test]
    fn a_file_of_exactly_the_limit_is_read_one_byte_more_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let at_limit = dir.path().join("at-limit");
        std::fs::write(&at_limit, "s".repeat(64 * 1024)).expect("write");
        let read = expand(&format!("${{file:{}}}", at_limit.display()), &env).expect("at limit");
        assert_eq!(read.len(), 64 * 1024);
        let over = dir.path().join("over");
        std::fs::write(&over, "s".repeat(64 * 1024 + 1)).expect("write");
        let e = expand(&format!("${{file:{}}}", over.display()), &env).expect_err("over");
        assert!(e.contains("larger than 65536 bytes"), "{e}");
    }

    /// Every name looked up is remembered once, set or not (kept out of isolated children's
    /// environments); only set ones are counted as secrets read (an unset one holds nothing: a
    /// reload reading it replaces no child). Other tests of this process may add names
    /// meanwhile: only this test's own are counted on.
    #[test]
    fn looked_up_names_are_remembered_once_set_or_not() {
        let names = ["GW_ENV_TEST_REMEMBERED_A", "GW_ENV_TEST_REMEMBERED_B"];
        for name in names {
            assert!(from_process(name).is_err(), "{name} is not set");
        }
        assert!(from_process(names[0]).is_err());
        let listed = config_variables();
        for name in names {
            assert_eq!(
                listed.iter().filter(|n| *n == name).count(),
                1,
                "{listed:?}"
            );
        }
    }

    /// The text around a malformed `${` is often a secret: errors give its offset instead.
    #[test]
    fn malformed_references_never_quote_the_text() {
        let e = expand("tok-SUPERSECRET${", &env).expect_err("unterminated");
        assert!(!e.contains("SUPERSECRET"), "{e}");
        assert!(e.contains("byte 15"), "{e}");
        let e = expand("x$${y}${PART-OF-SECRET}", &env).expect_err("invalid name");
        assert!(!e.contains("SECRET"), "{e}");
        assert!(e.contains("byte 6"), "{e}");
    }
}
