//! One HTTP POST and the classification of its result into an [`Outcome`]: network trouble,
//! timeouts, 429, 5xx and the bot's "rate limited" code are worth retrying; other 4xx, redirects
//! and bot error codes are permanent. Reasons built here may quote third-party text: a response
//! body is scrubbed of every known secret as soon as it is read, *before* it is cut to a
//! snippet (a copy of a secret straddling the cut would otherwise survive in part), and the
//! caller scrubs the whole reason once more.

use std::io::Read as _;
use std::time::Duration;

use gateway_plugin::Outcome;

use crate::config::TargetKind;
use crate::redact::Scrubber;

/// The bot code for "too many requests" (spec §10): retried.
pub const BOT_RATE_LIMITED: i64 = 11_232;
/// The code a custom bot's webhook answers when its own limit (5/s, 100/min) is hit, with
/// `"msg":"too many request"` (over HTTP 400, or 200): retried. The same code with another
/// message (`Bad Request`: a malformed body) is a refusal, so the message decides.
pub const BOT_TOO_MANY: i64 = 9_499;

/// Whether a bot answer's `code` and `msg` say "rate limited, try later".
pub fn rate_limited(code: i64, msg: &str) -> bool {
    code == BOT_RATE_LIMITED
        || (code == BOT_TOO_MANY && msg.to_ascii_lowercase().contains("too many"))
}
/// At most this much of a response body is read (and at most [`SNIPPET`] characters quoted).
const MAX_READ: u64 = 64 * 1024;
const SNIPPET: usize = 200;

/// POSTs `body` as JSON with extra `headers`, the whole request within `timeout` (the name
/// lookup excepted: ureq does not bound it), and classifies the answer for `target`.
pub fn post(
    agent: &ureq::Agent,
    target: TargetKind,
    url: &str,
    headers: &[(&'static str, String)],
    body: &[u8],
    timeout: Duration,
    scrubber: &Scrubber,
) -> Outcome {
    // A value a header cannot carry (a `delivery_id` with a control character) never changes:
    // refused here, where the client's own error for it is also the one for an answer of too
    // many headers, which is worth a retry.
    if let Some((name, _)) = headers
        .iter()
        .find(|(_, v)| !v.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)))
    {
        return Outcome::reject(format!(
            "the request's `{name}` header cannot carry this delivery's value"
        ));
    }
    let mut request = agent
        .post(url)
        .timeout(timeout)
        .set("Content-Type", "application/json; charset=utf-8");
    for (name, value) in headers {
        request = request.set(name, value);
    }
    match request.send_bytes(body) {
        Ok(response) => classify_success(target, response, scrubber),
        Err(ureq::Error::Status(status, response)) => classify_status(status, response, scrubber),
        Err(ureq::Error::Transport(t)) => classify_transport(&t),
    }
}

fn classify_transport(t: &ureq::Transport) -> Outcome {
    // `Transport`'s Display starts with the URL: build the reason from the parts instead.
    let kind = t.kind().to_string();
    let mut reason = format!("request failed: {kind}");
    if let Some(message) = t.message().filter(|m| *m != kind) {
        reason.push_str(": ");
        reason.push_str(message);
    }
    if let Some(source) = std::error::Error::source(t) {
        reason.push_str(": ");
        reason.push_str(&source.to_string());
    }
    match t.kind() {
        ureq::ErrorKind::InvalidUrl | ureq::ErrorKind::UnknownScheme => Outcome::reject(reason),
        _ => Outcome::retry(reason),
    }
}

/// 4xx and 5xx (ureq reports them as errors).
fn classify_status(status: u16, response: ureq::Response, scrubber: &Scrubber) -> Outcome {
    let retry_after = retry_after(&response);
    // A body that cannot be read is reported as what was read: the status already classifies.
    let text = read_body(response, scrubber).unwrap_or_else(|e| format!("(unreadable: {e})"));
    let code = bot_code(&text);
    let detail = match &code {
        Some((code, msg)) => format!("code {code}: {msg}"),
        None => snippet(&text),
    };
    let reason = format!("HTTP {status}: {detail}");
    let limited = code.as_ref().is_some_and(|(c, msg)| rate_limited(*c, msg));
    if status == 429 || status == 408 || status >= 500 || limited {
        Outcome::Retry {
            reason,
            retry_after,
        }
    } else {
        Outcome::reject(reason)
    }
}

/// 1xx–3xx. For the bot, HTTP 200 carries errors too: the body's code decides.
fn classify_success(target: TargetKind, response: ureq::Response, scrubber: &Scrubber) -> Outcome {
    let status = response.status();
    if !(200..300).contains(&status) {
        return Outcome::reject(format!(
            "unexpected HTTP {status} (redirects are not followed: point `url` at the final endpoint)"
        ));
    }
    if target == TargetKind::Http {
        return Outcome::Ok;
    }
    let retry_after = retry_after(&response);
    let text = match read_body(response, scrubber) {
        Ok(text) => text,
        // The bot's verdict is in the body: one cut off (a reset, the timeout) is unknown, not
        // a refusal. Retried (a notification may then be sent twice; never lost).
        Err(e) => {
            return Outcome::retry(format!(
                "HTTP {status}: the bot's answer could not be read ({e})"
            ))
        }
    };
    match bot_code(&text) {
        Some((0, _)) => Outcome::Ok,
        Some((code, msg)) if rate_limited(code, &msg) => Outcome::Retry {
            reason: format!("bot rate limited (code {code}: {msg})"),
            retry_after,
        },
        Some((code, msg)) => Outcome::reject(format!("bot error code {code}: {msg}")),
        None => Outcome::reject(format!(
            "HTTP {status} without a bot `code` (is `url` a custom bot webhook?): {}",
            snippet(&text)
        )),
    }
}

/// `(code, msg)` from `{"code":..,"msg":..}` or the older `{"StatusCode":..,"StatusMessage":..}`.
pub fn bot_code(text: &str) -> Option<(i64, String)> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let (code, msg) = match v.get("code") {
        Some(code) => (code, v.get("msg")),
        None => (v.get("StatusCode")?, v.get("StatusMessage")),
    };
    let msg = msg.and_then(|m| m.as_str()).unwrap_or("").to_owned();
    Some((code.as_i64()?, snippet(&msg)))
}

/// `Retry-After` in seconds (the HTTP-date form is ignored).
fn retry_after(response: &ureq::Response) -> Option<Duration> {
    let value = response.header("Retry-After")?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The body as text, every known secret already replaced (before any cut); an error when it
/// could not be read to its end (or `MAX_READ`).
fn read_body(response: ureq::Response, scrubber: &Scrubber) -> std::io::Result<String> {
    let mut bytes = Vec::new();
    response
        .into_reader()
        .take(MAX_READ)
        .read_to_end(&mut bytes)?;
    Ok(scrubber.scrub(&String::from_utf8_lossy(&bytes)))
}

fn snippet(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(SNIPPET) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None if text.is_empty() => "(empty body)".to_owned(),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bot_codes_both_forms() {
        assert_eq!(
            bot_code(r#"{"code":0,"msg":"success","data":{}}"#),
            Some((0, "success".into()))
        );
        assert_eq!(
            bot_code(r#"{"StatusCode":0,"StatusMessage":"success"}"#),
            Some((0, "success".into()))
        );
        assert_eq!(
            bot_code(r#"{"code":19021,"msg":"sign match fail or timestamp is not within one hour from current time"}"#)
                .map(|c| c.0),
            Some(19021)
        );
        assert_eq!(bot_code("<html>"), None);
        assert_eq!(bot_code(r#"{"ok":true}"#), None);
    }

    #[test]
    fn an_empty_answer_is_said_to_be_empty() {
        assert_eq!(snippet(" \n"), "(empty body)");
        assert_eq!(snippet("ok"), "ok");
    }

    /// An answer's body is read up to 64 KiB: a rate-limit code after 50 KiB of padding is
    /// still seen (and the retry it calls for).
    #[test]
    fn a_long_answer_is_read_up_to_its_bound() {
        let body = format!(
            r#"{{"pad":"{}","code":11232,"msg":"frequency limited"}}"#,
            "x".repeat(50 * 1024)
        );
        let Ok(response) = ureq::Response::new(400, "Bad Request", &body) else {
            panic!("a response")
        };
        match classify_status(400, response, &Scrubber::new(None, None)) {
            Outcome::Retry { reason, .. } => assert!(reason.contains("code 11232"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    /// A header value a request cannot carry is refused before anything is sent; a tab is one
    /// it can. A transport failure's reason names its kind once, then what the system said.
    #[test]
    fn header_values_and_transport_failures() {
        let agent = ureq::AgentBuilder::new().build();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a port")
            .port();
        let url = format!("http://127.0.0.1:{port}/hook");
        let send = |value: &str| {
            post(
                &agent,
                TargetKind::Http,
                &url,
                &[("webhook-id", value.to_owned())],
                b"{}",
                Duration::from_secs(5),
                &Scrubber::new(None, None),
            )
        };
        match send("d\u{1}1") {
            Outcome::Reject { reason } => {
                assert!(reason.contains("`webhook-id` header"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        match send("d\t1") {
            Outcome::Retry { reason, .. } => {
                assert!(
                    reason.starts_with("request failed: Connection Failed: "),
                    "{reason}"
                );
                assert_eq!(reason.matches("Connection Failed").count(), 1, "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let unknown = post(
            &agent,
            TargetKind::Http,
            &format!("gopher://127.0.0.1:{port}/hook"),
            &[],
            b"{}",
            Duration::from_secs(5),
            &Scrubber::new(None, None),
        );
        // Never right whatever is tried again; its message (not the kind's words) follows.
        assert_eq!(
            unknown,
            Outcome::reject("request failed: Unknown Scheme: unknown scheme 'gopher'")
        );
    }

    /// A remote end echoing a secret anywhere near the snippet's cut leaks no piece of it.
    #[test]
    fn an_echoed_secret_is_redacted_before_the_body_is_cut() {
        let secrets = [
            "SEC0123456789abcdefghijklmnopqrstuv",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ];
        for secret in secrets {
            let scrubber = Scrubber::new(None, Some(secret));
            for offset in SNIPPET - 40..SNIPPET + 5 {
                for body in [
                    format!("{}{secret}{}", "x".repeat(offset), "y".repeat(40)),
                    format!(
                        r#"{{"code":19021,"msg":"{}{secret}{}"}}"#,
                        "x".repeat(offset),
                        "y".repeat(40)
                    ),
                ] {
                    let Ok(response) = ureq::Response::new(400, "Bad Request", &body) else {
                        panic!("a response")
                    };
                    let reason = match classify_status(400, response, &scrubber) {
                        Outcome::Reject { reason } | Outcome::Retry { reason, .. } => reason,
                        Outcome::Ok => panic!("not ok"),
                    };
                    let chars: Vec<char> = secret.chars().collect();
                    for piece in chars.windows(6) {
                        let piece: String = piece.iter().collect();
                        assert!(
                            !reason.contains(&piece),
                            "offset {offset}: {piece:?} of the secret in {reason:?}"
                        );
                    }
                }
            }
        }
    }
}
