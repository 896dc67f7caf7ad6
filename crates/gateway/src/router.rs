//! Routing: which plugin instances an event goes to, from `[[routes]]` (event type patterns and an
//! optional app filter). Pure and cheap; built once per config.

use crate::config::Route;

/// The route table.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    pub fn new(routes: Vec<Route>) -> Router {
        Router { routes }
    }

    /// Plugin instance names for an event, each once, in config order.
    pub fn plugins_for(&self, app: &str, event_type: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for route in &self.routes {
            let app_ok = route
                .apps
                .as_ref()
                .is_none_or(|apps| apps.iter().any(|a| a == app));
            if app_ok && route.events.iter().any(|p| p.matches(event_type)) {
                for p in &route.plugins {
                    if !out.contains(p) {
                        out.push(p.clone());
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EventPattern;

    fn route(events: &[&str], plugins: &[&str], apps: Option<&[&str]>) -> Route {
        Route {
            events: events
                .iter()
                .map(|e| EventPattern::parse(e).expect("pattern"))
                .collect(),
            plugins: plugins.iter().map(|s| s.to_string()).collect(),
            apps: apps.map(|a| a.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn matches_exact_prefix_and_app_filter() {
        let r = Router::new(vec![
            route(
                &["hire.referral_account.assets_update_v1"],
                &["audit", "payout"],
                None,
            ),
            route(&["hire.*"], &["audit", "notify"], Some(&["hire"])),
            route(&["*"], &["all"], Some(&["other"])),
        ]);
        assert_eq!(
            r.plugins_for("hire", "hire.referral_account.assets_update_v1"),
            ["audit", "payout", "notify"]
        );
        assert_eq!(
            r.plugins_for("x", "hire.referral_account.assets_update_v1"),
            ["audit", "payout"]
        );
        assert_eq!(r.plugins_for("hire", "hire.other"), ["audit", "notify"]);
        assert!(r.plugins_for("hire", "im.message").is_empty());
        assert_eq!(r.plugins_for("other", "im.message"), ["all"]);
    }
}
