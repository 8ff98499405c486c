//! Times as Durable Functions' HTTP API writes and reads them: `yyyy-MM-ddTHH:mm:ssZ` out;
//! ISO 8601 dates and times in (with an offset or `Z`, or UTC when there is none) for the
//! filters of lists and purges.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `yyyy-MM-ddTHH:mm:ssZ`, UTC, as Durable Functions writes times.
pub(crate) fn format_time(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses an ISO 8601 time as Durable Functions' filters take it: `yyyy-MM-dd`, or
/// `yyyy-MM-ddTHH:mm[:ss[.fff]]` followed by `Z`, an offset `±HH:mm`, or nothing (UTC).
/// Times before 1970 are the epoch.
pub(crate) fn parse_time(text: &str) -> Result<SystemTime, String> {
    let (seconds, nanos) = utc_seconds(text.trim()).ok_or_else(|| {
        format!(
            "`{text}` is not a time; write it as ISO 8601, e.g. 2026-01-31T12:00:00Z or 2026-01-31"
        )
    })?;
    Ok(match u64::try_from(seconds) {
        Ok(seconds) => UNIX_EPOCH + Duration::new(seconds, nanos),
        Err(_) => UNIX_EPOCH,
    })
}

/// Seconds since the epoch, and nanoseconds, of a time [`parse_time`] takes.
fn utc_seconds(text: &str) -> Option<(i64, u32)> {
    let (date, clock) = match text.find(['T', 't', ' ']) {
        Some(at) => (&text[..at], &text[at + 1..]),
        None => (text, ""),
    };
    let days = days_of_date(date)?;
    let (seconds, nanos) = if clock.is_empty() {
        (0, 0)
    } else {
        seconds_of_clock(clock)?
    };
    Some((days * 86_400 + seconds, nanos))
}

/// Days since 1970-01-01 of `yyyy-MM-dd`.
fn days_of_date(date: &str) -> Option<i64> {
    let mut parts = date.splitn(3, '-');
    let year = digits(parts.next()?, 4)?;
    let month = digits(parts.next()?, 2)?;
    let day = digits(parts.next()?, 2)?;
    let valid = (1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month);
    valid.then(|| days_from_civil(year, month, day))
}

/// Seconds since midnight UTC (negative, or past a day, across an offset), and
/// nanoseconds, of `HH:mm[:ss[.fff]]` and its zone.
fn seconds_of_clock(text: &str) -> Option<(i64, u32)> {
    let (clock, offset) = split_zone(text)?;
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut fields = hms.split(':');
    let hours = digits(fields.next()?, 2)?;
    let minutes = digits(fields.next()?, 2)?;
    let seconds = match fields.next() {
        Some(seconds) => digits(seconds, 2)?,
        None => 0,
    };
    if fields.next().is_some() || hours > 23 || minutes > 59 || seconds > 60 {
        return None;
    }
    let nanos = nanos_of_fraction(fraction)?;
    Some((hours * 3600 + minutes * 60 + seconds - offset, nanos))
}

/// The clock before its zone, and the zone's offset east of UTC in seconds: `Z`, `±HH:mm`,
/// `±HH`, or no zone (UTC).
fn split_zone(text: &str) -> Option<(&str, i64)> {
    if let Some(clock) = text.strip_suffix(['Z', 'z']) {
        return Some((clock, 0));
    }
    let Some(at) = text.rfind(['+', '-']) else {
        return Some((text, 0));
    };
    let (clock, zone) = text.split_at(at);
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let zone = &zone[1..];
    let (hours, minutes) = zone.split_once(':').unwrap_or((zone, "00"));
    let (hours, minutes) = (digits(hours, 2)?, digits(minutes, 2)?);
    (hours <= 23 && minutes <= 59).then_some((clock, sign * (hours * 3600 + minutes * 60)))
}

/// Nanoseconds of up to nine fractional digits (none is 0).
fn nanos_of_fraction(fraction: &str) -> Option<u32> {
    if fraction.is_empty() {
        return Some(0);
    }
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    format!("{fraction:0<9}").parse().ok()
}

/// A number written with exactly `count` ASCII digits.
fn digits(text: &str, count: usize) -> Option<i64> {
    if text.len() != count || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(year) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn times_round_trip_in_durable_functions_format() {
        let time = UNIX_EPOCH + Duration::from_secs(1_767_225_600 + 3_723); // 2026-01-01T01:02:03Z
        assert_eq!(format_time(time), "2026-01-01T01:02:03Z");
        assert_eq!(parse_time("2026-01-01T01:02:03Z").unwrap(), time);
        assert_eq!(parse_time("2026-01-01T03:02:03+02:00").unwrap(), time);
        assert_eq!(parse_time("2026-01-01T01:02:03").unwrap(), time);
        assert_eq!(
            parse_time("2026-01-01").unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_767_225_600)
        );
        assert_eq!(
            parse_time("2024-02-29T00:00:00.5Z").unwrap(),
            UNIX_EPOCH + Duration::new(1_709_164_800, 500_000_000)
        );
        assert_eq!(format_time(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn times_take_offsets_fractions_and_short_clocks() {
        let time = UNIX_EPOCH + Duration::from_secs(1_767_225_600 + 3_723);
        assert_eq!(parse_time(" 2026-01-01t01:02:03z ").unwrap(), time);
        assert_eq!(parse_time("2025-12-31T23:32:03-01:30").unwrap(), time);
        assert_eq!(parse_time("2026-01-01 03:02:03+02").unwrap(), time);
        assert_eq!(
            parse_time("2026-01-01T01:02Z").unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_767_225_600 + 3_720)
        );
        assert_eq!(
            parse_time("2026-01-01T01:02:03.000000123Z").unwrap(),
            time + Duration::from_nanos(123)
        );
        assert_eq!(parse_time("1969-12-31T23:59:59.5Z").unwrap(), UNIX_EPOCH);
        assert_eq!(
            parse_time("2016-12-31T23:59:60Z").unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_483_228_800)
        );
    }

    #[test]
    fn bad_times_are_errors() {
        for text in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-02-30",
            "2025-02-29",
            "2026-01-01T25:00:00Z",
            "2026-1-1",
            "2026-01-01T01:02:03.1234567890Z",
            "2026-01-01T01:02:03.1aZ",
            "2026-01-01T01:60Z",
            "2026-01-01T01:02:61Z",
            "2026-01-01T01:02:03:04Z",
            "2026-01-01T01",
            "2026-01-01T01:02:03+24:00",
            "2026-01-01T01:02:03+02:60",
            "2026-01-01T01:02:03+0200",
            "2026-01-01-05",
            "+2026-01-01",
        ] {
            let error = parse_time(text).unwrap_err();
            assert!(
                error.starts_with(&format!("`{text}` is not a time")),
                "{error}"
            );
        }
    }
}
