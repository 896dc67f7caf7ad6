//! How an API call fails: [`ApiError`], each kind with its HTTP status and JSON body.

use hyper::StatusCode;
use serde_json::{json, Value};

/// Every way an API call fails, each with its status; rendered as `{"error": "..."}` (plus
/// details for a refused replay).
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    BadRequest(String),
    Unauthorized,
    /// A cookie-authenticated POST without the session's CSRF token.
    Csrf,
    /// Without `[admin] token`: a POST from another site (`Origin` / `Sec-Fetch-Site`).
    CrossSite,
    NotFound(String),
    MethodNotAllowed(&'static str),
    /// A replay that would re-run deliveries that succeeded, without `force`.
    Conflict(Value),
    /// A body over this many bytes.
    TooLarge(usize),
    /// The body did not arrive within `admin::BODY_TIMEOUT`.
    RequestTimeout,
    UnsupportedMediaType,
    /// The reload was refused: the config has problems (the running one stays).
    Unprocessable(String),
    TooManyRequests(u64),
    /// The store failed, or the gateway is still starting.
    Unavailable(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Csrf | ApiError::CrossSite => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn body(&self) -> Value {
        let error = match self {
            ApiError::BadRequest(m)
            | ApiError::NotFound(m)
            | ApiError::Unprocessable(m)
            | ApiError::Unavailable(m) => m.clone(),
            ApiError::Unauthorized => {
                "authentication required: send `Authorization: Bearer <[admin] token>`".into()
            }
            ApiError::Csrf => "refused: a state-changing call needs the session's CSRF token \
                 (X-CSRF-Token) and must come from the console's own origin"
                .into(),
            ApiError::CrossSite => "refused: a state-changing call from another site (its \
                 Origin or Sec-Fetch-Site header); without [admin] token only the console's own \
                 pages and clients that send no Origin may make one"
                .into(),
            ApiError::MethodNotAllowed(allow) => format!("method not allowed (use {allow})"),
            ApiError::Conflict(v) => return v.clone(),
            ApiError::TooLarge(limit) => format!("request body over {limit} bytes"),
            ApiError::RequestTimeout => format!(
                "the request body did not arrive within {} s",
                crate::admin::BODY_TIMEOUT.as_secs()
            ),
            ApiError::UnsupportedMediaType => "send the body as application/json".into(),
            ApiError::TooManyRequests(s) => {
                format!("too many failed logins from this address; try again in {s} s")
            }
        };
        json!({ "error": error })
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::Unavailable(e.to_string())
    }
}
