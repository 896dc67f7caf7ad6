use super::*;

fn args(plugin: Option<&str>, since: Option<&str>, older_than: Option<&str>) -> DeadLetterArgs {
    DeadLetterArgs {
        plugin: plugin.map(str::to_owned),
        since: since.map(str::to_owned),
        json: false,
        purge: true,
        older_than: older_than.map(str::to_owned),
    }
}

#[test]
fn a_purge_takes_only_the_filters_it_can_apply() {
    let e = filters(&args(None, None, None)).err().unwrap_or_default();
    assert!(e.contains("--purge needs a filter"), "{e}");
    let e = filters(&args(Some("rej"), Some("2030-01-01"), None))
        .err()
        .unwrap_or_default();
    assert!(e.contains("--since"), "{e}");
    let f = filters(&args(Some("rej"), None, Some("1h"))).expect("valid");
    let hour_ago = now_ms() - 3_600_000;
    assert!(f
        .before
        .is_some_and(|b| (hour_ago - 5_000..=hour_ago).contains(&b)));
    let e = filters(&args(Some("rej"), None, Some("soon")))
        .err()
        .unwrap_or_default();
    assert!(e.starts_with("--older-than:"), "{e}");
    // Listing (no --purge) takes them all.
    let mut list = args(None, Some("1h"), Some("10m"));
    list.purge = false;
    assert!(filters(&list).is_ok());
}

/// `--purge --since 1h` used to be told it needed a filter, as if --since were not given.
#[test]
fn a_purge_with_only_since_is_told_since_is_refused() {
    let e = filters(&args(None, Some("1h"), None))
        .err()
        .unwrap_or_default();
    assert!(
        e.starts_with("--purge takes --plugin and --older-than only"),
        "{e}"
    );
}

#[test]
fn an_age_longer_than_the_clock_has_run_selects_nothing() {
    // 1.7e19 ms: more than i64::MAX, once wrapped into a cutoff in the future.
    let before = older_than_ms("200000000000d").expect("valid");
    assert!(before < -(1 << 62), "{before}");
    let before = older_than_ms("36500d").expect("valid");
    assert!(before < 0, "{before}");
}
