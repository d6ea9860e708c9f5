//! Time parsing shared by every reader of times: CSV timestamps (`replay`), policy
//! freeze windows (`policy`), NAB label files (`eval`) and durations on the command line.

use std::time::Duration;

/// Formats ms since the epoch as `YYYY-MM-DD HH:MM` (UTC), for messages and tables.
pub fn format_timestamp(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.strftime("%Y-%m-%d %H:%M").to_string(),
        Err(_) => format!("{ms} ms"),
    }
}

/// Parses epoch seconds, epoch milliseconds (numbers above 10¹¹), ISO-8601 with `Z` or
/// an offset (`Z`, `±HH:MM`, `±HHMM`, `±HH`), `YYYY-MM-DD HH:MM:SS[.fff]` (UTC) or a bare date.
pub fn parse_timestamp(s: &str) -> Result<i64, String> {
    let s = s.trim().trim_matches('"');
    if let Ok(n) = s.parse::<f64>() {
        if !n.is_finite() || n < 0.0 {
            return Err("not a valid epoch time".into());
        }
        // 10¹¹ s is the year 5138; 10¹¹ ms is March 1973.
        return Ok(if n >= 1e11 {
            n as i64
        } else {
            (n * 1000.0) as i64
        });
    }
    // RFC 3339 / ISO 8601 with an offset (`Z`, `+01:00`, `+0100`, `+01`), parsed by jiff;
    // a date-time without one is UTC; a bare date is its midnight, UTC.
    // jiff's civil parser skips an offset it cannot use: a time that has one must parse
    // as an instant, or it is an error (not read as UTC).
    let has_offset = s
        .get(10..)
        .is_some_and(|t| t.contains(['+', '-', 'Z', 'z']));
    let instant = if let Ok(t) = s.parse::<jiff::Timestamp>() {
        t
    } else if has_offset {
        return Err(format!(
            "cannot read {s:?} as a time: bad offset (expected Z, ±HH:MM, ±HHMM or ±HH)"
        ));
    } else if let Ok(dt) = s.parse::<jiff::civil::DateTime>() {
        dt.to_zoned(jiff::tz::TimeZone::UTC)
            .map_err(|e| e.to_string())?
            .timestamp()
    } else if let Ok(d) = s.parse::<jiff::civil::Date>() {
        d.to_zoned(jiff::tz::TimeZone::UTC)
            .map_err(|e| e.to_string())?
            .timestamp()
    } else {
        return Err(format!(
            "cannot read {s:?} as a time (expected epoch seconds or milliseconds, or e.g. \
             2024-05-01T12:00:00Z, 2024-05-01 12:00:00, 2024-05-01T13:00:00+0100)"
        ));
    };
    let ms = instant.as_millisecond();
    if ms < 0 {
        return Err("before 1970".into());
    }
    Ok(ms)
}

/// Parses durations such as `30s`, `500ms`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 500ms, 2m)"))
}
