//! Online tuning of one parameter (a batch size, a pool size) from observed outcomes.
//!
//! A pattern search that needs no model of the objective: it measures the objective at
//! the current value (the mean of `settle_points` observations), moves one step, and
//! measures again. A step that improved is repeated in the same direction; one that did
//! not is taken back: the search returns to the best value seen, turns around and halves
//! its step. Below `min_step` it stops at the best value. Values stay within bounds,
//! and every proposal names the outcomes it rests on.

use crate::policy::Tunable;
use serde::{Deserialize, Serialize};

/// Search state of one tunable parameter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tuner {
    /// The parameter's value as last reported.
    current: Option<f64>,
    /// Objective observations at `current` since it was reported.
    sum: f64,
    n: u32,
    /// Best value measured so far and its mean objective.
    best: Option<(f64, f64)>,
    step: f64,
    direction: f64,
    /// The value last proposed (awaiting its report).
    proposed: Option<f64>,
    done: bool,
}

/// A proposal of the tuner.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    /// Value measured.
    pub from: f64,
    /// Mean objective measured at it.
    pub measured: f64,
    /// Best value and objective so far.
    pub best: (f64, f64),
    /// Value to try next.
    pub to: f64,
    /// The search has converged: `to` is the best value.
    pub converged: bool,
}

impl Tuner {
    /// The parameter's reported value. A new value restarts the measurement.
    pub fn report_value(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        if self.current.is_none_or(|c| (c - value).abs() > 1e-9) {
            self.current = Some(value);
            self.sum = 0.0;
            self.n = 0;
            if self.proposed.is_some_and(|p| (p - value).abs() < 1e-9) {
                self.proposed = None;
            }
        }
    }

    /// One observation of the objective. Returns a move once the current value has been
    /// measured well enough and the search wants another value.
    pub fn observe(&mut self, objective: f64, t: &Tunable) -> Option<Move> {
        let current = self.current?;
        if !objective.is_finite() || self.proposed.is_some() {
            return None;
        }
        self.sum += objective;
        self.n += 1;
        if self.n < t.settle_points.max(1) {
            return None;
        }
        let measured = self.sum / f64::from(self.n);
        self.sum = 0.0;
        self.n = 0;
        // Lower is better internally.
        let score = if t.minimize { measured } else { -measured };
        let range = t.max - t.min;
        if self.step == 0.0 {
            self.step = t.step.unwrap_or(range / 4.0).abs().max(f64::MIN_POSITIVE);
            self.direction = if current + self.step <= t.max {
                1.0
            } else {
                -1.0
            };
        }
        let min_step = t.min_step.unwrap_or(range / 64.0);
        let improved = self.best.is_none_or(|(_, b)| score < b);
        if improved {
            self.best = Some((current, score));
        } else {
            // Back to the best value, the other way, with half the step.
            self.direction = -self.direction;
            self.step /= 2.0;
        }
        let (best_value, best_score) = self.best.unwrap_or((current, score));
        let round = |v: f64| if t.integer { v.round() } else { v };
        let mut to = round((best_value + self.direction * self.step).clamp(t.min, t.max));
        if (to - best_value).abs() < 1e-9 {
            // At a bound: try the other side.
            self.direction = -self.direction;
            to = round((best_value + self.direction * self.step).clamp(t.min, t.max));
        }
        let converged = self.step < min_step || (to - best_value).abs() < 1e-9;
        if converged {
            self.done = true;
            to = best_value;
        }
        if self.done && (to - current).abs() < 1e-9 {
            return None;
        }
        self.proposed = Some(to);
        Some(Move {
            from: current,
            measured,
            best: (
                best_value,
                if t.minimize { best_score } else { -best_score },
            ),
            to,
            converged,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_minimum_of_a_noisy_bowl_within_bounds() {
        let t = Tunable {
            metric: "batch_size".into(),
            objective: "latency_ms".into(),
            min: 1.0,
            max: 512.0,
            settle_points: 4,
            ..Tunable::default()
        };
        // Latency is lowest at a batch size of 180.
        let objective =
            |b: f64, i: u32| 50.0 + ((b - 180.0) / 20.0).powi(2) + f64::from(i % 3) * 0.1;
        let mut tuner = Tuner::default();
        let mut value = 16.0;
        tuner.report_value(value);
        let mut moves = 0;
        for i in 0..2000 {
            if let Some(m) = tuner.observe(objective(value, i), &t) {
                assert!((t.min..=t.max).contains(&m.to));
                value = m.to;
                tuner.report_value(value);
                moves += 1;
            }
        }
        assert!(
            (value - 180.0).abs() <= 12.0,
            "ended at {value} after {moves} moves"
        );
        assert!(moves < 40, "{moves} moves");
    }

    #[test]
    fn maximizes_when_asked_and_waits_for_the_proposed_value() {
        let t = Tunable {
            metric: "pool".into(),
            objective: "throughput".into(),
            minimize: false,
            min: 1.0,
            max: 64.0,
            settle_points: 2,
            ..Tunable::default()
        };
        let mut tuner = Tuner::default();
        assert!(tuner.observe(1.0, &t).is_none(), "no value reported yet");
        tuner.report_value(8.0);
        assert!(tuner.observe(100.0, &t).is_none());
        let m = tuner.observe(100.0, &t).unwrap();
        assert_eq!((m.from, m.to), (8.0, 24.0));
        // Until the new value is reported, no further move.
        assert!(tuner.observe(500.0, &t).is_none());
        tuner.report_value(24.0);
        tuner.observe(150.0, &t);
        let m = tuner.observe(150.0, &t).unwrap();
        assert_eq!(m.best, (24.0, 150.0));
        assert_eq!(m.to, 40.0, "better: same direction");
    }
}
