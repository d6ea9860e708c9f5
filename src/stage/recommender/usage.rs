//! Resource requests from usage, the way Kubernetes' VPA sizes them: a percentile of a
//! decaying histogram of per-replica usage plus a safety margin, raised further when
//! usage presses against the request (the real demand is then hidden by the limit).
//!
//! The histogram has exponentially growing buckets (12 % wide, from 1 unit to about
//! 50 000), so it is compact (96 `f32` weights) and equally precise at every scale. New
//! samples weigh more: a sample's weight doubles every half-life, which is the same as
//! every older sample halving, without touching them; weights are rescaled before they
//! could overflow.

use serde::{Deserialize, Serialize};

const BUCKETS: usize = 96;
const FIRST: f64 = 1.0;
const RATIO: f64 = 1.12;

/// A decaying histogram of usage samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageHistogram {
    #[serde(with = "crate::stage::snapshot::f32s")]
    weights: Vec<f32>,
    total: f64,
    /// Event time the weights are relative to.
    reference_ms: i64,
    samples: u32,
    /// Event time usage last pressed against the request.
    pub saturated_ms: Option<i64>,
}

impl UsageHistogram {
    /// Whether a restored histogram has its buckets.
    pub fn well_formed(&self) -> bool {
        self.weights.len() == BUCKETS
    }
}

impl Default for UsageHistogram {
    fn default() -> Self {
        UsageHistogram {
            weights: vec![0.0; BUCKETS],
            total: 0.0,
            reference_ms: 0,
            samples: 0,
            saturated_ms: None,
        }
    }
}

fn bucket(value: f64) -> usize {
    if value <= FIRST {
        return 0;
    }
    (((value / FIRST).ln() / RATIO.ln()).floor() as usize + 1).min(BUCKETS - 1)
}

/// Upper edge of a bucket (what a percentile falling in it is sized to).
fn upper(i: usize) -> f64 {
    FIRST * RATIO.powi(i as i32)
}

impl UsageHistogram {
    /// Samples added.
    pub fn samples(&self) -> u32 {
        self.samples
    }

    /// Adds a usage sample at `at_ms` with the given half-life.
    pub fn add(&mut self, value: f64, at_ms: i64, half_life_ms: i64) {
        if !value.is_finite() || value < 0.0 {
            return;
        }
        if self.samples == 0 {
            self.reference_ms = at_ms;
        }
        let half_life = half_life_ms.max(1) as f64;
        let mut exponent = (at_ms - self.reference_ms) as f64 / half_life;
        if exponent > 40.0 {
            // Move the reference forward: every weight halves once per half-life.
            let scale = (2f64).powf(-exponent);
            for w in &mut self.weights {
                *w = (f64::from(*w) * scale) as f32;
            }
            self.total *= scale;
            self.reference_ms = at_ms;
            exponent = 0.0;
        }
        let w = (2f64).powf(exponent.max(-40.0));
        self.weights[bucket(value)] += w as f32;
        self.total += w;
        self.samples = self.samples.saturating_add(1);
    }

    /// The usage below which a `p` share of the (weighted) samples lies.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        if self.total <= 0.0 {
            return None;
        }
        let goal = p.clamp(0.0, 1.0) * self.total;
        let mut acc = 0.0;
        for (i, &w) in self.weights.iter().enumerate() {
            acc += f64::from(w);
            if acc >= goal {
                return Some(upper(i));
            }
        }
        Some(upper(BUCKETS - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_within_a_bucket_and_recent_samples_weigh_more() {
        let mut h = UsageHistogram::default();
        let day = 86_400_000;
        // A week of usage around 200 units, then two days around 400.
        for i in 0..700 {
            h.add(180.0 + f64::from(i % 40), i64::from(i) * 864_000, day);
        }
        let p90 = h.percentile(0.9).unwrap();
        assert!((200.0..=250.0).contains(&p90), "{p90}");
        for i in 0..200 {
            h.add(
                380.0 + f64::from(i % 40),
                7 * day + i64::from(i) * 864_000,
                day,
            );
        }
        let p90 = h.percentile(0.9).unwrap();
        assert!(p90 > 400.0, "recent usage dominates: {p90}");
        let p10 = h.percentile(0.1).unwrap();
        assert!(p10 < 300.0, "older usage still counts a little: {p10}");
    }

    #[test]
    fn long_gaps_do_not_overflow() {
        let mut h = UsageHistogram::default();
        h.add(10.0, 0, 1000);
        h.add(50.0, 1_000_000_000, 1000);
        assert!(h.total.is_finite());
        assert!((50.0..60.0).contains(&h.percentile(0.5).unwrap()));
    }
}
