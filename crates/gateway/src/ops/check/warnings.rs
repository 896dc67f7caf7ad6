//! What `check` warns about in the config alone (valid, but likely not what was meant), which
//! `run` and a reload log too.

use crate::config::Config;

/// What `check` warns about in the config alone (valid, but likely not what was meant: a
/// retention shorter than Lark's re-sends, an app anyone may post to, a per-client limit behind
/// a proxy, a plugin in no route); `run` logs the same at start and a reload when it applies.
pub(crate) fn config_warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    warnings.extend(short_retention(config.retention));
    warnings.extend(per_client_behind_proxy(
        config.max_connections_per_client,
        &config.trusted_proxies,
    ));
    warnings.extend(config.apps.iter().filter_map(unauthenticated));
    for p in &config.plugins {
        if !config.routes.iter().any(|r| r.plugins.contains(&p.name)) {
            warnings.push(format!(
                "plugin {} is in no route: it is started but receives no event",
                p.name
            ));
        }
    }
    warnings
}

/// Lark re-sends an event it thinks failed 15 s, 5 min, 1 h and 6 h after (about 7.1 h in all,
/// spec §7): ids kept for less than that, with a margin, let such a re-send be delivered again.
const LARK_RESEND_WINDOW: std::time::Duration = std::time::Duration::from_secs(8 * 3600);

/// The warning for a `[store] retention` shorter than [`LARK_RESEND_WINDOW`] (valid: tests and
/// small disks use short ones; but it breaks "never delivered twice by Lark's retries").
pub(super) fn short_retention(retention: std::time::Duration) -> Option<String> {
    (retention < LARK_RESEND_WINDOW).then(|| {
        format!(
            "store.retention ({}s) is shorter than Lark's re-sends of an event (15 s, 5 min, 1 h \
             and 6 h after the first try, about 7.1 h): a re-send that comes after its id was \
             purged is stored and delivered again; keep at least 8h",
            retention.as_secs()
        )
    })
}

/// A limit per client set while a proxy is said to be in front: every connection through the
/// proxy is the proxy's, so its clients share one limit.
pub(super) fn per_client_behind_proxy(
    per_client: Option<usize>,
    proxies: &[std::net::IpAddr],
) -> Option<String> {
    (per_client.is_some() && !proxies.is_empty()).then(|| {
        "server.max_connections_per_client: counts the connections of each TCP peer, and \
         server.trusted_proxies says a proxy is in front: every connection through it counts \
         as the proxy's (limit per client at the proxy instead)"
            .to_owned()
    })
}

/// A webhook app with neither a verification token nor an Encrypt Key takes any POST to its
/// path as Lark's; and event ids are de-duplicated across apps, so whoever can post there can
/// also take an id another app's real event then finds already stored (a duplicate).
pub(super) fn unauthenticated(app: &crate::config::App) -> Option<String> {
    let w = app.webhook()?;
    (app.verification_token.is_none() && w.encrypt_key.is_none()).then(|| {
        format!(
            "app {}: neither verification_token nor encrypt_key: any POST to {} is taken as \
             Lark's, and its event ids count for every app's de-duplication",
            app.name, w.path
        )
    })
}
