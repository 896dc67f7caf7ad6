use super::*;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_str(v).expect("header value"));
    }
    h
}

const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

#[test]
fn bearer_cookie_and_csrf() {
    let auth = Auth::new(Some(AdminToken("0123456789abcdef".into())), false);
    assert_eq!(auth.check(&headers(&[]), PEER), Err(Denied::Missing));
    let ok = headers(&[("authorization", "Bearer 0123456789abcdef")]);
    assert_eq!(auth.check(&ok, PEER), Ok(Principal::Bearer));
    let id = auth.login("0123456789abcdef", PEER).expect("login");
    let with_cookie = headers(&[("cookie", &format!("x=1; {COOKIE}={id}"))]);
    let Ok(Principal::Session { csrf }) = auth.check(&with_cookie, PEER) else {
        panic!("session expected");
    };
    let who = Principal::Session { csrf: csrf.clone() };
    assert!(!csrf_ok(&who, &with_cookie, None));
    assert!(!csrf_ok(&who, &with_cookie, Some("nope")));
    assert!(csrf_ok(&who, &with_cookie, Some(&csrf)));
    auth.logout(&with_cookie);
    assert_eq!(auth.check(&with_cookie, PEER), Err(Denied::Missing));
}

#[test]
fn cookies_are_secure_over_https_only() {
    let token = || Some(AdminToken("0123456789abcdef".into()));
    let plain = Auth::new(token(), false);
    let https = Auth::new(token(), true);
    for (auth, secure) in [(&plain, false), (&https, true)] {
        for cookie in [auth.session_cookie("abc"), auth.clear_cookie()] {
            let text = cookie.to_str().expect("ascii");
            assert!(text.contains("HttpOnly; SameSite=Strict"), "{text}");
            assert_eq!(text.ends_with("; Secure"), secure, "{text}");
        }
    }
}

#[test]
fn failures_are_throttled_per_address() {
    let auth = Auth::new(Some(AdminToken("0123456789abcdef".into())), false);
    for _ in 0..MAX_FAILURES {
        assert_eq!(auth.login("wrong", PEER), Err(Denied::Wrong));
    }
    assert!(matches!(
        auth.login("0123456789abcdef", PEER),
        Err(Denied::Throttled(_))
    ));
    // The machine's other loopback addresses are the same client; another host is not.
    // (`::1` and an IPv4-mapped one too: `::1`'s /64 is `::`, which once made it a client of
    // its own with ten more tries.)
    for same_host in ["127.0.0.2", "::1", "::ffff:127.0.0.3"] {
        let same_host: IpAddr = same_host.parse().expect("ip");
        assert!(
            matches!(
                auth.login("0123456789abcdef", same_host),
                Err(Denied::Throttled(_))
            ),
            "{same_host}"
        );
    }
    let other: IpAddr = "10.0.0.2".parse().expect("ip");
    assert!(auth.login("0123456789abcdef", other).is_ok());
}

/// An IPv6 client is its /64: ten failures from ten of its addresses throttle all of them.
#[test]
fn an_ipv6_client_is_throttled_as_its_64() {
    let auth = Auth::new(Some(AdminToken("0123456789abcdef".into())), false);
    for i in 0..MAX_FAILURES {
        let addr: IpAddr = format!("2001:db8:5:6::{i:x}").parse().expect("ip");
        assert_eq!(auth.login("wrong", addr), Err(Denied::Wrong));
    }
    let next: IpAddr = "2001:db8:5:6:ffff::1".parse().expect("ip");
    assert!(matches!(
        auth.login("0123456789abcdef", next),
        Err(Denied::Throttled(_))
    ));
    let elsewhere: IpAddr = "2001:db8:5:7::1".parse().expect("ip");
    assert!(auth.login("0123456789abcdef", elsewhere).is_ok());
}

#[test]
fn the_throttle_window_ends_cleanly_at_its_boundary() {
    let w = FAILURE_WINDOW;
    let one = Duration::from_nanos(1);
    assert_eq!(throttle_left(MAX_FAILURES, Duration::ZERO), Some(w));
    assert_eq!(throttle_left(MAX_FAILURES, w - one), Some(one));
    assert_eq!(throttle_left(MAX_FAILURES, w), None);
    assert_eq!(throttle_left(MAX_FAILURES, w + one), None);
    assert_eq!(throttle_left(MAX_FAILURES, Duration::MAX), None);
    assert_eq!(throttle_left(MAX_FAILURES - 1, Duration::ZERO), None);

    // With the real clock: windows ending while they are checked, again and again.
    let auth = Auth::new(Some(AdminToken("0123456789abcdef".into())), false);
    for _ in 0..50 {
        let Some(since) = Instant::now().checked_sub(w - Duration::from_micros(500)) else {
            return; // booted less than a minute ago
        };
        lock(&auth.failures).insert(PEER, (MAX_FAILURES, since));
        while auth.throttled(PEER).is_err() {}
    }
    assert!(!auth.failures.is_poisoned());
    assert!(auth.login("0123456789abcdef", PEER).is_ok());
}

#[test]
fn a_poisoned_lock_does_not_turn_throttling_or_sessions_off() {
    let auth = Arc::new(Auth::new(
        Some(AdminToken("0123456789abcdef".into())),
        false,
    ));
    for m in [0, 1] {
        let a = auth.clone();
        let _ = std::thread::spawn(move || {
            let _f = lock(&a.failures);
            let _s = (m == 1).then(|| lock(&a.sessions));
            panic!("poisoning the locks on purpose");
        })
        .join();
    }
    assert!(auth.failures.is_poisoned() && auth.sessions.is_poisoned());
    let id = auth.login("0123456789abcdef", PEER).expect("login");
    let with_cookie = headers(&[("cookie", &format!("{COOKIE}={id}"))]);
    assert!(matches!(
        auth.check(&with_cookie, PEER),
        Ok(Principal::Session { .. })
    ));
    for _ in 0..MAX_FAILURES {
        assert_eq!(auth.login("wrong", PEER), Err(Denied::Wrong));
    }
    assert!(matches!(
        auth.login("0123456789abcdef", PEER),
        Err(Denied::Throttled(_))
    ));
}

#[test]
fn a_new_token_replaces_the_old_one_and_ends_the_sessions() {
    let a = || Some(AdminToken("token-aaaaaaaaaaaaaaaa".into()));
    let b = || Some(AdminToken("token-bbbbbbbbbbbbbbbb".into()));
    let auth = Auth::new(a(), false);
    let id = auth.login("token-aaaaaaaaaaaaaaaa", PEER).expect("login");
    let with_cookie = headers(&[("cookie", &format!("{COOKIE}={id}"))]);
    let bearer = |t: &str| headers(&[("authorization", &format!("Bearer {t}"))]);
    // The same token again changes nothing.
    assert!(!auth.set_token(a()));
    assert!(auth.check(&with_cookie, PEER).is_ok());
    assert!(auth.set_token(b()));
    assert_eq!(auth.check(&with_cookie, PEER), Err(Denied::Missing));
    assert_eq!(
        auth.check(&bearer("token-aaaaaaaaaaaaaaaa"), PEER),
        Err(Denied::Wrong)
    );
    assert_eq!(
        auth.check(&bearer("token-bbbbbbbbbbbbbbbb"), PEER),
        Ok(Principal::Bearer)
    );
    assert!(auth.set_token(None));
    assert!(!auth.required());
    assert_eq!(auth.check(&headers(&[]), PEER), Ok(Principal::Open));
    assert!(auth.set_token(a()));
    assert!(auth.required());
    assert_eq!(auth.check(&headers(&[]), PEER), Err(Denied::Missing));
}

#[test]
fn loopback_hosts_are_localhost_127_and_v6_one() {
    for ok in [
        "localhost",
        "LOCALHOST:9464",
        "127.0.0.1",
        "127.0.0.1:9464",
        "127.255.3.4:1",
        "[::1]",
        "[::1]:9464",
        "[::ffff:127.0.0.1]:80",
    ] {
        assert!(loopback_host(ok), "{ok}");
    }
    for bad in [
        "",
        "evil.example",
        "evil.example:9464",
        "localhost.evil.example",
        "127.0.0.1.evil.example",
        "localhost:9464.evil.example",
        "localhost:x",
        "10.0.0.1",
        "0.0.0.0:9464",
        "[::]:9464",
        "[::1]x",
        "[::1",
        "::1",
        "127.1",
        "sub.localhost",
        "localhost@evil.example",
    ] {
        assert!(!loopback_host(bad), "{bad}");
    }
}

#[test]
fn open_posts_must_be_same_origin() {
    let who = Principal::Open;
    assert!(csrf_ok(&who, &headers(&[("host", "127.0.0.1:9464")]), None));
    assert!(csrf_ok(
        &who,
        &headers(&[
            ("host", "127.0.0.1:9464"),
            ("origin", "http://127.0.0.1:9464")
        ]),
        None
    ));
    assert!(!csrf_ok(
        &who,
        &headers(&[
            ("host", "127.0.0.1:9464"),
            ("origin", "http://evil.example")
        ]),
        None
    ));
    assert!(!csrf_ok(
        &who,
        &headers(&[("host", "127.0.0.1:9464"), ("sec-fetch-site", "cross-site")]),
        None
    ));
    // The browser's own fetches: its own origin, and a navigation the user made (`none`).
    for site in ["same-origin", "none"] {
        assert!(
            csrf_ok(
                &who,
                &headers(&[("host", "127.0.0.1:9464"), ("sec-fetch-site", site)]),
                None
            ),
            "{site}"
        );
    }
    assert!(!csrf_ok(
        &who,
        &headers(&[("host", "127.0.0.1:9464"), ("sec-fetch-site", "same-site")]),
        None
    ));
}

#[test]
fn the_bearer_scheme_is_matched_in_any_case() {
    let auth = Auth::new(Some(AdminToken("0123456789abcdef".into())), false);
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let h = headers(&[("authorization", &format!("{scheme} 0123456789abcdef"))]);
        assert_eq!(auth.check(&h, PEER), Ok(Principal::Bearer), "{scheme}");
    }
}

#[test]
fn another_authorization_scheme_is_ignored_never_counted_or_throttled() {
    let auth = Auth::new(Some(AdminToken("0123456789abcdef".into())), false);
    // A basic-auth reverse proxy passes its own `Authorization` on: not a try at the token.
    // Never counted or throttled, and the session cookie still works beside it.
    let id = auth.login("0123456789abcdef", PEER).expect("login");
    let basic = "Basic b3BlcmF0b3I6aHVudGVyMg==";
    for _ in 0..3 * MAX_FAILURES {
        assert_eq!(
            auth.check(&headers(&[("authorization", basic)]), PEER),
            Err(Denied::Missing)
        );
        let both = headers(&[
            ("authorization", basic),
            ("cookie", &format!("{COOKIE}={id}")),
        ]);
        assert!(matches!(
            auth.check(&both, PEER),
            Ok(Principal::Session { .. })
        ));
    }
    for other in [
        "Digest username=\"x\"",
        "Bearerx 0123456789abcdef",
        "Token 0123456789abcdef",
    ] {
        assert_eq!(
            auth.check(&headers(&[("authorization", other)]), PEER),
            Err(Denied::Missing),
            "{other}"
        );
    }
    assert!(lock(&auth.failures).is_empty(), "nothing counted");
    let ok = headers(&[("authorization", "Bearer 0123456789abcdef")]);
    assert_eq!(auth.check(&ok, PEER), Ok(Principal::Bearer));
    // A bearer header beside a basic one is the one checked.
    let mut two = headers(&[("authorization", basic)]);
    two.append(
        hyper::header::AUTHORIZATION,
        HeaderValue::from_static("Bearer 0123456789abcdef"),
    );
    assert_eq!(auth.check(&two, PEER), Ok(Principal::Bearer));
}

#[test]
fn a_bearer_value_that_is_not_ascii_is_a_wrong_token_and_counted() {
    let auth = Auth::new(Some(AdminToken("0123456789abcdef".into())), false);
    for value in [
        &b"Bearer 0123456789abcde\xc3\xa9"[..],
        &b"Bearer \xff\xfe"[..],
        &b"bearer 0123456789abcdef\xe2\x80\x8b"[..],
        &b"Bearer"[..],
    ] {
        let mut h = HeaderMap::new();
        h.insert(
            hyper::header::AUTHORIZATION,
            HeaderValue::from_bytes(value).expect("header value"),
        );
        assert_eq!(auth.check(&h, PEER), Err(Denied::Wrong), "{value:?}");
    }
    assert_eq!(lock(&auth.failures).get(&PEER).map(|(n, _)| *n), Some(4));
}

/// A table full of live windows is kept: a client not in it is refused until the oldest window
/// ends (clearing it would let whoever holds 10,000 addresses reset every count, and so try
/// tokens without limit), and the clients in it keep their counts.
#[test]
fn a_full_throttle_table_refuses_new_clients_and_forgets_no_count() {
    let auth = Auth::new(Some(AdminToken("0123456789abcdef".into())), false);
    let now = Instant::now();
    let client = |i: usize| IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i as u32));
    {
        let mut failures = lock(&auth.failures);
        for i in 0..MAX_TRACKED {
            failures.insert(client(i), (MAX_FAILURES, now));
        }
    }
    let newcomer: IpAddr = "192.0.2.7".parse().expect("ip");
    for _ in 0..3 {
        assert!(matches!(
            auth.login("wrong", newcomer),
            Err(Denied::Throttled(left)) if left <= FAILURE_WINDOW
        ));
    }
    assert!(matches!(
        auth.login("0123456789abcdef", client(17)),
        Err(Denied::Throttled(_))
    ));
    assert_eq!(lock(&auth.failures).len(), MAX_TRACKED);

    // Once windows have ended, their entries make room.
    let Some(past) = now.checked_sub(FAILURE_WINDOW) else {
        return; // booted less than a minute ago
    };
    lock(&auth.failures).insert(client(3), (MAX_FAILURES, past));
    assert_eq!(auth.login("wrong", newcomer), Err(Denied::Wrong));
    assert_eq!(auth.login("wrong", newcomer), Err(Denied::Wrong));
    assert_eq!(lock(&auth.failures).get(&newcomer).map(|e| e.0), Some(2));
    // The room went to the newcomer: the table is full again.
    assert!(matches!(
        auth.login("0123456789abcdef", client(3)),
        Err(Denied::Throttled(_))
    ));
    assert!(matches!(
        auth.login("0123456789abcdef", client(18)),
        Err(Denied::Throttled(_))
    ));
}

#[test]
fn sessions_are_random_last_twelve_hours_and_end_when_expired() {
    let auth = Auth::new(Some(AdminToken("0123456789abcdef".into())), false);
    let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let a = auth.login("0123456789abcdef", PEER).expect("login");
    let b = auth.login("0123456789abcdef", PEER).expect("login");
    assert!(hex64(&a) && hex64(&b) && a != b, "{a} {b}");
    let session = |id: &str| headers(&[("cookie", &format!("{COOKIE}={id}"))]);
    let csrf = |id: &str| match auth.check(&session(id), PEER) {
        Ok(Principal::Session { csrf }) => csrf,
        other => panic!("session expected: {other:?}"),
    };
    let (csrf_a, csrf_b) = (csrf(&a), csrf(&b));
    assert!(
        hex64(&csrf_a) && csrf_a != csrf_b && csrf_a != a,
        "{csrf_a} {csrf_b}"
    );

    // Twelve hours, in the cookie and in the table.
    let cookie = auth.session_cookie(&a);
    assert!(
        cookie
            .to_str()
            .is_ok_and(|c| c.ends_with("; Max-Age=43200")),
        "{cookie:?}"
    );
    let expires = lock(&auth.sessions)[&digest(a.as_bytes())].expires;
    let left = expires.saturating_duration_since(Instant::now());
    assert!(
        left > Duration::from_secs(12 * 3600 - 60) && left <= Duration::from_secs(12 * 3600),
        "{left:?}"
    );

    // Expired: refused, and forgotten.
    let Some(past) = Instant::now().checked_sub(Duration::from_millis(1)) else {
        return; // a clock this close to its origin: nothing to expire against
    };
    if let Some(s) = lock(&auth.sessions).get_mut(&digest(a.as_bytes())) {
        s.expires = past;
    }
    assert_eq!(auth.check(&session(&a), PEER), Err(Denied::Missing));
    assert!(!lock(&auth.sessions).contains_key(&digest(a.as_bytes())));
    assert_eq!(csrf(&b), csrf_b, "the other session goes on");
}

#[test]
fn debug_shows_whether_a_token_is_set_never_the_token() {
    let with = format!(
        "{:?}",
        Auth::new(Some(AdminToken("0123456789abcdef".into())), false)
    );
    assert_eq!(with, r#"Auth { token: Some("<redacted>"), .. }"#);
    assert_eq!(
        format!("{:?}", Auth::new(None, false)),
        "Auth { token: None, .. }"
    );
}

#[test]
fn a_full_session_table_lets_the_oldest_session_go() {
    let auth = Auth::new(Some(AdminToken("0123456789abcdef".into())), false);
    let ids: Vec<String> = (0..MAX_SESSIONS)
        .map(|_| auth.login("0123456789abcdef", PEER).expect("login"))
        .collect();
    assert_eq!(lock(&auth.sessions).len(), MAX_SESSIONS);
    let newest = auth.login("0123456789abcdef", PEER).expect("login");
    let live = |id: &str| {
        auth.check(&headers(&[("cookie", &format!("{COOKIE}={id}"))]), PEER)
            .is_ok()
    };
    assert_eq!(lock(&auth.sessions).len(), MAX_SESSIONS);
    assert!(!live(&ids[0]), "the oldest went");
    assert!(live(&ids[1]) && live(&ids[MAX_SESSIONS - 1]) && live(&newest));
}
