//! Event type patterns of `[[routes]] events`: an exact type, `prefix.*` (a whole trailing
//! segment) or `*`. Event types are dot-separated segments without whitespace, so a pattern
//! with whitespace or an empty segment (`" hire.x"`, `"hire..*"`, `"hire."`) could never match
//! and is refused. Case is kept and matters (schema 1.0 types may have upper-case letters).

/// An exact event type, `prefix.*`, or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventPattern {
    Exact(String),
    /// Matches types starting with this prefix (which ends with `.`).
    Prefix(String),
    Any,
}

impl EventPattern {
    pub fn parse(text: &str) -> Result<EventPattern, String> {
        if text == "*" {
            return Ok(EventPattern::Any);
        }
        if let Some(prefix) = text.strip_suffix('*') {
            if !prefix.ends_with('.') || prefix.contains('*') {
                return Err(format!(
                    "pattern {text:?}: `*` is only allowed as a whole segment at the end (\"hire.*\")"
                ));
            }
            segments(text, &prefix[..prefix.len() - 1])?;
            return Ok(EventPattern::Prefix(prefix.to_owned()));
        }
        if text.is_empty() || text.contains('*') {
            return Err(format!(
                "pattern {text:?} is not an event type or `prefix.*`"
            ));
        }
        segments(text, text)?;
        Ok(EventPattern::Exact(text.to_owned()))
    }

    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            EventPattern::Exact(t) => t == event_type,
            EventPattern::Prefix(p) => event_type.starts_with(p.as_str()),
            EventPattern::Any => true,
        }
    }
}

/// Checks that `types` (the part of the pattern `text` an event type must hold) is segments
/// separated by single dots, none empty, with no whitespace or control characters.
fn segments(text: &str, types: &str) -> Result<(), String> {
    if let Some(c) = types.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "pattern {text:?} holds {c:?}: event types have no whitespace, so it would never match"
        ));
    }
    if types.split('.').any(str::is_empty) {
        return Err(format!(
            "pattern {text:?} has an empty segment (a leading, trailing or doubled `.`): \
             no event type matches it"
        ));
    }
    Ok(())
}

impl std::fmt::Display for EventPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventPattern::Exact(t) => f.write_str(t),
            EventPattern::Prefix(p) => write!(f, "{p}*"),
            EventPattern::Any => f.write_str("*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::EventPattern;

    /// `check` and the console show a route's patterns as the config wrote them.
    #[test]
    fn a_pattern_displays_as_written() {
        for text in [
            "hire.referral_account.assets_update_v1",
            "hire.*",
            "*",
            "Upper.case",
        ] {
            let pattern = EventPattern::parse(text).expect("valid pattern");
            assert_eq!(pattern.to_string(), text);
        }
    }
}
