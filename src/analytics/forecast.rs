//! Per-series forecasting with several models and adaptive selection.
//!
//! Three models are updated with every point:
//! - `seasonal`: additive Holt–Winters with damped trend and daily/weekly profiles
//!   that are used only when the data shows them ([`SeasonalModel`]);
//! - `damped_trend`: Holt's exponential smoothing with a damped trend;
//! - `seasonal_naive`: what the series did one day earlier (hourly means, interpolated),
//!   or the last value before a day has been seen.
//!
//! Each model's forecast `K` points ahead is remembered and scored when that point
//! arrives: the running mean absolute error at lag `K` is a rolling out-of-sample
//! measure, re-evaluated as the series changes, and the model with the lowest one
//! forecasts. Prediction intervals come from the same out-of-sample errors, so their
//! width is what the series has actually shown, not what a model assumes.

use super::holt::{Holt, HoltParams};
use super::seasonal::{Profile, SeasonalModel, SeasonalParams, BINS, DAY_MS};
use serde::{Deserialize, Serialize};

/// Lag (in points) at which the models are scored.
pub const LAG: usize = 6;
/// The models, in the order of the error array.
pub const MODELS: [&str; 3] = ["seasonal", "damped_trend", "seasonal_naive"];

/// Smoothing parameters of the models.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForecastParams {
    /// Holt–Winters smoothing.
    pub seasonal: SeasonalParams,
    /// Holt smoothing.
    pub holt: HoltParams,
}

/// Per-series state of the forecaster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesForecaster {
    seasonal: SeasonalModel,
    holt: Holt,
    /// Absolute hourly means of the last day (for the seasonal naive model).
    yesterday: Profile<BINS>,
    visit_bin: u8,
    visit_sum: f32,
    visit_points: u16,
    last_value: f64,
    /// Forecasts made `LAG` points ago for now, per model (a ring).
    pending: [[f32; LAG]; 3],
    /// Running mean absolute error at lag `LAG`, per model.
    errors: [f32; 3],
    scored: u32,
    count: u32,
}

impl Default for SeriesForecaster {
    fn default() -> Self {
        SeriesForecaster {
            seasonal: SeasonalModel::default(),
            holt: Holt::default(),
            yesterday: Profile::new(DAY_MS, true),
            visit_bin: 0,
            visit_sum: 0.0,
            visit_points: 0,
            last_value: 0.0,
            pending: [[0.0; LAG]; 3],
            errors: [0.0; 3],
            scored: 0,
            count: 0,
        }
    }
}

/// One forecast point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Predicted {
    /// Event time predicted.
    pub ts: i64,
    /// Point forecast.
    pub value: f64,
    /// Standard deviation of its error.
    pub sd: f64,
}

impl SeriesForecaster {
    /// Whether a restored forecaster is in range (see [`SeasonalModel::well_formed`]).
    pub fn well_formed(&self) -> bool {
        self.seasonal.well_formed()
            && self.yesterday.period_ms() == DAY_MS
            && usize::from(self.visit_bin) < BINS
    }

    /// Points seen.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Newest timestamp.
    pub fn last_ts(&self) -> i64 {
        self.seasonal.last_ts()
    }

    /// Mean sampling interval.
    pub fn step_ms(&self) -> f64 {
        self.seasonal.step_ms()
    }

    /// Running out-of-sample mean absolute error at lag [`LAG`] of each model.
    pub fn errors(&self) -> [f32; 3] {
        self.errors
    }

    /// The model that forecasts now: the lowest out-of-sample error once every model
    /// has been scored a few times; Holt–Winters before that.
    pub fn selected(&self) -> usize {
        if self.scored < 2 * LAG as u32 {
            return 0;
        }
        let mut best = 0;
        for m in 1..3 {
            if self.errors[m] < self.errors[best] {
                best = m;
            }
        }
        best
    }

    fn naive(&self, ts: i64) -> f64 {
        if self.yesterday.complete() {
            self.yesterday.raw_value(ts)
        } else {
            self.last_value
        }
    }

    fn predict(&self, model: usize, ts: i64, h: u32, p: &ForecastParams) -> f64 {
        match model {
            0 => self.seasonal.predict(ts, h, p.seasonal),
            1 => self.holt.point(h, p.holt),
            _ => self.naive(ts),
        }
    }

    /// Learns one in-order point.
    pub fn observe(&mut self, ts: i64, value: f64, p: &ForecastParams) {
        // Score the forecasts made LAG points ago for this point.
        let slot = self.count as usize % LAG;
        if self.count as usize >= LAG {
            for m in 0..3 {
                let err = (value - f64::from(self.pending[m][slot])).abs() as f32;
                let rate = (1.0 / (self.scored + 1) as f32).max(0.05);
                self.errors[m] += rate * (err - self.errors[m]);
            }
            self.scored = self.scored.saturating_add(1);
        }
        self.seasonal.update(ts, value, p.seasonal);
        self.holt.update(value, p.holt);
        self.learn_yesterday(ts, value);
        self.last_value = value;
        self.count = self.count.saturating_add(1);
        // Remember each model's forecast LAG points ahead.
        let step = self.seasonal.step_ms();
        if step > 0.0 {
            let ahead = ts.saturating_add((step * LAG as f64) as i64);
            for m in 0..3 {
                self.pending[m][slot] = self.predict(m, ahead, LAG as u32, p) as f32;
            }
        }
    }

    fn learn_yesterday(&mut self, ts: i64, value: f64) {
        let step = self.seasonal.step_ms();
        if step <= 0.0 || step * 8.0 > DAY_MS as f64 {
            return;
        }
        let bin = ((ts.rem_euclid(DAY_MS) * BINS as i64) / DAY_MS) as u8;
        if bin != self.visit_bin && self.visit_points > 0 {
            let at = i64::from(self.visit_bin) * (DAY_MS / BINS as i64);
            // Rate 1: each bin holds its last visit's mean — yesterday, hour by hour.
            self.yesterday.update(
                at,
                f64::from(self.visit_sum) / f64::from(self.visit_points),
                1.0,
            );
            self.visit_sum = 0.0;
            self.visit_points = 0;
        }
        self.visit_bin = bin;
        self.visit_sum += value as f32;
        self.visit_points = self.visit_points.saturating_add(1);
    }

    /// Forecasts `horizon` points ahead with the selected model. The error of point `h`
    /// has standard deviation from the out-of-sample errors: the lag-`LAG` mean absolute
    /// error × √(π/2), scaled by √(h/LAG), and never below the model's own one-step
    /// error.
    pub fn forecast(&self, horizon: u32, p: &ForecastParams) -> (usize, Vec<Predicted>) {
        let m = self.selected();
        let step = self.seasonal.step_ms().max(1.0);
        let last = self.seasonal.last_ts();
        let lag_sd = 1.2533 * f64::from(self.errors[m]);
        let one_step = self.seasonal.error_var().sqrt();
        let points = (1..=horizon)
            .map(|h| {
                let ts = last + (step * f64::from(h)) as i64;
                let sd = (lag_sd * (f64::from(h) / LAG as f64).sqrt()).max(one_step);
                Predicted {
                    ts,
                    value: self.predict(m, ts, h, p),
                    sd,
                }
            })
            .collect();
        (m, points)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::detect::SeriesDetector;

    #[test]
    fn state_per_series_is_small() {
        let f = std::mem::size_of::<SeriesForecaster>();
        let d = std::mem::size_of::<SeriesDetector>();
        eprintln!("bytes per series: forecaster {f}, detector {d}");
        assert!(f <= 1024 && d <= 1024, "forecaster {f} B, detector {d} B");
    }

    #[test]
    fn selects_the_model_that_forecasts_best() {
        let p = ForecastParams {
            seasonal: SeasonalParams::default(),
            holt: HoltParams {
                alpha: 0.3,
                beta: 0.05,
                phi: 0.98,
            },
        };
        // A daily cycle: Holt–Winters or seasonal naive must win over the damped trend.
        let mut f = SeriesForecaster::default();
        let step = 10 * 60_000;
        for i in 0..(6 * DAY_MS / step) {
            let ts = i * step;
            let v = 50.0 + 20.0 * (2.0 * std::f64::consts::PI * ts as f64 / DAY_MS as f64).sin();
            f.observe(ts, v, &p);
        }
        assert_ne!(
            MODELS[f.selected()],
            "damped_trend",
            "errors {:?}",
            f.errors()
        );
        let (_, points) = f.forecast(36, &p);
        let last = f.last_ts();
        for pt in points {
            let truth =
                50.0 + 20.0 * (2.0 * std::f64::consts::PI * pt.ts as f64 / DAY_MS as f64).sin();
            assert!(
                (pt.value - truth).abs() < 3.0,
                "{} vs {truth} at +{} min",
                pt.value,
                (pt.ts - last) / 60_000
            );
        }
    }
}
