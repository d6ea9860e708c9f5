//! Forecast accuracy as the M4 competition measures it: sMAPE, MASE (scaled by the
//! in-sample seasonal-naive error) and OWA relative to Naive2 (the naive forecast of the
//! seasonally adjusted series, classical multiplicative decomposition, applied when the
//! lag-`period` autocorrelation is significant at 90 %). Pure functions over slices.

/// sMAPE of one forecast: mean of 200·|y − ŷ| / (|y| + |ŷ|) (a point where both are 0
/// counts 0).
pub fn smape(actual: &[f64], forecast: &[f64]) -> f64 {
    let n = actual.len().min(forecast.len());
    if n == 0 {
        return 0.0;
    }
    let sum: f64 = actual
        .iter()
        .zip(forecast)
        .map(|(y, f)| {
            let d = y.abs() + f.abs();
            if d == 0.0 {
                0.0
            } else {
                200.0 * (y - f).abs() / d
            }
        })
        .sum();
    sum / n as f64
}

/// MASE of one forecast: mean |y − ŷ| over the in-sample mean |y_t − y_{t−period}|
/// (`None` when the history is shorter than a period or perfectly periodic).
pub fn mase(history: &[f64], actual: &[f64], forecast: &[f64], period: usize) -> Option<f64> {
    let period = period.max(1);
    if history.len() <= period {
        return None;
    }
    let scale: f64 = history
        .windows(period + 1)
        .map(|w| (w[period] - w[0]).abs())
        .sum::<f64>()
        / (history.len() - period) as f64;
    if scale <= 0.0 {
        return None;
    }
    let n = actual.len().min(forecast.len()).max(1);
    let mae: f64 = actual
        .iter()
        .zip(forecast)
        .map(|(y, f)| (y - f).abs())
        .sum::<f64>()
        / n as f64;
    Some(mae / scale)
}

/// Autocorrelation at lag `k` (M4's definition: deviations from the whole mean).
fn acf(x: &[f64], k: usize) -> f64 {
    let m = x.iter().sum::<f64>() / x.len() as f64;
    let den: f64 = x.iter().map(|v| (v - m) * (v - m)).sum();
    if den == 0.0 || k >= x.len() {
        return 0.0;
    }
    let num: f64 = (k..x.len()).map(|i| (x[i] - m) * (x[i - k] - m)).sum();
    num / den
}

/// M4's seasonality test (as in its R benchmarks): |acf(period)| above
/// 1.645 · √((1 + 2 Σ_{i<period} acf(i)²) / n), and at least three periods of data.
pub fn is_seasonal(x: &[f64], period: usize) -> bool {
    if period < 2 || x.len() < 3 * period {
        return false;
    }
    let s: f64 = (1..period).map(|i| acf(x, i).powi(2)).sum();
    let limit = 1.645 * ((1.0 + 2.0 * s) / x.len() as f64).sqrt();
    acf(x, period).abs() > limit
}

/// Seasonal indices of a classical multiplicative decomposition (centred moving average
/// of `period`, ratios averaged per position, normalised to mean 1), indexed by position
/// `i % period` from the start of `x`.
pub fn seasonal_indices(x: &[f64], period: usize) -> Vec<f64> {
    let n = x.len();
    let mut sums = vec![0.0; period];
    let mut counts = vec![0usize; period];
    let half = period / 2;
    for i in half..n.saturating_sub(half) {
        let trend = if period % 2 == 0 {
            if i + half >= n {
                continue;
            }
            let inner: f64 = x[i + 1 - half..i + half].iter().sum();
            (0.5 * x[i - half] + inner + 0.5 * x[i + half]) / period as f64
        } else {
            x[i - half..=i + half].iter().sum::<f64>() / period as f64
        };
        if trend != 0.0 {
            sums[i % period] += x[i] / trend;
            counts[i % period] += 1;
        }
    }
    let mut idx: Vec<f64> = sums
        .iter()
        .zip(&counts)
        .map(|(s, c)| if *c > 0 { s / *c as f64 } else { 1.0 })
        .collect();
    let mean = idx.iter().sum::<f64>() / period as f64;
    if mean > 0.0 && mean.is_finite() {
        for v in &mut idx {
            *v /= mean;
        }
    }
    idx
}

/// M4's Naive2 forecast of `horizon` points after `history`.
pub fn naive2(history: &[f64], period: usize, horizon: usize) -> Vec<f64> {
    let Some(&last) = history.last() else {
        return vec![0.0; horizon];
    };
    if !is_seasonal(history, period) {
        return vec![last; horizon];
    }
    let idx = seasonal_indices(history, period);
    let n = history.len();
    let last_index = idx[(n - 1) % period];
    if last_index <= 0.0 || !last_index.is_finite() {
        return vec![last; horizon];
    }
    let level = last / last_index;
    (0..horizon)
        .map(|h| level * idx[(n + h) % period])
        .collect()
}

/// Seasonal naive: the last `period` points repeated.
pub fn seasonal_naive(history: &[f64], period: usize, horizon: usize) -> Vec<f64> {
    let n = history.len();
    if n < period || period == 0 {
        return vec![history.last().copied().unwrap_or(0.0); horizon];
    }
    (0..horizon)
        .map(|h| history[n - period + h % period])
        .collect()
}

/// Accumulated M4 metrics of one method over many series.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Accuracy {
    /// Series scored.
    pub series: usize,
    /// Sum of per-series sMAPE.
    pub smape_sum: f64,
    /// Sum of per-series MASE (series without a MASE scale are left out of it).
    pub mase_sum: f64,
    /// Series with a MASE.
    pub mase_series: usize,
}

impl Accuracy {
    /// Adds one series' forecast.
    pub fn add(&mut self, history: &[f64], actual: &[f64], forecast: &[f64], period: usize) {
        self.series += 1;
        self.smape_sum += smape(actual, forecast);
        if let Some(m) = mase(history, actual, forecast, period) {
            self.mase_sum += m;
            self.mase_series += 1;
        }
    }

    /// Mean sMAPE.
    pub fn smape(&self) -> f64 {
        self.smape_sum / self.series.max(1) as f64
    }

    /// Mean MASE.
    pub fn mase(&self) -> f64 {
        self.mase_sum / self.mase_series.max(1) as f64
    }

    /// OWA against a reference (Naive2): ½ (sMAPE / sMAPE_ref + MASE / MASE_ref).
    pub fn owa(&self, reference: &Accuracy) -> f64 {
        0.5 * (self.smape() / reference.smape().max(1e-12)
            + self.mase() / reference.mase().max(1e-12))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smape_and_mase_hand_computed() {
        // |10−8| → 200·2/18; |10−10| → 0: mean 11.11.
        assert!((smape(&[10.0, 10.0], &[8.0, 10.0]) - 200.0 * 2.0 / 18.0 / 2.0).abs() < 1e-12);
        assert_eq!(smape(&[0.0], &[0.0]), 0.0);
        // History 1,2,3,4 with period 1: in-sample error 1; forecast error 2 → MASE 2.
        assert_eq!(mase(&[1.0, 2.0, 3.0, 4.0], &[5.0], &[3.0], 1), Some(2.0));
        assert_eq!(mase(&[1.0, 1.0, 1.0], &[1.0], &[1.0], 1), None);
    }

    #[test]
    fn naive2_reseasonalises_a_multiplicative_cycle_and_is_plain_naive_without_one() {
        let period = 4;
        let shape = [0.5, 1.0, 1.5, 1.0];
        let history: Vec<f64> = (0..40).map(|i| 10.0 * shape[i % period]).collect();
        assert!(is_seasonal(&history, period));
        let f = naive2(&history, period, 4);
        for (h, v) in f.iter().enumerate() {
            assert!((v - 10.0 * shape[(40 + h) % period]).abs() < 1e-9, "{f:?}");
        }
        assert_eq!(seasonal_naive(&history, period, 5)[4], history[36]);
        let flat: Vec<f64> = (0..40).map(|i| 5.0 + (i % 3) as f64 * 0.01).collect();
        let plain = naive2(&flat, 24, 3);
        assert_eq!(plain, vec![*flat.last().unwrap(); 3]);
    }

    #[test]
    fn owa_of_the_reference_is_one() {
        let mut a = Accuracy::default();
        a.add(&[1.0, 2.0, 3.0, 4.0], &[5.0, 6.0], &[4.0, 4.0], 1);
        assert!((a.owa(&a) - 1.0).abs() < 1e-12);
        let mut better = Accuracy::default();
        better.add(&[1.0, 2.0, 3.0, 4.0], &[5.0, 6.0], &[5.0, 5.0], 1);
        assert!(better.owa(&a) < 1.0);
    }
}
