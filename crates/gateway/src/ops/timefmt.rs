//! Times on the command line: RFC 3339 UTC out (`2026-12-02T14:00:00.123Z`), and `--since`
//! in: Unix milliseconds, a duration back from now (`2h`, `1h30m`), or an RFC 3339 time
//! (`2026-12-02T14:00:00Z`, with fractions and `±hh:mm` offsets) or a date (`2026-12-02`, UTC
//! midnight).

use crate::store::sqlite::now_ms;

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `ms` as RFC 3339 UTC with milliseconds (`2026-12-02T14:00:00.123Z`).
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // The inverse of `days_from_civil`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses `YYYY-MM-DD`, or `YYYY-MM-DDThh:mm:ss[.fff](Z|±hh:mm)` (a space for `T` too).
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let t = text.trim();
    let b = t.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = t.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month) || day < 1 || day > days_in[(month - 1) as usize] {
        return None;
    }
    let date_ms = days_from_civil(year, month, day) * 86_400_000;
    if b.len() == 10 {
        return Some(date_ms);
    }
    if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 20 || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, m, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if h > 23 || m > 59 || s > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = t.get(start..i)?;
        if frac.is_empty() {
            return None;
        }
        let three: String = frac.chars().chain("00".chars()).take(3).collect();
        millis = three.parse::<i64>().ok()?;
    }
    // Bytes, not `str` slices: the text may hold multi-byte characters anywhere.
    let offset_min = match t.get(i..)?.as_bytes() {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let sign = if *sign == b'-' { -1 } else { 1 };
            sign * (oh * 60 + om)
        }
        _ => return None,
    };
    Some(date_ms + ((h * 60 + m - offset_min) * 60 + s) * 1000 + millis)
}

/// `--since`: Unix milliseconds, a duration back from now, or an RFC 3339 time or date.
pub fn since_ms(text: &str) -> Result<i64, String> {
    if let Ok(ms) = text.trim().parse::<i64>() {
        return Ok(ms);
    }
    if let Some(ms) = parse_rfc3339(text) {
        return Ok(ms);
    }
    // Shaped as a date (`YYYY-`) but not one (`2026-13-01`, `2026-12-02T15:03:31` without its
    // offset): the duration parser's reason (`unknown unit "-"`) would mislead.
    let t = text.trim().as_bytes();
    if t.len() >= 5 && t[..4].iter().all(u8::is_ascii_digit) && t[4] == b'-' {
        return Err(format!(
            "--since: {text:?} is neither a duration nor an RFC 3339 time: no such date or time \
             (a date is YYYY-MM-DD, a time YYYY-MM-DDThh:mm:ss[.fff] with Z or an offset ±hh:mm)"
        ));
    }
    gateway_plugin::config::parse_duration(text)
        // A duration longer than the clock goes back saturates (at the earliest time) instead of
        // overflowing.
        .map(|d| now_ms().saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
        .map_err(|e| {
            format!(
                "--since: {e} (or an RFC 3339 time like 2026-12-02T14:00:00Z, a date, or Unix \
                 milliseconds)"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::{parse_rfc3339, rfc3339, since_ms};

    #[test]
    fn rfc3339_in_utc_with_millis() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_796_223_811_305), "2026-12-02T15:03:31.305Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn parses_what_it_prints_and_offsets() {
        for ms in [0, 951_782_400_123, 1_796_223_811_305, -1, 4_102_444_800_000] {
            assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms), "{ms}");
        }
        assert_eq!(
            parse_rfc3339("2026-12-02T23:03:31+08:00"),
            parse_rfc3339("2026-12-02T15:03:31Z")
        );
        assert_eq!(
            parse_rfc3339("2026-12-02 15:03:31.3Z"),
            Some(1_796_223_811_300)
        );
        assert_eq!(parse_rfc3339("2026-12-02"), Some(1_796_169_600_000));
        for bad in [
            "2026-13-01",
            "2026-02-30",
            "2026-12-02T25:00:00Z",
            "2026-12-02T15:03:31",
            "2026-12-02T15:03:31+0800",
            "2026-12-02T15:03:31.Z",
            "12/02/2026",
            "2026-12-02Tx",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn since_takes_ms_durations_and_times() {
        assert_eq!(since_ms("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(since_ms("2026-12-02T15:03:31.305Z"), Ok(1_796_223_811_305));
        let two_hours_ago = since_ms("2h").expect("duration");
        assert!((crate::store::sqlite::now_ms() - two_hours_ago - 7_200_000).abs() < 5_000);
        let e = since_ms("yesterday").expect_err("refused");
        assert!(e.contains("RFC 3339"), "{e}");
    }

    /// `--since 2026-13-01` used to say `unknown unit "-"`: a date that does not exist is
    /// neither a duration nor an RFC 3339 time, and the message says so.
    #[test]
    fn an_impossible_date_is_named_as_neither_a_duration_nor_a_time() {
        for bad in [
            "2026-13-01",
            "2026-02-30",
            "2026-12-02T25:00:00Z",
            "2026-12-02T15:03:31",
        ] {
            let e = since_ms(bad).expect_err("refused");
            assert!(
                e.contains("neither a duration nor an RFC 3339"),
                "{bad}: {e}"
            );
            assert!(!e.contains("unit"), "{bad}: {e}");
        }
        // A text that is no time at all keeps the duration parser's reason.
        let e = since_ms("30m1h").expect_err("refused");
        assert!(e.contains("largest to smallest"), "{e}");
    }

    #[test]
    fn non_ascii_text_is_refused_not_a_panic() {
        for bad in [
            "2026-12-02T15:03:31é",
            "2026-12-02T15:03:31éé",
            "2026-12-02T15:03:31\u{20ac}:00",
            "2026-12-02T15:03:31+0\u{20ac}0",
            "2026-12-02T15:03:31+08\u{20ac}",
            "2026-12-02T15:03:31.5\u{1f600}",
            "2026-12-02T1\u{20ac}:03:31Z",
            "2026-\u{20ac}-02",
            "\u{1f600}\u{1f600}\u{1f600}",
            "2026-12-02\u{a0}15:03:31Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
            let e = since_ms(bad).expect_err("refused");
            assert!(e.contains("RFC 3339"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn huge_durations_saturate() {
        let now = crate::store::sqlite::now_ms();
        for huge in [
            "9223372036854775808ms",
            "18446744073709551615ms",
            "213503982334d",
            "106751991167d",
        ] {
            let ms = since_ms(huge).unwrap_or_else(|e| panic!("{huge}: {e}"));
            assert!(ms <= now - 9_000_000_000_000_000, "{huge}: {ms}");
        }
        assert!(since_ms("18446744073709551616ms").is_err());
    }
}
