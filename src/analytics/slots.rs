//! Forecasting models over whole slots of a series' history (hours, see
//! `analytics::history`), for horizons of an hour and more, chosen per series by their
//! errors at the horizon asked.
//!
//! The models repeat or compare whole periods: the last slot (`naive`), the same slot
//! one day earlier plus the series' day-over-day change (`daily_drift`), one week
//! earlier (`weekly_naive`), the mean of the two (`daily_weekly`), a multiplicative (or,
//! for series that go to 0 or below, additive) seasonal profile learnt by classical
//! decomposition around the recent level (`daily_profile`), and the same slot one period
//! earlier for a period found in the data by autocorrelation that is neither a day nor a
//! week (`period_naive`). (Plain daily naive and a streamed Naive2 were tried: chosen on
//! 6 and 23 of the 414 M4 series, they cost more state than they bought.)
//!
//! When a slot completes, every model's forecast made 1, 2, … 48 slots earlier for it
//! is recomputed from the history (16 sampled lags) and scored; the squared errors
//! are kept per band of lags (1–6, 7–24, 25–48) as running means over about
//! eight days. A forecast `K` slots ahead uses the model with the lowest error over
//! lags 1..K, and its intervals come from that model's error at each lag. The day-over-
//! day change and the profile at the time of each past forecast are taken as they are
//! now (they move slowly); everything else is exactly what the model would have said.

use super::history::SlotHistory;
use super::seasonal::{DAY_MS, WEEK_MS};
use serde::{Deserialize, Serialize};

/// The slot models, in the order of their error arrays.
pub const SLOT_MODELS: [&str; 6] = [
    "naive",
    "daily_drift",
    "weekly_naive",
    "daily_weekly",
    "daily_profile",
    "period_naive",
];
const N: usize = SLOT_MODELS.len();
/// Lags (in slots) at which past forecasts are scored.
const LAGS: [usize; 16] = [1, 2, 3, 4, 6, 9, 12, 15, 18, 21, 24, 28, 33, 38, 43, 48];
/// The last lag of each error band.
const BAND_END: [usize; 3] = [6, 24, 48];
const BANDS: usize = BAND_END.len();
/// Bins of the seasonal profile (its period is a day, or a week when a day is one slot).
const PROFILE_BINS: usize = 24;
/// Errors are running means over about this many completed slots (eight days).
const ERROR_WINDOW: f32 = 192.0;
/// Completed slots a model must have been scored on before it may forecast.
const MIN_SCORED: u16 = 24;
/// The profile learns at 1/n for its first cycles, then at this rate (about a week).
const PROFILE_RATE: f32 = 0.15;
/// The day-over-day change is a running mean over about two weeks of slots.
const DRIFT_WINDOW: f64 = 336.0;
/// Completed slots between two searches for a period (the search costs ~15 000
/// multiply-adds; once a week of hourly slots).
const PERIOD_SEARCH_EVERY: u16 = 168;
/// Autocorrelation a found period must reach.
const PERIOD_MIN_ACF: f64 = 0.3;

fn band_of(lag: usize) -> usize {
    BAND_END
        .iter()
        .position(|&end| lag <= end)
        .unwrap_or(BANDS - 1)
}

/// The slot models' state of one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotModels {
    /// A day and a week in slots (0 when the slot does not divide them into ≥ 2).
    day: u8,
    week: u8,
    /// A period found in the data that is neither (0 = none).
    found: u8,
    /// Period of the profile (0 = none).
    profile_period: u8,
    /// The profile is additive (the series has reached 0 or below).
    additive: bool,
    profile: [f32; PROFILE_BINS],
    profile_mean: f32,
    profile_updates: u16,
    /// Running mean of the change over one day, per day.
    drift: f32,
    drift_updates: u16,
    /// Running mean squared error per model and band of lags: selection compares their
    /// roots, and intervals use them (large errors weigh in as they do in coverage).
    squares: [[f32; BANDS]; N],
    scored: [u16; N],
    completions: u16,
}

impl Default for SlotModels {
    fn default() -> Self {
        SlotModels {
            day: 0,
            week: 0,
            found: 0,
            profile_period: 0,
            additive: false,
            profile: [0.0; PROFILE_BINS],
            profile_mean: 0.0,
            profile_updates: 0,
            drift: 0.0,
            drift_updates: 0,
            squares: [[f32::INFINITY; BANDS]; N],
            scored: [0; N],
            completions: 0,
        }
    }
}

/// The forecast of slot model `model`, `ahead` slots after the newest complete one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlotForecast {
    /// Point forecast.
    pub value: f64,
    /// Standard deviation of its error, from the model's errors at that lag.
    pub sd: f64,
}

impl SlotModels {
    /// Whether a restored state is in range.
    pub fn well_formed(&self) -> bool {
        usize::from(self.profile_period) <= PROFILE_BINS
    }

    /// Sets the periods for a history with slots of `slot_ms` (once, when it starts).
    pub fn start(&mut self, slot_ms: i64) {
        if slot_ms <= 0 || self.day + self.week > 0 {
            return;
        }
        let periods = |span: i64| {
            let n = span / slot_ms;
            if span % slot_ms == 0 && n >= 2 && (n as usize) < super::history::SLOTS {
                n as u8
            } else {
                0
            }
        };
        self.day = periods(DAY_MS);
        self.week = periods(WEEK_MS);
        self.profile_period = [self.day, self.week]
            .into_iter()
            .find(|&p| p >= 2 && usize::from(p) <= PROFILE_BINS)
            .unwrap_or(0);
    }

    /// The period found in the data, in slots (0 when none beyond a day and a week).
    pub fn found_period(&self) -> u16 {
        u16::from(self.found)
    }

    /// Root mean squared error of each slot model per band of lags (lags 1–6, 7–24,
    /// 25–48 slots), infinite while unscored.
    pub fn errors(&self) -> [[f32; BANDS]; N] {
        self.squares.map(|bands| bands.map(f32::sqrt))
    }

    fn profile_ready(&self) -> bool {
        let p = u32::from(self.profile_period);
        p >= 2 && u32::from(self.profile_updates) >= p
    }

    fn phase(&self, slot: i64) -> usize {
        slot.rem_euclid(i64::from(self.profile_period.max(1))) as usize
    }

    /// The normalised seasonal index of `slot` (a factor, or an offset if additive).
    fn index(&self, slot: i64) -> f64 {
        let raw = f64::from(self.profile[self.phase(slot)]);
        let mean = f64::from(self.profile_mean);
        if self.additive {
            raw - mean
        } else if mean > 0.0 && raw > 0.0 {
            raw / mean
        } else {
            1.0
        }
    }

    fn deseason(&self, value: f64, slot: i64) -> f64 {
        if self.additive {
            value - self.index(slot)
        } else {
            value / self.index(slot)
        }
    }

    fn reseason(&self, value: f64, slot: i64) -> f64 {
        if self.additive {
            value + self.index(slot)
        } else {
            value * self.index(slot)
        }
    }

    /// Seasonal naive with period `p`: the value `p` (or a multiple) slots before the
    /// target.
    fn repeat(h: &SlotHistory, p: u8, age: usize, ahead: usize) -> Option<f64> {
        let p = usize::from(p);
        if p < 2 {
            return None;
        }
        let cycles = ahead.div_ceil(p);
        h.get(age + cycles * p - ahead)
    }

    /// Model `m`'s forecast, made when the slot `age` slots before the newest complete
    /// one was the newest, for `ahead` slots after that.
    fn predict(&self, m: usize, h: &SlotHistory, age: usize, ahead: usize) -> Option<f64> {
        self.predict_with(m, h, age, ahead, None)
    }

    /// [`Self::predict`], with the deseasonalised level at the origin when the caller has
    /// it (scoring computes every origin's level from one running sum).
    fn predict_with(
        &self,
        m: usize,
        h: &SlotHistory,
        age: usize,
        ahead: usize,
        level: Option<f64>,
    ) -> Option<f64> {
        let origin = h.newest_complete() - age as i64;
        match m {
            0 => h.get(age),
            1 => {
                let base = Self::repeat(h, self.day, age, ahead)?;
                (self.drift_updates >= u16::from(self.day)).then(|| {
                    base + ahead.div_ceil(usize::from(self.day)) as f64 * f64::from(self.drift)
                })
            }
            2 => Self::repeat(h, self.week, age, ahead),
            3 => Some(
                0.5 * (Self::repeat(h, self.day, age, ahead)?
                    + Self::repeat(h, self.week, age, ahead)?),
            ),
            4 => {
                if !self.profile_ready() {
                    return None;
                }
                let level = match level {
                    Some(level) => level,
                    None => self.level(h, age)?,
                };
                Some(self.reseason(level, origin + ahead as i64))
            }
            _ => {
                let f = self.found;
                if f == 0 || f == self.day || f == self.week {
                    return None;
                }
                Self::repeat(h, f, age, ahead)
            }
        }
    }

    /// Called when a slot of `h` completes: scores every model's past forecasts for it,
    /// then learns from it.
    pub fn on_complete(&mut self, h: &SlotHistory) {
        let Some(actual) = h.get(0) else {
            return;
        };
        let levels = self.levels(h);
        for m in 0..N {
            let mut sums_sq = [0.0f32; BANDS];
            let mut counts = [0u8; BANDS];
            for (k, &lag) in LAGS.iter().enumerate() {
                if let Some(f) = self.predict_with(m, h, lag, lag, levels[k]) {
                    let b = band_of(lag);
                    let e = (actual - f) as f32;
                    sums_sq[b] += e * e;
                    counts[b] += 1;
                }
            }
            if counts.iter().all(|&c| c == 0) {
                continue;
            }
            let rate = (1.0 / (f32::from(self.scored[m]) + 1.0)).max(1.0 / ERROR_WINDOW);
            for b in 0..BANDS {
                if counts[b] == 0 {
                    continue;
                }
                let new = sums_sq[b] / f32::from(counts[b]);
                let e = &mut self.squares[m][b];
                *e = if e.is_finite() {
                    *e + rate * (new - *e)
                } else {
                    new
                };
            }
            self.scored[m] = self.scored[m].saturating_add(1);
        }
        self.learn(h, actual);
        self.completions = self.completions.wrapping_add(1);
        // First when the history has filled, then once a week of slots.
        if self.completions % PERIOD_SEARCH_EVERY == 0
            || usize::from(self.completions) == super::history::SLOTS
        {
            self.find_period(h);
        }
    }

    /// The deseasonalised level (mean over one profile period) at the origin `age`
    /// slots back.
    fn level(&self, h: &SlotHistory, age: usize) -> Option<f64> {
        let p = usize::from(self.profile_period);
        let origin = h.newest_complete() - age as i64;
        let mut level = 0.0;
        for back in 0..p {
            level += self.deseason(h.get(age + back)?, origin - back as i64);
        }
        Some(level / p as f64)
    }

    /// [`Self::level`] at every scored lag, from one pass over the history (the window
    /// slides: each level is the last one plus the slots it gains less those it loses).
    fn levels(&self, h: &SlotHistory) -> [Option<f64>; LAGS.len()] {
        let mut out = [None; LAGS.len()];
        if !self.profile_ready() {
            return out;
        }
        let p = usize::from(self.profile_period);
        let newest = h.newest_complete();
        let des = |age: usize| Some(self.deseason(h.get(age)?, newest - age as i64));
        // Window sum over ages age..age+p, for age from the largest lag down to the first.
        let Some(mut sum) = (0..p).try_fold(0.0, |acc, back| Some(acc + des(LAGS[0] + back)?))
        else {
            return out;
        };
        let mut age = LAGS[0];
        for (k, &lag) in LAGS.iter().enumerate() {
            while age < lag {
                match (des(age), des(age + p)) {
                    (Some(gone), Some(new)) => sum += new - gone,
                    _ => return out,
                }
                age += 1;
            }
            out[k] = Some(sum / p as f64);
        }
        out
    }

    fn learn(&mut self, h: &SlotHistory, actual: f64) {
        if let Some(before) = h.get(usize::from(self.day)).filter(|_| self.day >= 2) {
            let n = self.drift_updates.saturating_add(1);
            let rate = (1.0 / f64::from(n)).max(1.0 / DRIFT_WINDOW);
            let drift = f64::from(self.drift);
            self.drift = (drift + rate * ((actual - before) - drift)) as f32;
            self.drift_updates = n;
        }
        if actual <= 0.0 && !self.additive {
            // Ratios mean nothing around 0: start an additive profile.
            self.additive = true;
            self.profile = [0.0; PROFILE_BINS];
            self.profile_updates = 0;
        }
        let p = usize::from(self.profile_period);
        if p < 2 {
            return;
        }
        // Classical decomposition: the slot half a period back against the centred
        // moving average around it (2×p for an even period).
        let centre = p / 2;
        let mut sum = 0.0;
        let (span, edge) = if p % 2 == 0 { (p, 0.5) } else { (p - 1, 1.0) };
        for age in 0..=span {
            let Some(v) = h.get(age) else {
                return;
            };
            sum += if age == 0 || age == span { edge * v } else { v };
        }
        let mean = sum / p as f64;
        let Some(v) = h.get(centre) else {
            return;
        };
        let target = if self.additive {
            v - mean
        } else if mean > 0.0 {
            v / mean
        } else {
            return;
        };
        let slot = h.newest_complete() - centre as i64;
        let bin = self.phase(slot);
        let cycles = self.profile_updates / p as u16;
        let rate = (1.0 / (cycles as f32 + 1.0)).max(PROFILE_RATE);
        self.profile[bin] += rate * (target as f32 - self.profile[bin]);
        self.profile_updates = self.profile_updates.saturating_add(1);
        self.profile_mean = self.profile[..p].iter().sum::<f32>() / p as f32;
    }

    /// Looks for a period other than a day or a week: the strongest local maximum of
    /// the history's autocorrelation over lags 2..half the history.
    fn find_period(&mut self, h: &SlotHistory) {
        let n = h.complete_len();
        if n < super::history::SLOTS {
            return;
        }
        // On the stack: this runs on the per-event path (once a day of slots).
        let mut dev = [0.0f64; super::history::SLOTS];
        for (age, d) in dev.iter_mut().enumerate().take(n) {
            *d = h.get(age).unwrap_or(0.0);
        }
        let dev = &mut dev[..n];
        let mean = dev.iter().sum::<f64>() / n as f64;
        for d in dev.iter_mut() {
            *d -= mean;
        }
        let dev: &[f64] = dev;
        let total: f64 = dev.iter().map(|d| d * d).sum();
        if total <= 0.0 {
            self.found = 0;
            return;
        }
        let acf = |lag: usize| dev.iter().zip(&dev[lag..]).map(|(a, b)| a * b).sum::<f64>() / total;
        let max_lag = n / 2;
        let mut best = (0usize, PERIOD_MIN_ACF);
        let (mut before, mut here) = (acf(1), acf(2));
        for lag in 2..=max_lag {
            let after = acf(lag + 1);
            if here > before && here >= after && here > best.1 {
                best = (lag, here);
            }
            (before, here) = (here, after);
        }
        self.found = best.0 as u8;
    }

    /// The model to forecast `ahead` slots of `h` with: the lowest error over lags
    /// 1..ahead among the models scored enough that can forecast now; `None` while none
    /// is.
    pub fn choose(&self, h: &SlotHistory, ahead: usize) -> Option<usize> {
        let mut best: Option<(usize, f32)> = None;
        for m in 0..N {
            if self.scored[m] < MIN_SCORED || self.predict(m, h, 0, ahead.max(1)).is_none() {
                continue;
            }
            let mut cost = 0.0f32;
            let mut from = 1;
            for (b, &end) in BAND_END.iter().enumerate() {
                let to = if b == BANDS - 1 {
                    ahead
                } else {
                    end.min(ahead)
                };
                if to >= from {
                    cost += (to + 1 - from) as f32 * self.squares[m][b].sqrt();
                }
                from = end + 1;
            }
            if cost.is_finite() && best.is_none_or(|(_, c)| cost < c) {
                best = Some((m, cost));
            }
        }
        best.map(|(m, _)| m)
    }

    /// Model `m`'s forecast `ahead` (≥ 1) slots after the newest complete slot.
    pub fn forecast(&self, m: usize, h: &SlotHistory, ahead: usize) -> Option<SlotForecast> {
        let value = self.predict(m, h, 0, ahead.max(1))?;
        let band = band_of(ahead);
        let mut sd = f64::from(self.squares[m][band]).sqrt();
        if ahead > BAND_END[BANDS - 1] {
            sd *= (ahead as f64 / 36.0).sqrt();
        }
        Some(SlotForecast { value, sd })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::history::HOUR_MS;

    fn run(values: impl Iterator<Item = f64>) -> (SlotHistory, SlotModels) {
        let mut h = SlotHistory::default();
        let mut m = SlotModels::default();
        h.start(HOUR_MS as f64);
        m.start(h.slot_ms());
        for (i, v) in values.enumerate() {
            if h.observe(i as i64 * HOUR_MS, v) == super::super::history::Slotted::Completed {
                m.on_complete(&h);
            }
        }
        (h, m)
    }

    #[test]
    fn a_weekly_pattern_picks_a_weekly_model() {
        // Weekdays busy, weekends quiet, the same every week.
        let week = |i: usize| {
            let day = (i / 24) % 7;
            let hour = i % 24;
            let busy = if day < 5 { 100.0 } else { 20.0 };
            busy + 10.0 * (hour as f64 / 24.0 * std::f64::consts::TAU).sin()
        };
        let (h, m) = run((0..24 * 7 * 5).map(week));
        let chosen = m.choose(&h, 48).unwrap();
        assert!(
            ["weekly_naive"].contains(&SLOT_MODELS[chosen]),
            "{} {:?}",
            SLOT_MODELS[chosen],
            m.errors()
        );
        let f = m.forecast(chosen, &h, 30).unwrap();
        let truth = week(24 * 7 * 5 + 29);
        assert!((f.value - truth).abs() < 1e-2, "{} vs {truth}", f.value);
    }

    #[test]
    fn a_trend_with_a_daily_cycle_picks_the_drift() {
        let series = |i: usize| {
            50.0 + 0.2 * i as f64 + 8.0 * (i as f64 / 24.0 * std::f64::consts::TAU).sin()
        };
        let (h, m) = run((0..24 * 20).map(series));
        let chosen = m.choose(&h, 48).unwrap();
        assert_eq!(SLOT_MODELS[chosen], "daily_drift", "{:?}", m.errors());
        let f = m.forecast(chosen, &h, 40).unwrap();
        let truth = series(24 * 20 + 39);
        assert!((f.value - truth).abs() < 0.1, "{} vs {truth}", f.value);
    }

    #[test]
    fn finds_a_period_that_is_not_calendar() {
        // A batch every 7 hours.
        let (_, m) = run((0..24 * 12).map(|i| if i % 7 == 0 { 90.0 } else { 10.0 }));
        assert_eq!(m.found_period(), 7);
        let (_, daily) = run((0..24 * 12).map(|i| (i % 24) as f64));
        assert_eq!(daily.found_period(), 24);
    }
}
