//! Recommender core: joins anomalies and forecasts per target and proposes replica
//! changes with the HPA rule, desired = ceil(current × observed / goal).
//!
//! - forecast peak utilization above goal × (1 + tolerance) → scale out;
//! - forecast peak below goal × (1 − tolerance) for `scale_in_after` forecasts in a row
//!   → scale in;
//! - an upward latency anomaly of warning severity or worse → scale out;
//! - a forecast of the `replicas_metric` tells the current replica count.

use super::{Insight, RecordMeta, Stage};
use crate::analytics::stats::{normal_cdf, stable_hash, z_for_level};
use crate::config::{Policies, TargetPolicy};
use crate::event::{ActionKind, Anomaly, Direction, Evidence, Forecast, Recommendation, Severity};
use std::collections::HashMap;

#[derive(Debug, Clone, Default)]
struct TargetState {
    partition: i32,
    observed_replicas: Option<i32>,
    low_streak: u32,
    /// Last proposal: kind, replicas, event time. Identical proposals are not repeated
    /// within the target's cooldown.
    last: Option<(ActionKind, i32, i64)>,
}

/// The recommender stage core.
#[derive(Debug)]
pub struct Recommender {
    policies: Policies,
    targets: HashMap<String, TargetState>,
    repeats_suppressed: u64,
}

impl Recommender {
    /// A recommender over the given target policies.
    pub fn new(policies: Policies) -> Self {
        Recommender {
            policies,
            targets: HashMap::new(),
            repeats_suppressed: 0,
        }
    }

    /// Handles one insight; returns a recommendation when one is warranted.
    pub fn observe(&mut self, insight: &Insight, partition: i32) -> Option<Recommendation> {
        let target = match insight {
            Insight::Anomaly(a) => &a.target,
            Insight::Forecast(f) => &f.target,
        };
        let policy = self.policies.get(target).clone();
        let state = self.targets.entry(target.clone()).or_default();
        state.partition = partition;
        let rec = match insight {
            Insight::Forecast(f) => on_forecast(state, &policy, f),
            Insight::Anomaly(a) => on_anomaly(state, &policy, a),
        }?;
        let cooldown_ms = (policy.cooldown_secs * 1000) as i64;
        if let Some((kind, replicas, at)) = state.last {
            if kind == rec.kind
                && replicas == rec.proposed_replicas
                && rec.created_ms - at < cooldown_ms
            {
                self.repeats_suppressed += 1;
                return None;
            }
        }
        state.last = Some((rec.kind, rec.proposed_replicas, rec.created_ms));
        Some(rec)
    }
}

fn current_replicas(state: &TargetState, policy: &TargetPolicy) -> i32 {
    state.observed_replicas.unwrap_or(policy.replicas).max(1)
}

fn pool_of(policy: &TargetPolicy, reported: &str) -> String {
    policy.pool.clone().unwrap_or_else(|| reported.to_string())
}

/// HPA's rule: the replicas that bring `observed` utilization to `goal`.
pub fn hpa_desired(current: i32, observed: f64, goal: f64) -> i32 {
    let desired = (f64::from(current) * observed / goal).ceil();
    desired.clamp(1.0, 100_000.0) as i32
}

#[allow(clippy::too_many_arguments)]
fn recommendation(
    target: &str,
    pool: String,
    kind: ActionKind,
    current: i32,
    proposed: i32,
    confidence: f64,
    priority: i32,
    reason: String,
    expected_effect: String,
    evidence: Evidence,
    created_ms: i64,
    policy: &TargetPolicy,
) -> Recommendation {
    let id = format!(
        "rec-{:016x}",
        stable_hash(&[
            target.as_bytes(),
            kind.as_str().as_bytes(),
            &proposed.to_le_bytes(),
            evidence.ref_id.as_bytes(),
        ])
    );
    Recommendation {
        id,
        target: target.to_string(),
        pool,
        kind,
        current_replicas: current,
        proposed_replicas: proposed,
        confidence: confidence.clamp(0.0, 1.0),
        priority: priority.clamp(0, 100),
        reason,
        expected_effect,
        evidence: vec![evidence],
        created_ms,
        expires_ms: created_ms + (policy.recommendation_ttl_secs * 1000) as i64,
    }
}

fn on_forecast(
    state: &mut TargetState,
    policy: &TargetPolicy,
    f: &Forecast,
) -> Option<Recommendation> {
    if f.metric == policy.replicas_metric {
        if f.last_value.is_finite() && f.last_value >= 1.0 {
            state.observed_replicas = Some(f.last_value.round() as i32);
        }
        return None;
    }
    if f.metric != policy.utilization_metric {
        return None;
    }
    let peak = f.peak()?;
    let goal = policy.utilization_goal;
    let current = current_replicas(state, policy);
    let desired = hpa_desired(current, peak.value, goal);
    // The spread of the peak's interval gives the probability that the real peak lies
    // beyond the goal: the recommendation's confidence.
    let sd = ((peak.upper - peak.lower) / (2.0 * z_for_level(f.interval_level))).max(1e-9);
    let evidence = Evidence {
        kind: "forecast".into(),
        ref_id: f.id.clone(),
        metric: f.metric.clone(),
        value: peak.value,
        detail: format!(
            "forecast peak {:.3} (interval {:.3}..{:.3}) at {} over a {}-step horizon, goal {:.2}",
            peak.value,
            peak.lower,
            peak.upper,
            peak.timestamp_ms,
            f.points.len(),
            goal
        ),
    };
    let after = peak.value * f64::from(current) / f64::from(desired.max(1));
    if peak.value > goal * (1.0 + policy.tolerance) && desired > current {
        state.low_streak = 0;
        let over = ((peak.value - goal) / goal).min(1.0);
        return Some(recommendation(
            &f.target,
            pool_of(policy, &f.pool),
            ActionKind::ScaleOut,
            current,
            desired,
            normal_cdf((peak.value - goal) / sd),
            50 + (40.0 * over) as i32,
            format!(
                "{} is forecast to reach {:.0}% utilization (goal {:.0}%) within {} s",
                f.target,
                peak.value * 100.0,
                goal * 100.0,
                (peak.timestamp_ms - f.generated_at_ms) / 1000
            ),
            format!(
                "peak utilization about {:.0}% on {} replicas",
                after * 100.0,
                desired
            ),
            evidence,
            f.generated_at_ms,
            policy,
        ));
    }
    if peak.value < goal * (1.0 - policy.tolerance) && desired < current {
        state.low_streak += 1;
        if state.low_streak < policy.scale_in_after {
            return None;
        }
        return Some(recommendation(
            &f.target,
            pool_of(policy, &f.pool),
            ActionKind::ScaleIn,
            current,
            desired,
            normal_cdf((goal - peak.value) / sd),
            20,
            format!(
                "{} is forecast to stay at or below {:.0}% utilization (goal {:.0}%) for {} forecasts in a row",
                f.target,
                peak.value * 100.0,
                goal * 100.0,
                state.low_streak
            ),
            format!("peak utilization about {:.0}% on {} replicas", after * 100.0, desired),
            evidence,
            f.generated_at_ms,
            policy,
        ));
    }
    state.low_streak = 0;
    None
}

fn on_anomaly(
    state: &mut TargetState,
    policy: &TargetPolicy,
    a: &Anomaly,
) -> Option<Recommendation> {
    if a.metric != policy.latency_metric
        || a.direction != Direction::Up
        || a.severity == Severity::Info
    {
        return None;
    }
    let current = current_replicas(state, policy);
    let ratio = if a.expected > 0.0 {
        (a.value / a.expected).min(2.0)
    } else {
        2.0
    };
    let desired = hpa_desired(current, ratio, 1.0).max(current + 1);
    let priority = if a.severity == Severity::Critical {
        90
    } else {
        70
    };
    Some(recommendation(
        &a.target,
        pool_of(policy, &a.pool),
        ActionKind::ScaleOut,
        current,
        desired,
        a.score,
        priority,
        format!(
            "{} {} rose to {:.1} where {:.1} was expected ({:?} anomaly)",
            a.target, a.metric, a.value, a.expected, a.severity
        ),
        format!(
            "latency back toward {:.1} with {} replicas",
            a.expected, desired
        ),
        Evidence {
            kind: "anomaly".into(),
            ref_id: a.id.clone(),
            metric: a.metric.clone(),
            value: a.value,
            detail: a.reason.clone(),
        },
        a.timestamp_ms,
        policy,
    ))
}

impl Stage for Recommender {
    type Input = Insight;
    type Output = Recommendation;

    fn name(&self) -> &'static str {
        "recommender"
    }

    fn process(&mut self, input: Insight, meta: &RecordMeta, out: &mut Vec<Recommendation>) {
        if let Some(r) = self.observe(&input, meta.partition) {
            out.push(r);
        }
    }

    fn partitions_revoked(&mut self, partitions: &[i32]) {
        self.targets
            .retain(|_, s| !partitions.contains(&s.partition));
    }

    fn active_series(&self) -> usize {
        self.targets.len()
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![("repeats_suppressed", self.repeats_suppressed)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ForecastPoint;

    fn forecast(metric: &str, peak: f64, at: i64) -> Forecast {
        Forecast {
            id: format!("fc-{at}"),
            target: "api".into(),
            pool: "web".into(),
            metric: metric.into(),
            labels: Default::default(),
            generated_at_ms: at,
            last_value: peak,
            model: "holt".into(),
            step_ms: 60_000,
            interval_level: 0.9,
            points: (1..=5)
                .map(|h| ForecastPoint {
                    timestamp_ms: at + h * 60_000,
                    value: peak - 0.01 * (5 - h) as f64,
                    lower: peak - 0.05,
                    upper: peak + 0.05,
                })
                .collect(),
            warning: None,
        }
    }

    fn anomaly(metric: &str, severity: Severity, direction: Direction) -> Anomaly {
        Anomaly {
            id: "a1".into(),
            target: "api".into(),
            pool: "web".into(),
            metric: metric.into(),
            labels: Default::default(),
            timestamp_ms: 1_000,
            value: 300.0,
            expected: 100.0,
            lower: 80.0,
            upper: 120.0,
            score: 0.9,
            severity,
            direction,
            detectors: vec!["robust_zscore".into()],
            reason: "r".into(),
        }
    }

    #[test]
    fn hpa_rule() {
        assert_eq!(hpa_desired(4, 0.9, 0.6), 6);
        assert_eq!(hpa_desired(4, 0.6, 0.6), 4);
        assert_eq!(hpa_desired(10, 0.1, 0.6), 2);
    }

    #[test]
    fn forecast_above_goal_scales_out_with_evidence() {
        let mut r = Recommender::new(Policies::default());
        let rec = r
            .observe(&Insight::Forecast(forecast("cpu_utilization", 0.9, 0)), 0)
            .unwrap();
        assert_eq!(
            (rec.kind, rec.current_replicas, rec.proposed_replicas),
            (ActionKind::ScaleOut, 2, 3)
        );
        assert_eq!(rec.pool, "web");
        assert_eq!(rec.evidence[0].ref_id, "fc-0");
        assert!(
            rec.confidence > 0.99,
            "peak far above goal: {}",
            rec.confidence
        );
        assert!(rec.expires_ms > rec.created_ms);
        // The same proposal is not repeated within the cooldown...
        assert!(r
            .observe(
                &Insight::Forecast(forecast("cpu_utilization", 0.9, 60_000)),
                0
            )
            .is_none());
        // ...but is after it.
        assert!(r
            .observe(
                &Insight::Forecast(forecast("cpu_utilization", 0.9, 400_000)),
                0
            )
            .is_some());
    }

    #[test]
    fn within_tolerance_no_action_and_scale_in_needs_a_sustained_low() {
        let mut r = Recommender::new(Policies::default());
        assert!(r
            .observe(&Insight::Forecast(forecast("cpu_utilization", 0.64, 0)), 0)
            .is_none());
        let low: Vec<_> = (0..3)
            .filter_map(|i| {
                r.observe(
                    &Insight::Forecast(forecast("cpu_utilization", 0.2, i * 60_000)),
                    0,
                )
            })
            .collect();
        assert_eq!(
            low.len(),
            1,
            "only the third low forecast in a row proposes"
        );
        assert_eq!(
            (low[0].kind, low[0].proposed_replicas),
            (ActionKind::ScaleIn, 1)
        );
    }

    #[test]
    fn reported_replicas_are_used_as_current() {
        let mut r = Recommender::new(Policies::default());
        r.observe(&Insight::Forecast(forecast("replicas", 5.0, 0)), 0);
        let rec = r
            .observe(&Insight::Forecast(forecast("cpu_utilization", 0.9, 0)), 0)
            .unwrap();
        assert_eq!((rec.current_replicas, rec.proposed_replicas), (5, 8));
    }

    #[test]
    fn latency_anomalies_table() {
        let cases = [
            (
                "latency_p99_ms",
                Severity::Critical,
                Direction::Up,
                Some(90),
            ),
            ("latency_p99_ms", Severity::Warning, Direction::Up, Some(70)),
            ("latency_p99_ms", Severity::Info, Direction::Up, None),
            ("latency_p99_ms", Severity::Critical, Direction::Down, None),
            ("cpu_utilization", Severity::Critical, Direction::Up, None),
        ];
        for (metric, sev, dir, want) in cases {
            let mut r = Recommender::new(Policies::default());
            let got = r.observe(&Insight::Anomaly(anomaly(metric, sev, dir)), 0);
            assert_eq!(
                got.as_ref().map(|g| g.priority),
                want,
                "{metric} {sev:?} {dir:?}"
            );
            if let Some(g) = got {
                assert_eq!(g.proposed_replicas, 4, "value/expected capped at 2×");
            }
        }
    }
}
