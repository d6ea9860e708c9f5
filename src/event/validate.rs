//! Semantic checks on metric events that a schema cannot express.

use super::MetricEvent;

/// Default bound on how far in the future an event timestamp may lie (1 day): further
/// means a broken clock or a unit mistake (µs or ns instead of ms).
pub const MAX_FUTURE_MS_DEFAULT: i64 = 24 * 3600 * 1000;

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
        ];
        for (e, want) in cases {
            let got = validate_metric(&e, now, 5_000).err().map(|r| r.reason());
            assert_eq!(got, want, "{e:?}");
        }
    }
}
