//! Per-series forecasting with several models and adaptive selection, in two tiers.
//!
//! **Point tier** (horizons shorter than an hour): two models are updated with every
//! point —
//! - `seasonal`: the level plus the change the series made over the same span one day
//!   earlier (hourly means from the slot history, interpolated);
//! - `damped_trend`: Holt's exponential smoothing with a damped trend.
//!
//! Each model's forecast `LAG` points ahead is remembered and scored when that point
//! arrives: the running mean absolute error at lag `LAG` is a rolling out-of-sample
//! measure, and the model with the lowest one forecasts.
//!
//! **Slot tier** (horizons of an hour and more): the series' hourly means are kept for
//! eight days ([`SlotHistory`]) and the models of `analytics::slots` — seasonal naive
//! over a day, a week or a period found in the data, with drift, mixed, or through a
//! seasonal profile — are scored at lags up to 48 slots whenever an hour completes.
//! The model with the lowest error over the horizon asked forecasts.
//!
//! Prediction intervals come from the same out-of-sample errors, so their width is what
//! the series has actually shown, not what a model assumes. A series that has never
//! been negative is never forecast, nor bounded, below 0.

use super::history::{SlotHistory, Slotted};
use super::holt::{Holt, HoltParams};
use super::seasonal::DAY_MS;
use super::slots::{SlotForecast, SlotModels, SLOT_MODELS};
use serde::{Deserialize, Serialize};

/// Event times a restored state may hold: ±30 000 years around 1970.
const TIME_LIMIT_MS: i64 = 1_000_000_000_000_000;

/// Lag (in points) at which the point-tier models are scored.
pub const LAG: usize = 6;
/// Point-tier models, in the order of their error array.
const POINT_MODELS: usize = 2;
/// Every model, point tier first: the index [`SeriesForecaster::forecast`] returns.
pub const MODELS: [&str; POINT_MODELS + SLOT_MODELS.len()] = [
    "seasonal",
    "damped_trend",
    SLOT_MODELS[0],
    SLOT_MODELS[1],
    SLOT_MODELS[2],
    SLOT_MODELS[3],
    SLOT_MODELS[4],
    SLOT_MODELS[5],
];

/// Smoothing parameters of the models.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForecastParams {
    /// Holt smoothing.
    pub holt: HoltParams,
}

/// Per-series state of the forecaster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesForecaster {
    holt: Holt,
    /// Exponentially weighted sampling interval in ms (0 before the second point).
    step_ms: f32,
    last_ts: i64,
    /// Hourly means of the last eight days, and the models over them.
    history: SlotHistory,
    slots: SlotModels,
    /// No value below 0 has been seen.
    never_negative: bool,
    /// Forecasts made `LAG` points ago for now, per point-tier model (a ring).
    pending: [[f32; LAG]; POINT_MODELS],
    /// Running mean absolute error at lag `LAG`, per point-tier model.
    errors: [f32; POINT_MODELS],
    scored: u32,
    count: u32,
}

impl Default for SeriesForecaster {
    fn default() -> Self {
        SeriesForecaster {
            holt: Holt::default(),
            step_ms: 0.0,
            last_ts: 0,
            history: SlotHistory::default(),
            slots: SlotModels::default(),
            never_negative: true,
            pending: [[0.0; LAG]; POINT_MODELS],
            errors: [0.0; POINT_MODELS],
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
    /// The least the series can take (0 for one never seen below 0).
    pub floor: f64,
}

impl Predicted {
    /// The prediction interval `value ± z·sd`, never below the floor.
    pub fn interval(&self, z: f64) -> (f64, f64) {
        (
            (self.value - z * self.sd).max(self.floor),
            (self.value + z * self.sd).max(self.floor),
        )
    }
}

impl SeriesForecaster {
    /// Whether a restored forecaster is in range (a damaged changelog record can decode
    /// into one that is not).
    pub fn well_formed(&self) -> bool {
        (0.0..=7.0 * DAY_MS as f64).contains(&f64::from(self.step_ms))
            && self.last_ts.abs() < TIME_LIMIT_MS
            && self.history.well_formed()
            && self.slots.well_formed()
    }

    /// Points seen.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Newest timestamp.
    pub fn last_ts(&self) -> i64 {
        self.last_ts
    }

    /// Mean sampling interval.
    pub fn step_ms(&self) -> f64 {
        f64::from(self.step_ms)
    }

    /// Running out-of-sample mean absolute error at lag [`LAG`] of each point-tier model.
    pub fn errors(&self) -> [f32; POINT_MODELS] {
        self.errors
    }

    /// The slot-tier models (their errors, the period found).
    pub fn slot_models(&self) -> &SlotModels {
        &self.slots
    }

    /// The point-tier model that forecasts short horizons now: the lowest
    /// out-of-sample error once every model has been scored a few times; Holt–Winters
    /// before that.
    pub fn selected(&self) -> usize {
        if self.scored < 2 * LAG as u32 {
            return 0;
        }
        let mut best = 0;
        for m in 1..POINT_MODELS {
            if self.errors[m] < self.errors[best] {
                best = m;
            }
        }
        best
    }

    /// The series one day before `ts`, once the history holds a day.
    fn day_before(&self, ts: i64) -> Option<f64> {
        let held = self.history.complete_len() as i64 * self.history.slot_ms();
        if held < DAY_MS {
            return None;
        }
        self.history.at(ts - DAY_MS)
    }

    fn predict(&self, model: usize, ts: i64, h: u32, p: &ForecastParams) -> f64 {
        let trend = self.holt.point(h, p.holt);
        if model == 1 {
            return trend;
        }
        // The level moved by what the series did over the same span a day earlier (the
        // trend is not added: on a daily cycle it is that day's slope, counted twice).
        match (self.day_before(ts), self.day_before(self.last_ts)) {
            (Some(then), Some(now)) => self.holt.level() + then - now,
            _ => trend,
        }
    }

    /// Learns one in-order point.
    pub fn observe(&mut self, ts: i64, value: f64, p: &ForecastParams) {
        // Score the forecasts made LAG points ago for this point.
        let slot = self.count as usize % LAG;
        if self.count as usize >= LAG {
            for m in 0..POINT_MODELS {
                let err = (value - f64::from(self.pending[m][slot])).abs() as f32;
                let rate = (1.0 / (self.scored + 1) as f32).max(0.05);
                self.errors[m] += rate * (err - self.errors[m]);
            }
            self.scored = self.scored.saturating_add(1);
        }
        if self.count > 0 {
            let dt = (ts - self.last_ts).clamp(1, 7 * DAY_MS) as f64;
            let step = self.step_ms();
            self.step_ms = if step == 0.0 {
                dt
            } else {
                0.95 * step + 0.05 * dt
            } as f32;
        }
        self.last_ts = ts;
        self.holt.update(value, p.holt);
        self.never_negative &= value >= 0.0;
        if self.history.slot_ms() == 0 && self.step_ms > 0.0 {
            self.history.start(self.step_ms());
            self.slots.start(self.history.slot_ms());
        }
        if self.history.observe(ts, value) == Slotted::Completed {
            self.slots.on_complete(&self.history);
        }
        self.count = self.count.saturating_add(1);
        // Remember each model's forecast LAG points ahead.
        let step = self.step_ms();
        if step > 0.0 {
            let ahead = ts.saturating_add((step * LAG as f64) as i64);
            for m in 0..POINT_MODELS {
                self.pending[m][slot] = self.predict(m, ahead, LAG as u32, p) as f32;
            }
        }
    }

    fn floor(&self) -> f64 {
        if self.never_negative {
            0.0
        } else {
            f64::NEG_INFINITY
        }
    }

    /// Forecasts `horizon` points ahead. A horizon that reaches past the next slot
    /// boundary uses the slot model with the lowest error over it (once one has been
    /// scored enough); a shorter one the selected point-tier model.
    pub fn forecast(&self, horizon: u32, p: &ForecastParams) -> (usize, Vec<Predicted>) {
        let step = self.step_ms().max(1.0);
        let last = self.last_ts;
        let end = last + (step * f64::from(horizon)) as i64;
        let slot_ms = self.history.slot_ms();
        if slot_ms > 0 && step * f64::from(horizon) >= slot_ms as f64 {
            let ahead = self.history.slot_of(end) - self.history.newest_complete();
            if ahead >= 1 {
                if let Some(m) = self.slots.choose(&self.history, ahead as usize) {
                    if let Some(points) = self.slot_forecast(m, horizon, step, last) {
                        return (POINT_MODELS + m, points);
                    }
                }
            }
        }
        let m = self.selected();
        let lag_sd = 1.2533 * f64::from(self.errors[m]);
        let one_step = self.holt.error_var().sqrt();
        let floor = self.floor();
        let points = (1..=horizon)
            .map(|h| {
                let ts = last + (step * f64::from(h)) as i64;
                let sd = (lag_sd * (f64::from(h) / LAG as f64).sqrt()).max(one_step);
                Predicted {
                    ts,
                    value: self.predict(m, ts, h, p).max(floor),
                    sd,
                    floor,
                }
            })
            .collect();
        (m, points)
    }

    /// The slot model `m`'s forecast at each point of the horizon: the forecast of the
    /// slot it falls in (interpolated between slot centres when a slot holds several
    /// points).
    fn slot_forecast(
        &self,
        m: usize,
        horizon: u32,
        step: f64,
        last: i64,
    ) -> Option<Vec<Predicted>> {
        let slot_ms = self.history.slot_ms();
        let newest = self.history.newest_complete();
        let several = slot_ms as f64 > step * 1.5;
        let floor = self.floor();
        // A slot already complete is known: interpolation starts from its mean.
        let at = |ahead: i64| match usize::try_from(ahead) {
            Ok(ahead) if ahead >= 1 => self.slots.forecast(m, &self.history, ahead),
            _ => self
                .history
                .get(ahead.unsigned_abs() as usize)
                .map(|value| SlotForecast { value, sd: 0.0 })
                .or_else(|| self.slots.forecast(m, &self.history, 1)),
        };
        let mut points = Vec::with_capacity(horizon as usize);
        for h in 1..=horizon {
            let ts = last + (step * f64::from(h)) as i64;
            let (value, sd) = if several {
                let centred = ts - slot_ms / 2;
                let slot = centred.div_euclid(slot_ms);
                let w = (centred - slot * slot_ms) as f64 / slot_ms as f64;
                let (a, b) = (at(slot - newest)?, at(slot + 1 - newest)?);
                let slot_sd = a.sd.max(b.sd);
                (
                    a.value + w * (b.value - a.value),
                    (slot_sd * slot_sd + self.history.within_var()).sqrt(),
                )
            } else {
                let f = at(self.history.slot_of(ts) - newest)?;
                (f.value, f.sd)
            };
            points.push(Predicted {
                ts,
                value: value.max(floor),
                sd,
                floor,
            });
        }
        Some(points)
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

    fn params() -> ForecastParams {
        ForecastParams {
            holt: HoltParams {
                alpha: 0.3,
                beta: 0.05,
                phi: 0.98,
            },
        }
    }

    #[test]
    fn a_series_never_below_zero_is_never_forecast_nor_bounded_below_zero() {
        let p = params();
        let hour = 3_600_000;
        // Mostly 0 with bursts, falling toward 0 at the end: a trend would cross it.
        let value = |i: i64| {
            let burst = if i % 24 < 3 { 50.0 } else { 0.0 };
            burst + (((i * 7919) % 13) as f64 * 0.1) + (300 - i).max(0) as f64 * 0.2
        };
        let mut f = SeriesForecaster::default();
        for i in 0..400 {
            f.observe(i * hour, value(i), &p);
        }
        for horizon in [3, 48] {
            let (_, points) = f.forecast(horizon, &p);
            for pt in points {
                let (lower, _) = pt.interval(1.645);
                assert!(pt.value >= 0.0 && lower >= 0.0, "{pt:?}");
            }
        }
        // One negative value lifts the floor.
        f.observe(400 * hour, -1.0, &p);
        let (_, points) = f.forecast(48, &p);
        assert!(points.iter().any(|pt| pt.interval(1.645).0 < 0.0));
    }

    #[test]
    fn long_horizons_use_the_slot_models_short_ones_the_point_models() {
        let p = params();
        let step = 5 * 60_000;
        let mut f = SeriesForecaster::default();
        for i in 0..(10 * DAY_MS / step) {
            let ts = i * step;
            let v = 50.0 + 20.0 * (std::f64::consts::TAU * ts as f64 / DAY_MS as f64).sin();
            f.observe(ts, v, &p);
        }
        let (short, _) = f.forecast(6, &p);
        assert!(short < POINT_MODELS, "{}", MODELS[short]);
        let (long, points) = f.forecast(48, &p);
        assert!(long >= POINT_MODELS, "{}", MODELS[long]);
        assert_eq!(points.len(), 48);
        let last = f.last_ts();
        for pt in points {
            let truth = 50.0 + 20.0 * (std::f64::consts::TAU * pt.ts as f64 / DAY_MS as f64).sin();
            assert!(
                (pt.value - truth).abs() < 1.0,
                "{} {} vs {truth} at +{} min",
                MODELS[long],
                pt.value,
                (pt.ts - last) / 60_000
            );
        }
    }

    #[test]
    fn selects_the_model_that_forecasts_best() {
        let p = ForecastParams {
            holt: HoltParams {
                alpha: 0.3,
                beta: 0.05,
                phi: 0.98,
            },
        };
        // A daily cycle: the seasonal point models must win over the damped trend.
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
