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

/// A tick label for an instant: the date and time of day, the year too when the plot
/// spans more than a year, the time alone when it spans less than a day.
pub fn utc_tick_label(ts_ms: i64, span_ms: i64) -> String {
    let Ok(t) = jiff::Timestamp::from_millisecond(ts_ms) else {
        return String::new();
    };
    let format = if span_ms > 366 * 86_400_000 {
        "%Y-%m-%d"
    } else if span_ms > 86_400_000 {
        "%m-%d %H:%M"
    } else {
        "%H:%M"
    };
    t.strftime(format).to_string()
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

#[cfg(test)]
mod tick_tests {
    use super::*;

    #[test]
    fn ticks_show_dates_at_the_scale_of_the_plot() {
        let t = 1_396_310_400_000; // 2014-04-01 00:00 UTC
        assert_eq!(
            utc_tick_label(t + 3_600_000, 14 * 86_400_000),
            "04-01 01:00"
        );
        assert_eq!(utc_tick_label(t + 90 * 60_000, 6 * 3_600_000), "01:30");
        assert_eq!(utc_tick_label(t, 800 * 86_400_000), "2014-04-01");
        assert_eq!(format_timestamp(t), "2014-04-01 00:00");
    }
}
