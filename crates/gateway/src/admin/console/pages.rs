//! The console's pages, each rendered from the JSON API's answer ([`crate::admin::api`]): the
//! overview, the events list, one event (its deliveries, every attempt, the envelope), the dead
//! letters and the plugins. Stored text is escaped into every page.

use serde_json::Value;

use super::{layout, s, state_badge, when, Page};
use crate::admin::api::{self, ApiError};
use crate::admin::form::{encode, esc, get};
use crate::admin::{redirect, Admin, Reply};

/// The attempts table's rows: each delivery's history, grouped by plugin.
fn attempt_rows(deliveries: &Value) -> String {
    let mut rows = String::new();
    for d in deliveries.as_array().into_iter().flatten() {
        for a in d["history"].as_array().into_iter().flatten() {
            let duration = a["duration_ms"]
                .as_u64()
                .map_or_else(|| "-".into(), |ms| format!("{ms} ms"));
            rows.push_str(&format!(
                "<tr class=\"attempt\" data-plugin=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td class=\"outcome\">{}</td><td>{}</td><td>{}</td><td class=\"err\">{}</td></tr>",
                s(&d["plugin"]),
                s(&d["plugin"]),
                s(&a["generation"]),
                s(&a["attempt"]),
                state_badge(a["outcome"].as_str().unwrap_or("")),
                esc(a["started_at"].as_str().unwrap_or("-")),
                duration,
                s(&a["reason"]),
            ));
        }
    }
    if rows.is_empty() {
        rows.push_str("<tr><td colspan=\"7\" class=\"hint\">No attempt recorded yet.</td></tr>");
    }
    rows
}

fn ago(seconds: Option<i64>) -> String {
    match seconds {
        None => "-".into(),
        Some(s) if s < 120 => format!("{s} s"),
        Some(s) if s < 7200 => format!("{} min", s / 60),
        Some(s) => format!("{} h", s / 3600),
    }
}

fn plugin_health_rows(plugins: &Value) -> String {
    let Some(map) = plugins.as_object() else {
        return String::new();
    };
    map.iter()
        .map(|(name, p)| {
            let failing = p["consecutive_failures"].as_u64().unwrap_or(0) > 0;
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}/{}</td><td>{}</td><td class=\"err\">{}</td></tr>",
                esc(name),
                if failing { state_badge("failing") } else { state_badge("healthy") },
                when(&p["last_success_ms"]),
                s(&p["pending"]),
                s(&p["calls_running"]),
                s(&p["max_concurrency"]),
                s(&p["consecutive_failures"]),
                s(&p["last_error"]),
            )
        })
        .collect()
}

pub(super) async fn overview(admin: &Admin, page: &Page<'_>) -> Result<String, ApiError> {
    let o = api::overview(admin).await?;
    let ready = if o["ready"].as_bool().unwrap_or(false) {
        state_badge("ready")
    } else {
        format!("{} {}", state_badge("not-ready"), s(&o["reason"]))
    };
    let rate = |k: &str| format!("{:.1}", o["per_minute"][k].as_f64().unwrap_or(0.0));
    let body = format!(
        "<section class=\"cards\">\
         <div class=\"card\"><div class=\"label\">Status</div><div class=\"value\" id=\"ready\">{ready}</div></div>\
         <div class=\"card\"><div class=\"label\">Stored / min</div><div class=\"value\" id=\"rate-stored\">{}</div></div>\
         <div class=\"card\"><div class=\"label\">Delivered / min</div><div class=\"value\" id=\"rate-delivered\">{}</div></div>\
         <div class=\"card\"><div class=\"label\">Failed attempts / min</div><div class=\"value\" id=\"rate-failed\">{}</div></div>\
         <div class=\"card\"><div class=\"label\">Pending</div><div class=\"value\" id=\"pending\">{}</div></div>\
         <div class=\"card\"><div class=\"label\">Oldest pending</div><div class=\"value\" id=\"oldest\">{}</div></div>\
         <div class=\"card\"><div class=\"label\">Dead letters</div><div class=\"value\" id=\"dead\"><a href=\"/dead-letters\">{}</a></div></div>\
         </section>\
         <h2>Last hour</h2><p class=\"hint\">Per minute, this process: <span class=\"key stored\">stored</span> <span class=\"key delivered\">delivered</span> <span class=\"key failed\">failed attempts</span> <span class=\"key dead\">dead letters</span>. Updates every 5 s.</p>\
         <div id=\"chart\" class=\"chart\" data-source=\"/api/v1/overview\"></div>\
         <h2>Plugins</h2><table id=\"plugin-health\"><thead><tr><th>plugin</th><th>health</th><th>last success</th><th>pending</th><th>running</th><th>consecutive failures</th><th>last error</th></tr></thead><tbody>{}</tbody></table>",
        rate("stored"),
        rate("delivered"),
        rate("failed"),
        s(&o["pending"]),
        ago(o["oldest_pending_age_s"].as_i64()),
        s(&o["dead_letters"]),
        plugin_health_rows(&o["plugins"]),
    );
    Ok(layout(page, "Overview", "/", &body))
}

fn select(name: &str, current: Option<&str>, options: &[&str]) -> String {
    let opts: String = std::iter::once("")
        .chain(options.iter().copied())
        .map(|o| {
            let sel = if Some(o) == current { " selected" } else { "" };
            let label = if o.is_empty() { "any" } else { o };
            format!("<option value=\"{o}\"{sel}>{label}</option>")
        })
        .collect();
    format!("<select name=\"{name}\" id=\"f-{name}\">{opts}</select>")
}

pub(super) async fn events(
    admin: &Admin,
    page: &Page<'_>,
    q: &[(String, String)],
) -> Result<Result<String, Reply>, ApiError> {
    let mut notice = String::new();
    if let Some(id) = get(q, "id") {
        let id = id.trim();
        if admin.store.event(id.to_owned()).await?.is_some() {
            return Ok(Err(redirect(&format!("/events/{}", encode(id)))));
        }
        notice = format!(
            "<p class=\"error\" id=\"not-found\">No event with id <code>{}</code> in the store.</p>",
            esc(id)
        );
    }
    let list = api::events(admin, q).await?;
    let rows: String = list["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let id = e["id"].as_str().unwrap_or("");
            let state = if e["dead"].as_u64().unwrap_or(0) > 0 {
                "dead"
            } else if e["pending"].as_u64().unwrap_or(0) > 0 {
                "pending"
            } else if e["deliveries"].as_u64().unwrap_or(0) == 0 {
                "unrouted"
            } else {
                "done"
            };
            format!(
                "<tr><td>{}</td><td><a class=\"event-link\" href=\"/events/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(e["received_at"].as_str().unwrap_or("")),
                esc(&encode(id)),
                esc(id),
                s(&e["app"]),
                s(&e["event_type"]),
                state_badge(state),
                s(&e["deliveries"]),
            )
        })
        .collect();
    let keep: String = ["app", "type", "state", "since", "limit"]
        .iter()
        .filter_map(|k| get(q, k).map(|v| format!("&{k}={}", encode(v))))
        .collect();
    let older = list["next_cursor"].as_str().map_or(String::new(), |c| {
        format!(
            "<p><a id=\"older\" href=\"/events?cursor={}{}\">Older events →</a></p>",
            encode(c),
            esc(&keep)
        )
    });
    let value = |k: &str| esc(get(q, k).unwrap_or(""));
    let body = format!(
        "<form method=\"get\" action=\"/events\" class=\"filters\" id=\"search\">\
         <label>Event id <input name=\"id\" id=\"f-id\" placeholder=\"search by id\"></label>\
         <button type=\"submit\" id=\"search-submit\">Find</button></form>\
         <form method=\"get\" action=\"/events\" class=\"filters\" id=\"filters\">\
         <label>App <input name=\"app\" value=\"{}\"></label>\
         <label>Type <input name=\"type\" value=\"{}\"></label>\
         <label>State {}</label>\
         <label>Since <input name=\"since\" value=\"{}\" placeholder=\"1h, 2026-12-02\"></label>\
         <button type=\"submit\">Filter</button></form>{notice}\
         <table id=\"events\"><thead><tr><th>received (UTC)</th><th>event id</th><th>app</th><th>type</th><th>state</th><th>deliveries</th></tr></thead><tbody>{rows}</tbody></table>{older}",
        value("app"),
        value("type"),
        select("state", get(q, "state"), &["pending", "done", "dead"]),
        value("since"),
    );
    Ok(Ok(layout(page, "Events", "/events", &body)))
}

pub(super) async fn event(admin: &Admin, page: &Page<'_>, id: &str) -> Result<String, ApiError> {
    let e = api::event(admin, id).await?;
    let rows: String = e["deliveries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let state = d["state"].as_str().unwrap_or("");
            format!(
                "<tr class=\"delivery\" data-plugin=\"{plugin}\"><td>{plugin}</td><td class=\"state\">{}</td><td class=\"attempts\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"err\">{}</td>\
                 <td><button type=\"button\" class=\"replay-one\" data-event=\"{}\" data-plugin=\"{plugin}\" data-done=\"{}\">Replay</button></td></tr>",
                state_badge(state),
                s(&d["attempts"]),
                s(&d["crashes"]),
                esc(d["updated_at"].as_str().unwrap_or("-")),
                esc(d["next_at"].as_str().unwrap_or("-")),
                s(&d["last_error"]),
                esc(id),
                state == "done",
                plugin = s(&d["plugin"]),
            )
        })
        .collect();
    let envelope = serde_json::to_string_pretty(&e["envelope"]).unwrap_or_default();
    let body = format!(
        "<dl class=\"facts\"><dt>Event id</dt><dd id=\"event-id\">{}</dd><dt>App</dt><dd>{}</dd><dt>Type</dt><dd>{}</dd><dt>Schema</dt><dd>{}</dd><dt>Received</dt><dd>{}</dd></dl>\
         <h2>Deliveries</h2><p class=\"hint\">Attempts of the current generation (a replay starts again from 1); the last error is the latest failed attempt's reason.</p>\
         <table id=\"deliveries\"><thead><tr><th>plugin</th><th>state</th><th>attempts</th><th>crashes</th><th>updated (UTC)</th><th>next attempt</th><th>last error</th><th></th></tr></thead><tbody>{rows}</tbody></table>\
         <p id=\"result\" class=\"result\" role=\"status\"></p>\
         <h2>Attempts</h2><p class=\"hint\">Every recorded attempt, oldest first, across replays (a replay starts a new generation). A crashed attempt is one the gateway died during; its start is unknown.</p>\
         <table id=\"attempts\"><thead><tr><th>plugin</th><th>generation</th><th>attempt</th><th>outcome</th><th>started (UTC)</th><th>duration</th><th>reason</th></tr></thead><tbody>{}</tbody></table>\
         <h2>Envelope</h2><p class=\"hint\">Decrypted, as received; the verification token is redacted.</p><pre id=\"envelope\">{}</pre>",
        s(&e["id"]),
        s(&e["app"]),
        s(&e["event_type"]),
        s(&e["schema"]),
        esc(e["received_at"].as_str().unwrap_or("")),
        attempt_rows(&e["deliveries"]),
        esc(&envelope),
    );
    Ok(layout(page, &format!("Event {id}"), "/events", &body))
}

pub(super) async fn dead_letters(
    admin: &Admin,
    page: &Page<'_>,
    q: &[(String, String)],
) -> Result<String, ApiError> {
    // The page lists up to 500 (the API's most); `?limit=` narrows it.
    let mut q = q.to_vec();
    if get(&q, "limit").is_none() {
        q.push(("limit".into(), "500".into()));
    }
    let list = api::dead_letters(admin, &q).await?;
    let items = list["dead_letters"].as_array().cloned().unwrap_or_default();
    let more = if list["truncated"] == true {
        " (the newest only: there are more; filter by plugin, or replay them all with \
         <code>gateway replay --dead-letters</code>)"
    } else {
        ""
    };
    let rows: String = items
        .iter()
        .map(|d| {
            let id = d["event_id"].as_str().unwrap_or("");
            // A call hung past its timeout still runs: a replay leaves it out (it may succeed).
            let running = if d["running"] == true {
                "<span class=\"running\">call running</span> "
            } else {
                ""
            };
            format!(
                "<tr><td><input type=\"checkbox\" class=\"pick\" data-event=\"{}\" data-plugin=\"{}\"></td><td><a href=\"/events/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td class=\"err\">{running}{}</td></tr>",
                esc(id),
                s(&d["plugin"]),
                esc(&encode(id)),
                esc(id),
                s(&d["plugin"]),
                s(&d["attempts"]),
                esc(d["updated_at"].as_str().unwrap_or("")),
                s(&d["last_error"]),
            )
        })
        .collect();
    let body = format!(
        "<form method=\"get\" action=\"/dead-letters\" class=\"filters\"><label>Plugin <input name=\"plugin\" value=\"{}\"></label><button type=\"submit\">Filter</button></form>\
         <p>{} dead letter(s){more}. Fix the cause first (config, plugin, remote service), then replay.</p>\
         <div class=\"actions\"><label><input type=\"checkbox\" id=\"pick-all\"> select all</label> <button type=\"button\" id=\"replay-selected\">Replay selected</button></div>\
         <p id=\"result\" class=\"result\" role=\"status\"></p>\
         <table id=\"dead-letters\"><thead><tr><th></th><th>event id</th><th>plugin</th><th>attempts</th><th>died (UTC)</th><th>last error</th></tr></thead><tbody>{rows}</tbody></table>",
        esc(get(&q, "plugin").unwrap_or("")),
        items.len(),
    );
    Ok(layout(page, "Dead letters", "/dead-letters", &body))
}

pub(super) async fn plugins(admin: &Admin, page: &Page<'_>) -> Result<String, ApiError> {
    let list = api::plugins(admin).await?;
    let sections: String = list["plugins"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let st = &p["status"];
            let d = &p["descriptor"];
            let failing = st["consecutive_failures"].as_u64().unwrap_or(0) > 0;
            let descriptor = if d.is_null() {
                "<dd>not running</dd>".to_owned()
            } else {
                format!(
                    "<dd>{} {} (ABI 1.{}, batch entry: {})<br><small>{}</small></dd>",
                    s(&d["name"]),
                    s(&d["version"]),
                    s(&d["abi_minor"]),
                    s(&d["batch_entry"]),
                    s(&d["build_tag"])
                )
            };
            format!(
                "<section class=\"plugin\" id=\"plugin-{}\"><h2>{} {}</h2><dl class=\"facts\">\
                 <dt>Library</dt><dd><code>{}</code></dd><dt>sha256 pin</dt><dd>{}</dd>\
                 <dt>Descriptor</dt>{descriptor}\
                 <dt>Isolation</dt><dd>{}</dd><dt>Concurrency</dt><dd>{} running of {}, {} queued</dd>\
                 <dt>Pending</dt><dd>{}</dd><dt>Last success</dt><dd>{}</dd><dt>Consecutive failures</dt><dd>{}</dd><dt>Last error</dt><dd class=\"err\">{}</dd></dl>\
                 <h3>Config</h3><pre>{}</pre></section>",
                esc(p["name"].as_str().unwrap_or("")),
                s(&p["name"]),
                if failing { state_badge("failing") } else { state_badge("healthy") },
                s(&p["library"]),
                s(&p["sha256"]),
                s(&p["isolation"]),
                s(&st["calls_running"]),
                s(&p["max_concurrency"]),
                s(&st["queued"]),
                s(&st["pending"]),
                when(&st["last_success_ms"]),
                s(&st["consecutive_failures"]),
                s(&st["last_error"]),
                esc(&serde_json::to_string_pretty(&p["config"]).unwrap_or_default()),
            )
        })
        .collect();
    let body = format!(
        "<div class=\"actions\"><button type=\"button\" id=\"reload\">Reload config</button> <span class=\"hint\">Same as SIGHUP: the whole config is validated first; on any problem the running one stays.</span></div><p id=\"result\" class=\"result\" role=\"status\"></p>{sections}"
    );
    Ok(layout(page, "Plugins", "/plugins", &body))
}
