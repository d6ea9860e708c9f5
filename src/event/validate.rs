//! Semantic checks on metric events that a schema cannot express.

use super::MetricEvent;

/// Default bound on how far in the future an event timestamp may lie (1 day): further
/// means a broken clock or a unit mistake (µs or ns instead of ms).
pub const MAX_FUTURE_MS_DEFAULT: i64 = 24 * 3600 * 1000;

/// Most labels a metric event may carry: the series key (target, metric and labels) is
/// the key of every state record, output and changelog entry of the series.
pub const MAX_LABELS: usize = 32;

/// Most bytes of a series key (target, metric and every label name and value): one
/// series' state and outputs must fit a Kafka record whatever the input.
pub const MAX_SERIES_KEY_BYTES: usize = 4096;

/// Why a decoded metric event is unusable. Each variant is a dead-letter reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidMetric {
    /// NaN or infinite value.
    #[error("value {0} is not finite")]
    NonFiniteValue(f64),
    /// Target empty or blank.
    #[error("target is empty")]
    EmptyTarget,
    /// Metric name empty or blank.
    #[error("metric name is empty")]
    EmptyMetric,
    /// Timestamp too far ahead of the stage's clock.
    #[error("timestamp {timestamp_ms} is {ahead_ms} ms in the future (limit {limit_ms} ms); is it in µs or ns?")]
    FutureTimestamp {
        /// The timestamp.
        timestamp_ms: i64,
        /// How far ahead of now.
        ahead_ms: i64,
        /// The limit.
        limit_ms: i64,
    },
    /// Negative timestamp.
    #[error("timestamp {0} is before 1970")]
    NegativeTimestamp(i64),
    /// More labels than `MAX_LABELS`.
    #[error("{0} labels (at most {MAX_LABELS})")]
    TooManyLabels(usize),
    /// Target, metric and labels longer than `MAX_SERIES_KEY_BYTES` together.
    #[error("target, metric and labels take {0} bytes (at most {MAX_SERIES_KEY_BYTES}); the series' state and outputs would not fit a record")]
    SeriesKeyTooLong(usize),
}

impl InvalidMetric {
    /// Machine-readable reason for dead letters and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            InvalidMetric::NonFiniteValue(_) => "non_finite_value",
            InvalidMetric::EmptyTarget => "empty_target",
            InvalidMetric::EmptyMetric => "empty_metric",
            InvalidMetric::FutureTimestamp { .. } => "future_timestamp",
            InvalidMetric::NegativeTimestamp(_) => "negative_timestamp",
            InvalidMetric::TooManyLabels(_) => "too_many_labels",
            InvalidMetric::SeriesKeyTooLong(_) => "series_key_too_long",
        }
    }
}

/// Checks a metric event against the rules the stages rely on.
pub fn validate_metric(
    e: &MetricEvent,
    now_ms: i64,
    max_future_ms: i64,
) -> Result<(), InvalidMetric> {
    if !e.value.is_finite() {
        return Err(InvalidMetric::NonFiniteValue(e.value));
    }
    if e.target.trim().is_empty() {
        return Err(InvalidMetric::EmptyTarget);
    }
    if e.metric.trim().is_empty() {
        return Err(InvalidMetric::EmptyMetric);
    }
    if e.labels.len() > MAX_LABELS {
        return Err(InvalidMetric::TooManyLabels(e.labels.len()));
    }
    let key_bytes = e.target.len()
        + e.metric.len()
        + e.labels
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>();
    if key_bytes > MAX_SERIES_KEY_BYTES {
        return Err(InvalidMetric::SeriesKeyTooLong(key_bytes));
    }
    if e.timestamp_ms < 0 {
        return Err(InvalidMetric::NegativeTimestamp(e.timestamp_ms));
    }
    let ahead = e.timestamp_ms.saturating_sub(now_ms);
    if ahead > max_future_ms {
        return Err(InvalidMetric::FutureTimestamp {
            timestamp_ms: e.timestamp_ms,
            ahead_ms: ahead,
            limit_ms: max_future_ms,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> MetricEvent {
        MetricEvent {
            source: "a".into(),
            target: "t".into(),
            pool: None,
            metric: "m".into(),
            labels: Default::default(),
            timestamp_ms: 1_000,
            value: 1.0,
            unit: String::new(),
        }
    }

    /// `n` labels, the first with a value of `len` bytes.
    fn labelled(n: usize, len: usize) -> MetricEvent {
        let mut e = ok();
        for i in 0..n {
            let v = if i == 0 { "v".repeat(len) } else { "v".into() };
            e.labels.insert(format!("l{i}"), v);
        }
        e
    }

    #[test]
    fn table_of_rules() {
        let now = 10_000;
        let cases: Vec<(MetricEvent, Option<&str>)> = vec![
            (ok(), None),
            (
                MetricEvent {
                    value: f64::NAN,
                    ..ok()
                },
                Some("non_finite_value"),
            ),
            (
                MetricEvent {
                    value: f64::INFINITY,
                    ..ok()
                },
                Some("non_finite_value"),
            ),
            (
                MetricEvent {
                    target: " ".into(),
                    ..ok()
                },
                Some("empty_target"),
            ),
            (
                MetricEvent {
                    metric: String::new(),
                    ..ok()
                },
                Some("empty_metric"),
            ),
            (
                MetricEvent {
                    timestamp_ms: -1,
                    ..ok()
                },
                Some("negative_timestamp"),
            ),
            (
                MetricEvent {
                    timestamp_ms: now + 5_001,
                    ..ok()
                },
                Some("future_timestamp"),
            ),
            (
                MetricEvent {
                    timestamp_ms: now + 5_000,
                    ..ok()
                },
                None,
            ),
            (labelled(MAX_LABELS, 1), None),
            (labelled(MAX_LABELS + 1, 1), Some("too_many_labels")),
            (labelled(1, 1_000_000), Some("series_key_too_long")),
            (labelled(1, MAX_SERIES_KEY_BYTES - 20), None),
            (
                MetricEvent {
                    target: "t".repeat(MAX_SERIES_KEY_BYTES),
                    ..ok()
                },
                Some("series_key_too_long"),
            ),
        ];
        for (e, want) in cases {
            let got = validate_metric(&e, now, 5_000).err().map(|r| r.reason());
            assert_eq!(got, want, "{e:?}");
        }
    }
}
