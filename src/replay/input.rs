//! CSV input of `replay`: `timestamp,value` (one series) or `timestamp,series,value`
//! (many), told apart by the header or the column count; timestamps as epoch seconds,
//! epoch milliseconds, ISO-8601 or `YYYY-MM-DD HH:MM:SS`.

/// Which columns the input has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `timestamp,value`.
    Single {
        /// Column of the timestamp.
        ts: usize,
        /// Column of the value.
        value: usize,
    },
    /// `timestamp,series,value`.
    Long {
        /// Column of the timestamp.
        ts: usize,
        /// Column of the series name.
        series: usize,
        /// Column of the value.
        value: usize,
    },
}

/// One usable input row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// 1-based line number in the input.
    pub line: u64,
    /// The timestamp as written.
    pub ts_text: String,
    /// The timestamp in ms since the epoch.
    pub ts_ms: i64,
    /// Series name ("" for single-series input).
    pub series: String,
    /// The value.
    pub value: f64,
}

/// Why a row was skipped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct RowError {
    /// 1-based line number.
    pub line: u64,
    /// What is wrong.
    pub reason: String,
}

impl Layout {
    /// The layout from a header row, if the row is one (its value column is not a
    /// number). Names: `timestamp`/`time`/`ts`/`date`, `series`/`name`/`id`/`metric`, `value`.
    pub fn from_header(fields: &[&str]) -> Option<Layout> {
        let find = |names: &[&str]| {
            fields
                .iter()
                .position(|f| names.contains(&f.trim().to_ascii_lowercase().as_str()))
        };
        if fields.iter().all(|f| f.trim().parse::<f64>().is_err()) {
            let ts = find(&["timestamp", "time", "ts", "date", "datetime"]).unwrap_or(0);
            let value = find(&["value", "y", "count"]).unwrap_or(fields.len().saturating_sub(1));
            return Some(match find(&["series", "name", "id", "metric", "key"]) {
                Some(series) => Layout::Long { ts, series, value },
                None if fields.len() >= 3 => Layout::Long {
                    ts,
                    series: 1,
                    value,
                },
                None => Layout::Single { ts, value },
            });
        }
        None
    }

    /// The layout of a headerless file from its column count.
    pub fn from_width(width: usize) -> Layout {
        if width >= 3 {
            Layout::Long {
                ts: 0,
                series: 1,
                value: 2,
            }
        } else {
            Layout::Single { ts: 0, value: 1 }
        }
    }

    /// True for many-series input.
    pub fn is_long(&self) -> bool {
        matches!(self, Layout::Long { .. })
    }

    /// Reads one data row.
    pub fn row(&self, line: u64, fields: &[&str]) -> Result<Row, RowError> {
        let err = |reason: String| RowError { line, reason };
        let get = |i: usize, what: &str| {
            fields.get(i).map(|s| s.trim()).ok_or_else(|| {
                err(format!(
                    "no {what} column (row has {} fields)",
                    fields.len()
                ))
            })
        };
        let (ts_i, series, value_i) = match *self {
            Layout::Single { ts, value } => (ts, String::new(), value),
            Layout::Long { ts, series, value } => (ts, get(series, "series")?.to_string(), value),
        };
        let ts_text = get(ts_i, "timestamp")?;
        let ts_ms =
            parse_timestamp(ts_text).map_err(|e| err(format!("timestamp {ts_text:?}: {e}")))?;
        let raw = get(value_i, "value")?;
        let value: f64 = raw
            .parse()
            .map_err(|_| err(format!("value {raw:?} is not a number")))?;
        if !value.is_finite() {
            return Err(err(format!("value {raw:?} is not finite")));
        }
        Ok(Row {
            line,
            ts_text: ts_text.to_string(),
            ts_ms,
            series,
            value,
        })
    }
}

pub use crate::time::parse_timestamp;

/// The CSV reader every input of replay's formats goes through: no header assumed
/// (the layout decides), rows of any width, fields trimmed, `#` lines skipped.
pub fn csv_reader<R: std::io::Read>(input: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_table() {
        let cases = [
            ("1700000000", 1_700_000_000_000),
            ("1700000000.5", 1_700_000_000_500),
            ("1700000000000", 1_700_000_000_000),
            ("2023-11-14T22:13:20Z", 1_700_000_000_000),
            ("2023-11-14 22:13:20", 1_700_000_000_000),
            ("2023-11-14T23:13:20+01:00", 1_700_000_000_000),
            ("2023-11-14T17:13:20-05:00", 1_700_000_000_000),
            ("2023-11-14T23:13:20+0100", 1_700_000_000_000),
            ("2023-11-14 23:13:20+01", 1_700_000_000_000),
            ("2023-11-14t22:13:20z", 1_700_000_000_000),
            ("2013-10-10 10:35:00.000000", 1_381_401_300_000),
            ("2023-11-14 22:13:20.250", 1_700_000_000_250),
            ("2023-11-14", 1_699_920_000_000),
        ];
        for (text, want) in cases {
            assert_eq!(parse_timestamp(text), Ok(want), "{text}");
        }
        for bad in [
            "yesterday",
            "-5",
            "2023-13-01 00:00:00",
            "",
            "1969-12-31T23:59:59Z",
            "2023-11-14T22:13:20+1x:00",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn layouts_from_headers_and_widths() {
        assert_eq!(
            Layout::from_header(&["timestamp", "value"]),
            Some(Layout::Single { ts: 0, value: 1 })
        );
        assert_eq!(
            Layout::from_header(&["time", "value", "series"]),
            Some(Layout::Long {
                ts: 0,
                series: 2,
                value: 1
            })
        );
        assert_eq!(Layout::from_header(&["1700000000", "3.5"]), None);
        assert!(Layout::from_width(3).is_long());
        let row = Layout::Single { ts: 0, value: 1 }
            .row(7, &["1700000000", "nan"])
            .unwrap_err();
        assert_eq!(row.line, 7);
        assert!(Layout::Single { ts: 0, value: 1 }
            .row(8, &["1700000000"])
            .is_err());
    }
}
