//! Tracked accuracy of the replica recommenders, for adaptive selection.
//!
//! Every utilization forecast, each recommender says how many replicas the target needs
//! over the forecast's horizon. When the horizon has passed, the replicas that would
//! really have been right are known: the HPA rule applied to the highest utilization
//! actually observed in it. Each recommender's running mean absolute error against that
//! is its accuracy; when recommenders disagree, the more accurate one is followed.

use serde::{Deserialize, Serialize};

/// Recommenders whose accuracy is tracked, in the order of the error array.
pub const TRACKED: [&str; 2] = ["forecast_hpa", "reactive_hpa"];

/// Most proposals awaiting their outcome.
const PENDING: usize = 16;

/// Proposals scored before the error decides anything.
pub const MIN_SCORED: u32 = 3;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Awaiting {
    /// End of the horizon (event time).
    due_ms: i64,
    /// Replica count each recommender proposed.
    proposed: [f64; 2],
    /// Replicas the highest observed utilization in the horizon calls for, so far.
    needed: f64,
}

/// Per-target accuracy of the tracked recommenders.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    awaiting: Vec<Awaiting>,
    errors: [f64; 2],
    scored: u32,
}

impl Accuracy {
    /// Records what each recommender proposed at `now_ms` for the horizon ending at `due_ms`.
    pub fn propose(&mut self, due_ms: i64, proposed: [f64; 2]) {
        if self.awaiting.len() >= PENDING {
            self.awaiting.remove(0);
        }
        self.awaiting.push(Awaiting {
            due_ms,
            proposed,
            needed: 0.0,
        });
    }

    /// An observation at `now_ms`: `needed` replicas would have been right for the
    /// utilization seen then. Scores the proposals whose horizon has ended.
    pub fn observe(&mut self, now_ms: i64, needed: f64) {
        let mut i = 0;
        while i < self.awaiting.len() {
            let a = &mut self.awaiting[i];
            if now_ms <= a.due_ms {
                a.needed = a.needed.max(needed);
                i += 1;
                continue;
            }
            let mut a = self.awaiting.remove(i);
            if a.needed <= 0.0 {
                // Nothing was observed inside the horizon: the first observation after
                // it stands in.
                a.needed = needed;
            }
            if a.needed > 0.0 {
                let rate = (1.0 / f64::from(self.scored + 1)).max(0.1);
                for (e, p) in self.errors.iter_mut().zip(a.proposed) {
                    *e += rate * ((p - a.needed).abs() - *e);
                }
                self.scored = self.scored.saturating_add(1);
            }
        }
    }

    /// Mean absolute error (replicas) of each tracked recommender, once enough is scored.
    pub fn errors(&self) -> Option<[f64; 2]> {
        (self.scored >= MIN_SCORED).then_some(self.errors)
    }

    /// The recommender to follow: the lower error, the forecast before enough is known.
    pub fn best(&self) -> usize {
        match self.errors() {
            Some([f, r]) if r < f => 1,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recommender_closer_to_what_was_needed_wins() {
        let mut a = Accuracy::default();
        assert_eq!(
            a.best(),
            0,
            "the forecast is followed until errors are known"
        );
        for k in 0..10 {
            let t = k * 600_000;
            // The forecast said 6, the reactive rule 3; 6 turned out right.
            a.propose(t + 300_000, [6.0, 3.0]);
            a.observe(t + 100_000, 5.0);
            a.observe(t + 200_000, 6.0);
            a.observe(t + 400_000, 2.0);
        }
        let e = a.errors().unwrap();
        assert!(e[0] < 0.1 && e[1] > 2.5, "{e:?}");
        assert_eq!(a.best(), 0);

        let mut b = Accuracy::default();
        for k in 0..10 {
            let t = k * 600_000;
            b.propose(t + 300_000, [9.0, 4.0]);
            b.observe(t + 100_000, 4.0);
            b.observe(t + 400_000, 4.0);
        }
        assert_eq!(b.best(), 1, "{:?}", b.errors());
    }
}
