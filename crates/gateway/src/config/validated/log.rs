//! `[log] level`: the filter `run` installs, checked here with the parser `run` uses, so a
//! filter it would refuse is a config error rather than a silent fallback.

/// Checks a `[log] level`: comma-separated directives, each a level or `target=level`, where a
/// level is `off`, `error`, `warn` (also `warning`), `info`, `debug` or `trace`. Returns the
/// filter with `warning` spelled `warn`, once the parser `run` uses (`EnvFilter::try_new`) has
/// taken it too (a target like `gate[way` passes the level check, not the parser). (The
/// tracing filter itself would take a bare word as a target name and silently log nothing.)
pub(super) fn log_filter(text: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let level = |l: &str| -> Result<&'static str, String> {
        let l = l.trim().to_ascii_lowercase();
        let l = if l == "warning" { "warn".to_owned() } else { l };
        LEVELS
            .iter()
            .find(|k| **k == l)
            .copied()
            .ok_or_else(|| {
                format!(
                    "{text:?} is not a log level: use one of {} (or a filter like \"info,gateway=debug\")",
                    LEVELS.join(", ")
                )
            })
    };
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(format!("{text:?} has an empty directive"));
        }
        match part.split_once('=') {
            Some((target, l)) if !target.trim().is_empty() => {
                out.push(format!("{}={}", target.trim(), level(l)?))
            }
            Some(_) => return Err(format!("{text:?}: a directive has no target before `=`")),
            None => out.push(level(part)?.to_owned()),
        }
    }
    let filter = out.join(",");
    match tracing_subscriber::EnvFilter::try_new(&filter) {
        Ok(_) => Ok(filter),
        Err(e) => Err(format!("{text:?} is not a tracing filter: {e}")),
    }
}
