//! `[[routes]]`: which events go to which plugin instances, each name and pattern checked
//! against the `[[plugins]]` and `[[apps]]` entries; and the rule that a table's names are
//! unique.

use std::collections::HashSet;

use super::{EventPattern, Route, Validator};
use crate::config::raw::RawRoute;

impl Validator<'_> {
    pub(super) fn unique<'n>(
        &mut self,
        table: &str,
        names: impl Iterator<Item = &'n str>,
        key: &str,
    ) {
        let mut seen = HashSet::new();
        for (i, n) in names.enumerate() {
            // Empty is reported where it is read (or means "not set": a websocket app's path).
            if !n.is_empty() && !seen.insert(n) {
                self.problem(
                    &format!("{table}[{i}].{key}"),
                    format!("duplicate {key} {n:?}"),
                );
            }
        }
    }

    pub(super) fn route(
        &mut self,
        i: usize,
        r: &RawRoute,
        plugins: &HashSet<&str>,
        apps: &HashSet<&str>,
    ) -> Route {
        let at = |k: &str| format!("routes[{i}].{k}");
        if r.events.is_empty() {
            self.problem(
                &at("events"),
                "must list at least one event type or pattern",
            );
        }
        let mut events = Vec::new();
        for (j, e) in r.events.iter().enumerate() {
            let e = self.expand(&format!("{}[{j}]", at("events")), e);
            match EventPattern::parse(&e) {
                Ok(p) => events.push(p),
                Err(msg) => self.problem(&format!("{}[{j}]", at("events")), msg),
            }
        }
        if r.plugins.is_empty() {
            self.problem(&at("plugins"), "must list at least one plugin");
        }
        let mut names = Vec::new();
        for (j, p) in r.plugins.iter().enumerate() {
            let p = self.expand(&format!("{}[{j}]", at("plugins")), p);
            if !plugins.contains(p.as_str()) {
                self.problem(
                    &format!("{}[{j}]", at("plugins")),
                    format!("unknown plugin {p:?} (no [[plugins]] entry has this name)"),
                );
            }
            names.push(p);
        }
        if r.apps.as_ref().is_some_and(Vec::is_empty) {
            self.problem(
                &at("apps"),
                "is empty, so the route would match no event: list at least one app, or remove \
                 the key to route events of every app",
            );
        }
        let route_apps = r.apps.as_ref().map(|list| {
            list.iter()
                .enumerate()
                .map(|(j, a)| {
                    let a = self.expand(&format!("{}[{j}]", at("apps")), a);
                    if !apps.contains(a.as_str()) {
                        self.problem(
                            &format!("{}[{j}]", at("apps")),
                            format!("unknown app {a:?} (no [[apps]] entry has this name)"),
                        );
                    }
                    a
                })
                .collect()
        });
        Route {
            events,
            plugins: names,
            apps: route_apps,
        }
    }
}
