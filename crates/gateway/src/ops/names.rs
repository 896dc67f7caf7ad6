//! Whether a name a command or the admin API was given names something: a plugin, app or
//! event type configured, or found in the store. An unknown name is an error, never a filter
//! that silently matches nothing.

use crate::config::{Config, EventPattern};
use crate::store::{EventFilter, Store};

/// Fails when `plugin` is neither configured nor named by any delivery in the store.
pub(crate) async fn known_plugin(
    config: &Config,
    store: &dyn Store,
    plugin: &str,
) -> Result<(), String> {
    if config.plugins.iter().any(|p| p.name == plugin) {
        return Ok(());
    }
    match store.plugin_names().await {
        Ok(names) if names.iter().any(|n| n == plugin) => Ok(()),
        Ok(_) => Err(format!(
            "unknown plugin {plugin:?}: no [[plugins]] entry and no delivery in the store has this name"
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Fails when `app` is neither configured nor the app of any event in the store.
pub(crate) async fn known_app(config: &Config, store: &dyn Store, app: &str) -> Result<(), String> {
    if config.apps.iter().any(|a| a.name == app) {
        return Ok(());
    }
    let filter = EventFilter {
        app: Some(app.to_owned()),
        ..EventFilter::default()
    };
    stored(store, filter, || {
        format!("unknown app {app:?}: no [[apps]] entry and no event in the store has this name")
    })
    .await
}

/// An event type filter names something: a route names it exactly, or an event of that type
/// is stored (types match exactly: a mistyped one would read as "no events"). A wildcard route
/// (`*`, `hire.*`) matches any spelling, so it proves nothing.
pub(crate) async fn known_type(
    config: &Config,
    store: &dyn Store,
    event_type: &str,
) -> Result<(), String> {
    let named = |p: &EventPattern| matches!(p, EventPattern::Exact(t) if t == event_type);
    if config.routes.iter().any(|r| r.events.iter().any(named)) {
        return Ok(());
    }
    let filter = EventFilter {
        event_type: Some(event_type.to_owned()),
        ..EventFilter::default()
    };
    stored(store, filter, || {
        format!(
            "unknown event type {event_type:?}: no route names it and no event in the store has \
             it (types match exactly, as hire.referral_account.assets_update_v1)"
        )
    })
    .await
}

/// Whether any stored event, of any time, passes `filter`; `unknown()` is the error if none.
async fn stored(
    store: &dyn Store,
    filter: EventFilter,
    unknown: impl FnOnce() -> String,
) -> Result<(), String> {
    let one = EventFilter {
        since_ms: i64::MIN,
        limit: 1,
        ..filter
    };
    match store.list_events(one).await {
        Ok(events) if !events.is_empty() => Ok(()),
        Ok(_) => Err(unknown()),
        Err(e) => Err(e.to_string()),
    }
}
