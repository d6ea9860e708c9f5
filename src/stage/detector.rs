//! Detector core: one [`SeriesDetector`] per series (target + metric + labels), several
//! complementary detectors combined into one score, one anomaly per incident episode.
//! See `analytics::detect` for the detectors and the meaning of the score.

use super::scaling::ScalingLog;
use super::series_table::SeriesTable;
use super::snapshot::Partitioned;
use super::KeyedState;
use super::{RecordMeta, Stage};
use crate::analytics::detect::{DetectParams, PointScore, SeriesDetector};
use crate::analytics::seasonal::SeasonalParams;
use crate::config_error::ConfigError;
use crate::event::{Anomaly, Direction, MetricEvent, Severity};
use serde::{Deserialize, Serialize};

/// Detector settings (`[detector]` in the config file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// Points of a series before any anomaly is reported. Default 30.
    pub warmup_points: u32,
    /// Residual z-score at which the residual detector's score is 0.5. Default 4.5.
    pub threshold: f64,
    /// How unusual the recent mean residual must be, against its own usual size, to
    /// count as a persistent shift (score 0.5). Default 5.5.
    pub shift_threshold: f64,
    /// Short/long residual scale ratio that counts as a variance change. Default 3.
    pub variance_ratio: f64,
    /// Shortest run of identical values that can be a stuck sensor. Default 12.
    pub flat_points: u16,
    /// Points older than the newest by at most this much are scored but do not move
    /// the model; older ones are dropped and counted. Default 60 s.
    pub allowed_lateness_secs: u64,
    /// Normal points that end an episode (until then no new anomaly is emitted). Default
    /// 3 with classic scoring, 100 with likelihood scoring (one incident, one anomaly).
    pub quiet_points: Option<u32>,
    /// How a point's score is made: `classic` (the largest detector score) or
    /// `likelihood` (how rare the recent run of residuals is for the series, see the
    /// README's Quality section; it holds up far better on real data). Default likelihood.
    pub scoring: Scoring,
    /// Likelihood scoring: the likelihood (0..1) at which a point whose detectors fired
    /// is reported (0.1: the recent run is rarer than one in 10 for the series; 0.3: one
    /// in 10³). New extremes and residuals 1.5× the largest seen score 1. Default 0.1.
    pub likelihood_threshold: f64,
    /// Most series tracked per instance; further series are refused and counted. Default 100 000.
    pub max_series: usize,
    /// A series silent for this long (event time) is evicted. 0 keeps series for ever.
    /// Default 604 800 s (a week), so a series that pauses keeps what it learnt; when
    /// `max_series` is reached, series silent for 6 hours make room for new ones.
    pub series_ttl_secs: u64,
    /// Level smoothing of the expectation model. Default 0.3.
    pub alpha: f64,
    /// Trend smoothing of the expectation model. Default 0.02.
    pub beta: f64,
    /// Metrics not scored at all (for example `replicas`, which perfpilot's own
    /// decisions change). Default none.
    pub ignore_metrics: Vec<String>,
    /// Metrics that are a target's capacity. A change of one explains what follows on
    /// the same target (see `explained_after_scaling_secs`). Default `["replicas"]`.
    pub capacity_metrics: Vec<String>,
    /// For this long after a target's capacity changed, a level change of its other
    /// metrics the way the change moves them (down after a scale-out, up after a
    /// scale-in) is the change's effect: counted as `explained_by_scaling`, not reported
    /// as an anomaly. 0 reports everything. Default 900 s.
    pub explained_after_scaling_secs: u64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        let p = DetectParams::default();
        DetectorConfig {
            warmup_points: p.warmup,
            threshold: p.threshold,
            shift_threshold: p.shift_threshold,
            variance_ratio: p.variance_ratio,
            flat_points: p.flat_points,
            allowed_lateness_secs: 60,
            quiet_points: None,
            scoring: Scoring::Likelihood,
            likelihood_threshold: 0.1,
            max_series: 100_000,
            series_ttl_secs: 604_800,
            alpha: p.model.alpha,
            beta: p.model.beta,
            ignore_metrics: Vec::new(),
            capacity_metrics: vec!["replicas".into()],
            explained_after_scaling_secs: 900,
        }
    }
}

impl DetectorConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.warmup_points < 5 {
            return Err(ConfigError::Invalid(format!(
                "detector: warmup_points ({}) must be ≥ 5",
                self.warmup_points
            )));
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0 && self.beta > 0.0 && self.beta < 1.0) {
            return Err(ConfigError::Invalid(
                "detector: alpha and beta must lie in (0, 1)".into(),
            ));
        }
        if !(self.likelihood_threshold > 0.0 && self.likelihood_threshold < 1.0) {
            return Err(ConfigError::Invalid(
                "detector: likelihood_threshold must lie in (0, 1)".into(),
            ));
        }
        for (name, v) in [
            ("threshold", self.threshold),
            ("shift_threshold", self.shift_threshold),
            ("variance_ratio", self.variance_ratio),
        ] {
            if v.is_nan() || v <= 0.0 {
                return Err(ConfigError::Invalid(format!(
                    "detector: {name} must be > 0"
                )));
            }
        }
        Ok(())
    }

    /// The per-series parameters.
    pub fn params(&self) -> DetectParams {
        let d = DetectParams::default();
        DetectParams {
            model: SeasonalParams {
                alpha: self.alpha,
                beta: self.beta,
                ..d.model
            },
            threshold: self.threshold,
            warmup: self.warmup_points,
            shift_threshold: self.shift_threshold,
            variance_ratio: self.variance_ratio,
            flat_points: self.flat_points,
            likelihood_threshold: match self.scoring {
                Scoring::Classic => None,
                Scoring::Likelihood => Some(self.likelihood_threshold),
            },
        }
    }

    /// Normal points that end an episode.
    pub fn quiet_points(&self) -> u32 {
        self.quiet_points.unwrap_or(match self.scoring {
            Scoring::Classic => 3,
            Scoring::Likelihood => 100,
        })
    }
}

/// How the detector scores a point (`scoring` in `[detector]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scoring {
    /// The largest of the detectors' scores (the scoring before likelihoods).
    Classic,
    /// The anomaly likelihood of the recent run, when a detector fired.
    #[default]
    Likelihood,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SeriesState {
    #[serde(skip)]
    partition: i32,
    detector: SeriesDetector,
    in_episode: bool,
    quiet_run: u32,
    /// Largest |z| of the open episode.
    #[serde(default)]
    episode_peak_z: f64,
    /// Points since the last emitted anomaly while every one of them was anomalous
    /// too (its burst goes on); 0 once a normal point ended it.
    #[serde(default)]
    burst: u8,
}

impl Partitioned for SeriesState {
    fn partition(&self) -> i32 {
        self.partition
    }
    fn set_partition(&mut self, partition: i32) {
        self.partition = partition;
    }
    fn well_formed(&self) -> bool {
        self.detector.well_formed()
    }
}

/// Counters the detector keeps (exported by the runner).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DetectorCounters {
    /// Points dropped for arriving later than the allowed lateness.
    pub late: u64,
    /// Points scored out of order (within the lateness) without moving the model.
    pub late_scored: u64,
    /// Points dropped as duplicates of the newest timestamp.
    pub duplicates: u64,
    /// Points of new series refused because `max_series` was reached.
    pub series_refused: u64,
    /// Anomalous points inside an episode that was already reported.
    pub suppressed: u64,
    /// Points of metrics listed in `ignore_metrics`.
    pub ignored: u64,
    /// Episodes that opened as the effect of a capacity change and were not reported.
    pub explained: u64,
}

/// What the detector made of one event.
#[derive(Debug, Clone, Default)]
pub struct Scored {
    /// The point's score (None during warm-up, or when the point was dropped).
    pub point: Option<PointScore>,
    /// The anomaly, when the point opened an episode.
    pub anomaly: Option<Anomaly>,
}

/// Inside an episode, a point whose |z| exceeds this many times the episode's largest
/// so far is reported as a new anomaly.
const ESCALATION: f64 = 2.0;

/// Points after an emitted anomaly during which an unbroken run of anomalous points is
/// one burst and cannot escalate: a spike that climbs over a few points, or a value that
/// leaves the range and goes further, is one incident. A spike on top of a shift that has
/// lasted longer is news again.
const BURST_POINTS: u8 = 5;

/// The detector stage core.
#[derive(Debug)]
pub struct Detector {
    cfg: DetectorConfig,
    params: DetectParams,
    series: SeriesTable<SeriesState>,
    scaling: ScalingLog,
    counters: DetectorCounters,
}

impl Detector {
    /// A detector with validated settings.
    pub fn new(cfg: DetectorConfig) -> Result<Self, ConfigError> {
        cfg.check()?;
        Ok(Detector {
            params: cfg.params(),
            series: SeriesTable::new(cfg.max_series, (cfg.series_ttl_secs * 1000) as i64),
            scaling: ScalingLog::new(
                cfg.max_series,
                (cfg.explained_after_scaling_secs.min(i64::MAX as u64 / 1000) * 1000) as i64,
            ),
            cfg,
            counters: DetectorCounters::default(),
        })
    }

    /// Cumulative counters.
    pub fn detector_counters(&self) -> DetectorCounters {
        self.counters
    }

    /// Returns the anomaly if the event opens an episode.
    pub fn observe(&mut self, e: &MetricEvent, partition: i32) -> Option<Anomaly> {
        self.score(e, partition).anomaly
    }

    /// Scores one event against its series and learns from it.
    pub fn score(&mut self, e: &MetricEvent, partition: i32) -> Scored {
        let Detector {
            cfg,
            params,
            series,
            scaling,
            counters,
        } = self;
        let capacity = cfg.capacity_metrics.contains(&e.metric);
        if capacity {
            scaling.observe(&e.target, partition, e.timestamp_ms, e.value);
        }
        if cfg.ignore_metrics.contains(&e.metric) {
            counters.ignored += 1;
            return Scored::default();
        }
        let Some(state) =
            series.get_or_create(&e.target, &e.metric, &e.labels, e.timestamp_ms, partition)
        else {
            counters.series_refused += 1;
            return Scored::default();
        };
        state.partition = partition;
        let d = &mut state.detector;
        let point = if d.count() == 0 || e.timestamp_ms > d.last_ts() {
            d.observe(e.timestamp_ms, e.value, params)
        } else if e.timestamp_ms == d.last_ts() {
            counters.duplicates += 1;
            return Scored::default();
        } else if d.last_ts() - e.timestamp_ms <= (cfg.allowed_lateness_secs * 1000) as i64 {
            counters.late_scored += 1;
            d.score_late(e.timestamp_ms, e.value, params)
        } else {
            counters.late += 1;
            return Scored::default();
        };
        let Some(p) = point else {
            return Scored::default();
        };
        if !p.anomalous() {
            state.burst = 0;
            if state.in_episode {
                state.quiet_run += 1;
                if state.quiet_run >= cfg.quiet_points() {
                    state.in_episode = false;
                    state.episode_peak_z = 0.0;
                }
            }
            return Scored {
                point: Some(p),
                anomaly: None,
            };
        }
        state.quiet_run = 0;
        // Inside an episode, only an escalation is news: a deviation more than twice the
        // largest of the episode so far (a spike on top of a shift, say), or a certain one
        // (a new extreme of the series, likelihood 1) beyond the episode's largest, or a
        // novel value.
        let peak = state.episode_peak_z.abs();
        let beyond = p.z.abs() > peak && p.scores[0] >= 0.5;
        // A deviation the other way, far larger than the episode's (a spike during a
        // drop), is another incident, even within a burst.
        let reversed = beyond && p.z * state.episode_peak_z < 0.0 && p.z.abs() > ESCALATION * peak;
        // A novel value (unlike any the series showed recently) is news in any episode.
        let escalated =
            p.scores[4] >= 0.5 || beyond && (p.z.abs() > ESCALATION * peak || p.likelihood >= 1.0);
        // Nor does a burst escalate: its points (a spike that climbs over a few points, a
        // value that leaves the range and then goes further) are one incident.
        let in_burst = state.burst > 0 && state.burst <= BURST_POINTS;
        if state.burst > 0 {
            state.burst = state.burst.saturating_add(1);
        }
        if state.in_episode && !reversed && (!escalated || in_burst) {
            if p.z.abs() > peak {
                state.episode_peak_z = p.z;
            }
            counters.suppressed += 1;
            return Scored {
                point: Some(p),
                anomaly: None,
            };
        }
        state.in_episode = true;
        state.burst = 1;
        if p.z.abs() > state.episode_peak_z.abs() {
            state.episode_peak_z = p.z;
        }
        let direction = if e.value >= p.expected {
            Direction::Up
        } else {
            Direction::Down
        };
        if !capacity && scaling.explains(&e.target, e.timestamp_ms, direction) {
            // The target's own capacity change did this; the episode stays open, so its
            // aftermath is not reported either.
            counters.explained += 1;
            return Scored {
                point: Some(p),
                anomaly: None,
            };
        }
        Scored {
            point: Some(p),
            anomaly: Some(anomaly(e, &p, state.detector.model().seasonal_strength())),
        }
    }
}

fn anomaly(e: &MetricEvent, p: &PointScore, (day, week): (f64, f64)) -> Anomaly {
    let severity = if p.score >= 0.95 {
        Severity::Critical
    } else if p.score >= 0.75 {
        Severity::Warning
    } else {
        Severity::Info
    };
    let direction = if e.value >= p.expected {
        Direction::Up
    } else {
        Direction::Down
    };
    let detectors: Vec<String> = p.fired().map(String::from).collect();
    let mut seasonal = String::new();
    if day >= 0.3 || week >= 0.3 {
        seasonal = format!(
            "; expectation includes a seasonal pattern (daily {:.0}%, weekly {:.0}% of variance)",
            day * 100.0,
            week * 100.0
        );
    }
    Anomaly {
        id: e.derived_id("anom"),
        target: e.target.clone(),
        pool: e.pool_or_target().to_string(),
        metric: e.metric.clone(),
        labels: e.labels.clone(),
        timestamp_ms: e.timestamp_ms,
        value: e.value,
        expected: p.expected,
        lower: p.expected - p.band,
        upper: p.expected + p.band,
        score: p.score,
        severity,
        direction,
        reason: format!(
            "{} {} is {:.4} where {:.4} was expected (normal range {:.4}..{:.4}, z {:.1}); detectors: {}{}",
            e.target,
            e.metric,
            e.value,
            p.expected,
            p.expected - p.band,
            p.expected + p.band,
            p.z,
            detectors.join(", "),
            seasonal
        ),
        detectors,
    }
}

impl Stage for Detector {
    type Input = MetricEvent;
    type Output = Anomaly;

    fn name(&self) -> &'static str {
        "detector"
    }

    fn process(&mut self, input: MetricEvent, meta: &RecordMeta, out: &mut Vec<Anomaly>) {
        // One record stamped far ahead must not make every other series look idle.
        self.series.bound_clock(meta.now_ms);
        if let Some(a) = self.observe(&input, meta.partition) {
            out.push(a);
        }
    }

    fn partitions_revoked(&mut self, partitions: &[i32]) {
        self.series.drop_partitions(partitions);
        self.scaling.drop_partitions(partitions);
    }

    fn active_series(&self) -> usize {
        self.series.len()
    }

    fn state(&mut self) -> Option<&mut dyn KeyedState> {
        Some(&mut self.series)
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let c = self.counters;
        vec![
            ("late_dropped", c.late),
            ("late_scored", c.late_scored),
            ("duplicates_dropped", c.duplicates),
            ("series_refused", c.series_refused),
            ("series_evicted", self.series.evicted()),
            ("suppressed_in_episode", c.suppressed),
            ("ignored_metric", c.ignored),
            ("explained_by_scaling", c.explained),
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
    fn a_record_stamped_a_day_ahead_evicts_no_live_series() {
        let mut d = Detector::new(DetectorConfig::default()).unwrap();
        let now = 1_700_000_000_000;
        let mut out = Vec::new();
        for minute in 0..5 {
            let ts = now + minute * 60_000;
            let meta = RecordMeta {
                partition: 0,
                offset: minute,
                now_ms: ts,
            };
            for i in 0..200 {
                let mut e = ev(ts, 1.0);
                e.target = format!("svc-{i}");
                d.process(e, &meta, &mut out);
            }
            // Inside --max-future (24 h), so it passes validation and is processed.
            d.process(ev(ts + 23 * 3_600_000, 1.0), &meta, &mut out);
        }
        assert_eq!(d.active_series(), 201);
        assert_eq!(d.series.evicted(), 0);
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
        assert!((a.expected - 100.0).abs() < 2.0, "expected {}", a.expected);
        assert!(
            a.detectors.contains(&"residual".to_string()),
            "{:?}",
            a.detectors
        );
    }

    #[test]
    fn one_anomaly_per_episode() {
        // Classic scoring: an episode closes after 3 normal points.
        let mut d = Detector::new(DetectorConfig {
            scoring: Scoring::Classic,
            ..DetectorConfig::default()
        })
        .unwrap();
        for i in 0..50 {
            d.observe(&ev(i * 1000, 10.0 + noise(i)), 0);
        }
        let hits: Vec<_> = (50..55)
            .filter_map(|i| d.observe(&ev(i * 1000, 50.0), 0))
            .collect();
        assert_eq!(hits.len(), 1);
        for i in 55..120 {
            d.observe(&ev(i * 1000, 10.0 + noise(i)), 0);
        }
        assert!(
            d.observe(&ev(120_000, 50.0), 0).is_some(),
            "a new episode is reported"
        );
    }

    #[test]
    fn likelihood_scoring_reports_one_anomaly_per_incident() {
        let cfg = DetectorConfig {
            scoring: Scoring::Likelihood,
            ..DetectorConfig::default()
        };
        let mut d = Detector::new(cfg).unwrap();
        for i in 0..200 {
            assert!(d.observe(&ev(i * 1000, 10.0 + noise(i)), 0).is_none());
        }
        let hits: Vec<_> = (200..205)
            .filter_map(|i| d.observe(&ev(i * 1000, 50.0), 0))
            .collect();
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert_eq!(hits[0].score, 1.0, "a new extreme is certain");
        // Within `quiet_points` (100) normal points the episode is still open.
        for i in 205..270 {
            d.observe(&ev(i * 1000, 10.0 + noise(i)), 0);
        }
        assert!(d.observe(&ev(270_000, 50.0), 0).is_none(), "same episode");
        for i in 271..400 {
            assert!(d.observe(&ev(i * 1000, 10.0 + noise(i)), 0).is_none());
        }
        let again = d.observe(&ev(400_000, 90.0), 0);
        assert!(
            again.as_ref().is_some_and(|a| a.score == 1.0),
            "a new episode is reported: {again:?}"
        );
    }

    #[test]
    fn a_climbing_burst_is_one_anomaly_and_a_later_escalation_is_another() {
        let mut d = Detector::new(DetectorConfig::default()).unwrap();
        for i in 0..400 {
            assert!(d.observe(&ev(i * 60_000, 10.0 + noise(i)), 0).is_none());
        }
        // Each point of the burst more than doubles the last one's deviation and leaves
        // the range seen so far: one incident, reported once.
        let burst: Vec<_> = [30.0, 70.0, 160.0, 400.0]
            .iter()
            .enumerate()
            .filter_map(|(k, v)| d.observe(&ev((400 + k as i64) * 60_000, *v), 0))
            .collect();
        assert_eq!(burst.len(), 1, "{burst:?}");
        // Still in the episode (fewer than quiet_points normal points), but well after
        // the burst, a far larger deviation is news again.
        for i in 404..440 {
            d.observe(&ev(i * 60_000, 10.0 + noise(i)), 0);
        }
        let later = d.observe(&ev(440 * 60_000, 2000.0), 0);
        assert!(later.is_some(), "an escalation after the rest is reported");
    }

    #[test]
    fn a_spike_during_a_drop_is_another_incident() {
        let mut d = Detector::new(DetectorConfig::default()).unwrap();
        for i in 0..400 {
            assert!(d.observe(&ev(i * 60_000, 100.0 + noise(i)), 0).is_none());
        }
        // Latency halves (a scale-out took effect): one incident while it settles...
        let drop: Vec<_> = (400..403)
            .filter_map(|i| d.observe(&ev(i * 60_000, 50.0 + noise(i)), 0))
            .collect();
        assert_eq!(drop.len(), 1, "{drop:?}");
        assert!(drop[0].value < drop[0].expected);
        // ...but a spike the other way, within that burst, is news of its own.
        let spike = d.observe(&ev(403 * 60_000, 400.0), 0);
        assert!(
            spike.as_ref().is_some_and(|a| a.value > a.expected),
            "the spike was folded into the drop: {spike:?}"
        );
    }

    #[test]
    fn duplicates_and_late_points_are_counted() {
        let mut d = Detector::new(DetectorConfig::default()).unwrap();
        for i in 0..50 {
            d.observe(&ev(i * 10_000, 10.0 + noise(i)), 0);
        }
        assert!(d.observe(&ev(490_000, 1e6), 0).is_none());
        assert!(d.observe(&ev(0, 1e6), 0).is_none());
        let late = d.score(&ev(470_000, 1e6), 0);
        assert!(
            late.point.is_some_and(|p| p.anomalous()),
            "a late point within the lateness is scored"
        );
        let c = d.detector_counters();
        assert_eq!((c.duplicates, c.late, c.late_scored), (1, 1, 1));
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

#[cfg(test)]
mod snapshot_tests {
    use super::*;
    use crate::stage::snapshot::{RestoreError, SNAPSHOT_VERSION};

    fn ev(ts: i64, value: f64) -> MetricEvent {
        MetricEvent {
            source: "a".into(),
            target: "svc".into(),
            pool: None,
            metric: "m".into(),
            labels: Default::default(),
            timestamp_ms: ts,
            value,
            unit: String::new(),
        }
    }

    #[test]
    fn a_restored_detector_continues_exactly_where_the_original_was() {
        let mut a = Detector::new(DetectorConfig::default()).unwrap();
        let series = |i: i64| 50.0 + ((i * 37 % 11) as f64) + if i == 170 { 80.0 } else { 0.0 };
        for i in 0..120 {
            a.observe(&ev(i * 60_000, series(i)), 3);
        }
        let snap = a.state().unwrap().snapshot(3);
        assert_eq!(snap.len(), 1);
        // What one changelog record costs (660 bytes when written, 257 of them the
        // novelty bins; 338 before them): bounded.
        assert!(snap[0].1.len() < 700, "{} bytes", snap[0].1.len());
        assert!(
            a.state().unwrap().snapshot(2).is_empty(),
            "only the asked partition"
        );
        let mut b = Detector::new(DetectorConfig::default()).unwrap();
        for (k, bytes) in &snap {
            b.state().unwrap().restore(3, k, bytes).unwrap();
        }
        for i in 120..200 {
            let (x, y) = (
                a.score(&ev(i * 60_000, series(i)), 3),
                b.score(&ev(i * 60_000, series(i)), 3),
            );
            assert_eq!(x.point, y.point, "point {i}");
            assert_eq!(x.anomaly.is_some(), y.anomaly.is_some());
        }
        b.partitions_revoked(&[3]);
        assert_eq!(b.active_series(), 0);
    }

    #[test]
    fn unreadable_snapshots_are_errors_not_crashes() {
        let mut d = Detector::new(DetectorConfig::default()).unwrap();
        assert_eq!(
            d.state().unwrap().restore(0, "k", &[]),
            Err(RestoreError::Empty)
        );
        assert_eq!(
            d.state()
                .unwrap()
                .restore(0, "k", &[SNAPSHOT_VERSION + 1, b'{']),
            Err(RestoreError::Version {
                found: SNAPSHOT_VERSION + 1
            })
        );
        assert!(matches!(
            d.state()
                .unwrap()
                .restore(0, "k", &[SNAPSHOT_VERSION, b'{']),
            Err(RestoreError::Decode(_))
        ));
        assert_eq!(d.active_series(), 0);
    }

    #[test]
    fn a_level_change_right_after_a_scale_out_is_its_effect_not_an_incident() {
        let run = |explain_secs: u64| {
            let mut d = Detector::new(DetectorConfig {
                explained_after_scaling_secs: explain_secs,
                ..DetectorConfig::default()
            })
            .unwrap();
            let mut anomalies = Vec::new();
            for i in 0..400i64 {
                let ts = i * 60_000;
                let replicas = if i < 200 { 4.0 } else { 8.0 };
                // Twice the replicas halve the latency (after a minute of start-up); at
                // minute 320 a real incident: latency triples.
                let mut latency = if i < 201 { 100.0 } else { 50.0 };
                if (370..375).contains(&i) {
                    latency *= 3.0;
                }
                let mut r = ev(ts, replicas);
                r.metric = "replicas".into();
                anomalies.extend(d.observe(&r, 0));
                // Deterministic pseudo-noise in [-1, 1].
                let noise = ((i * 7919 % 101) as f64 / 50.0) - 1.0;
                anomalies.extend(d.observe(&ev(ts, latency + noise), 0));
            }
            (anomalies, d.detector_counters().explained)
        };
        let (reported, explained) = run(900);
        let latency: Vec<i64> = reported
            .iter()
            .filter(|a| a.metric != "replicas")
            .map(|a| a.timestamp_ms / 60_000)
            .collect();
        assert_eq!(explained, 1, "the drop after the scale-out is explained");
        assert_eq!(latency, vec![370], "only the real incident is reported");
        // Without the knowledge, the drop is reported as an incident.
        let (reported, explained) = run(0);
        assert_eq!(explained, 0);
        assert!(
            reported
                .iter()
                .any(|a| a.metric != "replicas" && (201..215).contains(&(a.timestamp_ms / 60_000))),
            "the control run should report the drop: {reported:?}"
        );
    }
}
