//! Unit tests of the API's query checks (`api.rs`).

use super::*;

#[test]
fn cursors_parse_or_are_refused() {
    let q = |c: &str| vec![("cursor".to_owned(), c.to_owned())];
    assert_eq!(cursor(&q("12.ev.1")), Ok(Some((12, "ev.1".to_owned()))));
    assert!(cursor(&q("x")).is_err());
}

#[test]
fn a_listing_refuses_a_parameter_it_does_not_take_or_an_empty_one() {
    let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let names = ["plugin", "since", "limit"];
    assert_eq!(
        only(&q(&[("plugin", "audit"), ("limit", "5")]), &names),
        Ok(())
    );
    assert_eq!(only(&q(&[]), &names), Ok(()));
    for bad in [
        [("plugn", "audit")],
        [("plugins", "audit")],
        [("plugin", "")],
    ] {
        let e = only(&q(&bad), &names).expect_err("refused");
        assert!(matches!(e, ApiError::BadRequest(_)), "{e:?}");
    }
}

#[test]
fn a_nul_in_any_query_parameter_is_a_bad_request() {
    let q = |k: &str, v: &str| {
        vec![
            ("limit".to_owned(), "5".to_owned()),
            (k.to_owned(), v.to_owned()),
        ]
    };
    for (k, v) in [
        ("app", "hi\0re"),
        ("type", "\0"),
        ("cursor", "12.ev\0"),
        ("x\0", "1"),
    ] {
        let e = no_nul_in_query(&q(k, v)).expect_err(k);
        assert_eq!(e.status(), hyper::StatusCode::BAD_REQUEST);
        assert!(
            e.body()["error"]
                .as_str()
                .is_some_and(|m| m.contains("NUL byte")),
            "{e:?}"
        );
    }
    assert_eq!(no_nul_in_query(&q("app", "hire")), Ok(()));
    assert!(no_nul("event_ids[0]", "ev\0").is_err());
    assert_eq!(no_nul("event_ids[0]", "ev-1"), Ok(()));
}

/// README: unknown ids or plugins are 404, and so is a delivery an event does not have (a
/// `deliveries` pick of a purged one, or a plugin the event was never routed to: was 400).
#[test]
fn a_replay_check_naming_what_does_not_exist_is_a_404() {
    for m in [
        "no event \"ev-9\" in the store",
        "unknown plugin \"x\"",
        "event \"ev-1\" has no delivery for plugin \"beta\"",
    ] {
        assert_eq!(
            not_found_or_bad(m.to_owned()).status(),
            hyper::StatusCode::NOT_FOUND,
            "{m}"
        );
    }
    let routed_nowhere = "event \"ev-1\" has no delivery (it was routed to no plugin, or its dead letters were purged): nothing to replay";
    assert_eq!(
        not_found_or_bad(routed_nowhere.to_owned()).status(),
        hyper::StatusCode::BAD_REQUEST
    );
    assert_eq!(
        not_found_or_bad("store: disk I/O error".to_owned()).status(),
        hyper::StatusCode::SERVICE_UNAVAILABLE
    );
}
