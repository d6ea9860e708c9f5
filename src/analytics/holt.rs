//! Holt's exponential smoothing with a damped trend (level + trend), updated per event,
//! with prediction intervals from the running one-step error variance.
//!
//! With `phi = 1` this is plain Holt; `phi < 1` damps the trend so that long horizons
//! do not extrapolate a short-lived slope without bound.

use serde::{Deserialize, Serialize};

/// Smoothing parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HoltParams {
    /// Level smoothing in (0,1).
    pub alpha: f64,
    /// Trend smoothing in (0,1).
    pub beta: f64,
    /// Trend damping in (0,1].
    pub phi: f64,
}

/// Per-series Holt state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Holt {
    level: f64,
    trend: f64,
    /// Exponentially weighted mean of squared one-step errors.
    error_var: f64,
    /// Points seen.
    count: u32,
}

impl Holt {
    /// Points seen so far.
    pub fn count(&self) -> u64 {
        u64::from(self.count)
    }

    /// Exponentially weighted mean squared one-step error.
    pub fn error_var(&self) -> f64 {
        self.error_var
    }

    /// Current level.
    pub fn level(&self) -> f64 {
        self.level
    }

    /// The one-step-ahead prediction (the value expected next). Meaningless before the
    /// first update.
    pub fn predict_next(&self, p: HoltParams) -> f64 {
        self.level + p.phi * self.trend
    }

    /// Updates with one observation.
    ///
    /// The trend starts at zero and is learnt, rather than taken from the first
    /// difference: one noisy difference would otherwise be extrapolated for a long time.
    pub fn update(&mut self, value: f64, p: HoltParams) {
        if self.count == 0 {
            self.level = value;
        } else {
            let predicted = self.predict_next(p);
            let err = value - predicted;
            // The error variance adapts at the level's pace.
            self.error_var = if self.count == 1 {
                err * err
            } else {
                (1.0 - p.alpha) * self.error_var + p.alpha * err * err
            };
            let new_level = p.alpha * value + (1.0 - p.alpha) * predicted;
            self.trend = p.beta * (new_level - self.level) + (1.0 - p.beta) * p.phi * self.trend;
            self.level = new_level;
        }
        self.count = self.count.saturating_add(1);
    }

    /// Point forecast `h` steps ahead (h ≥ 1), without the interval.
    pub fn point(&self, h: u32, p: HoltParams) -> f64 {
        let mut damp_sum = 0.0;
        let mut phi_pow = 1.0;
        for _ in 0..h {
            phi_pow *= p.phi;
            damp_sum += phi_pow;
        }
        self.level + damp_sum * self.trend
    }

    /// Point forecast `h` steps ahead (h ≥ 1) and its standard deviation.
    ///
    /// The variance uses the additive-error Holt formula,
    /// σ²·(1 + Σ_{j=1}^{h-1} (α + αβ·Σ_{i=1}^{j} φ^i)²).
    pub fn forecast(&self, h: u32, p: HoltParams) -> (f64, f64) {
        let mut damp_sum = 0.0;
        let mut phi_pow = 1.0;
        let mut factor = 1.0;
        for j in 1..=h {
            phi_pow *= p.phi;
            if j < h {
                let c = p.alpha + p.alpha * p.beta * (damp_sum + phi_pow);
                factor += c * c;
            }
            damp_sum += phi_pow;
        }
        (
            self.level + damp_sum * self.trend,
            (self.error_var * factor).sqrt(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: HoltParams = HoltParams {
        alpha: 0.3,
        beta: 0.1,
        phi: 1.0,
    };

    #[test]
    fn follows_a_linear_trend() {
        let mut h = Holt::default();
        for i in 0..300 {
            h.update(10.0 + 2.0 * f64::from(i), PLAIN);
        }
        let (v, sd) = h.forecast(5, PLAIN);
        assert!((v - (10.0 + 2.0 * 304.0)).abs() < 1e-3, "{v}");
        assert!(sd < 1e-3, "{sd}");
    }

    #[test]
    fn damping_bounds_the_extrapolation() {
        let damped = HoltParams { phi: 0.9, ..PLAIN };
        let mut h = Holt::default();
        for i in 0..300 {
            h.update(f64::from(i), damped);
        }
        let (near, _) = h.forecast(1, damped);
        let (far, _) = h.forecast(1000, damped);
        // Σ φ^i converges to φ/(1-φ) = 9: the far forecast stays within 9 trends of the level.
        assert!(
            far - h.level() < 9.5 * (near - h.level()) / 0.9,
            "{near} {far}"
        );
    }

    #[test]
    fn intervals_widen_with_horizon_on_noise() {
        let mut h = Holt::default();
        for i in 0..200 {
            h.update(if i % 2 == 0 { 1.0 } else { -1.0 }, PLAIN);
        }
        let (_, sd1) = h.forecast(1, PLAIN);
        let (_, sd10) = h.forecast(10, PLAIN);
        assert!(sd1 > 0.0 && sd10 > sd1);
    }
}
