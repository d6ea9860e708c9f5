//! Recommender core (the optimization engine): per target, several recommenders read
//! the anomalies and forecasts of the target's metrics and propose actions.
//!
//! | recommender       | reads | proposes |
//! |-------------------|-------|----------|
//! | `forecast_hpa`    | utilization forecast peak | SCALE_OUT / SCALE_IN to keep the peak at the goal (HPA's rule on the forecast) |
//! | `reactive_hpa`    | utilization now | the same rule on the current value (what HPA does) |
//! | `recurring_peak`  | demand by time of day | SCALE_OUT ahead of a peak that came at this time on earlier days |
//! | `latency_anomaly` | upward latency anomalies | SCALE_OUT in proportion to value / expected |
//! | `usage_histogram` | per-replica usage | RAISE / LOWER a request: percentile of a decaying histogram + margin (VPA's rule), raised on saturation |
//! | `capacity`        | forecasts with an early warning | CAPACITY_WARNING with ETA and probability |
//! | `reclaim`         | sustained low utilization | RECLAIM, ranked by savings per hour |
//! | `tuner`           | a tunable parameter and its objective | TUNE: the next value of a pattern search |
//!
//! `forecast_hpa` and `reactive_hpa` are scored against what turned out to be needed;
//! when they disagree, the more accurate one for this target is followed (adaptive
//! selection) and the recommendation says so. Identical proposals are not repeated
//! within the target's cooldown.

mod accuracy;
mod draft;
mod recurring;
mod replicas;
mod sizing;
mod tuner;
mod usage;

pub use accuracy::Accuracy;
pub use draft::Draft;
pub use recurring::DailyDemand;
pub use replicas::hpa_desired;
pub use tuner::Tuner;
pub use usage::UsageHistogram;

use super::snapshot::Partitioned;
use super::{Insight, KeyedMap, KeyedState, RecordMeta, Stage};
use crate::event::{ActionKind, Recommendation};
use crate::policy::{Policies, TargetPolicy};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// What the recommender remembers of one target.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct TargetState {
    #[serde(skip)]
    partition: i32,
    /// Replicas reported through the policy's `replicas_metric`.
    observed_replicas: Option<f64>,
    /// Consecutive forecasts asking for fewer replicas.
    low_streak: u32,
    /// Since when utilization has stayed low enough to reclaim (event time).
    low_since: Option<i64>,
    accuracy: Accuracy,
    /// Demand by time of day (recurring peaks).
    demand: DailyDemand,
    /// Per resource: usage histogram and the reported request.
    usage: BTreeMap<String, UsageHistogram>,
    requests: BTreeMap<String, f64>,
    tuners: BTreeMap<String, Tuner>,
    /// Last proposal per (kind, resource): value and event time.
    #[serde(with = "crate::stage::snapshot::pairs")]
    last: HashMap<(ActionKind, String), (f64, i64)>,
}

impl Partitioned for TargetState {
    fn partition(&self) -> i32 {
        self.partition
    }
    fn set_partition(&mut self, partition: i32) {
        self.partition = partition;
    }
    fn well_formed(&self) -> bool {
        self.demand.well_formed() && self.usage.values().all(UsageHistogram::well_formed)
    }
}

impl TargetState {
    fn replicas(&self, policy: &TargetPolicy) -> f64 {
        self.observed_replicas
            .unwrap_or(f64::from(policy.replicas))
            .max(1.0)
    }
}

/// Targets whose state a recommender holds at most (see [`Recommender::with_max_targets`]).
pub const MAX_TARGETS: usize = 100_000;

/// The recommender stage core.
#[derive(Debug)]
pub struct Recommender {
    policies: Policies,
    targets: KeyedMap<TargetState>,
    repeats_suppressed: u64,
}

impl Recommender {
    /// A recommender over the given target policies, holding at most [`MAX_TARGETS`].
    pub fn new(policies: Policies) -> Self {
        Self::with_max_targets(policies, MAX_TARGETS)
    }

    /// A recommender holding the state of at most `max_targets` targets: a new one
    /// past it evicts the least recently heard of (counted as `targets_evicted`).
    pub fn with_max_targets(policies: Policies, max_targets: usize) -> Self {
        Recommender {
            policies,
            targets: KeyedMap::new(max_targets),
            repeats_suppressed: 0,
        }
    }

    /// Handles one insight; returns the recommendations it warrants.
    pub fn observe(&mut self, insight: &Insight, partition: i32) -> Vec<Recommendation> {
        let (target, reported_pool) = match insight {
            Insight::Anomaly(a) => (&a.target, &a.pool),
            Insight::Forecast(f) => (&f.target, &f.pool),
        };
        let policy = self.policies.get(target);
        let state = self.targets.entry(target, partition);
        let mut drafts = Vec::new();
        match insight {
            Insight::Forecast(f) => {
                replicas::on_forecast(state, policy, f, &mut drafts);
                sizing::on_forecast(state, policy, f, &mut drafts);
            }
            Insight::Anomaly(a) => {
                replicas::on_anomaly(state, policy, a, &mut drafts);
                sizing::on_anomaly(state, policy, a);
            }
        }
        let pool = policy.pool.clone().unwrap_or_else(|| reported_pool.clone());
        let mut out = Vec::new();
        for d in drafts {
            // The same proposal is not repeated within the cooldown of its kind (for a
            // reclaim report: within its sustain period).
            let quiet = if d.kind == ActionKind::Reclaim {
                (policy.reclaim_after_secs * 1000) as i64
            } else {
                policy.cooldown_ms(d.kind)
            };
            let key = (d.kind, d.resource.clone());
            if let Some(&(value, at)) = state.last.get(&key) {
                if (value - d.proposed).abs() < 1e-9 && d.created_ms - at < quiet {
                    self.repeats_suppressed += 1;
                    continue;
                }
            }
            state.last.insert(key, (d.proposed, d.created_ms));
            out.push(d.finish(target, pool.clone(), policy));
        }
        out
    }
}

impl Stage for Recommender {
    type Input = Insight;
    type Output = Recommendation;

    fn name(&self) -> &'static str {
        "recommender"
    }

    fn process(&mut self, input: Insight, meta: &RecordMeta, out: &mut Vec<Recommendation>) {
        out.extend(self.observe(&input, meta.partition));
    }

    fn partitions_revoked(&mut self, partitions: &[i32]) {
        self.targets.drop_partitions(partitions);
    }

    fn active_series(&self) -> usize {
        self.targets.len()
    }

    fn state(&mut self) -> Option<&mut dyn KeyedState> {
        Some(&mut self.targets)
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("repeats_suppressed", self.repeats_suppressed),
            ("targets_evicted", self.targets.evicted()),
        ]
    }
}

#[cfg(test)]
mod tests;
