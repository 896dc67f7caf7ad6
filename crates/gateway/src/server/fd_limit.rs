//! The open-file limit against `[server] max_connections`: each connection holds a descriptor,
//! so a limit below the connections allowed (plus the gateway's own files: the store, plugins,
//! the admin listener's connections) runs out first, and new connections then wait unanswered
//! in the listen backlog instead of being closed at the limit.

/// Descriptors the gateway needs besides the webhook connections: the store's files and
/// connections, the plugins' files and children's pipes, the admin listener's 64 connections,
/// the listeners themselves.
const OWN: u64 = 128;

/// The warning to log when the process's open-file limit (`soft`; `None`: unlimited) is below
/// what `max_connections` can use.
pub fn warning(soft: Option<u64>, max_connections: usize) -> Option<String> {
    let soft = soft?;
    let needed = (max_connections as u64).saturating_add(OWN);
    (soft < needed).then(|| {
        format!(
            "the open-file limit ({soft}, ulimit -n / LimitNOFILE) is below [server] \
             max_connections ({max_connections}) plus the gateway's own files ({OWN}): past it \
             new connections wait unanswered; raise the limit to at least {needed} or lower \
             max_connections"
        )
    })
}

/// Logs [`warning`] for this process's limit.
pub fn check(max_connections: usize) {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
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
}
