//! Holt's linear exponential smoothing (level + trend), updated per event, with
//! prediction intervals from the running one-step error variance.

use serde::{Deserialize, Serialize};

/// Per-series Holt state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Holt {
    level: f64,
    trend: f64,
    /// Exponentially weighted mean of squared one-step errors.
    error_var: f64,
    /// Points seen.
    count: u64,
}

impl Holt {
    /// Points seen so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Current level.
    pub fn level(&self) -> f64 {
        self.level
    }

    /// Updates with one observation. `alpha` smooths the level, `beta` the trend.
    pub fn update(&mut self, value: f64, alpha: f64, beta: f64) {
        match self.count {
            0 => self.level = value,
            1 => {
                self.trend = value - self.level;
                self.level = value;
            }
            _ => {
                let predicted = self.level + self.trend;
                let err = value - predicted;
                // The error variance adapts at the level's pace.
                self.error_var = if self.count == 2 {
                    err * err
                } else {
                    (1.0 - alpha) * self.error_var + alpha * err * err
                };
                let new_level = alpha * value + (1.0 - alpha) * predicted;
                self.trend = beta * (new_level - self.level) + (1.0 - beta) * self.trend;
                self.level = new_level;
            }
        }
        self.count += 1;
    }

    /// Point forecast `h` steps ahead (h ≥ 1) and its standard deviation.
    ///
    /// The variance follows the Holt model's h-step formula,
    /// σ²·(1 + Σ_{j=1}^{h-1} (α + jαβ)²).
    pub fn forecast(&self, h: u32, alpha: f64, beta: f64) -> (f64, f64) {
        let value = self.level + f64::from(h) * self.trend;
        let mut factor = 1.0;
        for j in 1..h {
            let c = alpha + f64::from(j) * alpha * beta;
            factor += c * c;
        }
        (value, (self.error_var * factor).sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_a_linear_trend_exactly() {
        let mut h = Holt::default();
        for i in 0..100 {
            h.update(10.0 + 2.0 * f64::from(i), 0.3, 0.1);
        }
        let (v, sd) = h.forecast(5, 0.3, 0.1);
        assert!((v - (10.0 + 2.0 * 104.0)).abs() < 1e-6, "{v}");
        assert!(sd < 1e-6);
    }

    #[test]
    fn intervals_widen_with_horizon_on_noise() {
        let mut h = Holt::default();
        for i in 0..200 {
            h.update(if i % 2 == 0 { 1.0 } else { -1.0 }, 0.3, 0.1);
        }
        let (_, sd1) = h.forecast(1, 0.3, 0.1);
        let (_, sd10) = h.forecast(10, 0.3, 0.1);
        assert!(sd1 > 0.0 && sd10 > sd1);
    }
}
