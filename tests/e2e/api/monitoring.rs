//! The shipped monitoring: `deploy/prometheus/alerts.yml` passes `promtool`, and it and the
//! Grafana dashboard use only metrics a running gateway exports. Part of `api.rs`.

use gateway_e2e::harness::TestGateway;
use serde_json::Value;

use super::admin_client::*;

/// Every `gateway_*` name in `text`.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("gateway_") {
        let start = i + at;
        let before_ok =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = start
            + text[start..]
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(text.len() - start);
        if before_ok {
            names.insert(text[start..end].to_owned());
        }
        i = end;
    }
    names
}

#[test]
fn dashboard_and_alert_rules_use_only_exported_metrics_and_promtool_accepts_the_rules() {
    let root = gateway_e2e::workspace_root();
    let rules = root.join("deploy/prometheus/alerts.yml");
    let dashboard = root.join("deploy/grafana/gateway.json");

    let out = std::process::Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "promtool is needed to check deploy/prometheus/alerts.yml ({e}): \
                 `apt-get install -y prometheus` (.ci/run installs it)"
            )
        });
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The names used: every expression of the dashboard, the whole rules file.
    let board: Value =
        serde_json::from_str(&std::fs::read_to_string(&dashboard).expect("dashboard"))
            .expect("the dashboard is JSON");
    let mut exprs = String::new();
    for panel in board["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().into_iter().flatten() {
            exprs.push_str(t["expr"].as_str().unwrap_or_default());
            exprs.push('\n');
        }
    }
    for v in board["templating"]["list"].as_array().into_iter().flatten() {
        exprs.push_str(v["definition"].as_str().unwrap_or_default());
        exprs.push('\n');
    }
    // The store's gauges are the whole (shared) store's on every replica: never summed over
    // instances (two replicas showed the backlog twice).
    for store_wide in [
        "gateway_pending_deliveries",
        "gateway_pending_deliveries_by_plugin",
        "gateway_dead_letters_current",
        "gateway_oldest_pending_age_seconds",
    ] {
        for sum in ["sum(", "sum by (plugin) ("] {
            let summed = format!("{sum}{store_wide}{{");
            assert!(!exprs.contains(&summed), "the dashboard sums {store_wide}");
        }
    }
    let mut used = metric_names(&exprs);
    used.extend(metric_names(
        &std::fs::read_to_string(&rules).expect("rules"),
    ));
    for needed in [
        "gateway_requests_total",
        "gateway_dead_letters_total",
        "gateway_oldest_pending_age_seconds",
        "gateway_reloads_total",
        "gateway_store_commit_batch_size_bucket",
        "gateway_longconn_acks_total",
        "gateway_backlog_current",
    ] {
        assert!(used.contains(needed), "{needed} is used: {used:?}");
    }

    // What a running gateway exports: sample names, and the families' declared names.
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config(""));
    send(&gw, "/hook", "ev-1", "test.ok");
    let text = get(&gw, "/metrics").body;
    let mut samples = std::collections::BTreeSet::new();
    let mut types = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(n), Some(t)) = (parts.next(), parts.next()) {
                types.insert(n.to_owned(), t.to_owned());
            }
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            samples.insert(name.to_owned());
        }
    }
    let exported = |n: &str| {
        let family = |suffix: &str, kind: &str| {
            n.strip_suffix(suffix)
                .is_some_and(|base| types.get(base).is_some_and(|t| t == kind))
        };
        // A gauge family with no series yet (no app, no plugin of that kind) has no sample:
        // its declared name. A counter's or histogram's base name matches no sample: refused.
        samples.contains(n)
            || types.get(n).is_some_and(|t| t == "gauge")
            || family("_total", "counter")
            || family("_bucket", "histogram")
            || family("_sum", "histogram")
            || family("_count", "histogram")
    };
    let missing: Vec<&String> = used.iter().filter(|n| !exported(n)).collect();
    assert!(
        missing.is_empty(),
        "used by deploy/ but not exported by the gateway: {missing:?}"
    );
}

/// Regression: the counters the alert rules watch with `increase(...)` appeared at 1 with the
/// first event they count, so that first refused reload, plugin's first dead letters or first
/// failed login showed no increase and alerted no one. A fresh gateway exports them at 0.
#[test]
fn the_counters_alerts_watch_are_exported_at_zero_from_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TestGateway::spawn(dir.path(), &config(""));
    let text = get(&gw, "/metrics").body;
    for series in [
        r#"gateway_reloads_total{result="refused"} 0"#,
        r#"gateway_reloads_total{result="ok"} 0"#,
        r#"gateway_dead_letters_total{plugin="kit"} 0"#,
        r#"gateway_admin_auth_failures_total{kind="login"} 0"#,
        r#"gateway_admin_auth_failures_total{kind="bearer"} 0"#,
        r#"gateway_admin_auth_failures_total{kind="throttled"} 0"#,
    ] {
        assert!(
            text.lines().any(|l| l == series),
            "{series} is not exported:\n{text}"
        );
    }
}
