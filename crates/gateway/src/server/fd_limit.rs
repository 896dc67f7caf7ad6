//! The open-file limit against `[server] max_connections`: each connection holds a descriptor,
//! so a limit below the connections allowed (plus the gateway's own files: the store, plugins,
//! the admin listener's connections) runs out first, and new connections then wait unanswered
//! in the listen backlog instead of being closed at the limit. At start the gateway raises its
//! soft limit as far as needed and the hard limit allows, and warns if that is not enough.

/// Descriptors the gateway needs besides the webhook connections: the store's files and
/// connections, the plugins' files and children's pipes, the admin listener's 64 connections,
/// the listeners themselves.
const OWN: u64 = 128;

/// Descriptors `max_connections` can use, with the gateway's own.
fn needed(max_connections: usize) -> u64 {
    (max_connections as u64).saturating_add(OWN)
}

/// The soft limit to raise `soft` to (`None`: unlimited) so `max_connections` fit, as far as
/// the hard limit allows; `None` when it is enough already or cannot be raised.
pub fn raised(soft: Option<u64>, hard: Option<u64>, max_connections: usize) -> Option<u64> {
    let soft = soft?;
    let needed = needed(max_connections);
    let target = hard.map_or(needed, |hard| needed.min(hard));
    (soft < needed && target > soft).then_some(target)
}

/// The warning to log when the process's open-file limit (`soft`; `None`: unlimited) is below
/// what `max_connections` can use.
pub fn warning(soft: Option<u64>, max_connections: usize) -> Option<String> {
    let soft = soft?;
    let needed = needed(max_connections);
    (soft < needed).then(|| {
        format!(
            "the open-file limit ({soft}, ulimit -n / LimitNOFILE; its hard limit too) is below \
             [server] max_connections ({max_connections}) plus the gateway's own files ({OWN}): \
             past it new connections wait unanswered; raise the limit to at least {needed} or \
             lower max_connections"
        )
    })
}

/// What `run` would warn about with this process's limits (`check` says it beforehand): the
/// limit it would reach is still below what `max_connections` need.
pub fn expected_warning(max_connections: usize) -> Option<String> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let soft = raised(limit.current, limit.maximum, max_connections).or(limit.current);
    warning(soft, max_connections)
}

/// Raises this process's soft open-file limit when `max_connections` need it (up to the hard
/// limit, never past what they need: code in plugins that still uses `select` keeps working
/// below 1024 descriptors when the connections allow), then logs [`warning`] if it is still
/// too low. Children (isolated plugins) inherit the raised limit.
pub fn check(max_connections: usize) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(target) = raised(limit.current, limit.maximum, max_connections) {
        let from = limit.current;
        limit.current = Some(target);
        match setrlimit(Resource::Nofile, limit) {
            Ok(()) => tracing::info!(
                from = from.unwrap_or_default(),
                to = target,
                "raised the soft open-file limit for [server] max_connections"
            ),
            Err(e) => tracing::warn!(error = %e, "could not raise the soft open-file limit"),
        }
        limit = getrlimit(Resource::Nofile);
    }
    if let Some(w) = warning(limit.current, max_connections) {
        tracing::warn!("{w}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_only_below_the_connections_plus_the_gateways_own() {
        assert_eq!(warning(None, 1024), None);
        assert_eq!(warning(Some(65_536), 1024), None);
        assert_eq!(warning(Some(1024 + OWN), 1024), None);
        let w = warning(Some(1024), 1024).expect("a warning");
        assert!(w.contains("(1024") && w.contains("at least 1152"), "{w}");
        assert!(warning(Some(64), 10).is_some());
    }

    #[test]
    fn raises_the_soft_limit_to_what_the_connections_need_within_the_hard_limit() {
        let needed = 1024 + OWN;
        assert_eq!(raised(Some(256), Some(1 << 20), 1024), Some(needed));
        assert_eq!(raised(Some(256), None, 1024), Some(needed));
        // As far as the hard limit goes (then the warning still tells).
        assert_eq!(raised(Some(256), Some(400), 1024), Some(400));
        // Enough already, unlimited, or a hard limit that allows no more: unchanged.
        assert_eq!(raised(Some(needed), Some(1 << 20), 1024), None);
        assert_eq!(raised(Some(65_536), Some(65_536), 1024), None);
        assert_eq!(raised(None, None, 1024), None);
        assert_eq!(raised(Some(256), Some(256), 1024), None);
    }

    /// `check` raises this process's soft limit to what the connections need (within the
    /// hard limit), and `expected_warning` reads the limits the process has.
    #[test]
    fn the_process_limit_is_raised_and_read() {
        use rustix::process::{getrlimit, setrlimit, Resource};
        let before = getrlimit(Resource::Nofile);
        if let Some(soft) = before.current.filter(|s| *s > OWN + 1) {
            // One descriptor fewer for a moment, then `check` for connections that need all.
            let mut lower = before;
            lower.current = Some(soft - 1);
            setrlimit(Resource::Nofile, lower).expect("lowering the soft limit");
            let connections = usize::try_from(soft - OWN).expect("fits");
            check(connections);
            assert_eq!(getrlimit(Resource::Nofile).current, Some(soft));
            assert_eq!(expected_warning(connections), None);
        }
        assert_eq!(expected_warning(0), None, "{before:?}");
        let w = expected_warning(1 << 40).expect("past any hard limit");
        assert!(w.contains("max_connections (1099511627776)"), "{w}");
    }
}
