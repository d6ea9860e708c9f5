//! Additive Holt–Winters with damped trend and two seasonal profiles — daily and weekly —
//! updated per event in error-correction form, with bounded, compact state.
//!
//! A profile is 24 `f32` bins over its period, read and updated with linear
//! interpolation between bin centres. Bins learn at rate 1/n until they have seen
//! `1/gamma` updates, then at `gamma`, so the first cycle is learnt quickly and later
//! cycles adapt smoothly. A profile is only used when the series is sampled at least 8
//! times per period. Whether a series is seasonal
//! is read off the data: [`SeasonalModel::seasonal_strength`] compares each profile's
//! spread with the one-step error.

use serde::{Deserialize, Serialize};

/// Bins per seasonal profile.
pub const BINS: usize = 24;
/// One day in ms.
pub const DAY_MS: i64 = 86_400_000;
/// One week in ms.
pub const WEEK_MS: i64 = 7 * DAY_MS;

/// A seasonal profile over one period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    period_ms: i64,
    bins: [f32; BINS],
    seen: [u16; BINS],
}

impl Profile {
    /// An empty profile for `period_ms`.
    pub fn new(period_ms: i64) -> Self {
        Profile {
            period_ms,
            bins: [0.0; BINS],
            seen: [0; BINS],
        }
    }

    /// The period.
    pub fn period_ms(&self) -> i64 {
        self.period_ms
    }

    /// Every bin has been updated at least once.
    pub fn complete(&self) -> bool {
        self.seen.iter().all(|&n| n > 0)
    }

    /// The two bins around `ts` and the weight of the second.
    fn locate(&self, ts: i64) -> (usize, usize, f32) {
        let width = self.period_ms as f64 / BINS as f64;
        // Bin centres sit at (i + 0.5) × width.
        let pos = (ts.rem_euclid(self.period_ms) as f64 / width - 0.5).rem_euclid(BINS as f64);
        let i = (pos.floor() as usize) % BINS;
        (i, (i + 1) % BINS, (pos - pos.floor()) as f32)
    }

    /// The seasonal offset at `ts`.
    pub fn value(&self, ts: i64) -> f64 {
        let (i, j, w) = self.locate(ts);
        f64::from(self.bins[i] * (1.0 - w) + self.bins[j] * w)
    }

    /// Moves the profile at `ts` by `error` (target minus current value, scaled by the
    /// rate) and keeps the bins centred on zero, so that level and season do not trade
    /// places. Returns the amount taken out of every bin.
    ///
    /// `gamma` is the rate per *cycle*: with `step_ms` between samples a bin sees
    /// width/step samples per cycle, each moving it by gamma × step/width, so that all
    /// samples of a bin weigh alike and the bin holds their average, not the last ones.
    /// While young (n updates) a bin learns at 1/n.
    pub fn update(&mut self, ts: i64, error: f64, gamma: f64, step_ms: f64) -> f64 {
        let per_sample = gamma * (step_ms * BINS as f64 / self.period_ms as f64).min(1.0);
        let (i, j, w) = self.locate(ts);
        let mut total = 0.0f32;
        for (b, share) in [(i, 1.0 - w), (j, w)] {
            if share <= 0.0 {
                continue;
            }
            let n = self.seen[b].saturating_add(1);
            self.seen[b] = n;
            let rate = (1.0 / f64::from(n)).max(per_sample) as f32;
            let delta = rate * share * error as f32;
            self.bins[b] += delta;
            total += delta;
        }
        let shift = total / BINS as f32;
        for b in &mut self.bins {
            *b -= shift;
        }
        f64::from(shift)
    }

    /// Standard deviation of the bins: how much the season moves the series.
    pub fn amplitude(&self) -> f64 {
        let mean = self.bins.iter().map(|&b| f64::from(b)).sum::<f64>() / BINS as f64;
        let var = self
            .bins
            .iter()
            .map(|&b| (f64::from(b) - mean).powi(2))
            .sum::<f64>()
            / BINS as f64;
        var.sqrt()
    }
}

/// Smoothing parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeasonalParams {
    /// Level.
    pub alpha: f64,
    /// Trend.
    pub beta: f64,
    /// Trend damping in (0,1].
    pub phi: f64,
    /// Daily profile.
    pub gamma_day: f64,
    /// Weekly profile.
    pub gamma_week: f64,
}

impl Default for SeasonalParams {
    fn default() -> Self {
        SeasonalParams {
            alpha: 0.2,
            beta: 0.02,
            phi: 0.98,
            gamma_day: 0.3,
            gamma_week: 0.3,
        }
    }
}

/// Level, damped trend, daily and weekly profiles, and the running one-step error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeasonalModel {
    level: f64,
    trend: f64,
    day: Profile,
    week: Profile,
    /// Exponentially weighted mean squared one-step error.
    error_var: f64,
    /// Exponential means over about a day and a week: what the profiles deviate from.
    baseline_day: f64,
    baseline_week: f64,
    count: u32,
    /// Exponentially weighted sampling interval in ms.
    step_ms: f64,
    last_ts: i64,
}

impl Default for SeasonalModel {
    fn default() -> Self {
        SeasonalModel {
            level: 0.0,
            trend: 0.0,
            day: Profile::new(DAY_MS),
            week: Profile::new(WEEK_MS),
            error_var: 0.0,
            baseline_day: 0.0,
            baseline_week: 0.0,
            count: 0,
            step_ms: 0.0,
            last_ts: 0,
        }
    }
}

impl SeasonalModel {
    /// Points seen.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Mean sampling interval (0 before the second point).
    pub fn step_ms(&self) -> f64 {
        self.step_ms
    }

    /// Newest timestamp seen.
    pub fn last_ts(&self) -> i64 {
        self.last_ts
    }

    /// A profile takes part in predictions once the sampling is dense enough for it;
    /// its unseen bins are still zero, as in Holt–Winters started with a flat season.
    fn usable(&self, p: &Profile) -> bool {
        self.step_ms > 0.0 && self.step_ms * 8.0 <= p.period_ms as f64
    }

    /// The seasonal part at `ts` (0 where no profile is usable yet).
    pub fn season(&self, ts: i64) -> f64 {
        let mut s = 0.0;
        if self.usable(&self.day) {
            s += self.day.value(ts);
        }
        if self.usable(&self.week) {
            s += self.week.value(ts);
        }
        s
    }

    /// Prediction for a point at `ts`, `h` steps after the last one (h ≥ 1).
    pub fn predict(&self, ts: i64, h: u32, p: SeasonalParams) -> f64 {
        let mut damp = 0.0;
        let mut pow = 1.0;
        for _ in 0..h {
            pow *= p.phi;
            damp += pow;
        }
        self.level + damp * self.trend + self.season(ts)
    }

    /// Standard deviation of the error `h` steps ahead (ETS(A,Ad,A)-style growth).
    pub fn error_sd(&self, h: u32, p: SeasonalParams) -> f64 {
        let mut factor = 1.0;
        let mut damp = 0.0;
        let mut pow = 1.0;
        for _ in 1..h {
            pow *= p.phi;
            damp += pow;
            let c = p.alpha + p.alpha * p.beta * damp;
            factor += c * c;
        }
        (self.error_var * factor).sqrt()
    }

    /// The one-step error variance.
    pub fn error_var(&self) -> f64 {
        self.error_var
    }

    /// Share of variance the daily and weekly profiles explain, each in [0,1): the
    /// profile's spread against the one-step error. Near 0: not seasonal at that period.
    pub fn seasonal_strength(&self) -> (f64, f64) {
        let strength = |p: &Profile| {
            if !self.usable(p) || !p.complete() {
                return 0.0;
            }
            let a = p.amplitude().powi(2);
            a / (a + self.error_var + 1e-300)
        };
        (strength(&self.day), strength(&self.week))
    }

    /// Updates with the observation `value` at `ts` (which must be newer than the last)
    /// and returns the one-step prediction it was compared with.
    pub fn update(&mut self, ts: i64, value: f64, p: SeasonalParams) -> f64 {
        if self.count == 0 {
            self.level = value;
            self.baseline_day = value;
            self.baseline_week = value;
            self.last_ts = ts;
            self.count = 1;
            return value;
        }
        let dt = (ts - self.last_ts).max(1) as f64;
        self.step_ms = if self.step_ms == 0.0 {
            dt
        } else {
            0.95 * self.step_ms + 0.05 * dt
        };
        let predicted = self.predict(ts, 1, p);
        let err = value - predicted;
        self.error_var = if self.count == 1 {
            err * err
        } else {
            (1.0 - p.alpha) * self.error_var + p.alpha * err * err
        };
        // The level follows the deseasonalised value (Holt). Each profile learns the
        // deviation from a slow baseline — an exponential mean over about one period —
        // not from the fast level, which would otherwise absorb the season. A trend
        // makes the baseline lag by a constant, which the centring of the bins removes.
        let day = if self.usable(&self.day) {
            self.day.value(ts)
        } else {
            0.0
        };
        let week = if self.usable(&self.week) {
            self.week.value(ts)
        } else {
            0.0
        };
        let base = self.level + p.phi * self.trend;
        let previous = self.level;
        self.level = p.alpha * (value - day - week) + (1.0 - p.alpha) * base;
        self.trend = p.beta * (self.level - previous) + (1.0 - p.beta) * p.phi * self.trend;
        let n = f64::from(self.count);
        let slow = |period: i64| (self.step_ms / period as f64).max(1.0 / (n + 1.0)).min(1.0);
        let (r_day, r_week) = (slow(DAY_MS), slow(WEEK_MS));
        // Baselines of the deseasonalised value: once the profiles are right they no
        // longer oscillate with the season, so the profiles converge to it.
        self.baseline_day += r_day * (value - day - week - self.baseline_day);
        self.baseline_week += r_week * (value - day - week - self.baseline_week);
        if self.step_ms * 8.0 <= DAY_MS as f64 {
            let target = value - week - self.baseline_day;
            self.day.update(ts, target - day, p.gamma_day, self.step_ms);
        }
        if self.step_ms * 8.0 <= WEEK_MS as f64 && self.day.complete() {
            let target = value - self.day.value(ts) - self.baseline_week;
            self.week
                .update(ts, target - week, p.gamma_week, self.step_ms);
        }
        self.last_ts = ts;
        self.count = self.count.saturating_add(1);
        predicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn daily(ts: i64) -> f64 {
        100.0 + 30.0 * (2.0 * std::f64::consts::PI * ts as f64 / DAY_MS as f64).sin()
    }

    #[test]
    fn profile_interpolates_and_stays_centred() {
        let mut p = Profile::new(DAY_MS);
        for round in 0..50 {
            for h in 0..24 {
                let ts = round * DAY_MS + h * HOUR + HOUR / 2;
                p.update(ts, daily(ts) - 100.0 - p.value(ts), 0.2, HOUR as f64);
            }
        }
        assert!(p.complete());
        let mean: f32 = p.bins.iter().sum::<f32>() / BINS as f32;
        assert!(mean.abs() < 1e-3);
        let ts = 6 * HOUR; // the sine's peak
        assert!((p.value(ts) - 30.0).abs() < 1.5, "{}", p.value(ts));
    }

    #[test]
    fn learns_a_daily_cycle_and_predicts_it() {
        let m_params = SeasonalParams::default();
        let mut m = SeasonalModel::default();
        let step = 5 * 60_000;
        let mut late_errors = Vec::new();
        for i in 0..(10 * DAY_MS / step) {
            let ts = i * step;
            let pred = m.update(ts, daily(ts), m_params);
            if ts > 7 * DAY_MS {
                late_errors.push((pred - daily(ts)).abs());
            }
        }
        let mae = late_errors.iter().sum::<f64>() / late_errors.len() as f64;
        assert!(mae < 1.0, "one-step MAE {mae}");
        let (day, _) = m.seasonal_strength();
        assert!(day > 0.9, "daily strength {day}");
        // Twelve hours ahead, the model predicts the trough, not the current level.
        let last = m.last_ts();
        let ahead = last + 12 * HOUR;
        let h = (12 * HOUR / step) as u32;
        assert!((m.predict(ahead, h, m_params) - daily(ahead)).abs() < 3.0);
    }

    #[test]
    fn no_season_where_there_is_none() {
        let mut m = SeasonalModel::default();
        let step = 10 * 60_000;
        let mut x = 1u64;
        for i in 0..(9 * DAY_MS / step) {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = ((x >> 33) as f64 / (1u64 << 31) as f64) - 0.5;
            m.update(i * step, 50.0 + 4.0 * noise, SeasonalParams::default());
        }
        let (day, week) = m.seasonal_strength();
        assert!(day < 0.25 && week < 0.25, "{day} {week}");
    }

    #[test]
    fn sparse_sampling_disables_a_profile() {
        let mut m = SeasonalModel::default();
        for i in 0..100 {
            m.update(i * 6 * HOUR, daily(i * 6 * HOUR), SeasonalParams::default());
        }
        assert_eq!(
            m.season(0),
            0.0,
            "4 samples a day cannot carry a daily profile"
        );
    }
}
