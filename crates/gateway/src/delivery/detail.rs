//! Plugin outcome details (reasons) are stored in `last_error` and logged: they are capped so a
//! plugin cannot fill the store or the log with one answer. The gateway does not redact plugin
//! text (plugins redact their own secrets, as the shipped ones do); it only caps it.

/// The most bytes of a reason kept.
pub const MAX_DETAIL: usize = 4096;

/// `reason` cut to at most [`MAX_DETAIL`] bytes (on a character boundary), with a marker
/// saying how much was dropped.
pub fn cap(reason: String) -> String {
    cap_to(reason, MAX_DETAIL)
}

/// [`cap`] to at most `max` bytes (at least a marker's worth).
pub fn cap_to(reason: String, max: usize) -> String {
    // PostgreSQL's text cannot hold a NUL (a C plugin may count its terminator in the length):
    // a reason with one would make every write of its outcome fail.
    let reason = if reason.contains('\0') {
        reason.replace('\0', "\u{FFFD}")
    } else {
        reason
    };
    if reason.len() <= max {
        return reason;
    }
    let marker = format!(" … [truncated {} bytes]", reason.len());
    let mut end = max.saturating_sub(marker.len());
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let dropped = reason.len() - end;
    let mut out = reason;
    out.truncate(end);
    out.push_str(&format!(" … [truncated {dropped} bytes]"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cut steps back to a character boundary, never forward past `max`.
    #[test]
    fn the_cut_steps_back_to_a_character_boundary() {
        // 31 bytes; the marker takes 25 of the 30, so the cut at byte 5 falls inside the
        // second "€" (bytes 4..7) and steps back to 4.
        let reason = format!("a{}", "€".repeat(10));
        assert_eq!(cap_to(reason, 30), "a€ … [truncated 27 bytes]");
    }

    #[test]
    fn a_nul_in_a_reason_is_replaced() {
        assert_eq!(cap("bad\0reason\0".into()), "bad\u{FFFD}reason\u{FFFD}");
    }

    #[test]
    fn short_reasons_are_untouched_and_long_ones_capped_on_a_char_boundary() {
        assert_eq!(cap("short".into()), "short");
        let exact = "x".repeat(MAX_DETAIL);
        assert_eq!(cap(exact.clone()), exact);
        for long in [
            "y".repeat(20_000),
            "é".repeat(9_999),
            format!("a{}", "€".repeat(3000)),
        ] {
            let capped = cap(long.clone());
            assert!(capped.len() <= MAX_DETAIL, "{}", capped.len());
            assert!(capped.ends_with("bytes]"), "{capped:.40}");
            let kept = capped.split(" … [truncated ").next().unwrap_or_default();
            assert!(long.starts_with(kept));
            let dropped: usize = capped
                .rsplit("[truncated ")
                .next()
                .and_then(|t| t.strip_suffix(" bytes]"))
                .and_then(|n| n.parse().ok())
                .unwrap_or_default();
            assert_eq!(kept.len() + dropped, long.len());
        }
    }
}
