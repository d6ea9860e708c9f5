//! Forecaster core: per series, several models updated per event and selected by
//! rolling out-of-sample error (see `analytics::forecast`); every N events or T of event
//! time it emits a Forecast with prediction intervals over a horizon.

use super::series_table::SeriesTable;
use super::snapshot::Partitioned;
use super::KeyedState;
use super::{RecordMeta, Stage};
use crate::analytics::forecast::{ForecastParams, Predicted, SeriesForecaster, MODELS};
use crate::analytics::holt::HoltParams;
use crate::analytics::reorder::{Offered, ReorderBuffer};
use crate::analytics::stats::{normal_cdf, z_for_level};
use crate::config_error::ConfigError;
use crate::event::{EarlyWarning, Forecast, ForecastPoint, MetricEvent};
use serde::{Deserialize, Serialize};

/// Forecaster settings (`[forecaster]` in the config file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForecasterConfig {
    /// Level smoothing. Default 0.3.
    pub alpha: f64,
    /// Trend smoothing. Default 0.05.
    pub beta: f64,
    /// Trend damping in (0,1]; below 1 keeps long horizons from running away. Default 0.98.
    pub phi: f64,
    /// Steps forecast ahead. Default 12.
    pub horizon: u32,
    /// Emit after this many events of a series... Default 10.
    pub emit_every_events: u32,
    /// ...or after this much event time since the last forecast. Default 300 s.
    pub emit_every_secs: u64,
    /// Points needed before the first forecast. Default 10.
    pub warmup_points: u32,
    /// Nominal coverage of the prediction intervals. Default 0.9.
    pub interval_level: f64,
    /// Most series tracked per instance. Default 100 000.
    pub max_series: usize,
    /// A series silent for this long (event time) is evicted. 0 keeps series for ever.
    /// Default 604 800 s (a week), so a series that pauses keeps what it learnt; when
    /// `max_series` is reached, series silent for 6 hours make room for new ones.
    pub series_ttl_secs: u64,
    /// Points are held back this long (event time) so that one arriving out of order
    /// within it is learnt in its place; older ones are dropped and counted. 0 learns
    /// each point on arrival. Default 60 s.
    pub allowed_lateness_secs: u64,
    /// Early-warning thresholds per metric name, e.g. `{ disk_used_ratio = 0.9 }`: a
    /// forecast that goes above one within the horizon carries the ETA and the
    /// probability. Default none.
    pub thresholds: std::collections::BTreeMap<String, f64>,
}

impl Default for ForecasterConfig {
    fn default() -> Self {
        ForecasterConfig {
            alpha: 0.3,
            beta: 0.05,
            phi: 0.98,
            horizon: 12,
            emit_every_events: 10,
            emit_every_secs: 300,
            warmup_points: 10,
            interval_level: 0.9,
            max_series: 100_000,
            series_ttl_secs: 604_800,
            allowed_lateness_secs: 60,
            thresholds: Default::default(),
        }
    }
}

impl ForecasterConfig {
    /// The models' parameters.
    pub fn params(&self) -> ForecastParams {
        ForecastParams {
            holt: HoltParams {
                alpha: self.alpha,
                beta: self.beta,
                phi: self.phi,
            },
        }
    }

    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        let unit = |x: f64| x > 0.0 && x < 1.0;
        if !unit(self.alpha) || !unit(self.beta) {
            return Err(ConfigError::Invalid(format!(
                "forecaster: alpha ({}) and beta ({}) must lie in (0, 1)",
                self.alpha, self.beta
            )));
        }
        if !(self.phi > 0.0 && self.phi <= 1.0) {
            return Err(ConfigError::Invalid(format!(
                "forecaster: phi ({}) must lie in (0, 1]",
                self.phi
            )));
        }
        if !unit(self.interval_level) {
            return Err(ConfigError::Invalid(
                "forecaster: interval_level must lie in (0, 1)".into(),
            ));
        }
        if self.horizon == 0 || self.horizon > 1000 || self.emit_every_events == 0 {
            return Err(ConfigError::Invalid(
                "forecaster: horizon must be 1..=1000 and emit_every_events ≥ 1".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SeriesState {
    #[serde(skip)]
    partition: i32,
    model: SeriesForecaster,
    pending: ReorderBuffer,
    since_emit: u32,
    last_emit_ts: i64,
}

impl Partitioned for SeriesState {
    fn partition(&self) -> i32 {
        self.partition
    }
    fn set_partition(&mut self, partition: i32) {
        self.partition = partition;
    }
    fn well_formed(&self) -> bool {
        self.model.well_formed()
    }
}

/// The forecaster stage core.
#[derive(Debug)]
pub struct Forecaster {
    cfg: ForecasterConfig,
    params: ForecastParams,
    z: f64,
    series: SeriesTable<SeriesState>,
    late: u64,
    refused: u64,
}

impl Forecaster {
    /// A forecaster with validated settings.
    pub fn new(cfg: ForecasterConfig) -> Result<Self, ConfigError> {
        cfg.check()?;
        Ok(Forecaster {
            z: z_for_level(cfg.interval_level),
            params: cfg.params(),
            series: SeriesTable::new(cfg.max_series, (cfg.series_ttl_secs * 1000) as i64),
            cfg,
            late: 0,
            refused: 0,
        })
    }

    /// Updates the series of `e`; returns a forecast when one is due.
    pub fn observe(&mut self, e: &MetricEvent, partition: i32) -> Option<Forecast> {
        let Some(s) =
            self.series
                .get_or_create(&e.target, &e.metric, &e.labels, e.timestamp_ms, partition)
        else {
            self.refused += 1;
            return None;
        };
        s.partition = partition;
        if s.model.count() > 0 && e.timestamp_ms <= s.model.last_ts() {
            // Older than what the models have already learnt: too late to place.
            self.late += 1;
            return None;
        }
        if s.pending.offer(e.timestamp_ms, e.value) != Offered::Held {
            self.late += 1;
            return None;
        }
        let watermark = s.pending.newest().map_or(i64::MIN, |t| {
            t - (self.cfg.allowed_lateness_secs * 1000) as i64
        });
        let mut forecast = None;
        while let Some((ts, value)) = s.pending.release(watermark) {
            if let Some(f) = learn(s, ts, value, e, &self.cfg, &self.params, self.z) {
                forecast = Some(f);
            }
        }
        forecast
    }
}

/// Feeds one point (in time order) to the series' models; a forecast when one is due.
/// `e` is the event being processed, which names the series.
fn learn(
    s: &mut SeriesState,
    ts: i64,
    value: f64,
    e: &MetricEvent,
    cfg: &ForecasterConfig,
    params: &ForecastParams,
    z: f64,
) -> Option<Forecast> {
    if s.model.count() == 0 {
        s.last_emit_ts = ts;
    }
    s.model.observe(ts, value, params);
    s.since_emit += 1;
    let due = s.since_emit >= cfg.emit_every_events
        || ts - s.last_emit_ts >= (cfg.emit_every_secs * 1000) as i64;
    if s.model.count() < cfg.warmup_points || !due || s.model.step_ms() <= 0.0 {
        return None;
    }
    s.since_emit = 0;
    s.last_emit_ts = ts;
    let (model, predicted) = s.model.forecast(cfg.horizon, params);
    let warning = cfg
        .thresholds
        .get(&e.metric)
        .and_then(|&thr| early_warning(&predicted, thr));
    let points = predicted
        .iter()
        .map(|p| {
            let (lower, upper) = p.interval(z);
            ForecastPoint {
                timestamp_ms: p.ts,
                value: p.value,
                lower,
                upper,
            }
        })
        .collect();
    Some(Forecast {
        id: e.derived_id("fc"),
        target: e.target.clone(),
        pool: e.pool_or_target().to_string(),
        metric: e.metric.clone(),
        labels: e.labels.clone(),
        generated_at_ms: ts,
        last_value: value,
        model: MODELS[model].to_string(),
        step_ms: s.model.step_ms().round().max(1.0) as i64,
        interval_level: cfg.interval_level,
        points,
        warning,
    })
}

/// The early warning for `threshold`: the first point at or above it is the ETA; the
/// probability of going above it within the horizon is the largest of the points'
/// P(value > threshold) under their normal error. Warns when that probability reaches 0.5.
pub fn early_warning(points: &[Predicted], threshold: f64) -> Option<EarlyWarning> {
    let probability = points
        .iter()
        .map(|p| normal_cdf((p.value - threshold) / p.sd.max(1e-12)))
        .fold(0.0, f64::max);
    if probability < 0.5 {
        return None;
    }
    let eta = points
        .iter()
        .find(|p| p.value >= threshold)
        .or_else(|| points.last())?;
    Some(EarlyWarning {
        threshold,
        eta_ms: eta.ts,
        probability,
    })
}

impl Stage for Forecaster {
    type Input = MetricEvent;
    type Output = Forecast;

    fn name(&self) -> &'static str {
        "forecaster"
    }

    fn process(&mut self, input: MetricEvent, meta: &RecordMeta, out: &mut Vec<Forecast>) {
        // One record stamped far ahead must not make every other series look idle.
        self.series.bound_clock(meta.now_ms);
        if let Some(f) = self.observe(&input, meta.partition) {
            out.push(f);
        }
    }

    fn partitions_revoked(&mut self, partitions: &[i32]) {
        self.series.drop_partitions(partitions);
    }

    fn active_series(&self) -> usize {
        self.series.len()
    }

    fn state(&mut self) -> Option<&mut dyn KeyedState> {
        Some(&mut self.series)
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("late_or_duplicate_dropped", self.late),
            ("series_refused", self.refused),
            ("series_evicted", self.series.evicted()),
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
            pool: Some("p".into()),
            metric: "cpu_utilization".into(),
            labels: Default::default(),
            timestamp_ms: ts,
            value,
            unit: String::new(),
        }
    }

    #[test]
    fn emits_every_n_events_with_a_rising_trend_and_ordered_points() {
        let mut f = Forecaster::new(ForecasterConfig {
            allowed_lateness_secs: 0,
            ..ForecasterConfig::default()
        })
        .unwrap();
        let out: Vec<Forecast> = (0..40)
            .filter_map(|i| f.observe(&ev(i * 10_000, 0.2 + 0.01 * i as f64), 0))
            .collect();
        assert_eq!(
            out.len(),
            4,
            "one every 10 events, the first when warm-up completes"
        );
        let last = out.last().unwrap();
        assert_eq!(last.points.len(), 12);
        assert_eq!(last.step_ms, 10_000);
        assert_eq!(last.pool, "p");
        let peak = last.peak().unwrap();
        // The trend is learnt and damped: the peak lies above the last value, at most
        // at the undamped extrapolation 0.2 + 0.01 × 51.
        assert!(
            peak.value > 0.2 + 0.01 * 39.0 && peak.value < 0.2 + 0.01 * 51.0 + 1e-9,
            "{peak:?}"
        );
        for w in last.points.windows(2) {
            assert!(w[0].timestamp_ms < w[1].timestamp_ms);
        }
        for p in &last.points {
            assert!(p.lower <= p.value && p.value <= p.upper);
        }
    }

    #[test]
    fn a_ramp_toward_a_threshold_carries_an_early_warning() {
        let cfg = ForecasterConfig {
            thresholds: [("cpu_utilization".to_string(), 0.9)].into(),
            ..ForecasterConfig::default()
        };
        let mut f = Forecaster::new(cfg).unwrap();
        let mut warned = None;
        for i in 0..200 {
            let v = 0.3 + 0.004 * i as f64 + 0.002 * ((i * 7 % 5) as f64 - 2.0);
            if let Some(fc) = f.observe(&ev(i * 60_000, v), 0) {
                if let (None, Some(w)) = (warned, fc.warning) {
                    warned = Some((i, fc.generated_at_ms, w));
                }
            }
        }
        let (i, at, w) = warned.expect("a warning before the ramp reaches 0.9");
        // The ramp reaches 0.9 at i = 150; the warning comes before, with an ETA ahead.
        assert!(i < 150, "warned at {i}");
        assert!(
            w.eta_ms > at && w.probability >= 0.5 && w.probability <= 1.0,
            "{w:?}"
        );
        let true_eta = 150 * 60_000;
        assert!(
            (w.eta_ms - true_eta).abs() <= 6 * 60_000,
            "eta {} vs {true_eta}",
            w.eta_ms
        );
        // No threshold for the metric, no warning.
        let mut g = Forecaster::new(ForecasterConfig::default()).unwrap();
        assert!((0..200)
            .filter_map(|i| g.observe(&ev(i * 60_000, 0.3 + 0.004 * i as f64), 0))
            .all(|fc| fc.warning.is_none()));
    }

    #[test]
    fn late_points_within_the_lateness_are_learnt_in_place_older_ones_dropped() {
        // The same series in order, and with every pair of neighbours swapped (each
        // point at most 10 s late, within the 60 s lateness): the same forecasts.
        let points: Vec<(i64, f64)> = (0..300)
            .map(|i| {
                (
                    i * 10_000,
                    0.3 + 0.002 * i as f64 + 0.01 * ((i * 7 % 5) as f64),
                )
            })
            .collect();
        let mut swapped = points.clone();
        for pair in swapped.chunks_mut(2) {
            pair.reverse();
        }
        let run = |pts: &[(i64, f64)]| {
            let mut f = Forecaster::new(ForecasterConfig::default()).unwrap();
            let out: Vec<(i64, Vec<ForecastPoint>)> = pts
                .iter()
                .filter_map(|&(ts, v)| f.observe(&ev(ts, v), 0))
                .map(|fc| (fc.generated_at_ms, fc.points))
                .collect();
            (out, f.counters()[0].1)
        };
        let (in_order, dropped) = run(&points);
        assert_eq!(dropped, 0);
        assert!(in_order.len() >= 25);
        assert_eq!(run(&swapped), (in_order, 0));

        // Beyond the lateness, and duplicates: dropped and counted.
        let mut f = Forecaster::new(ForecasterConfig::default()).unwrap();
        for i in 0..20 {
            f.observe(&ev(i * 10_000, 1.0), 0);
        }
        f.observe(&ev(50_000, 1.0), 0); // learnt already
        f.observe(&ev(190_000, 1.0), 0); // held already
        assert_eq!(f.counters()[0], ("late_or_duplicate_dropped", 2));
    }

    #[test]
    fn state_per_series_stays_under_a_kibibyte() {
        let size = std::mem::size_of::<SeriesState>();
        assert!(size <= 1024, "{size} bytes");
    }
}

#[cfg(test)]
mod snapshot_tests {
    use super::*;

    #[test]
    fn a_restored_forecaster_emits_the_same_forecasts() {
        let ev = |ts: i64, value: f64| MetricEvent {
            source: "a".into(),
            target: "svc".into(),
            pool: None,
            metric: "m".into(),
            labels: Default::default(),
            timestamp_ms: ts,
            value,
            unit: String::new(),
        };
        let series = |i: i64| 10.0 + (i as f64 / 20.0).sin() * 3.0 + (i % 5) as f64 * 0.1;
        let mut a = Forecaster::new(ForecasterConfig::default()).unwrap();
        // Eight days at 5-minute steps: the slot history is full.
        for i in 0..2300 {
            a.observe(&ev(i * 300_000, series(i)), 1);
        }
        let mut b = Forecaster::new(ForecasterConfig::default()).unwrap();
        let snap = a.state().unwrap().snapshot(1);
        // What one changelog record costs (with a week of hourly slots; 1.85 KB as JSON
        // before them): bounded.
        eprintln!("forecaster snapshot: {} bytes", snap[0].1.len());
        assert!(snap[0].1.len() < 800, "{} bytes", snap[0].1.len());
        for (k, bytes) in snap {
            b.state().unwrap().restore(1, &k, &bytes).unwrap();
        }
        let mut compared = 0;
        for i in 2300..2360 {
            let (x, y) = (
                a.observe(&ev(i * 300_000, series(i)), 1),
                b.observe(&ev(i * 300_000, series(i)), 1),
            );
            assert_eq!(x, y, "point {i}");
            compared += usize::from(x.is_some());
        }
        assert!(compared >= 5);
    }
}
