//! What the plugin may show of a URL it calls: never its password, user or query values (a
//! payment platform's URL may carry `user:password@` or `?token=`). Outcome reasons are stored
//! and shown by the gateway as the plugin wrote them, and log lines are collected: both use
//! these.

/// A network error's text without the URL it was about (ureq puts the whole URL first).
pub(crate) fn transport_error(t: &ureq::Transport) -> String {
    let mut text = t.kind().to_string();
    if let Some(message) = t.message() {
        text.push_str(": ");
        text.push_str(message);
    }
    let mut source = std::error::Error::source(t);
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// `url` with its user info, query and fragment replaced by `***` (the SDK's rule).
pub(crate) fn shown_url(url: &str) -> String {
    gateway_plugin::config::shown_url(url, "***")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shown_url_has_no_user_info_or_query() {
        assert_eq!(
            shown_url("http://payout:pw-s3cret@127.0.0.1:1/pay?token=t0k#x"),
            "http://***@127.0.0.1:1/pay?***"
        );
        assert_eq!(
            shown_url("https://pay.example/a/b"),
            "https://pay.example/a/b"
        );
        assert_eq!(shown_url("http://u:p@h?x=1"), "http://***@h?***");
        assert_eq!(shown_url("https://u:Pa55#w@h/x"), "https://***@h/x");
    }

    #[test]
    fn a_network_error_does_not_name_its_url() {
        let agent = ureq::AgentBuilder::new().build();
        let err = agent
            .post("http://payout:pw-s3cret@127.0.0.1:1/pay?token=t0k")
            .send_string("{}")
            .expect_err("nothing listens on port 1");
        let ureq::Error::Transport(t) = err else {
            panic!("{err}")
        };
        let text = transport_error(&t);
        assert!(!text.contains("s3cret") && !text.contains("t0k"), "{text}");
        assert!(text.contains("onnect"), "{text}");
    }
}
