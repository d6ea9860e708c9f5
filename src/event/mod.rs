//! The event contract: Rust mirrors of the Avro records in `schemas/`, and their codec.
//!
//! The `.avsc` files are the source of truth (agents in other languages generate code
//! from them); the types here follow them field by field, and `tests/schemas.rs` fails
//! if the two drift apart.

mod binary;
mod codec;
pub mod confluent;
mod skim;
mod validate;

pub use codec::{decode, encode, AnyRecord, AvroRecord, DecodeError, EncodeError, SchemaInfo};
pub use validate::{validate_metric, InvalidMetric, MAX_FUTURE_MS_DEFAULT};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Labels of a series. A sorted map, so a series' identity does not depend on the
/// order in which an agent listed its labels.
pub type Labels = BTreeMap<String, String>;

/// One observation of one metric, published by an agent. Kafka key: `target`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricEvent {
    /// Agent that observed the value.
    pub source: String,
    /// The thing an action can change; the Kafka key.
    pub target: String,
    /// Budget-sharing unit; `None` means the target is its own pool.
    pub pool: Option<String>,
    /// Metric name.
    pub metric: String,
    /// Extra dimensions of the series.
    #[serde(default)]
    pub labels: Labels,
    /// Event time, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// Observed value (finite).
    pub value: f64,
    /// Unit of the value, informational.
    #[serde(default)]
    pub unit: String,
}

impl MetricEvent {
    /// An event with no pool, labels or unit (replay, evaluation, tests).
    pub fn sample(source: &str, target: &str, metric: &str, timestamp_ms: i64, value: f64) -> Self {
        MetricEvent {
            source: source.to_string(),
            target: target.to_string(),
            pool: None,
            metric: metric.to_string(),
            labels: Labels::new(),
            timestamp_ms,
            value,
            unit: String::new(),
        }
    }

    /// A stable id for what a stage derives from this observation: `prefix` plus a hash
    /// of the series (target, metric and every label) and the event time. The same
    /// input always yields the same id, and two series that differ only in a label do
    /// not collide.
    pub fn derived_id(&self, prefix: &str) -> String {
        let mut parts: Vec<&[u8]> = Vec::with_capacity(3 + 2 * self.labels.len());
        parts.push(self.target.as_bytes());
        parts.push(self.metric.as_bytes());
        for (k, v) in &self.labels {
            parts.push(k.as_bytes());
            parts.push(v.as_bytes());
        }
        let ts = self.timestamp_ms.to_le_bytes();
        parts.push(&ts);
        format!("{prefix}-{:016x}", crate::hash::stable_hash(&parts))
    }

    /// The pool this event belongs to: its own, or the target when none was given.
    pub fn pool_or_target(&self) -> &str {
        match &self.pool {
            Some(p) if !p.is_empty() => p,
            _ => &self.target,
        }
    }
}

/// Coarse class of an anomaly score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    /// Unusual but mild.
    Info,
    /// Clearly unusual.
    Warning,
    /// Extreme.
    Critical,
}

/// Whether an anomalous value lay above or below what was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Direction {
    /// Above the expected value.
    Up,
    /// Below the expected value.
    Down,
}

/// An observation the detector judged unusual. Kafka key: `target`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// Stable id (same input, same id).
    pub id: String,
    /// Target of the series.
    pub target: String,
    /// Pool of the target.
    pub pool: String,
    /// Metric of the series.
    pub metric: String,
    /// Labels of the series.
    #[serde(default)]
    pub labels: Labels,
    /// Event time of the observation.
    pub timestamp_ms: i64,
    /// Observed value.
    pub value: f64,
    /// Expected value.
    pub expected: f64,
    /// Lower bound of the normal range.
    pub lower: f64,
    /// Upper bound of the normal range.
    pub upper: f64,
    /// How unusual, in [0, 1]; 0.5 is the detection threshold.
    pub score: f64,
    /// Class of the score.
    pub severity: Severity,
    /// Above or below expected.
    pub direction: Direction,
    /// Detectors that fired.
    #[serde(default)]
    pub detectors: Vec<String>,
    /// Readable explanation.
    pub reason: String,
}

/// One forecast point with its prediction interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ForecastPoint {
    /// Event time predicted.
    pub timestamp_ms: i64,
    /// Point forecast.
    pub value: f64,
    /// Lower interval bound.
    pub lower: f64,
    /// Upper interval bound.
    pub upper: f64,
}

/// Predicted values of one series over a horizon. Kafka key: `target`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// Stable id.
    pub id: String,
    /// Target of the series.
    pub target: String,
    /// Pool of the target.
    pub pool: String,
    /// Metric of the series.
    pub metric: String,
    /// Labels of the series.
    #[serde(default)]
    pub labels: Labels,
    /// Event time of the last observation used.
    pub generated_at_ms: i64,
    /// Last observed value.
    pub last_value: f64,
    /// Model name.
    pub model: String,
    /// Spacing of the points.
    pub step_ms: i64,
    /// Nominal coverage of the intervals.
    pub interval_level: f64,
    /// Points in time order.
    pub points: Vec<ForecastPoint>,
    /// Set when the forecast crosses the metric's threshold within the horizon.
    #[serde(default)]
    pub warning: Option<EarlyWarning>,
}

/// A threshold a series is forecast to cross, with when and how likely.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EarlyWarning {
    /// The configured threshold.
    pub threshold: f64,
    /// Event time of the first forecast point at or above it.
    pub eta_ms: i64,
    /// Probability of going above it within the horizon.
    pub probability: f64,
}

impl Forecast {
    /// The highest point forecast over the horizon, with the upper and lower bounds at
    /// that point. `None` for an empty forecast.
    pub fn peak(&self) -> Option<ForecastPoint> {
        self.points
            .iter()
            .copied()
            .max_by(|a, b| a.value.total_cmp(&b.value))
    }
}

/// What kind of action a recommendation proposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ActionKind {
    /// Add replicas.
    ScaleOut,
    /// Remove replicas.
    ScaleIn,
    /// Raise a per-replica resource (request/limit).
    Raise,
    /// Lower a per-replica resource.
    Lower,
    /// A forecast crosses a capacity threshold within the horizon (advisory).
    CapacityWarning,
    /// Sustained over-provisioning that can be given back (advisory, ranked by savings).
    Reclaim,
    /// The next value of a tunable parameter.
    Tune,
}

impl ActionKind {
    /// Every kind, in declaration order.
    pub const ALL: [ActionKind; 7] = [
        ActionKind::ScaleOut,
        ActionKind::ScaleIn,
        ActionKind::Raise,
        ActionKind::Lower,
        ActionKind::CapacityWarning,
        ActionKind::Reclaim,
        ActionKind::Tune,
    ];

    /// Lower-case name for logs and labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            ActionKind::ScaleOut => "scale_out",
            ActionKind::ScaleIn => "scale_in",
            ActionKind::Raise => "raise",
            ActionKind::Lower => "lower",
            ActionKind::CapacityWarning => "capacity_warning",
            ActionKind::Reclaim => "reclaim",
            ActionKind::Tune => "tune",
        }
    }

    /// Whether the action adds capacity (the safe side in a conflict).
    pub fn adds_capacity(self) -> bool {
        matches!(self, ActionKind::ScaleOut | ActionKind::Raise)
    }

    /// Whether the action takes capacity away.
    pub fn removes_capacity(self) -> bool {
        matches!(self, ActionKind::ScaleIn | ActionKind::Lower)
    }

    /// Advisory kinds are reported for people; nothing actuates them.
    pub fn advisory(self) -> bool {
        matches!(self, ActionKind::CapacityWarning | ActionKind::Reclaim)
    }
}

/// One input supporting a recommendation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// `forecast` or `anomaly`.
    pub kind: String,
    /// Id of the forecast or anomaly.
    pub ref_id: String,
    /// Metric it is about.
    pub metric: String,
    /// The value that mattered.
    pub value: f64,
    /// Readable detail.
    pub detail: String,
}

/// A proposed action on one target. Kafka key: `pool`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// Stable id.
    pub id: String,
    /// Target of the action.
    pub target: String,
    /// Pool of the target; the Kafka key.
    pub pool: String,
    /// Kind of action.
    pub kind: ActionKind,
    /// What changes: `replicas`, `cpu_millicores`, `memory_mib`, a capacity metric or a
    /// tuned parameter.
    pub resource: String,
    /// Unit of `current` and `proposed`.
    pub unit: String,
    /// Value believed current.
    pub current: f64,
    /// Value proposed (for a capacity warning: the threshold).
    pub proposed: f64,
    /// The recommender that proposed it.
    pub recommender: String,
    /// Confidence in [0, 1].
    pub confidence: f64,
    /// Urgency 0..=100.
    pub priority: i32,
    /// Why.
    pub reason: String,
    /// What it should achieve.
    pub expected_effect: String,
    /// Benefit per hour in cost units (breach cost avoided, or cost saved).
    pub expected_benefit: f64,
    /// Change of cost per hour if applied (negative: a saving).
    pub cost_delta_per_hour: f64,
    /// The inputs behind it.
    pub evidence: Vec<Evidence>,
    /// Event time it was made.
    pub created_ms: i64,
    /// Event time after which it must not be acted on.
    pub expires_ms: i64,
}

/// Name of the replica count resource.
pub const REPLICAS: &str = "replicas";

/// A value for people: whole numbers without decimals, others with two; the unit after.
pub fn show(value: f64, unit: &str) -> String {
    let v = if (value - value.round()).abs() < 1e-9 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    };
    if unit.is_empty() {
        v
    } else {
        format!("{v} {unit}")
    }
}

/// The coordinator's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    /// Act on it.
    Approved,
    /// Folded into another approved recommendation.
    Merged,
    /// Not now, for a reason that passes (freeze, budget, concurrency, stabilization).
    Deferred,
    /// Do not act.
    Rejected,
    /// It came too late.
    Expired,
}

impl Verdict {
    /// Lower-case name for logs and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approved => "approved",
            Verdict::Merged => "merged",
            Verdict::Deferred => "deferred",
            Verdict::Rejected => "rejected",
            Verdict::Expired => "expired",
        }
    }
}

/// The coordinator's decision on one recommendation. Kafka key: `target`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Decision id.
    pub id: String,
    /// The recommendation decided.
    pub recommendation_id: String,
    /// Target of the action.
    pub target: String,
    /// Pool of the target.
    pub pool: String,
    /// Kind of action recommended.
    pub kind: ActionKind,
    /// What the action changes.
    pub resource: String,
    /// Outcome.
    pub verdict: Verdict,
    /// Rule that decided.
    pub rule: String,
    /// Readable explanation.
    pub reason: String,
    /// Value before.
    pub current: f64,
    /// Value proposed by the recommendation.
    pub proposed: f64,
    /// Value to set, for approved decisions.
    pub final_value: Option<f64>,
    /// The approved recommendation a merged one was folded into.
    pub merged_into: Option<String>,
    /// Event time of the decision.
    pub decided_ms: i64,
    /// Report only, do not act.
    #[serde(default)]
    pub dry_run: bool,
}

/// An input record a stage could not use. Kafka key: the original key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Stage that rejected it.
    pub stage: String,
    /// Machine-readable reason.
    pub reason: String,
    /// Readable detail.
    pub detail: String,
    /// Topic it came from.
    pub source_topic: String,
    /// Partition it came from.
    pub source_partition: i32,
    /// Offset it came from.
    pub source_offset: i64,
    /// Original key bytes.
    #[serde(with = "apache_avro::serde_avro_bytes_opt", default)]
    pub key: Option<Vec<u8>>,
    /// Original value bytes.
    #[serde(with = "apache_avro::serde_avro_bytes_opt", default)]
    pub payload: Option<Vec<u8>>,
    /// Wall-clock time of rejection.
    pub dead_lettered_ms: i64,
    /// Set when the original key or payload was too large to keep whole: the original
    /// payload's size in bytes (`key` and `payload` then hold their first bytes only).
    #[serde(default)]
    pub original_size: Option<i64>,
    /// Set with `original_size`: FNV-1a 64-bit hash (16 hex digits) of the whole
    /// original payload.
    #[serde(default)]
    pub original_hash: Option<String>,
}

/// Bytes of a dead letter besides its key, payload and strings: the fixed fields, the
/// Avro framing and the Kafka record's own overhead, with margin.
const DEAD_LETTER_OVERHEAD: usize = 1024;
/// Longest `detail` and kept key of a dead letter that had to be cut to fit.
const DEAD_LETTER_TEXT_MAX: usize = 1024;

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_str(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

impl DeadLetter {
    /// The dead letter cut to fit a record of `max_bytes` (key and value): when the
    /// original key and payload do not fit whole, they keep their first bytes, and
    /// `original_size` and `original_hash` say what the payload was. The metadata
    /// (stage, reason, source topic, partition and offset) is always whole, so a poison
    /// pill of any size is dead-lettered, never a reason for the stage to stop.
    pub fn fit(mut self, max_bytes: usize) -> Self {
        let text = self.stage.len() + self.reason.len() + self.source_topic.len();
        // The key counts twice: the field and the Kafka record's key.
        let whole = DEAD_LETTER_OVERHEAD
            + text
            + self.detail.len()
            + 2 * self.key.as_ref().map_or(0, Vec::len)
            + self.payload.as_ref().map_or(0, Vec::len);
        if whole <= max_bytes {
            return self;
        }
        let original = self.payload.as_deref().unwrap_or_default();
        self.original_size = Some(original.len() as i64);
        self.original_hash = Some(format!("{:016x}", crate::hash::fnv1a(original)));
        truncate_str(&mut self.detail, DEAD_LETTER_TEXT_MAX);
        if let Some(k) = self.key.as_mut() {
            k.truncate(DEAD_LETTER_TEXT_MAX);
        }
        let kept = DEAD_LETTER_OVERHEAD
            + text
            + self.detail.len()
            + 2 * self.key.as_ref().map_or(0, Vec::len);
        let room = max_bytes.saturating_sub(kept);
        if let Some(p) = self.payload.as_mut() {
            p.truncate(room);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead_letter(key: usize, payload: usize) -> DeadLetter {
        DeadLetter {
            stage: "detector".into(),
            reason: "bad_marker".into(),
            detail: "é".repeat(5000),
            source_topic: "perfpilot.metrics".into(),
            source_partition: 2,
            source_offset: 41,
            key: Some(vec![b'k'; key]),
            payload: Some((0..payload).map(|i| (i % 251) as u8).collect()),
            dead_lettered_ms: 7,
            original_size: None,
            original_hash: None,
        }
    }

    #[test]
    fn a_dead_letter_too_large_for_a_record_keeps_its_metadata_and_a_prefix() {
        let small = dead_letter(10, 100);
        assert_eq!(small.clone().fit(1_000_000), small, "fits: unchanged");

        let big = dead_letter(10, 1_000_000);
        let whole = big.payload.clone().unwrap();
        let cut = big.fit(1_000_000);
        let encoded = encode(&cut).unwrap();
        assert!(encoded.len() + 10 <= 1_000_000, "{} bytes", encoded.len());
        let payload = cut.payload.as_deref().unwrap();
        assert!(
            payload.len() > 990_000,
            "keeps most of it: {}",
            payload.len()
        );
        assert_eq!(payload, &whole[..payload.len()]);
        assert_eq!(cut.original_size, Some(1_000_000));
        assert_eq!(
            cut.original_hash.as_deref(),
            Some(format!("{:016x}", crate::hash::fnv1a(&whole)).as_str())
        );
        assert_eq!((cut.source_partition, cut.source_offset), (2, 41));
        assert_eq!(
            (cut.stage.as_str(), cut.reason.as_str()),
            ("detector", "bad_marker")
        );
        assert!(cut.detail.len() <= 1024 && cut.detail.starts_with('é'));

        // A huge key is cut too, and a tiny limit still gives a record with the metadata.
        let cut = dead_letter(2_000_000, 10).fit(1_000_000);
        assert_eq!(cut.key.as_ref().map(Vec::len), Some(1024));
        assert_eq!(cut.original_size, Some(10));
        let cut = dead_letter(10, 10_000).fit(100);
        assert_eq!(cut.payload.as_ref().map(Vec::len), Some(0));
        assert_eq!(cut.source_offset, 41);
    }

    #[test]
    fn derived_ids_are_stable_and_tell_labelled_series_apart() {
        let a = MetricEvent::sample("s", "api", "latency", 1_000, 1.0);
        let mut b = a.clone();
        b.labels.insert("zone".into(), "a".into());
        let mut c = a.clone();
        c.labels.insert("zone".into(), "b".into());
        assert_eq!(a.derived_id("anom"), a.clone().derived_id("anom"));
        assert_ne!(b.derived_id("anom"), c.derived_id("anom"));
        assert_ne!(a.derived_id("anom"), b.derived_id("anom"));
        assert!(a.derived_id("fc").starts_with("fc-"));
    }
}
