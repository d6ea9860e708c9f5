//! Detector core: per-series sliding window on event time, robust z-score
//! (median/MAD) with warm-up, one anomaly per incident episode.
//!
//! The z-score is taken on residuals: each point is compared with the value a
//! per-series Holt model predicted for it, and scaled by the MAD of the recent
//! residuals in the event-time window. Residuals, unlike raw values, stay centred on
//! trending and slowly seasonal series, so the window's spread measures noise rather
//! than the series' own movement. Anomalous points update the model only up to the
//! edge of the normal range, so a spike does not drag the expectation with it.

use super::{series_key, RecordMeta, Stage};
use crate::analytics::holt::{Holt, HoltParams};
use crate::analytics::robust::{Admit, EventTimeWindow};
use crate::analytics::stats::stable_hash;
use crate::config::ConfigError;
use crate::event::{Anomaly, Direction, MetricEvent, Severity};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Detector settings (`[detector]` in the config file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// Event-time span of the window. Default 1 h.
    pub window_secs: u64,
    /// Most points kept per series. Default 120.
    pub max_points: usize,
    /// Points needed before any anomaly is reported. Default 30.
    pub warmup_points: usize,
    /// Robust z-score at which a point is anomalous (score 0.5). Default 4.5.
    pub threshold: f64,
    /// Out-of-order points older than this behind the newest are dropped. Default 60 s.
    pub allowed_lateness_secs: u64,
    /// Normal points that end an episode (until then no new anomaly is emitted). Default 3.
    pub quiet_points: u32,
    /// Most series tracked per instance; further series are refused and counted. Default 100 000.
    pub max_series: usize,
    /// Level smoothing of the expectation model. Default 0.3.
    pub alpha: f64,
    /// Trend smoothing of the expectation model. Default 0.05.
    pub beta: f64,
    /// Metrics not scored at all (for example counters the pipeline itself changes,
    /// like `replicas`). Default none.
    pub ignore_metrics: Vec<String>,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            window_secs: 3600,
            max_points: 120,
            warmup_points: 30,
            threshold: 4.5,
            allowed_lateness_secs: 60,
            quiet_points: 3,
            max_series: 100_000,
            alpha: 0.3,
            beta: 0.05,
            ignore_metrics: Vec::new(),
        }
    }
}

impl DetectorConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.max_points < 5 || self.warmup_points < 5 || self.warmup_points > self.max_points {
            return Err(ConfigError::Invalid(format!(
                "detector: need 5 ≤ warmup_points ({}) ≤ max_points ({})",
                self.warmup_points, self.max_points
            )));
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0 && self.beta > 0.0 && self.beta < 1.0) {
            return Err(ConfigError::Invalid(
                "detector: alpha and beta must lie in (0, 1)".into(),
            ));
        }
        if self.threshold.is_nan() || self.threshold <= 0.0 {
            return Err(ConfigError::Invalid(
                "detector: threshold must be > 0".into(),
            ));
        }
        Ok(())
    }
}

/// Maps a robust z-score to [0,1]: 0.5 at the threshold, about 0.95 at twice it.
fn score_for(z: f64, threshold: f64) -> f64 {
    let k = 3.0 / threshold;
    1.0 / (1.0 + (-(z.abs() - threshold) * k).exp())
}

#[derive(Debug, Clone, Default)]
struct SeriesState {
    partition: i32,
    model: Holt,
    newest_ts: Option<i64>,
    /// Recent residuals (value − prediction) by event time.
    window: EventTimeWindow,
    in_episode: bool,
    quiet_run: u32,
}

/// Counters the detector keeps (exported by the runner).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DetectorCounters {
    /// Points dropped for arriving later than the allowed lateness.
    pub late: u64,
    /// Points dropped as duplicates of a timestamp already seen.
    pub duplicates: u64,
    /// Points of new series refused because `max_series` was reached.
    pub series_refused: u64,
    /// Anomalous points inside an episode that was already reported.
    pub suppressed: u64,
    /// Points of metrics listed in `ignore_metrics`.
    pub ignored: u64,
}

/// The detector stage core.
#[derive(Debug)]
pub struct Detector {
    cfg: DetectorConfig,
    series: HashMap<String, SeriesState>,
    scratch: Vec<f64>,
    counters: DetectorCounters,
}

impl Detector {
    /// A detector with validated settings.
    pub fn new(cfg: DetectorConfig) -> Result<Self, ConfigError> {
        cfg.check()?;
        Ok(Detector {
            cfg,
            series: HashMap::new(),
            scratch: Vec::new(),
            counters: DetectorCounters::default(),
        })
    }

    /// Cumulative counters.
    pub fn detector_counters(&self) -> DetectorCounters {
        self.counters
    }

    /// Scores one event against its series; returns the anomaly if it starts an episode.
    pub fn observe(&mut self, e: &MetricEvent, partition: i32) -> Option<Anomaly> {
        let Detector {
            cfg,
            series,
            scratch,
            counters,
        } = self;
        if cfg.ignore_metrics.contains(&e.metric) {
            counters.ignored += 1;
            return None;
        }
        let key = series_key(&e.target, &e.metric, &e.labels);
        if !series.contains_key(&key) && series.len() >= cfg.max_series {
            counters.series_refused += 1;
            return None;
        }
        let state = series.entry(key).or_insert_with(|| SeriesState {
            partition,
            ..SeriesState::default()
        });
        state.partition = partition;
        let params = HoltParams {
            alpha: cfg.alpha,
            beta: cfg.beta,
            phi: 1.0,
        };
        let in_order = state.newest_ts.is_none_or(|n| e.timestamp_ms > n);
        // Before the first point there is nothing to predict from.
        let expected = if state.model.count() == 0 {
            e.value
        } else {
            state.model.predict_next(params)
        };
        let baseline = if state.window.len() >= cfg.warmup_points {
            state.window.median_mad(scratch)
        } else {
            None
        };
        let residual = e.value - expected;
        match state.window.admit(
            e.timestamp_ms,
            residual,
            (cfg.window_secs * 1000) as i64,
            cfg.max_points,
            (cfg.allowed_lateness_secs * 1000) as i64,
        ) {
            Admit::Accepted => {}
            Admit::Duplicate => {
                counters.duplicates += 1;
                return None;
            }
            Admit::TooLate => {
                counters.late += 1;
                return None;
            }
        }
        // The residual scale: MAD of recent residuals around their median. A flat
        // series has MAD 0; a small floor relative to the level keeps exact repeats from
        // making every tiny change infinitely unusual.
        let sigma = baseline.map(|(_, mad)| (1.4826 * mad).max(1e-3 * expected.abs()).max(1e-9));
        let band = sigma.map_or(f64::INFINITY, |s| cfg.threshold * s);
        if in_order {
            // Points late but within the allowed lateness are scored, but the model
            // only moves forward in time.
            let clipped = e.value.clamp(expected - band, expected + band);
            state.model.update(clipped, params);
            state.newest_ts = Some(e.timestamp_ms);
        }
        let sigma = sigma?;
        let z = residual / sigma;
        if z.abs() < cfg.threshold {
            if state.in_episode {
                state.quiet_run += 1;
                if state.quiet_run >= cfg.quiet_points {
                    state.in_episode = false;
                }
            }
            return None;
        }
        state.quiet_run = 0;
        if state.in_episode {
            counters.suppressed += 1;
            return None;
        }
        state.in_episode = true;
        let score = score_for(z, cfg.threshold);
        let severity = if score >= 0.95 {
            Severity::Critical
        } else if score >= 0.75 {
            Severity::Warning
        } else {
            Severity::Info
        };
        let direction = if z > 0.0 {
            Direction::Up
        } else {
            Direction::Down
        };
        let id = format!(
            "anom-{:016x}",
            stable_hash(&[
                e.target.as_bytes(),
                e.metric.as_bytes(),
                &e.timestamp_ms.to_le_bytes()
            ])
        );
        Some(Anomaly {
            id,
            target: e.target.clone(),
            pool: e.pool_or_target().to_string(),
            metric: e.metric.clone(),
            labels: e.labels.clone(),
            timestamp_ms: e.timestamp_ms,
            value: e.value,
            expected,
            lower: expected - band,
            upper: expected + band,
            score,
            severity,
            direction,
            detectors: vec!["robust_zscore".into()],
            reason: format!(
                "{} {} is {:.4} where {:.4} was expected (normal range {:.4}..{:.4}); robust z-score {:.1}",
                e.target,
                e.metric,
                e.value,
                expected,
                expected - band,
                expected + band,
                z
            ),
        })
    }
}

impl Stage for Detector {
    type Input = MetricEvent;
    type Output = Anomaly;

    fn name(&self) -> &'static str {
        "detector"
    }

    fn process(&mut self, input: MetricEvent, meta: &RecordMeta, out: &mut Vec<Anomaly>) {
        if let Some(a) = self.observe(&input, meta.partition) {
            out.push(a);
        }
    }

    fn partitions_revoked(&mut self, partitions: &[i32]) {
        self.series
            .retain(|_, s| !partitions.contains(&s.partition));
    }

    fn active_series(&self) -> usize {
        self.series.len()
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let c = self.counters;
        vec![
            ("late_dropped", c.late),
            ("duplicates_dropped", c.duplicates),
            ("series_refused", c.series_refused),
            ("suppressed_in_episode", c.suppressed),
            ("ignored_metric", c.ignored),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts: i64, value: f64) -> MetricEvent {
        MetricEvent {
            source: "a".into(),
            target: "svc".into(),
            pool: None,
            metric: "latency".into(),
            labels: Default::default(),
            timestamp_ms: ts,
            value,
            unit: String::new(),
        }
    }

    fn noise(i: i64) -> f64 {
        // Deterministic pseudo-noise in [-1, 1].
        ((i * 7919 % 101) as f64 / 50.0) - 1.0
    }

    #[test]
    fn quiet_during_warmup_and_on_noise_then_catches_a_spike() {
        let mut d = Detector::new(DetectorConfig::default()).unwrap();
        let mut found = Vec::new();
        for i in 0..200 {
            let v = if i == 5 { 1000.0 } else { 100.0 + noise(i) };
            found.extend(d.observe(&ev(i * 1000, v), 0));
        }
        assert!(
            found.is_empty(),
            "no anomaly in warm-up or on noise: {found:?}"
        );
        let a = d
            .observe(&ev(200_000, 130.0), 0)
            .expect("spike is detected");
        assert_eq!(a.direction, Direction::Up);
        assert!(a.score > 0.9 && a.score <= 1.0, "{}", a.score);
        assert!(a.lower < a.expected && a.expected < a.upper && a.upper < 130.0);
        assert!(
            (a.expected - 100.0).abs() < 1.0,
            "the early spike did not move the expectation: {}",
            a.expected
        );
    }

    #[test]
    fn one_anomaly_per_episode() {
        let mut d = Detector::new(DetectorConfig::default()).unwrap();
        for i in 0..50 {
            d.observe(&ev(i * 1000, 10.0 + noise(i)), 0);
        }
        let hits: Vec<_> = (50..55)
            .filter_map(|i| d.observe(&ev(i * 1000, 50.0), 0))
            .collect();
        assert_eq!(hits.len(), 1);
        // The expectation recovers from the excursion within a few points; then the
        // episode ends and a new excursion is a new anomaly.
        for i in 55..75 {
            d.observe(&ev(i * 1000, 10.0 + noise(i)), 0);
        }
        assert!(
            d.observe(&ev(75_000, 50.0), 0).is_some(),
            "a new episode is reported"
        );
    }

    #[test]
    fn duplicates_and_late_points_are_counted_not_scored() {
        let mut d = Detector::new(DetectorConfig::default()).unwrap();
        for i in 0..50 {
            d.observe(&ev(i * 10_000, 10.0 + noise(i)), 0);
        }
        assert!(d.observe(&ev(490_000, 1e6), 0).is_none());
        assert!(d.observe(&ev(0, 1e6), 0).is_none());
        let c = d.detector_counters();
        assert_eq!((c.duplicates, c.late), (1, 1));
    }

    #[test]
    fn revoked_partitions_lose_their_state_and_series_are_bounded() {
        let cfg = DetectorConfig {
            max_series: 2,
            ..DetectorConfig::default()
        };
        let mut d = Detector::new(cfg).unwrap();
        for (i, t) in ["a", "b", "c"].iter().enumerate() {
            let mut e = ev(0, 1.0);
            e.target = t.to_string();
            d.observe(&e, i as i32);
        }
        assert_eq!(d.active_series(), 2);
        assert_eq!(d.detector_counters().series_refused, 1);
        d.partitions_revoked(&[0]);
        assert_eq!(d.active_series(), 1);
    }

    #[test]
    fn a_steady_trend_and_a_slow_cycle_are_not_anomalies_but_a_level_shift_is() {
        let mut d = Detector::new(DetectorConfig::default()).unwrap();
        let mut hits = 0;
        for i in 0..400 {
            let cycle = 20.0 * (2.0 * std::f64::consts::PI * i as f64 / 200.0).sin();
            let v = 100.0 + 0.5 * i as f64 + cycle + noise(i);
            hits += usize::from(d.observe(&ev(i * 60_000, v), 0).is_some());
        }
        assert_eq!(hits, 0, "trend + seasonality + noise raised anomalies");
        let shifted = 100.0 + 0.5 * 400.0 + 60.0;
        let a = d
            .observe(&ev(400 * 60_000, shifted), 0)
            .expect("level shift");
        assert_eq!(a.direction, Direction::Up);
    }

    #[test]
    fn ignored_metrics_are_not_scored() {
        let cfg = DetectorConfig {
            ignore_metrics: vec!["latency".into()],
            ..DetectorConfig::default()
        };
        let mut d = Detector::new(cfg).unwrap();
        for i in 0..100 {
            assert!(d
                .observe(&ev(i * 1000, if i == 90 { 1e9 } else { 1.0 }), 0)
                .is_none());
        }
        assert_eq!((d.active_series(), d.detector_counters().ignored), (0, 100));
    }
}
