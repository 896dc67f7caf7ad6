//! Times for the report CLI: Unix milliseconds ⇄ ISO 8601 (UTC), without a date library.
//!
//! Accepted input: plain digits (Unix ms, at least 13 digits: from 2001-09-09 on, so a date
//! written without dashes, `20240501`, is refused rather than read as a moment of 1970),
//! `YYYY-MM-DD` (midnight UTC; as the end of a range, [`parse_until`], the last millisecond of
//! that day), or `YYYY-MM-DDTHH:MM[:SS[.fff]]` with an optional `Z` or `±HH:MM` offset (UTC when
//! absent; a space may replace the `T`).

/// The smallest Unix millisecond value taken as one (2001-09-09T01:46:40Z): fewer digits are
/// most likely a date without its dashes (or a time in seconds).
pub(crate) const MIN_UNIX_MS: u64 = 1_000_000_000_000;

/// Whether `ms` reads as a Lark time in Unix milliseconds at `now_ms`: at least
/// [`MIN_UNIX_MS`] (seconds have 10 digits) and at most a day ahead (microseconds have 16).
pub(crate) fn plausible_unix_ms(ms: u64, now_ms: u64) -> bool {
    const DAY_MS: u64 = 86_400_000;
    ms >= MIN_UNIX_MS && ms <= now_ms.saturating_add(DAY_MS)
}

/// Parses a time given as Unix ms or ISO 8601; the error says what was expected.
pub fn parse_time(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        let ms: u64 = t
            .parse()
            .map_err(|_| format!("{text:?}: too large for Unix milliseconds"))?;
        if ms < MIN_UNIX_MS {
            return Err(format!(
                "{text:?} is too small for Unix milliseconds (13 digits today); a date is written 2024-05-01"
            ));
        }
        return Ok(ms);
    }
    parse_iso(t).ok_or_else(|| {
        format!("{text:?} is neither Unix milliseconds nor an ISO 8601 time such as 2024-05-01 or 2024-05-01T08:00:00Z")
    })
}

/// [`parse_time`] for the end of an inclusive range: a date alone (`2024-05-31`) means the
/// last millisecond of that day (UTC), so `--from 2024-05-01 --to 2024-05-31` is all of May.
pub fn parse_until(text: &str) -> Result<u64, String> {
    let ms = parse_time(text)?;
    Ok(if text.trim().len() == 10 {
        ms.saturating_add(86_400_000 - 1)
    } else {
        ms
    })
}

fn parse_iso(t: &str) -> Option<u64> {
    // ISO 8601 is ASCII; anything else is refused before any slicing by byte offsets.
    if !t.is_ascii() {
        return None;
    }
    let b = t.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = num(&t[0..4])?;
    let month = num(&t[5..7])?;
    let day = num(&t[8..10])?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let mut ms = days_from_civil(year, month, day).checked_mul(86_400_000)?;
    let rest = &t[10..];
    if rest.is_empty() {
        return u64::try_from(ms).ok();
    }
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    // Split the clock from the zone.
    let zone_at = rest.find(['Z', 'z', '+', '-']).unwrap_or(rest.len());
    let (clock, zone) = rest.split_at(zone_at);
    let (hms, frac) = match clock.split_once('.') {
        Some((hms, frac)) => (hms, Some(frac)),
        None => (clock, None),
    };
    let parts: Vec<&str> = hms.split(':').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.len() != 2) {
        return None;
    }
    let h = num(parts[0])?;
    let m = num(parts[1])?;
    let s = match parts.get(2) {
        Some(p) => num(p)?,
        None => 0,
    };
    if h > 23 || m > 59 || s > 59 || (frac.is_some() && parts.len() != 3) {
        return None;
    }
    let millis = match frac {
        None => 0,
        Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|c| c.is_ascii_digit()) => {
            let padded = format!("{f:0<3}");
            num(&padded[..3])?
        }
        Some(_) => return None,
    };
    ms += (h * 3_600 + m * 60 + s) * 1_000 + millis;
    let offset = match zone {
        "" | "Z" | "z" => 0,
        z => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let (oh, om) = z[1..].split_once(':')?;
            if oh.len() != 2 || om.len() != 2 {
                return None;
            }
            let (oh, om) = (num(oh)?, num(om)?);
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 3_600 + om * 60) * 1_000
        }
    };
    u64::try_from(ms - offset).ok()
}

fn num(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Formats Unix ms as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_ms(ms: u64) -> String {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1_000 % 60,
        rem % 1_000,
    );
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_times_are_refused_not_a_panic() {
        for text in ["2024-05-0é", "2024-05-01Té0:00Z", "2024-é5-01"] {
            assert!(parse_time(text).is_err(), "{text}");
        }
    }

    #[test]
    fn parses_forms() {
        assert_eq!(parse_time("1685431415036"), Ok(1_685_431_415_036));
        assert_eq!(parse_time("1970-01-01"), Ok(0));
        // A date without its dashes is not a moment of 1970.
        for digits in ["20240501", "999999999999"] {
            let e = parse_time(digits).expect_err(digits);
            assert!(e.contains("2024-05-01"), "{e}");
        }
        assert_eq!(parse_time("1000000000000"), Ok(1_000_000_000_000));
        // As a range's end, a date alone is its whole day; anything else is as given.
        assert_eq!(parse_until("2024-05-31"), Ok(1_717_199_999_999));
        assert_eq!(parse_until("2024-05-31T00:00Z"), Ok(1_717_113_600_000));
        assert_eq!(parse_until("1717113600000"), Ok(1_717_113_600_000));
        assert_eq!(
            parse_time("2023-05-30T07:23:35.036Z"),
            Ok(1_685_431_415_036)
        );
        assert_eq!(
            parse_time("2023-05-30T15:23:35.036+08:00"),
            Ok(1_685_431_415_036)
        );
        assert_eq!(parse_time("2023-05-30 07:23:35.036"), Ok(1_685_431_415_036));
        assert_eq!(parse_time("2024-02-29T00:00"), Ok(1_709_164_800_000));
        for bad in [
            "",
            "2023-02-29",
            "2023-13-01",
            "2023-05-30T25:00",
            "yesterday",
            "2023-05-30Tx",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_day_from_the_year_minus_400_to_2400_converts_both_ways() {
        // Before 1970 too: the algorithm's eras below zero (parse_time refuses those dates, as
        // they are before Unix time, but the conversion itself must hold there).
        let mut previous = (-401, 12, 31);
        let first = days_from_civil(-400, 1, 1);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(0, 3, 1), -719_468);
        let last = days_from_civil(2400, 12, 31);
        for day in first..=last {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day, "{y}-{m}-{d}");
            assert!(
                (1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m),
                "{y}-{m}-{d}"
            );
            // The day after the previous one.
            let (py, pm, pd) = previous;
            let expected = if pd < days_in_month(py, pm) {
                (py, pm, pd + 1)
            } else if pm < 12 {
                (py, pm + 1, 1)
            } else {
                (py + 1, 1, 1)
            };
            assert_eq!((y, m, d), expected, "day {day}");
            previous = (y, m, d);
        }
        assert_eq!(previous, (2400, 12, 31));
    }

    #[test]
    fn leap_years_and_month_lengths() {
        for (y, leap) in [
            (2023, false),
            (2024, true),
            (1900, false),
            (2000, true),
            (2100, false),
        ] {
            assert_eq!(is_leap(y), leap, "{y}");
            assert_eq!(days_in_month(y, 2), if leap { 29 } else { 28 }, "{y}");
        }
        let lengths: Vec<i64> = (1..=12).map(|m| days_in_month(2023, m)).collect();
        assert_eq!(lengths, [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]);
    }

    #[test]
    fn clock_and_zone_limits() {
        let day = 1_685_404_800_000; // 2023-05-30T00:00:00Z
        assert_eq!(parse_time("2023-05-30T23:59:59"), Ok(day + 86_399_000));
        assert_eq!(
            parse_time("2023-05-30T00:00:00+23:59"),
            Ok(day - 86_340_000)
        );
        assert_eq!(
            parse_time("2023-05-30T00:00:00-05:30"),
            Ok(day + 19_800_000)
        );
        assert_eq!(
            parse_time("2023-05-30T12:00+05:30"),
            Ok(day + 43_200_000 - 19_800_000)
        );
        assert_eq!(parse_time("2023-05-30T00:00:00.5Z"), Ok(day + 500));
        assert_eq!(parse_time("2023-05-30T00:00:00.123456789Z"), Ok(day + 123));
        for bad in [
            "2023-05-30T24:00",
            "2023-05-30T23:60",
            "2023-05-30T23:59:60",
            "2023-05-30T00:00+24:00",
            "2023-05-30T00:00+23:60",
            "2023-05-30T00:00+5:30",
            "2023-05-30T00:00+0530",
            "2023-05-30T00:00:00.1234567890",
            "2023-05-30T00:00:00.",
            "2023-05-30T00:00:00.12a",
            "2023-05-30T00:00.5",
            "2023-05-30T08",
            "2023-05-30T8:00",
            "2023-05-30T08:00:00:00",
            "2023x05-30",
            "2023-05x30",
            "2023-5-30",
            "2023-05-00",
            "2023-04-31",
            "2023-00-10",
            "2023-05-30Q",
            "2023-+5-30",
            "2023-05-+3",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for ms in [0, 1_685_431_415_036, 1_709_164_800_000, 4_102_444_800_000] {
            assert_eq!(parse_time(&format_ms(ms)), Ok(ms));
        }
        assert_eq!(format_ms(1_685_431_415_036), "2023-05-30T07:23:35.036Z");
    }
}
