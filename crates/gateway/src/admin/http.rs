//! The admin listener's HTTP pieces: replies (text, JSON, errors, redirects), bounded body
//! reads, and the request checks made before any handler runs (where a login may send the
//! browser back to; without a token, whether a request is addressed to a loopback name and
//! whether a browser made it for another site). `admin.rs` adds `X-Content-Type-Options:
//! nosniff` to every reply.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use hyper::{Request, Response, StatusCode};

use super::api::ApiError;
use super::auth;

/// A request body (at most [`super::api::MAX_BODY`]) slower than this gets 408.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// The login form's largest body: read before any credential is checked, so kept small (a
/// token, the page to go back to, the CSRF field).
pub const MAX_LOGIN_BODY: usize = 64 * 1024;

/// What every admin handler answers.
pub type Reply = Response<Full<Bytes>>;

pub(super) fn text(status: StatusCode, body: String, content_type: &'static str) -> Reply {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

pub(super) fn json_reply(status: StatusCode, value: &serde_json::Value) -> Reply {
    let mut res = text(
        status,
        format!("{value:#}\n"),
        "application/json; charset=utf-8",
    );
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

pub(super) fn api_error(e: &ApiError) -> Reply {
    let mut res = json_reply(e.status(), &e.body());
    match e {
        ApiError::Unauthorized => {
            res.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"gateway admin\""),
            );
        }
        ApiError::MethodNotAllowed(allow) => {
            res.headers_mut()
                .insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
        }
        ApiError::TooManyRequests(s) => {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                res.headers_mut().insert(hyper::header::RETRY_AFTER, v);
            }
        }
        _ => {}
    }
    res
}

pub(super) fn redirect(to: &str) -> Reply {
    let mut res = text(StatusCode::SEE_OTHER, String::new(), "text/plain");
    if let Ok(v) = HeaderValue::from_str(to) {
        res.headers_mut().insert(LOCATION, v);
    }
    res
}

/// Reads a request body of at most `limit` bytes ([`super::api::MAX_BODY`] for an authenticated call,
/// [`MAX_LOGIN_BODY`] for the login form), within [`BODY_TIMEOUT`].
pub(super) async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let collect = Limited::new(body, limit).collect();
    match tokio::time::timeout(BODY_TIMEOUT, collect).await {
        Err(_) => Err(ApiError::RequestTimeout),
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::TooLarge(limit)),
        Ok(Err(e)) => Err(ApiError::BadRequest(format!("reading the body: {e}"))),
    }
}

/// Where a login may send the browser back to: a path on this site only. A single `/` followed
/// by something other than `/` or `\`, and no `\` or control character anywhere (browsers read
/// `/\host` as `//host`, and drop tabs and newlines: `/\t/host`).
pub(super) fn local_path(next: &str) -> bool {
    let mut bytes = next.bytes();
    bytes.next() == Some(b'/')
        && !matches!(bytes.next(), Some(b'/' | b'\\'))
        && !next.chars().any(|c| c == '\\' || c.is_control())
}

/// Without `[admin] token`, a request to anything but a probe is refused (403, and why) when it
/// is not addressed to a loopback name ([`foreign_host`]: DNS rebinding) or a browser says
/// another site made it ([`from_another_site`]: a page the operator visits must not make the
/// browser run the API's queries, GETs included). `None`: it may proceed.
pub(super) fn refused_without_token<B>(
    req: &Request<B>,
    peer: std::net::SocketAddr,
) -> Option<Reply> {
    let path = req.uri().path();
    let error = if let Some(what) = foreign_host(req) {
        tracing::debug!(client = %peer, path, "admin: refused a request not addressed to a loopback name");
        format!(
            "refused: {what} is not a loopback name; without [admin] token the admin listener \
             answers only requests addressed to localhost, 127.0.0.1 or [::1] (set a token to \
             reach it by another name)"
        )
    } else if let Some(site) = from_another_site(req.headers()) {
        tracing::debug!(client = %peer, path, site, "admin: refused a request from another site");
        format!(
            "refused: a request from another site (Sec-Fetch-Site: {site}); without [admin] \
             token the admin listener answers a browser only for the console's own pages and \
             an address typed in or bookmarked, never for another site's page or link (open \
             the console by its address; scripts and curl send no Sec-Fetch-Site)"
        )
    } else {
        return None;
    };
    Some(json_reply(
        StatusCode::FORBIDDEN,
        &serde_json::json!({ "error": error }),
    ))
}

/// The `Sec-Fetch-Site` of a request a browser made for another site: `cross-site`, or
/// `same-site` (a page on another port of `localhost` is the same site). `None` for
/// `same-origin`, `none` (typed, bookmarked) and requests without the header (curl, the CLI,
/// older browsers).
pub(super) fn from_another_site(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all("sec-fetch-site")
        .iter()
        .map(|v| v.to_str().unwrap_or("?"))
        .find(|s| s.eq_ignore_ascii_case("cross-site") || s.eq_ignore_ascii_case("same-site"))
}

/// Why a request without `[admin] token` is refused: its `Host` (or its absolute URI's host) is
/// not a loopback name or address. `None`: it may proceed.
fn foreign_host<B>(req: &Request<B>) -> Option<String> {
    let host = req.headers().get(hyper::header::HOST);
    let name = host.map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
    let host_ok = host
        .and_then(|h| h.to_str().ok())
        .is_some_and(auth::loopback_host);
    let authority_ok = req
        .uri()
        .authority()
        .is_none_or(|a| auth::loopback_host(a.as_str()));
    if host_ok && authority_ok {
        return None;
    }
    Some(if !authority_ok {
        format!(
            "the request target's host {:?}",
            req.uri()
                .authority()
                .map(|a| a.as_str())
                .unwrap_or_default()
        )
    } else if let Some(name) = name {
        format!("Host {name:?}")
    } else {
        "a request without a Host header".to_owned()
    })
}

#[cfg(test)]
mod tests {
    use crate::admin::api;
    use std::convert::Infallible;

    use super::*;

    #[test]
    fn login_sends_back_only_to_a_path_of_this_site() {
        for ok in [
            "/",
            "/events",
            "/events/ev-1?state=dead&x=%2F%2F",
            "/a/b//c",
        ] {
            assert!(local_path(ok), "{ok:?}");
        }
        for bad in [
            "",
            "//evil.example/x",
            "/\\evil.example/x",
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r//evil.example",
            "\\\\evil.example",
            "\\/evil.example",
            "https://evil.example",
            "evil.example",
            "/a\\b",
            "/a\u{7f}b",
            "/a\u{85}b",
            " /x",
        ] {
            assert!(!local_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn another_site_is_cross_site_or_same_site() {
        let with = |values: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("sec-fetch-site", HeaderValue::from_static(v));
            }
            h
        };
        for other in [
            &["cross-site"][..],
            &["same-site"],
            &["Cross-Site"],
            &["none", "same-site"],
        ] {
            assert!(from_another_site(&with(other)).is_some(), "{other:?}");
        }
        for ours in [&[][..], &["same-origin"], &["none"]] {
            assert_eq!(from_another_site(&with(ours)), None, "{ours:?}");
        }
    }

    fn header<'r>(res: &'r Reply, name: &str) -> Option<&'r str> {
        res.headers().get(name).and_then(|v| v.to_str().ok())
    }

    async fn body_of(res: Reply) -> String {
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn replies_carry_their_status_type_and_headers() {
        let t = text(StatusCode::ACCEPTED, "hi".into(), "text/plain");
        assert_eq!(t.status(), StatusCode::ACCEPTED);
        assert_eq!(header(&t, "content-type"), Some("text/plain"));
        assert_eq!(body_of(t).await, "hi");

        let j = json_reply(StatusCode::OK, &serde_json::json!({ "a": 1 }));
        assert_eq!(
            header(&j, "content-type"),
            Some("application/json; charset=utf-8")
        );
        assert_eq!(header(&j, "cache-control"), Some("no-store"));
        assert_eq!(body_of(j).await, "{\n  \"a\": 1\n}\n");

        let r = redirect("/events?x=1");
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(header(&r, "location"), Some("/events?x=1"));

        let e = api_error(&ApiError::Unauthorized);
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            header(&e, "www-authenticate"),
            Some("Bearer realm=\"gateway admin\"")
        );
        assert_eq!(header(&e, "cache-control"), Some("no-store"));
        let e = api_error(&ApiError::MethodNotAllowed("GET, POST"));
        assert_eq!(e.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(header(&e, "allow"), Some("GET, POST"));
        let e = api_error(&ApiError::TooManyRequests(42));
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(&e, "retry-after"), Some("42"));
        let e = api_error(&ApiError::NotFound("no such event".into()));
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        assert_eq!(header(&e, "www-authenticate"), None);
        assert!(body_of(e).await.contains("no such event"));
    }

    #[tokio::test]
    async fn a_body_past_its_limit_is_too_large_and_a_broken_one_bad() {
        let limit = vec![b'x'; api::MAX_BODY];
        assert_eq!(
            read_body(Full::new(Bytes::from(limit.clone())), api::MAX_BODY)
                .await
                .map(|b| b.len()),
            Ok(api::MAX_BODY)
        );
        let mut over = limit;
        over.push(b'x');
        assert_eq!(
            read_body(Full::new(Bytes::from(over)), api::MAX_BODY).await,
            Err(ApiError::TooLarge(api::MAX_BODY))
        );
        let broken = http_body_util::StreamBody::new(futures_util::stream::iter([Err::<
            hyper::body::Frame<Bytes>,
            std::io::Error,
        >(
            std::io::Error::other("reset"),
        )]));
        assert!(
            matches!(read_body(broken, api::MAX_BODY).await, Err(ApiError::BadRequest(m)) if m.contains("reset"))
        );
    }

    /// Without a token: only requests addressed to a loopback name, and not made by a browser
    /// for another site.
    #[test]
    fn without_a_token_only_loopback_names_from_this_site_pass() {
        let peer: std::net::SocketAddr = "127.0.0.1:50000".parse().expect("peer");
        let request = |uri: &str, host: Option<&'static str>, site: Option<&'static str>| {
            let mut b = Request::builder().uri(uri);
            if let Some(h) = host {
                b = b.header("host", h);
            }
            if let Some(s) = site {
                b = b.header("sec-fetch-site", s);
            }
            b.body(()).expect("request")
        };
        for host in [
            "localhost:9464",
            "127.0.0.1:9464",
            "[::1]:9464",
            "localhost",
        ] {
            let req = request("/api/v1/status", Some(host), None);
            assert_eq!(foreign_host(&req), None, "{host}");
            assert!(refused_without_token(&req, peer).is_none(), "{host}");
        }
        let refused = |req: &Request<()>| refused_without_token(req, peer).map(|r| r.status());
        let req = request("/api/v1/status", Some("evil.example:9464"), None);
        assert_eq!(
            foreign_host(&req).as_deref(),
            Some("Host \"evil.example:9464\"")
        );
        assert_eq!(refused(&req), Some(StatusCode::FORBIDDEN));
        let req = request("/api/v1/status", None, None);
        assert_eq!(
            foreign_host(&req).as_deref(),
            Some("a request without a Host header")
        );
        assert_eq!(refused(&req), Some(StatusCode::FORBIDDEN));
        let req = request("http://evil.example/api/v1/status", Some("localhost"), None);
        assert_eq!(
            foreign_host(&req).as_deref(),
            Some("the request target's host \"evil.example\"")
        );
        let req = request(
            "http://localhost:9464/api/v1/status",
            Some("localhost:9464"),
            None,
        );
        assert_eq!(foreign_host(&req), None);
        let req = request("/api/v1/status", Some("localhost"), Some("cross-site"));
        assert_eq!(refused(&req), Some(StatusCode::FORBIDDEN));
        let req = request("/api/v1/status", Some("localhost"), Some("same-origin"));
        assert_eq!(refused(&req), None);
    }

    /// A body that never sends a byte.
    fn stalled() -> http_body_util::StreamBody<
        futures_util::stream::Pending<Result<hyper::body::Frame<Bytes>, Infallible>>,
    > {
        http_body_util::StreamBody::new(futures_util::stream::pending())
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_times_out() {
        let started = tokio::time::Instant::now();
        assert_eq!(
            read_body(stalled(), api::MAX_BODY).await,
            Err(ApiError::RequestTimeout)
        );
        assert_eq!(started.elapsed(), BODY_TIMEOUT);
        assert_eq!(
            ApiError::RequestTimeout.status(),
            StatusCode::REQUEST_TIMEOUT
        );
        let whole = Full::new(Bytes::from_static(b"{}"));
        assert_eq!(
            read_body(whole, api::MAX_BODY).await,
            Ok(Bytes::from_static(b"{}"))
        );
    }
}
