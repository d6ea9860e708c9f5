//! Scores of detection and forecasting runs.

use super::generator::{Injected, Labelled};
use crate::event::MetricEvent;
use crate::stage::detector::{Detector, DetectorConfig};
use std::collections::BTreeMap;

/// Points after a labelled window in which a detection still counts (a detector may
/// need a few points to be sure).
pub const TOLERANCE: usize = 5;

/// Detection counts for one anomaly type (or for clean series).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    /// Labelled windows.
    pub windows: u64,
    /// Windows with at least one detection.
    pub detected: u64,
    /// Detections inside a window (+ tolerance).
    pub true_detections: u64,
    /// Detections outside every window.
    pub false_detections: u64,
    /// Points scored.
    pub points: u64,
}

impl Counts {
    /// Share of windows detected.
    pub fn recall(&self) -> f64 {
        if self.windows == 0 {
            return 1.0;
        }
        self.detected as f64 / self.windows as f64
    }

    /// Share of detections that were right.
    pub fn precision(&self) -> f64 {
        let all = self.true_detections + self.false_detections;
        if all == 0 {
            return 1.0;
        }
        self.true_detections as f64 / all as f64
    }

    /// Harmonic mean of precision and recall.
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }

    /// False detections per 10 000 points.
    pub fn false_rate(&self) -> f64 {
        self.false_detections as f64 * 10_000.0 / self.points.max(1) as f64
    }

    fn add(&mut self, o: Counts) {
        self.windows += o.windows;
        self.detected += o.detected;
        self.true_detections += o.true_detections;
        self.false_detections += o.false_detections;
        self.points += o.points;
    }
}

/// Runs the detector core over one labelled series and counts.
pub fn detect(series: &Labelled, cfg: &DetectorConfig) -> Counts {
    let Ok(mut d) = Detector::new(cfg.clone()) else {
        return Counts::default();
    };
    let mut c = Counts {
        windows: u64::from(series.window.is_some()),
        points: series.points.len() as u64,
        ..Counts::default()
    };
    for (i, &(ts, value)) in series.points.iter().enumerate() {
        let e = MetricEvent::sample("eval", "series", "m", ts, value);
        if d.observe(&e, 0).is_none() {
            continue;
        }
        match series.window {
            Some((s, end)) if (s..end + TOLERANCE).contains(&i) => {
                c.true_detections += 1;
                c.detected = 1;
            }
            _ => c.false_detections += 1,
        }
    }
    c
}

/// Detection counts per anomaly type (`None`: clean series), summed over series.
pub fn detect_all<'a>(
    series: impl Iterator<Item = &'a Labelled>,
    cfg: &DetectorConfig,
) -> BTreeMap<Option<Injected>, Counts> {
    let mut out: BTreeMap<Option<Injected>, Counts> = BTreeMap::new();
    for s in series {
        out.entry(s.injected).or_default().add(detect(s, cfg));
    }
    out
}

/// Forecast accuracy over many origins of one series.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ForecastScore {
    /// Mean absolute error of the forecaster.
    pub mae: f64,
    /// Mean absolute error of seasonal naive (the value one day earlier).
    pub naive_mae: f64,
    /// Share of actual values inside the prediction interval.
    pub coverage: f64,
    /// Forecast points scored.
    pub points: u64,
}

/// Runs the forecaster core's model over a series and, from every `every` points in the
/// last `days_scored` days, forecasts `horizon` points ahead and scores them against
/// what came, next to seasonal naive. Intervals at the nominal `level`.
pub fn forecast(
    series: &Labelled,
    horizon: usize,
    every: usize,
    days_scored: usize,
    level: f64,
) -> ForecastScore {
    use crate::analytics::forecast::SeriesForecaster;
    use crate::analytics::seasonal::DAY_MS;
    use crate::stage::forecaster::ForecasterConfig;
    let params = ForecasterConfig::default().params();
    let z = crate::analytics::stats::z_for_level(level);
    let per_day = (DAY_MS / series.step_ms) as usize;
    let n = series.points.len();
    let first_origin = n.saturating_sub(days_scored * per_day + horizon);
    let mut f = SeriesForecaster::default();
    let (mut abs, mut naive_abs, mut inside, mut count) = (0.0, 0.0, 0u64, 0u64);
    for (i, &(ts, v)) in series.points.iter().enumerate() {
        f.observe(ts, v, &params);
        if i < first_origin || i + horizon >= n || (i - first_origin) % every != 0 || i < per_day {
            continue;
        }
        let (_, predicted) = f.forecast(horizon as u32, &params);
        for (h, p) in predicted.iter().enumerate() {
            let j = i + h + 1;
            let actual = series.points[j].1;
            abs += (p.value - actual).abs();
            naive_abs += (series.points[j - per_day].1 - actual).abs();
            let (lower, upper) = p.interval(z);
            inside += u64::from((lower..=upper).contains(&actual));
            count += 1;
        }
    }
    let c = count.max(1) as f64;
    ForecastScore {
        mae: abs / c,
        naive_mae: naive_abs / c,
        coverage: inside as f64 / c,
        points: count,
    }
}
