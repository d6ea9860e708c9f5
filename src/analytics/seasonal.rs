//! Additive Holt–Winters with damped trend and two seasonal profiles — daily and weekly —
//! updated per event in error-correction form, with bounded, compact state.
//!
//! The daily profile is 24 `f32` bins, read and updated with linear interpolation
//! between bin centres; the weekly profile is one step per day of the week (weekday and
//! weekend effects change at midnight). Bins learn at rate 1/n until they have seen
//! `1/gamma` updates, then at `gamma`, so the first cycle is learnt quickly and later
//! cycles adapt smoothly. A profile is used once every bin has been learnt, and only
//! when the series is sampled at least 8 times per period. Whether a series is seasonal
//! is read off the data: [`SeasonalModel::seasonal_strength`] compares each profile's
//! spread with the one-step error.

use serde::{Deserialize, Serialize};

/// Bins of the daily profile (hours, interpolated).
pub const BINS: usize = 24;
/// Bins of the weekly profile (days of the week, piecewise constant).
pub const WEEKDAYS: usize = 7;
/// One day in ms.
pub const DAY_MS: i64 = 86_400_000;
/// One week in ms.
pub const WEEK_MS: i64 = 7 * DAY_MS;

/// A seasonal profile over one period: `N` bins, read with linear interpolation between
/// bin centres (`smooth`) or as steps (a day-of-week effect changes at midnight).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile<const N: usize> {
    period_ms: i64,
    smooth: bool,
    #[serde(with = "serde_arrays")]
    bins: [f32; N],
    #[serde(with = "serde_arrays")]
    seen: [u16; N],
    /// Mean of the bins and whether every bin has been learnt, kept up to date by
    /// `update` (which runs once per bin visit) so the per-point reads stay cheap.
    mean: f32,
    complete: bool,
}

/// Serde for fixed-size arrays of any length (serde derives only up to 32).
mod serde_arrays {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize, const N: usize>(
        a: &[T; N],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        a.as_slice().serialize(s)
    }

    pub fn deserialize<'de, D, T, const N: usize>(d: D) -> Result<[T; N], D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        let v = Vec::<T>::deserialize(d)?;
        let len = v.len();
        v.try_into()
            .map_err(|_| serde::de::Error::custom(format!("expected {N} elements, found {len}")))
    }
}

impl<const N: usize> Profile<N> {
    /// An empty profile for `period_ms`.
    pub fn new(period_ms: i64, smooth: bool) -> Self {
        Profile {
            period_ms,
            smooth,
            bins: [0.0; N],
            seen: [0; N],
            mean: 0.0,
            complete: false,
        }
    }

    /// The period.
    pub fn period_ms(&self) -> i64 {
        self.period_ms
    }

    /// Every bin has been updated at least once.
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// The two bins around `ts` and the weight of the second. Integer arithmetic on
    /// the millisecond offset (no float remainder: this runs several times per event).
    fn locate(&self, ts: i64) -> (usize, usize, f32) {
        let period = self.period_ms.max(N as i64);
        let width = period / N as i64;
        let offset = ts.rem_euclid(period);
        if !self.smooth {
            let i = ((offset / width) as usize).min(N - 1);
            return (i, i, 0.0);
        }
        // Bin centres sit at (i + 0.5) × width.
        let from_centre = (offset - width / 2).rem_euclid(period);
        let i = ((from_centre / width) as usize).min(N - 1);
        let w = ((from_centre - i as i64 * width) as f32 / width as f32).min(1.0);
        (i, (i + 1) % N, w)
    }

    fn mean(&self) -> f32 {
        self.mean
    }

    /// The seasonal offset at `ts`: the bins around it, less the mean of all bins, so a
    /// profile never carries a level of its own.
    pub fn value(&self, ts: i64) -> f64 {
        let (i, j, w) = self.locate(ts);
        f64::from(self.bins[i] * (1.0 - w) + self.bins[j] * w - self.mean())
    }

    /// Moves the bin holding `ts` toward `target` at `rate` (or 1/n while it has had
    /// fewer than 1/rate updates). For profiles fed one value per bin and cycle.
    pub fn update(&mut self, ts: i64, target: f64, rate: f64) {
        let b = self.bin_of(ts);
        let n = self.seen[b].saturating_add(1);
        self.seen[b] = n;
        let r = (1.0 / f64::from(n)).max(rate) as f32;
        self.bins[b] += r * (target as f32 - self.bins[b]);
        self.mean = self.bins.iter().sum::<f32>() / N as f32;
        self.complete = self.seen.iter().all(|&n| n > 0);
    }

    /// The bins around `ts` as learnt, without centring (the absolute level the
    /// profile was fed).
    pub fn raw_value(&self, ts: i64) -> f64 {
        let (i, j, w) = self.locate(ts);
        f64::from(self.bins[i] * (1.0 - w) + self.bins[j] * w)
    }

    fn bin_of(&self, ts: i64) -> usize {
        let period = self.period_ms.max(N as i64);
        ((ts.rem_euclid(period) / (period / N as i64)) as usize).min(N - 1)
    }

    /// Standard deviation of the bins: how much the season moves the series.
    pub fn amplitude(&self) -> f64 {
        let mean = self.bins.iter().map(|&b| f64::from(b)).sum::<f64>() / N as f64;
        let var = self
            .bins
            .iter()
            .map(|&b| (f64::from(b) - mean).powi(2))
            .sum::<f64>()
            / N as f64;
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
            gamma_day: 0.1,
            gamma_week: 0.3,
        }
    }
}

/// Level, damped trend, daily and weekly profiles, and the running one-step error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeasonalModel {
    level: f64,
    trend: f64,
    day: Profile<BINS>,
    week: Profile<WEEKDAYS>,
    /// Exponentially weighted mean squared one-step error.
    error_var: f64,
    /// Exponential means over about a day and a week: what the profiles deviate from.
    baseline_day: f64,
    /// Mean squared deviation from the baseline, without and with the profile.
    day_fit: [f32; 2],
    week_fit: [f32; 2],
    /// Which profiles are in use (bit 0 day, bit 1 week), as decided at the end of the
    /// last update.
    was_active: u8,
    /// The daily bin being visited now, and the sum and count of its targets so far: a
    /// bin learns once per visit, from the visit's mean, so every sample in its span
    /// weighs alike (no drift toward the last samples, no phase shift).
    visit_bin: u8,
    visit_sum: f32,
    visit_points: u16,
    /// The calendar day (UTC) being accumulated, and its sum and count.
    day_index: i64,
    day_sum: f64,
    day_points: u32,
    /// Means of the last seven complete days (a ring), and how many are filled.
    daily_means: [f32; 7],
    days_filled: u8,
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
            day: Profile::new(DAY_MS, true),
            week: Profile::new(WEEK_MS, false),
            error_var: 0.0,
            baseline_day: 0.0,
            day_fit: [0.0; 2],
            week_fit: [0.0; 2],
            was_active: 0,
            visit_bin: 0,
            visit_sum: 0.0,
            visit_points: 0,
            day_index: 0,
            day_sum: 0.0,
            day_points: 0,
            daily_means: [0.0; 7],
            days_filled: 0,
            count: 0,
            step_ms: 0.0,
            last_ts: 0,
        }
    }
}

/// The model's reading at one timestamp, computed once and shared by the prediction
/// and the update that follows it (each profile lookup is done once per event).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prepared {
    /// Daily profile at the timestamp, whether or not it is in use (the update measures
    /// how well it would have explained the point).
    pub day: f64,
    /// Weekly profile at the timestamp, whether or not it is in use.
    pub week: f64,
    /// The seasonal part in use (the sum of the active profiles).
    pub season: f64,
    /// The one-step prediction.
    pub predicted: f64,
}

/// Event times a restored state may hold: ±30 000 years around 1970. Beyond, time
/// arithmetic could overflow; no real series gets there.
const TIME_LIMIT_MS: i64 = 1_000_000_000_000_000;

impl SeasonalModel {
    /// Whether a restored model's periods, bins, interval and times are in range (a
    /// damaged changelog record can decode into one that is not).
    pub fn well_formed(&self) -> bool {
        self.day.period_ms() == DAY_MS
            && self.week.period_ms() == WEEK_MS
            && usize::from(self.visit_bin) < BINS
            && (0.0..=WEEK_MS as f64).contains(&self.step_ms)
            && self.last_ts.abs() < TIME_LIMIT_MS
            && self.day_index.abs() < TIME_LIMIT_MS / DAY_MS
    }

    /// Points seen.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Mean sampling interval (0 before the second point).
    pub fn step_ms(&self) -> f64 {
        self.step_ms
    }

    /// The current trend (change per point).
    pub fn trend(&self) -> f64 {
        self.trend
    }

    /// Newest timestamp seen.
    pub fn last_ts(&self) -> i64 {
        self.last_ts
    }

    /// A profile may learn once the sampling is dense enough for it.
    fn learnable<const N: usize>(&self, p: &Profile<N>) -> bool {
        self.step_ms > 0.0 && self.step_ms * 8.0 <= p.period_ms as f64
    }

    /// A profile takes part in predictions once every bin has been learnt and it
    /// explains at least 30 % of the series' deviations from its slow baseline: the
    /// period is found in the data, not assumed.
    fn usable<const N: usize>(&self, p: &Profile<N>, fit: &[f32; 2]) -> bool {
        self.learnable(p) && p.complete() && fit[1] < 0.7 * fit[0]
    }

    /// Whether the daily and the weekly profile are in use.
    /// (The gate is evaluated once per update, at its end, and read from there: its
    /// inputs change only in `update`.)
    pub fn active(&self) -> (bool, bool) {
        (self.was_active & 1 != 0, self.was_active & 2 != 0)
    }

    /// The seasonal part at `ts` (0 where no profile is in use).
    pub fn season(&self, ts: i64) -> f64 {
        let (day, week) = self.active();
        let mut s = 0.0;
        if day {
            s += self.day.value(ts);
        }
        if week {
            s += self.week.value(ts);
        }
        s
    }

    /// Reads the model at `ts`, one step after the last point: what [`Self::update_prepared`]
    /// needs, and the prediction.
    pub fn prepare(&self, ts: i64, p: SeasonalParams) -> Prepared {
        let (day_on, week_on) = self.active();
        let day = self.day.value(ts);
        let week = self.week.value(ts);
        let season = if day_on { day } else { 0.0 } + if week_on { week } else { 0.0 };
        Prepared {
            day,
            week,
            season,
            predicted: self.level + p.phi * self.trend + season,
        }
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
        let (day, week) = self.active();
        let strength = |active: bool, amplitude: f64| {
            if !active {
                return 0.0;
            }
            let a = amplitude.powi(2);
            a / (a + self.error_var + 1e-300)
        };
        (
            strength(day, self.day.amplitude()),
            strength(week, self.week.amplitude()),
        )
    }

    /// The weekly profile learns from calendar days: when a day ends, the means of the
    /// last seven days are detrended with a least-squares line (so a trend is not taken
    /// for weekday effects) and each weekday moves toward its residual.
    fn learn_week(&mut self, ts: i64, value: f64, gamma: f64) {
        let day = ts.div_euclid(DAY_MS);
        if day != self.day_index {
            if day == self.day_index + 1
                && self.day_points > 0
                && self.step_ms * 8.0 <= DAY_MS as f64
            {
                let mean = (self.day_sum / f64::from(self.day_points)) as f32;
                self.daily_means[self.day_index.rem_euclid(7) as usize] = mean;
                self.days_filled = (self.days_filled + 1).min(7);
                if self.days_filled == 7 {
                    // Detrend the last seven daily means with a least-squares line and
                    // let every weekday move toward its residual. The newest day's
                    // residual, before learning, measures how well the profile predicts.
                    let newest = self.day_index;
                    let means: Vec<f32> = (0..7)
                        .map(|k| self.daily_means[(newest - 6 + k).rem_euclid(7) as usize])
                        .collect();
                    // The line is fitted to the means less the current weekday effects,
                    // so where the weekend falls in the window does not tilt it.
                    let at = |k: usize| (newest - 6 + k as i64) * DAY_MS + DAY_MS / 2;
                    let adjusted: Vec<f32> = (0..7)
                        .map(|k| means[k] - self.week.value(at(k)) as f32)
                        .collect();
                    let centre = adjusted.iter().sum::<f32>() / 7.0;
                    let slope = (0..7).map(|k| (k as f32 - 3.0) * adjusted[k]).sum::<f32>() / 28.0;
                    let residual =
                        |k: usize| f64::from(means[k] - centre - slope * (k as f32 - 3.0));
                    let (target, explained) = (residual(6), self.week.value(at(6)));
                    let rate = 0.2f32;
                    self.week_fit[0] += rate * ((target * target) as f32 - self.week_fit[0]);
                    self.week_fit[1] += rate
                        * (((target - explained) * (target - explained)) as f32 - self.week_fit[1]);
                    for k in 0..7 {
                        self.week.update(at(k), residual(k), gamma / 7.0);
                    }
                }
            } else {
                // A gap of a day or more: start the week over.
                self.days_filled = 0;
            }
            self.day_index = day;
            self.day_sum = 0.0;
            self.day_points = 0;
        }
        self.day_sum += value;
        self.day_points += 1;
    }

    /// Updates with the observation `value` at `ts` (which must be newer than the last)
    /// and returns the one-step prediction it was compared with.
    pub fn update(&mut self, ts: i64, value: f64, p: SeasonalParams) -> f64 {
        let prepared = self.prepare(ts, p);
        self.update_prepared(ts, value, prepared, p)
    }

    /// [`Self::update`] with the reading [`Self::prepare`] gave for `ts` (the caller
    /// already needed the prediction; the profiles are not read twice).
    pub fn update_prepared(
        &mut self,
        ts: i64,
        value: f64,
        prepared: Prepared,
        p: SeasonalParams,
    ) -> f64 {
        if self.count == 0 {
            self.level = value;
            self.baseline_day = value;
            self.day_index = ts.div_euclid(DAY_MS);
            self.last_ts = ts;
            self.count = 1;
            return value;
        }
        // An interval counts for at most four usual ones: an agent down for six hours
        // is a gap, not a change of sampling rate (the detector paces its spans by it).
        let dt = (ts - self.last_ts).max(1) as f64;
        self.step_ms = if self.step_ms == 0.0 {
            dt
        } else {
            0.95 * self.step_ms + 0.05 * dt.min(4.0 * self.step_ms)
        };
        let Prepared {
            day: day_value,
            week: week_value,
            season,
            predicted,
        } = prepared;
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
        let (day_on, week_on) = self.active();
        let day = if day_on { day_value } else { 0.0 };
        let week = if week_on { week_value } else { 0.0 };
        let base = predicted - season;
        let previous = self.level;
        self.level = p.alpha * (value - season) + (1.0 - p.alpha) * base;
        self.trend = p.beta * (self.level - previous) + (1.0 - p.beta) * p.phi * self.trend;
        let slow = |period: i64| (self.step_ms / period as f64).min(1.0);
        // Three days: the baseline barely moves with the daily cycle itself (a one-day
        // mean would still swing with 16 % of it, lagging, and tilt the profile).
        let r_day = slow(3 * DAY_MS);
        // The baseline follows the deseasonalised value: once the profile is right it no
        // longer swings with the season, so the profile converges to it. A trend makes
        // it lag by a constant, which the centring of the bins removes. (It must not
        // borrow the fast trend estimate, which swings with an unlearnt season.)
        self.baseline_day += r_day * (value - day - week - self.baseline_day);
        // How much of the deviation from each baseline the profile explains (measured
        // before the profile learns from this point: out of sample).
        let fit_rate = r_day as f32;
        let track = |fit: &mut [f32; 2], dev: f64, explained: f64| {
            fit[0] += fit_rate * ((dev * dev) as f32 - fit[0]);
            fit[1] += fit_rate * (((dev - explained) * (dev - explained)) as f32 - fit[1]);
        };
        let day_dev = value - week - self.baseline_day;
        track(&mut self.day_fit, day_dev, day_value);
        if self.learnable(&self.day) {
            let bin = self.day.bin_of(ts) as u8;
            if bin != self.visit_bin && self.visit_points > 0 {
                let at = i64::from(self.visit_bin) * (DAY_MS / BINS as i64);
                let mean = f64::from(self.visit_sum) / f64::from(self.visit_points);
                self.day.update(at, mean, p.gamma_day);
                self.visit_sum = 0.0;
                self.visit_points = 0;
            }
            self.visit_bin = bin;
            self.visit_sum += day_dev as f32;
            self.visit_points = self.visit_points.saturating_add(1);
        }
        self.learn_week(ts, value, p.gamma_week);
        // A profile coming into use (or leaving it): until now the level carried the
        // season itself, so move it by the profile's value here, or the next
        // predictions would count the season twice.
        let day_now = self.usable(&self.day, &self.day_fit);
        let week_now = self.usable(&self.week, &self.week_fit);
        let now_active = u8::from(day_now) | u8::from(week_now) << 1;
        if now_active != self.was_active {
            for (bit, value_now) in [(1u8, self.day.value(ts)), (2u8, self.week.value(ts))] {
                match (self.was_active & bit != 0, now_active & bit != 0) {
                    (false, true) => self.level -= value_now,
                    (true, false) => self.level += value_now,
                    _ => {}
                }
            }
        }
        self.was_active = now_active;
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
        let mut p = Profile::<BINS>::new(DAY_MS, true);
        for round in 0..50 {
            for h in 0..24 {
                let ts = round * DAY_MS + h * HOUR + HOUR / 2;
                p.update(ts, daily(ts) - 100.0, 0.2);
            }
        }
        assert!(p.complete());
        let mean: f64 = (0..24).map(|h| p.value(h * HOUR + HOUR / 2)).sum::<f64>() / 24.0;
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
        let predicted = m.predict(ahead, h, m_params);
        assert!(
            (predicted - daily(ahead)).abs() < 3.0,
            "{predicted} vs {} ({m:?})",
            daily(ahead)
        );
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
