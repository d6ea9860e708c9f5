//! How unusual a point is against its series' own recent history, as one calibrated
//! number in [0, 1]: the anomaly likelihood the detector emits with each episode start.
//!
//! The raw evidence is the point's residual in units of the series' residual scale
//! (capped at [`RAW_CAP`]). Its short exponential mean (about [`SHORT_POINTS`] points)
//! is compared with the long-run distribution of that same mean (mean and variance at
//! rate [`LONG_RATE`]): the tail probability `q` of the current short mean under it says
//! how rare the recent run of residuals is *for this series*, so a noisy series is judged
//! by its own noise and a clean one by its own. The score is `ln(q + 1e-10) / ln(1e-10)`
//! (as in Numenta's anomaly likelihood): 0 for ordinary, 0.5 for a one-in-10⁵ run, 1 for a
//! one-in-10¹⁰ one, so scores are comparable across series and one threshold serves all.
//! A value beyond everything the series has shown (by more than [`EXTREME_MARGIN`] of
//! its range) scores 1: the first time a metric leaves its historical
//! range is news whatever the residual model says. A run of residuals unusually *small*
//! (a stuck sensor) has its own score, [`Scored::low`], for the flatline detector.
//!
//! Incremental, O(1) per point, 36 bytes of state.

use super::stats::normal_tail;
use serde::{Deserialize, Serialize};

/// Points the short mean of residuals spans (the run being judged).
pub const SHORT_POINTS: f32 = 100.0;
/// Learning rate of the long-run distribution of the short mean (about 500 points).
pub const LONG_RATE: f32 = 0.002;
/// Residuals are capped at this many scales, so one wild point cannot dominate a run.
pub const RAW_CAP: f64 = 10.0;
/// The residual scale is at least this share of the series' spread, so a noise-free
/// series (a pure sine, a square wave) is not judged by a scale of nearly nothing.
pub const SPREAD_FLOOR: f64 = 0.02;
/// A value more than this share of the historical range beyond it is a new extreme.
pub const EXTREME_MARGIN: f64 = 0.05;
/// A residual more than this many times the largest the series has shown is certain
/// news too (a spike in a clean series), even as a single point.
pub const PEAK_FACTOR: f32 = 1.5;
/// Per-point decay of that largest residual (a half-life of about 7 000 points), so one
/// old outlier does not blind the rule for ever.
const PEAK_DECAY: f32 = 0.9999;

/// The likelihood's state for one series.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Likelihood {
    /// Slow mean of the values, and the mean absolute deviation from it (the spread).
    level: f64,
    spread: f32,
    /// Short mean of the capped |residual| in scales.
    short: f32,
    /// Long-run mean and variance of `short`.
    mean: f32,
    var: f32,
    /// Smallest and largest value seen.
    lo: f64,
    hi: f64,
    /// Largest |residual| in scales seen (decaying).
    peak: f32,
}

/// What one point brings: its value, its residual against the model, the series'
/// residual scale before it (mean |residual|), and the persistent detectors' statistics
/// in residual-threshold units (`extra`, 0 when they have none), so a run of shifted or
/// noisier points counts as a run of large residuals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evidence {
    /// The point's value.
    pub value: f64,
    /// Value minus the model's prediction.
    pub residual: f64,
    /// The series' mean |residual| before this point.
    pub scale: f64,
    /// The persistent detectors' statistics, in residual-threshold units.
    pub extra: f64,
}

/// The likelihood of one point. The scores are computed on demand (two exponentials
/// and a logarithm each), since most points are never asked for theirs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// The short mean's distance from its long-run mean, in standard deviations.
    t: f64,
    /// Whether the point is a new extreme (or a residual past the largest seen).
    extreme: bool,
}

impl Scored {
    /// How rare the recent run of large residuals is (or 1 for a new extreme).
    pub fn high(&self) -> f64 {
        if self.extreme {
            1.0
        } else {
            score_of_tail(normal_tail(self.t))
        }
    }

    /// How rare the recent run of small residuals is (a stuck value).
    pub fn low(&self) -> f64 {
        score_of_tail(normal_tail(-self.t))
    }
}

/// Smallest variance of the short mean (in scales²) that a tail is judged against.
const MIN_VAR: f32 = 1e-4;

fn score_of_tail(q: f64) -> f64 {
    ((q + 1e-10).ln() / 1e-10f64.ln()).clamp(0.0, 1.0)
}

impl Likelihood {
    /// Whether a restored state is in range.
    pub fn well_formed(&self) -> bool {
        self.level.is_finite()
            && self.spread.is_finite()
            && self.short.is_finite()
            && self.mean.is_finite()
            && self.var.is_finite()
            && self.var >= 0.0
            && self.lo.is_finite()
            && self.hi.is_finite()
            && self.peak.is_finite()
    }

    /// |residual| in scales, floored by the spread.
    fn z(&self, value: f64, residual: f64, scale: f64) -> f64 {
        let sigma = (1.2533 * scale)
            .max(SPREAD_FLOOR * f64::from(self.spread))
            .max(1e-9 * value.abs())
            .max(1e-12);
        (residual / sigma).abs()
    }

    fn raw(&self, value: f64, residual: f64, scale: f64, extra: f64) -> f64 {
        self.z(value, residual, scale).max(extra).min(RAW_CAP)
    }

    /// Learns the `n`-th value (1-based) without a residual yet (the series' first point).
    pub fn first(&mut self, value: f64) {
        self.level = value;
        self.spread = 0.0;
        self.lo = value;
        self.hi = value;
    }

    /// Scores and learns the `n`-th point (n ≥ 2) from its residual against the model and
    /// the series' residual scale (mean |residual| before this point). `judge` says
    /// whether the point may be a new extreme (false during warm-up). `pace` (≥ 1) is
    /// how many 5-minute points one of the series' points stands for: the short and the
    /// long run span that many times fewer points, so they keep their durations.
    pub fn observe(&mut self, n: u32, point: Evidence, judge: bool, pace: f32) -> Scored {
        let Evidence {
            value,
            residual,
            scale,
            extra,
        } = point;
        let n = n.max(2);
        let young = 1.0 / n as f32;
        let spread_rate = if n < 1000 { f64::from(young) } else { 0.001 };
        self.spread += (spread_rate * ((value - self.level).abs() - f64::from(self.spread))) as f32;
        self.level += 0.01 * (value - self.level);
        let z = self.z(value, residual, scale) as f32;
        let raw = self.raw(value, residual, scale, extra) as f32;
        let peak_exceeded = judge && self.peak > 0.0 && z > PEAK_FACTOR * self.peak;
        self.peak = (self.peak * PEAK_DECAY).max(z);
        if n == 2 {
            self.short = raw;
            self.mean = raw;
            self.var = 0.0;
        } else {
            self.short += (2.0 / (SHORT_POINTS / pace + 1.0)) * (raw - self.short);
        }
        let d = self.short - self.mean;
        let t = f64::from(d) / f64::from(self.var.max(MIN_VAR)).sqrt();
        let rate = young.max(LONG_RATE * pace);
        self.mean += rate * d;
        self.var += rate * (d * d - self.var);
        let range = self.hi - self.lo;
        let extreme = peak_exceeded
            || judge
                && range > 0.0
                && (value > self.hi + EXTREME_MARGIN * range
                    || value < self.lo - EXTREME_MARGIN * range);
        self.lo = self.lo.min(value);
        self.hi = self.hi.max(value);
        Scored { t, extreme }
    }

    /// The score a point would get, without learning it (out-of-order points).
    pub fn peek(&self, value: f64, residual: f64, scale: f64, pace: f32) -> f64 {
        let raw = self.raw(value, residual, scale, 0.0) as f32;
        let short = self.short + (2.0 / (SHORT_POINTS / pace + 1.0)) * (raw - self.short);
        let d = short - self.mean;
        score_of_tail(normal_tail(
            f64::from(d) / f64::from(self.var.max(MIN_VAR)).sqrt(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(value: f64, residual: f64, scale: f64, extra: f64) -> Evidence {
        Evidence {
            value,
            residual,
            scale,
            extra,
        }
    }

    #[test]
    fn tail_maps_to_the_documented_scores() {
        assert!(score_of_tail(0.5) < 0.04);
        assert!((score_of_tail(1e-5) - 0.5).abs() < 1e-4);
        assert!((score_of_tail(0.0) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn on_hourly_points_an_afternoon_of_larger_residuals_is_rare_at_the_hourly_pace() {
        // Six points (hours) with residuals of 0.7 where they are usually about 0.5: over a
        // run of 100 points (four days) they are diluted below the detector's default
        // threshold (0.1); over a run of 8⅓ hours they are not.
        let noise = |i: u32| ((i.wrapping_mul(2_654_435_761) >> 8) % 1000) as f64 / 500.0 - 1.0;
        let best_at = |pace: f32| {
            let mut l = Likelihood::default();
            l.first(10.0);
            for n in 2..1500 {
                l.observe(n, pt(10.0 + noise(n), noise(n), 0.5, 0.0), n > 30, pace);
            }
            (1500..1506)
                .map(|n| l.observe(n, pt(10.0, 0.7, 0.5, 0.0), true, pace).high())
                .fold(0.0f64, f64::max)
        };
        let (hourly, counted) = (best_at(12.0), best_at(1.0));
        assert!(hourly > 0.15, "at the hourly pace: {hourly}");
        assert!(counted < 0.09, "over 100 points: {counted}");
    }

    #[test]
    fn ordinary_noise_scores_low_and_a_lasting_change_scores_high() {
        let mut l = Likelihood::default();
        l.first(10.0);
        let noise = |i: u32| ((i.wrapping_mul(2_654_435_761) >> 8) % 1000) as f64 / 500.0 - 1.0;
        let mut worst = 0.0f64;
        for n in 2..3000 {
            let v = 10.0 + noise(n);
            worst = worst.max(l.observe(n, pt(v, noise(n), 0.5, 0.0), n > 30, 1.0).high());
        }
        assert!(worst < 0.3, "noise scored {worst}");
        // Residuals four times their usual size for 40 points: a rare run.
        let mut best = 0.0f64;
        for n in 3000..3040 {
            let v = 10.0 + 4.0 * noise(n);
            best = best.max(
                l.observe(n, pt(v, 4.0 * noise(n), 0.5, 0.0), true, 1.0)
                    .high(),
            );
        }
        assert!(best > 0.5, "the change scored {best}");
    }

    #[test]
    fn a_stuck_value_is_a_rare_low_run() {
        let mut l = Likelihood::default();
        l.first(10.0);
        let noise = |i: u32| ((i.wrapping_mul(2_654_435_761) >> 8) % 1000) as f64 / 500.0 - 1.0;
        for n in 2..3000 {
            l.observe(n, pt(10.0 + noise(n), noise(n), 0.5, 0.0), true, 1.0);
        }
        let low = (3000..3100)
            .map(|n| l.observe(n, pt(10.0, 0.0, 0.5, 0.0), true, 1.0).low())
            .fold(0.0, f64::max);
        assert!(low > 0.5, "the stuck run scored {low}");
    }

    #[test]
    fn a_new_extreme_scores_one_only_after_warm_up() {
        let mut l = Likelihood::default();
        l.first(0.0);
        for n in 2..100 {
            let v = f64::from(n % 10);
            l.observe(n, pt(v, 0.0, 1.0, 0.0), true, 1.0);
        }
        assert!(
            l.observe(100, pt(20.0, 0.0, 1.0, 0.0), false, 1.0).high() < 0.5,
            "not judged in warm-up"
        );
        assert!(
            l.peek(40.0, 0.0, 1.0, 1.0) < 0.5,
            "peek does not judge extremes"
        );
        assert_eq!(
            l.observe(101, pt(40.0, 0.0, 1.0, 0.0), true, 1.0).high(),
            1.0
        );
        // The range now reaches 40: 41 is within its margin.
        assert!(l.observe(102, pt(41.0, 0.0, 1.0, 0.0), true, 1.0).high() < 0.5);
        assert!(l.well_formed());
    }
}
