//! The web console at `/`: server-rendered pages built from the same answers as the JSON API
//! ([`super::api`]), plus a little embedded CSS and JavaScript (`console/`: the overview's live
//! chart, the dead letters' select + replay, the event page's replay buttons). No build step, no
//! CDN: everything is in the binary.
//!
//! Pages: overview `/`, events `/events` (filters, search by id, older pages by cursor), one event
//! `/events/<id>`, dead letters `/dead-letters`, plugins `/plugins`, and the login form.
//! Never: writes anything on a GET (the buttons POST to the API with the session's CSRF token),
//! or puts unescaped stored text into a page.

mod pages;

use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, StatusCode};
use serde_json::Value;

use super::api::ApiError;
use super::form::{encode, esc};
use super::{Admin, Reply};
use pages::{dead_letters, event, events, overview, plugins};

const CSS: &str = include_str!("console/console.css");
const JS: &str = include_str!("console/console.js");

/// What every page needs to know about the request.
#[derive(Debug)]
pub struct Page<'a> {
    /// The session's CSRF token (cookie logins), put in a `<meta>` for the scripts.
    pub csrf: Option<&'a str>,
    /// Whether a token is configured (then a "log out" button is shown).
    pub login: bool,
}

fn html(status: StatusCode, body: String) -> Reply {
    let mut res = super::text(status, body, "text/html; charset=utf-8");
    let h = res.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    // Not `no-referrer`: with it, browsers send `Origin: null` on form posts.
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    res
}

/// `/assets/...`: the embedded stylesheet and script.
pub fn asset(path: &str) -> Reply {
    let (body, kind) = match path {
        "/assets/console.css" => (CSS, "text/css; charset=utf-8"),
        _ => (JS, "text/javascript; charset=utf-8"),
    };
    let mut res = super::text(StatusCode::OK, body.to_owned(), kind);
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    res
}

fn layout(page: &Page<'_>, title: &str, active: &str, body: &str) -> String {
    let nav = [
        ("/", "Overview"),
        ("/events", "Events"),
        ("/dead-letters", "Dead letters"),
        ("/plugins", "Plugins"),
    ]
    .iter()
    .map(|(href, name)| {
        let class = if *href == active {
            " class=\"active\""
        } else {
            ""
        };
        format!("<a href=\"{href}\"{class}>{name}</a>")
    })
    .collect::<String>();
    let csrf = page.csrf.map_or(String::new(), |c| {
        format!("<meta name=\"csrf-token\" content=\"{}\">", esc(c))
    });
    let logout = match (page.login, page.csrf) {
        (true, Some(c)) => format!(
            "<form method=\"post\" action=\"/logout\" class=\"logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Log out</button></form>",
            esc(c)
        ),
        _ => String::new(),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{csrf}<title>{} · gateway</title><link rel=\"stylesheet\" href=\"/assets/console.css\"></head>\n<body><header><span class=\"brand\">gateway</span><nav>{nav}</nav>{logout}</header>\n<main>\n<h1>{}</h1>\n{body}\n</main><script src=\"/assets/console.js\"></script></body></html>\n",
        esc(title),
        esc(title)
    )
}

/// A console page saying what went wrong, with the status (and a 405's `Allow`) of `e`.
pub(super) fn error_page(page: &Page<'_>, e: &ApiError) -> Reply {
    let message = e.body()["error"].as_str().unwrap_or("error").to_owned();
    let mut res = html(
        e.status(),
        layout(
            page,
            "Error",
            "",
            &format!("<p class=\"error\" id=\"error\">{}</p>", esc(&message)),
        ),
    );
    if let ApiError::MethodNotAllowed(allow) = e {
        res.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static(allow),
        );
    }
    res
}

/// The login form (`message` after a failed attempt).
pub fn login_page(next: &str, message: Option<&str>, status: StatusCode) -> Reply {
    let message = message.map_or(String::new(), |m| {
        format!("<p class=\"error\" id=\"login-error\">{}</p>", esc(m))
    });
    let page = Page {
        csrf: None,
        login: false,
    };
    let body = format!(
        "{message}<form method=\"post\" action=\"/login?next={}\" class=\"login\" id=\"login\">\
         <label>Admin token <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"current-password\" autofocus required></label>\
         <button type=\"submit\" id=\"login-submit\">Log in</button></form>\
         <p class=\"hint\">The value of <code>[admin] token</code> in the gateway's config.</p>",
        esc(&encode(next))
    );
    html(status, layout(&page, "Log in", "", &body))
}

/// `ms` as a UTC time for tables.
fn when(ms: &Value) -> String {
    ms.as_i64()
        .map(crate::ops::timefmt::rfc3339)
        .unwrap_or_else(|| "-".into())
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => esc(s),
        Value::Null => "-".into(),
        other => esc(&other.to_string()),
    }
}

fn state_badge(state: &str) -> String {
    format!("<span class=\"badge {0}\">{0}</span>", esc(state))
}

/// Routes a console page.
pub async fn route(
    admin: &Admin,
    page: &Page<'_>,
    method: &Method,
    path: &str,
    q: &[(String, String)],
) -> Reply {
    if method != Method::GET && method != Method::HEAD {
        return error_page(page, &ApiError::MethodNotAllowed("GET"));
    }
    if let Err(e) = super::api::no_nul_in_query(q) {
        return error_page(page, &e);
    }
    let rendered = match path {
        "/" => overview(admin, page).await,
        "/events" => match events(admin, page, q).await {
            Ok(Err(redirect)) => return redirect,
            Ok(Ok(body)) => Ok(body),
            Err(e) => Err(e),
        },
        "/dead-letters" => dead_letters(admin, page, q).await,
        "/plugins" => plugins(admin, page).await,
        _ => match path.strip_prefix("/events/") {
            Some(id) if !id.is_empty() => match super::form::decode_path(id) {
                Some(id) => event(admin, page, &id).await,
                None => Err(ApiError::BadRequest("bad event id escape".into())),
            },
            _ => Err(ApiError::NotFound(format!("no page {path}"))),
        },
    };
    match rendered {
        Ok(body) => html(StatusCode::OK, body),
        Err(e) => error_page(page, &e),
    }
}
