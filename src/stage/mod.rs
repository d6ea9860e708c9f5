//! The four stage cores: pure, synchronous types with no I/O.
//!
//! A core turns input records into output records (`process`), may emit on time alone
//! (`tick`), and is told when its partitions come and go. The Kafka runner
//! (`crate::runtime`), the demo, the tests and the benches all drive the same cores.

pub mod coordinator;
pub mod detector;
pub mod forecaster;
pub mod keyed;
pub mod recommender;
pub mod scaling;
pub mod series_table;
pub mod snapshot;

pub use keyed::{KeyedMap, KeyedState};

use crate::event::{
    decode, validate_metric, Anomaly, AnyRecord, AvroRecord, Decision, Forecast, MetricEvent,
    Recommendation,
};

/// Where an input record came from, and the stage's wall clock when it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    /// Kafka partition of the record.
    pub partition: i32,
    /// Offset of the record in its partition.
    pub offset: i64,
    /// Wall-clock time in ms since the epoch (injected; tests use fake time).
    pub now_ms: i64,
}

/// Why an input record was refused before reaching the core: a dead-letter reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Machine-readable reason (a metric label and the dead letter's `reason`).
    pub reason: &'static str,
    /// Readable detail.
    pub detail: String,
}

/// Limits applied while decoding inputs.
#[derive(Debug, Clone, Copy)]
pub struct InputLimits {
    /// How far ahead of the wall clock an event timestamp may be.
    pub max_future_ms: i64,
}

impl Default for InputLimits {
    fn default() -> Self {
        InputLimits {
            max_future_ms: crate::event::MAX_FUTURE_MS_DEFAULT,
        }
    }
}

/// A stage input: decoded and checked from raw bytes.
pub trait StageInput: Sized + Send {
    /// Decodes and validates one record.
    fn from_bytes(bytes: &[u8], now_ms: i64, limits: &InputLimits) -> Result<Self, Rejection>;

    /// Event time of the record, for the event-time lag metric.
    fn event_time_ms(&self) -> i64;
}

fn rejected(e: crate::event::DecodeError) -> Rejection {
    Rejection {
        reason: e.reason(),
        detail: e.to_string(),
    }
}

impl StageInput for MetricEvent {
    fn from_bytes(bytes: &[u8], now_ms: i64, limits: &InputLimits) -> Result<Self, Rejection> {
        let e: MetricEvent = decode(bytes).map_err(rejected)?;
        validate_metric(&e, now_ms, limits.max_future_ms).map_err(|v| Rejection {
            reason: v.reason(),
            detail: v.to_string(),
        })?;
        Ok(e)
    }

    fn event_time_ms(&self) -> i64 {
        self.timestamp_ms
    }
}

impl StageInput for Recommendation {
    fn from_bytes(bytes: &[u8], _now_ms: i64, _limits: &InputLimits) -> Result<Self, Rejection> {
        let r: Recommendation = decode(bytes).map_err(rejected)?;
        if r.target.trim().is_empty() {
            return Err(Rejection {
                reason: "empty_target",
                detail: "recommendation has an empty target".into(),
            });
        }
        Ok(r)
    }

    fn event_time_ms(&self) -> i64 {
        self.created_ms
    }
}

/// The recommender reads two record types from two topics.
#[derive(Debug, Clone, PartialEq)]
pub enum Insight {
    /// From the anomalies topic.
    Anomaly(Anomaly),
    /// From the forecasts topic.
    Forecast(Forecast),
}

impl StageInput for Insight {
    fn from_bytes(bytes: &[u8], _now_ms: i64, _limits: &InputLimits) -> Result<Self, Rejection> {
        match AnyRecord::decode(bytes).map_err(rejected)? {
            AnyRecord::Anomaly(a) => Ok(Insight::Anomaly(a)),
            AnyRecord::Forecast(f) => Ok(Insight::Forecast(f)),
            other => Err(Rejection {
                reason: "wrong_record_type",
                detail: format!(
                    "expected an Anomaly or a Forecast record, found {}",
                    other.name()
                ),
            }),
        }
    }

    fn event_time_ms(&self) -> i64 {
        match self {
            Insight::Anomaly(a) => a.timestamp_ms,
            Insight::Forecast(f) => f.generated_at_ms,
        }
    }
}

/// A change of one key's state, for a stage's changelog: its new snapshot, or `None`
/// when the key was removed (a tombstone, so compaction forgets it too).
#[derive(Debug, Clone, PartialEq)]
pub struct StateChange {
    /// Input partition the key belongs to; the changelog is co-partitioned.
    pub partition: i32,
    /// The key (a series key, say).
    pub key: String,
    /// Versioned snapshot ([`snapshot::encode`]), or `None` for a removal.
    pub bytes: Option<Vec<u8>>,
}

/// An output record and the Kafka key that partitions it.
pub trait Keyed {
    /// The partitioning key.
    fn key(&self) -> &str;
}

/// How an output record is counted for dashboards (`perfpilot_target_outputs_total`,
/// `perfpilot_decisions_total`): the target it concerns and, for a decision, its verdict
/// and the rule that gave it. Forecasts (one every few events) are not counted per
/// target; their count is `perfpilot_records_out_total`.
pub trait Counted {
    /// The target, when the record is counted per target.
    fn counted_target(&self) -> Option<&str> {
        None
    }
    /// A decision's verdict and rule.
    fn verdict_and_rule(&self) -> Option<(&'static str, &str)> {
        None
    }
}

impl Counted for Anomaly {
    fn counted_target(&self) -> Option<&str> {
        Some(&self.target)
    }
}
impl Counted for Forecast {}
impl Counted for Recommendation {
    fn counted_target(&self) -> Option<&str> {
        Some(&self.target)
    }
}
impl Counted for Decision {
    fn counted_target(&self) -> Option<&str> {
        Some(&self.target)
    }
    fn verdict_and_rule(&self) -> Option<(&'static str, &str)> {
        Some((self.verdict.as_str(), &self.rule))
    }
}

impl Keyed for Anomaly {
    fn key(&self) -> &str {
        &self.target
    }
}
impl Keyed for Forecast {
    fn key(&self) -> &str {
        &self.target
    }
}
impl Keyed for Recommendation {
    fn key(&self) -> &str {
        &self.pool
    }
}
impl Keyed for Decision {
    fn key(&self) -> &str {
        &self.target
    }
}

/// A stage core: events in, events out, no I/O.
pub trait Stage: Send + 'static {
    /// What it reads.
    type Input: StageInput;
    /// What it writes.
    type Output: AvroRecord + Keyed + Counted + Send + Sync + 'static;

    /// Short name: `detector`, `forecaster`, `recommender`, `coordinator`.
    fn name(&self) -> &'static str;

    /// Handles one input record, appending any outputs to `out`.
    fn process(&mut self, input: Self::Input, meta: &RecordMeta, out: &mut Vec<Self::Output>);

    /// Emits what is due on time alone (a closing window, for instance).
    fn tick(&mut self, _now_ms: i64, _out: &mut Vec<Self::Output>) {}

    /// Partitions newly assigned to this instance.
    fn partitions_assigned(&mut self, _partitions: &[i32]) {}

    /// Partitions taken away: drop their state.
    fn partitions_revoked(&mut self, _partitions: &[i32]) {}

    /// The lowest offset of `partition` whose outputs are still pending inside the core
    /// (held in a window, say). The runner never commits at or past it, so a crash
    /// re-delivers what was held.
    fn held_offset(&self, _partition: i32) -> Option<i64> {
        None
    }

    /// Series (or keys) with state in memory.
    fn active_series(&self) -> usize {
        0
    }

    /// The core's per-key state, when it keeps any worth a changelog: the runner
    /// checkpoints it, restores it for assigned partitions and drops it for revoked
    /// ones through this. `None` (the default): a stateless core.
    fn state(&mut self) -> Option<&mut dyn KeyedState> {
        None
    }

    /// Named counters of the core (late points dropped, duplicates, ...), cumulative.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// The identity of a series: target, metric and sorted labels, in one string.
pub fn series_key(target: &str, metric: &str, labels: &crate::event::Labels) -> String {
    let mut key = String::with_capacity(target.len() + metric.len() + 2 + labels.len() * 16);
    write_series_key(&mut key, target, metric, labels);
    key
}

/// Writes [`series_key`] into `key`, reusing its allocation.
pub fn write_series_key(
    key: &mut String,
    target: &str,
    metric: &str,
    labels: &crate::event::Labels,
) {
    key.clear();
    key.push_str(target);
    key.push('\u{1f}');
    key.push_str(metric);
    for (k, v) in labels {
        key.push('\u{1f}');
        key.push_str(k);
        key.push('=');
        key.push_str(v);
    }
}
