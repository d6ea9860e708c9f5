//! perfpilot: a performance autopilot built as a stream-processing pipeline over Apache
//! Kafka.
//!
//! Agents publish [`event::MetricEvent`]s; four stages turn them into anomalies,
//! forecasts, recommendations and arbitrated decisions:
//!
//! ```text
//! metrics ─► detector ─► anomalies ─┐
//!        └─► forecaster ─► forecasts ┴► recommender ─► recommendations ─► coordinator ─► decisions
//! ```
//!
//! Each stage's logic is a pure core in [`stage`] (no I/O); [`runtime`] drives any core
//! over Kafka with at-least-once delivery. The same cores serve `perfpilot demo`, the
//! tests and the benches.
//!
//! ```
//! use perfpilot::stage::detector::{Detector, DetectorConfig};
//! use perfpilot::event::MetricEvent;
//!
//! let mut detector = Detector::new(DetectorConfig::default()).unwrap();
//! let event = |ts: i64, value: f64| MetricEvent {
//!     source: "agent".into(), target: "api".into(), pool: None,
//!     metric: "latency_p99_ms".into(), labels: Default::default(),
//!     timestamp_ms: ts, value, unit: "ms".into(),
//! };
//! for i in 0..60 {
//!     assert!(detector.observe(&event(i * 1000, 100.0 + (i % 3) as f64), 0).is_none());
//! }
//! let anomaly = detector.observe(&event(60_000, 400.0), 0).expect("a spike is an anomaly");
//! assert!(anomaly.score > 0.5);
//! ```

pub mod agent;
pub mod analytics;
pub mod bench;
pub mod cli;
pub mod config;
pub mod config_error;
pub mod demo;
pub mod eval;
pub mod event;
pub mod hash;
pub mod ingest;
pub mod pipeline;
pub mod policy;
pub mod replay;
pub mod runtime;
pub mod simulate;
pub mod stage;
pub mod telemetry;
pub mod time;
