//! Replica recommenders: the HPA rule on the forecast peak (`forecast_hpa`) and on the
//! current value (`reactive_hpa`), chosen per target by tracked accuracy; scale-out on
//! latency anomalies; reclaim reports for sustained over-provisioning.

use super::accuracy::TRACKED;
use super::draft::Draft;
use super::TargetState;
use crate::analytics::stats::{normal_cdf, z_for_level};
use crate::event::{
    ActionKind, Anomaly, Direction, Evidence, Forecast, ForecastPoint, Severity, REPLICAS,
};
use crate::policy::TargetPolicy;

/// HPA's rule: the replicas that bring `observed` utilization to `goal`.
pub fn hpa_desired(current: i32, observed: f64, goal: f64) -> i32 {
    let desired = (f64::from(current) * observed / goal).ceil();
    desired.clamp(1.0, 100_000.0) as i32
}

fn hpa(current: f64, observed: f64, goal: f64) -> f64 {
    f64::from(hpa_desired(current.round() as i32, observed, goal))
}

/// The fewest replicas that carry `demand` (in replicas at 100 % utilization) inside the
/// tolerance band around the goal. A recurring peak is prepared for with these: the
/// band is what the operator accepts, and sizing for its top rather than for the goal
/// itself saves a replica on most peaks (on 20 M4 series as demand in `simulate`, 3 %
/// of the cost). A peak that comes higher than on earlier days leaves the band and
/// the forecast or reactive rule adds the rest, as it would without preparation.
fn within_band(demand: f64, band_top: f64) -> f64 {
    (demand / band_top).ceil().max(1.0)
}

fn draft(kind: ActionKind, current: f64, proposed: f64, recommender: &'static str) -> Draft {
    Draft {
        current,
        proposed,
        ..Draft::blank(kind, REPLICAS, "replicas", recommender)
    }
}

/// A forecast of one of the target's metrics.
pub(super) fn on_forecast(
    state: &mut TargetState,
    policy: &TargetPolicy,
    f: &Forecast,
    out: &mut Vec<Draft>,
) {
    if f.metric == policy.replicas_metric {
        if f.last_value.is_finite() && f.last_value >= 1.0 {
            state.observed_replicas = Some(f.last_value.round());
        }
        return;
    }
    if f.metric != policy.utilization_metric {
        return;
    }
    let Some(peak) = f.peak() else { return };
    if !peak.value.is_finite() || !f.last_value.is_finite() {
        return;
    }
    let goal = policy.utilization_goal;
    // The top of the tolerance band: above it the target needs more replicas.
    let band_top = goal * (1.0 + policy.tolerance);
    let current = state.replicas(policy);
    let now = f.generated_at_ms;

    // Score the recommenders against what is needed now, then record their proposals.
    state
        .accuracy
        .observe(now, hpa(current, f.last_value, goal));
    let by_forecast = hpa(current, peak.value, goal);
    let by_now = hpa(current, f.last_value, goal);
    let horizon_end = f.points.last().map_or(now, |p| p.timestamp_ms);
    state.accuracy.propose(horizon_end, [by_forecast, by_now]);

    reclaim(state, policy, f, &peak, current, out);

    // A peak that recurs at this time of day, within the lead time: prepare for it.
    state.demand.observe(now, f.last_value * current);
    let lead_ms = (policy.prescale_lead_secs * 1000) as i64;
    let recurring = state
        .demand
        .ahead(now, lead_ms)
        .map(|(demand, at, days)| (within_band(demand, band_top), at, days));

    // Which signal to follow: both agree, or the more accurate one decides. The present
    // is not a forecast: when utilization is over the band now, never propose fewer
    // replicas than the current load needs, nor wait because the forecast peak is
    // inside the band (a forecast that expects the load to ease, as it did before).
    let overloaded_now = f.last_value > band_top;
    let forecast_in_band = peak.value <= band_top;
    let chosen = if overloaded_now && (by_now > by_forecast || forecast_in_band) {
        1
    } else if (by_forecast - by_now).abs() < 0.5 {
        0
    } else {
        state.accuracy.best()
    };
    let name = TRACKED[chosen];
    let (desired, observed) = if chosen == 0 {
        (by_forecast, peak.value)
    } else {
        (by_now, f.last_value)
    };
    let selection = match state.accuracy.errors() {
        Some([ef, er]) if (by_forecast - by_now).abs() >= 0.5 => format!(
            "; followed {name} over {} (mean error {:.1} vs {:.1} replicas)",
            TRACKED[1 - chosen],
            [ef, er][chosen],
            [ef, er][1 - chosen]
        ),
        _ => String::new(),
    };
    // The spread of the peak's interval gives the probability that the real peak lies
    // beyond the goal: the recommendation's confidence.
    let sd = ((peak.upper - peak.lower) / (2.0 * z_for_level(f.interval_level))).max(1e-9);
    let evidence = vec![Evidence {
        kind: "forecast".into(),
        ref_id: f.id.clone(),
        metric: f.metric.clone(),
        value: observed,
        detail: format!(
            "forecast peak {:.3} (interval {:.3}..{:.3}) at {}, now {:.3}, over a {}-step horizon, goal {:.2}",
            peak.value,
            peak.lower,
            peak.upper,
            peak.timestamp_ms,
            f.last_value,
            f.points.len(),
            goal
        ),
    }];
    let after = observed * current / desired.max(1.0);
    let cost = policy.cost_per_replica_hour;
    let out_needed = observed > band_top && desired > current;
    if let Some((needed, at, days)) = recurring {
        if needed > current && (!out_needed || needed > desired) {
            state.low_streak = 0;
            let clock = format!("{:02}:{:02}", at / 3_600_000, at / 60_000 % 60);
            out.push(Draft {
                confidence: 0.8,
                priority: 60,
                reason: format!(
                    "{} needed about {needed} replicas at {clock} UTC on each of the last {days} days; preparing {} min ahead",
                    f.target,
                    lead_ms / 60_000
                ),
                expected_effect: format!(
                    "utilization near the goal of {:.0}% when the recurring peak comes",
                    goal * 100.0
                ),
                expected_benefit: policy.slo_violation_cost_per_hour * 0.8,
                cost_delta_per_hour: (needed - current) * cost,
                evidence,
                created_ms: now,
                ..draft(ActionKind::ScaleOut, current, needed, "recurring_peak")
            });
            return;
        }
    }
    if out_needed {
        state.low_streak = 0;
        let over = ((observed - goal) / goal).min(1.0);
        let confidence = if chosen == 0 {
            normal_cdf((peak.value - goal) / sd)
        } else {
            0.9
        };
        out.push(Draft {
            confidence,
            priority: 50 + (40.0 * over) as i32,
            reason: format!(
                "{} is {} {:.0}% utilization (goal {:.0}%){}{selection}",
                f.target,
                if chosen == 0 {
                    "forecast to reach"
                } else {
                    "at"
                },
                observed * 100.0,
                goal * 100.0,
                if chosen == 0 {
                    format!(" within {} s", (peak.timestamp_ms - now) / 1000)
                } else {
                    String::new()
                }
            ),
            expected_effect: format!(
                "peak utilization about {:.0}% on {desired} replicas",
                after * 100.0
            ),
            expected_benefit: policy.slo_violation_cost_per_hour * confidence,
            cost_delta_per_hour: (desired - current) * cost,
            evidence,
            created_ms: now,
            ..draft(ActionKind::ScaleOut, current, desired, name)
        });
        return;
    }
    // A removal is sized for the upper bound of the forecast peak (and never below what
    // the present load needs): it must not bring the target straight back over the goal.
    // Nor just before a recurring peak (within four lead times).
    let desired = if desired < current {
        let upcoming = state
            .demand
            .ahead(now, 4 * lead_ms)
            .map_or(0.0, |(demand, _, _)| within_band(demand, band_top));
        desired
            .max(hpa(current, peak.upper.max(f.last_value), goal))
            .max(upcoming)
    } else {
        desired
    };
    if observed < goal * (1.0 - policy.tolerance) && desired < current {
        state.low_streak += 1;
        if state.low_streak < policy.scale_in_after {
            return;
        }
        out.push(Draft {
            confidence: normal_cdf((goal - peak.value) / sd),
            priority: 20,
            reason: format!(
                "{} is forecast to stay at or below {:.0}% utilization (goal {:.0}%) for {} forecasts in a row{selection}",
                f.target,
                observed * 100.0,
                goal * 100.0,
                state.low_streak
            ),
            expected_effect: format!(
                "peak utilization about {:.0}% on {desired} replicas",
                after * 100.0
            ),
            expected_benefit: (current - desired) * cost,
            cost_delta_per_hour: (desired - current) * cost,
            evidence,
            created_ms: now,
            ..draft(ActionKind::ScaleIn, current, desired, name)
        });
        return;
    }
    state.low_streak = 0;
}

/// Sustained over-provisioning: the forecast peak below goal × `reclaim_ratio` for
/// `reclaim_after_secs`. Reported with the savings per hour; the priority grows with
/// the savings, so reclaim reports sort by what they are worth.
fn reclaim(
    state: &mut TargetState,
    policy: &TargetPolicy,
    f: &Forecast,
    peak: &ForecastPoint,
    current: f64,
    out: &mut Vec<Draft>,
) {
    let goal = policy.utilization_goal;
    let now = f.generated_at_ms;
    if peak.upper >= goal * policy.reclaim_ratio {
        state.low_since = None;
        return;
    }
    let since = *state.low_since.get_or_insert(now);
    let lasted = now - since;
    let enough = hpa(current, peak.upper, goal).max(f64::from(policy.min_replicas).max(1.0));
    if lasted < (policy.reclaim_after_secs * 1000) as i64 || enough >= current {
        return;
    }
    let savings = (current - enough) * policy.cost_per_replica_hour;
    out.push(Draft {
        confidence: 0.9,
        priority: (10.0 + 12.0 * (1.0 + savings).log2()).min(60.0) as i32,
        reason: format!(
            "{} has stayed below {:.0}% utilization (upper bound of the forecast peak) for {} min; {} replicas would carry it at the goal of {:.0}%",
            f.target,
            goal * policy.reclaim_ratio * 100.0,
            lasted / 60_000,
            enough,
            goal * 100.0
        ),
        expected_effect: format!("saves {savings:.2} per hour"),
        expected_benefit: savings,
        cost_delta_per_hour: -savings,
        evidence: vec![Evidence {
            kind: "forecast".into(),
            ref_id: f.id.clone(),
            metric: f.metric.clone(),
            value: peak.upper,
            detail: format!("upper bound of the forecast peak {:.3} since {since}", peak.upper),
        }],
        created_ms: now,
        ..draft(ActionKind::Reclaim, current, enough, "reclaim")
    });
}

/// An anomaly of one of the target's metrics.
pub(super) fn on_anomaly(
    state: &mut TargetState,
    policy: &TargetPolicy,
    a: &Anomaly,
    out: &mut Vec<Draft>,
) {
    if a.metric != policy.latency_metric
        || a.direction != Direction::Up
        || a.severity == Severity::Info
    {
        return;
    }
    let current = state.replicas(policy);
    let ratio = if a.expected > 0.0 {
        (a.value / a.expected).min(2.0)
    } else {
        2.0
    };
    let desired = hpa(current, ratio, 1.0).max(current + 1.0);
    let priority = if a.severity == Severity::Critical {
        90
    } else {
        70
    };
    out.push(Draft {
        confidence: a.score,
        priority,
        reason: format!(
            "{} {} rose to {:.1} where {:.1} was expected ({:?} anomaly)",
            a.target, a.metric, a.value, a.expected, a.severity
        ),
        expected_effect: format!(
            "latency back toward {:.1} with {desired} replicas",
            a.expected
        ),
        expected_benefit: policy.slo_violation_cost_per_hour * a.score,
        cost_delta_per_hour: (desired - current) * policy.cost_per_replica_hour,
        evidence: vec![Evidence {
            kind: "anomaly".into(),
            ref_id: a.id.clone(),
            metric: a.metric.clone(),
            value: a.value,
            detail: a.reason.clone(),
        }],
        created_ms: a.timestamp_ms,
        ..draft(ActionKind::ScaleOut, current, desired, "latency_anomaly")
    });
}
