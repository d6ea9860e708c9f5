//! Recommenders that size rather than scale: resource requests from usage
//! (`usage_histogram`), capacity warnings from forecasts (`capacity`), and the next value
//! of a tunable parameter (`tuner`).

use super::draft::Draft;
use super::TargetState;
use crate::event::{ActionKind, Anomaly, Direction, Evidence, Forecast};
use crate::policy::TargetPolicy;

/// Samples a usage histogram needs before it sizes anything.
const MIN_SAMPLES: u32 = 20;

/// Usage at or above this share of the request counts as pressing against it.
const SATURATION: f64 = 0.95;

/// How long a saturation signal keeps raising the sized value.
const SATURATION_MEMORY_MS: i64 = 3_600_000;

/// A forecast of one of the target's metrics.
pub(super) fn on_forecast(
    state: &mut TargetState,
    policy: &TargetPolicy,
    f: &Forecast,
    out: &mut Vec<Draft>,
) {
    if let Some(w) = &f.warning {
        let minutes = (w.eta_ms - f.generated_at_ms).max(0) / 60_000;
        out.push(Draft {
            current: f.last_value,
            proposed: w.threshold,
            confidence: w.probability,
            priority: (95 - minutes).clamp(40, 95) as i32,
            reason: format!(
                "{} {} is forecast to cross {} in about {minutes} min (probability {:.0}%), now {:.3}",
                f.target,
                f.metric,
                w.threshold,
                w.probability * 100.0,
                f.last_value
            ),
            expected_effect: "time to add capacity or free space before the threshold".into(),
            expected_benefit: policy.slo_violation_cost_per_hour * w.probability,
            evidence: vec![Evidence {
                kind: "forecast".into(),
                ref_id: f.id.clone(),
                metric: f.metric.clone(),
                value: w.threshold,
                detail: format!("crossing at {} (model {})", w.eta_ms, f.model),
            }],
            created_ms: f.generated_at_ms,
            ..Draft::blank(ActionKind::CapacityWarning, &f.metric, "", "capacity")
        });
    }
    resources(state, policy, f, out);
    tunables(state, policy, f, out);
}

/// Saturation signals: an upward anomaly of a usage metric.
pub(super) fn on_anomaly(state: &mut TargetState, policy: &TargetPolicy, a: &Anomaly) {
    if a.direction != Direction::Up {
        return;
    }
    for (name, r) in &policy.resources {
        if r.usage_metric == a.metric {
            state.usage.entry(name.clone()).or_default().saturated_ms = Some(a.timestamp_ms);
        }
    }
}

fn resources(state: &mut TargetState, policy: &TargetPolicy, f: &Forecast, out: &mut Vec<Draft>) {
    let now = f.generated_at_ms;
    let replicas = state.replicas(policy);
    for (name, r) in &policy.resources {
        if r.request_metric.as_deref() == Some(f.metric.as_str()) && f.last_value > 0.0 {
            state.requests.insert(name.clone(), f.last_value);
        }
        if r.usage_metric != f.metric || !f.last_value.is_finite() {
            continue;
        }
        let request = state.requests.get(name).copied().unwrap_or(r.current);
        let h = state.usage.entry(name.clone()).or_default();
        h.add(f.last_value, now, (r.half_life_secs * 1000) as i64);
        if f.last_value >= SATURATION * request {
            h.saturated_ms = Some(now);
        }
        if h.samples() < MIN_SAMPLES {
            continue;
        }
        let Some(p) = h.percentile(r.percentile) else {
            continue;
        };
        let saturated = h
            .saturated_ms
            .is_some_and(|t| now - t <= SATURATION_MEMORY_MS);
        let mut sized = (p * (1.0 + r.margin)).round();
        let mut why = format!(
            "p{:.0} of usage {:.0} {} + {:.0}% margin",
            r.percentile * 100.0,
            p,
            r.unit,
            r.margin * 100.0
        );
        if saturated && sized < request * 1.25 {
            // Usage pressed against the request: what it really needs is hidden.
            sized = (request * 1.25).round();
            why = format!(
                "usage reached {:.0}% of the request recently; {why}",
                SATURATION * 100.0
            );
        }
        let kind = if sized > request * (1.0 + r.tolerance) {
            ActionKind::Raise
        } else if sized < request * (1.0 - r.tolerance) && !saturated {
            ActionKind::Lower
        } else {
            continue;
        };
        let cost_delta = (sized - request) * r.cost_per_unit_hour * replicas;
        out.push(Draft {
            current: request,
            proposed: sized,
            confidence: (f64::from(h.samples()) / 100.0).min(0.95),
            priority: match (kind, saturated) {
                (ActionKind::Raise, true) => 65,
                (ActionKind::Raise, false) => 40,
                _ => 15,
            },
            reason: format!(
                "{} {name} request {} {} vs sized {} {} ({why})",
                f.target, request, r.unit, sized, r.unit
            ),
            expected_effect: if kind == ActionKind::Raise {
                format!("headroom for the p{:.0} of usage", r.percentile * 100.0)
            } else {
                format!("saves {:.2} per hour", -cost_delta)
            },
            expected_benefit: if kind == ActionKind::Raise {
                policy.slo_violation_cost_per_hour * if saturated { 0.8 } else { 0.3 }
            } else {
                -cost_delta
            },
            cost_delta_per_hour: cost_delta,
            evidence: vec![Evidence {
                kind: "usage".into(),
                ref_id: f.id.clone(),
                metric: f.metric.clone(),
                value: p,
                detail: format!(
                    "{} samples, decaying with a half-life of {} s",
                    h.samples(),
                    r.half_life_secs
                ),
            }],
            created_ms: now,
            ..Draft::blank(kind, name, &r.unit, "usage_histogram")
        });
    }
}

fn tunables(state: &mut TargetState, policy: &TargetPolicy, f: &Forecast, out: &mut Vec<Draft>) {
    for (name, t) in &policy.tunables {
        let tuner = state.tuners.entry(name.clone()).or_default();
        if f.metric == t.metric {
            tuner.report_value(f.last_value);
        }
        if f.metric != t.objective {
            continue;
        }
        let Some(m) = tuner.observe(f.last_value, t) else {
            continue;
        };
        out.push(Draft {
            current: m.from,
            proposed: m.to,
            confidence: if m.converged { 0.9 } else { 0.6 },
            priority: 30,
            reason: if m.converged {
                format!(
                    "{} {name}: the search has converged; {} gave the best {} ({:.3})",
                    f.target, m.best.0, t.objective, m.best.1
                )
            } else {
                format!(
                    "{} {name}: {} averaged {:.3} at {}; best so far {:.3} at {}; trying {} next",
                    f.target, t.objective, m.measured, m.from, m.best.1, m.best.0, m.to
                )
            },
            expected_effect: format!(
                "{} {} at {name} = {}",
                if t.minimize { "lower" } else { "higher" },
                t.objective,
                m.to
            ),
            evidence: vec![Evidence {
                kind: "outcome".into(),
                ref_id: f.id.clone(),
                metric: t.objective.clone(),
                value: m.measured,
                detail: format!(
                    "mean over {} observations at {name} = {}",
                    t.settle_points, m.from
                ),
            }],
            created_ms: f.generated_at_ms,
            ..Draft::blank(ActionKind::Tune, name, "", "tuner")
        });
    }
}
