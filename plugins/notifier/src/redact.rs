//! Keeping secrets out of sight. The webhook URL's last path segment is a bearer token and the
//! signing secret is a key: neither may appear in a log line, an error message or an `Outcome`
//! reason. [`redact_url`] gives the displayable form of the URL; [`Scrubber`] is the last line of
//! defence, applied to every text this plugin hands out (third-party error messages included).

/// `scheme://host[:port]/…/<redacted>`, or `None` when `url` is not an absolute http(s) URL with a
/// host. Userinfo, path, query and fragment are all dropped.
pub fn redact_url(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    Some(format!("{scheme}://{host}/…/<redacted>"))
}

/// Replaces every known secret string in a text with `<redacted>`.
#[derive(Clone, Default)]
pub struct Scrubber {
    /// Longest first, so a secret containing another is replaced whole.
    needles: Vec<String>,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scrubber({} secrets)", self.needles.len())
    }
}

/// Secrets shorter than this are not scrubbed piecewise (they would shred ordinary words); the
/// URL and its path are always long enough in practice.
const MIN_NEEDLE: usize = 4;

impl Scrubber {
    /// Learns the URL (whole, its path and its last path segment: the hook token) and the secret
    /// (raw and, for `whsec_` secrets, the part after the prefix).
    pub fn new(url: Option<&str>, secret: Option<&str>) -> Scrubber {
        let mut needles = Vec::new();
        if let Some(url) = url {
            needles.push(url.to_owned());
            if let Some((_, rest)) = url.split_once("://") {
                if let Some(slash) = rest.find('/') {
                    needles.push(rest[slash..].to_owned());
                }
            }
            let path = url.split(['?', '#']).next().unwrap_or(url);
            if let Some(last) = path.trim_end_matches('/').rsplit('/').next() {
                needles.push(last.to_owned());
            }
            // User info (`https://user:password@host`): the password, or a token given as user.
            if let Some((_, rest)) = url.split_once("://") {
                let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
                if let Some((userinfo, _)) = authority.rsplit_once('@') {
                    needles.extend(userinfo.split(':').map(str::to_owned));
                }
            }
            // Query values (`?access_token=...`): any of them may be the credential.
            if let Some((_, query)) = url.split_once('?') {
                let query = query.split('#').next().unwrap_or(query);
                for pair in query.split('&') {
                    if let Some((_, value)) = pair.split_once('=') {
                        needles.push(value.to_owned());
                    }
                }
            }
        }
        if let Some(secret) = secret {
            needles.push(secret.to_owned());
            if let Some(encoded) = secret.strip_prefix("whsec_") {
                needles.push(encoded.to_owned());
            }
        }
        needles.retain(|n| n.len() >= MIN_NEEDLE);
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        Scrubber { needles }
    }

    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), "<redacted>");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Its `{:?}` counts what it scrubs and shows none of it.
    #[test]
    fn debug_shows_no_secret() {
        let s = Scrubber::new(Some("https://h/hook/HOOKTOKEN"), Some("BOTSECRET"));
        let shown = format!("{s:?}");
        assert!(
            shown.starts_with("Scrubber(") && shown.ends_with(" secrets)"),
            "{shown}"
        );
        assert!(
            !shown.contains("HOOKTOKEN") && !shown.contains("BOTSECRET"),
            "{shown}"
        );
    }

    #[test]
    fn urls_are_redacted_to_host() {
        assert_eq!(
            redact_url("https://open.feishu.cn/open-apis/bot/v2/hook/abc-123").as_deref(),
            Some("https://open.feishu.cn/…/<redacted>")
        );
        assert_eq!(
            redact_url("http://user:pw@127.0.0.1:8080/x?token=1").as_deref(),
            Some("http://127.0.0.1:8080/…/<redacted>")
        );
        assert_eq!(
            redact_url("HTTPS://h").as_deref(),
            Some("https://h/…/<redacted>")
        );
        for bad in [
            "",
            "open.feishu.cn/hook/x",
            "ftp://h/x",
            "https:///x",
            "https://",
        ] {
            assert_eq!(redact_url(bad), None, "{bad}");
        }
    }

    #[test]
    fn scrubber_removes_url_token_and_secret() {
        let s = Scrubber::new(
            Some("http://127.0.0.1:9/open-apis/bot/v2/hook/tok-en-1234"),
            Some("whsec_c2VjcmV0"),
        );
        let text = "GET http://127.0.0.1:9/open-apis/bot/v2/hook/tok-en-1234 failed; \
                    token tok-en-1234, key whsec_c2VjcmV0 or c2VjcmV0, path /open-apis/bot/v2/hook/tok-en-1234";
        let out = s.scrub(text);
        for secret in ["tok-en-1234", "c2VjcmV0", "/open-apis/bot"] {
            assert!(!out.contains(secret), "{out}");
        }
        assert!(out.contains("<redacted>"));
    }

    #[test]
    fn scrubber_removes_a_token_given_in_the_query() {
        let s = Scrubber::new(Some("https://h.example/send?access_token=S3cr3tT0k"), None);
        let out = s.scrub("401 from upstream: bad token S3cr3tT0k");
        assert!(!out.contains("S3cr3tT0k"), "{out}");
        let s = Scrubber::new(Some("https://bot:pa55w0rd@h.example/send"), None);
        let out = s.scrub("auth failed for pa55w0rd");
        assert!(!out.contains("pa55w0rd"), "{out}");
    }
}
