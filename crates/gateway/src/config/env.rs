//! `${VAR}` expansion from the environment. `$${` writes a literal `${`. A missing variable, or
//! one whose value is not valid UTF-8, is an error naming it; the caller adds the location.
//! No error quotes the text being expanded (it is often a secret): a malformed `${` is given by
//! its byte offset.

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

/// Looks a variable up in the process environment.
pub fn from_process(name: &str) -> Result<String, VarError> {
    std::env::var(name)
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
