//! Event type patterns of `[[routes]] events`: an exact type, `prefix.*` (a whole trailing
//! segment) or `*`.

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
            return Ok(EventPattern::Prefix(prefix.to_owned()));
        }
        if text.is_empty() || text.contains('*') {
            return Err(format!(
                "pattern {text:?} is not an event type or `prefix.*`"
            ));
        }
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

impl std::fmt::Display for EventPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventPattern::Exact(t) => f.write_str(t),
            EventPattern::Prefix(p) => write!(f, "{p}*"),
            EventPattern::Any => f.write_str("*"),
        }
    }
}
