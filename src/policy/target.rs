//! Target policies: how one target may be scaled, resized and tuned, and what it costs.

use crate::config_error::ConfigError;
use crate::event::ActionKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How one target is scaled. Every field has a default; `[defaults]` changes them for
/// all targets and `[targets.NAME]` for one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetPolicy {
    /// Pool (budget unit) of the target; when unset, the pool the agent reported, or the
    /// target itself.
    pub pool: Option<String>,
    /// Replicas the target runs when no `replicas_metric` has been seen. Default 2.
    pub replicas: i32,
    /// Fewest replicas allowed. Default 1.
    pub min_replicas: i32,
    /// Most replicas allowed. Default 10.
    pub max_replicas: i32,
    /// Metric holding per-replica utilization as a ratio (0..1). Default `cpu_utilization`.
    pub utilization_metric: String,
    /// Utilization to keep the forecast peak at. Default 0.6.
    pub utilization_goal: f64,
    /// No action while the forecast peak is within this fraction of the goal (HPA's
    /// tolerance). Default 0.1.
    pub tolerance: f64,
    /// Consecutive low forecasts before a scale-in is proposed. Default 3.
    pub scale_in_after: u32,
    /// Latency metric whose upward anomalies call for a scale-out. Default `latency_p99_ms`.
    pub latency_metric: String,
    /// Metric through which an agent reports the current replica count. Default `replicas`.
    pub replicas_metric: String,
    /// Minimum event time between an approved change of a resource and the next one.
    /// Default 300 s; `cooldowns` sets it per action kind.
    pub cooldown_secs: u64,
    /// Cooldown per action kind, e.g. `{ scale_out = 60, scale_in = 600 }`.
    pub cooldowns: BTreeMap<String, u64>,
    /// A scale-in goes no lower than the highest replica count proposed for the target
    /// in this much event time (HPA's scale-down stabilization). Default 300 s.
    pub scale_in_stabilization_secs: u64,
    /// Most replicas one action adds. Default 10.
    pub max_scale_out_step: i32,
    /// Most replicas one action removes. Default 2.
    pub max_scale_in_step: i32,
    /// Largest relative change of a resource (requests) by one action. Default 0.5.
    pub max_resource_step: f64,
    /// How long a recommendation stays actionable (event time). Default 600 s.
    pub recommendation_ttl_secs: u64,
    /// How far ahead a peak that recurs at the same time every day is prepared for
    /// (cover the start-up time of a replica). Default 900 s.
    pub prescale_lead_secs: u64,
    /// Report decisions for this target but do not act. Default false.
    pub dry_run: bool,
    /// Cost of one replica for one hour, in any unit used consistently. Default 1.
    pub cost_per_replica_hour: f64,
    /// Cost of one hour of SLO violation (what capacity that avoids one is worth). Default 20.
    pub slo_violation_cost_per_hour: f64,
    /// Forecast peak utilization below goal × this ratio, sustained for
    /// `reclaim_after_secs`, is over-provisioning worth reclaiming. Default 0.5.
    pub reclaim_ratio: f64,
    /// How long over-provisioning must last before a reclaim is reported. Default 3600 s.
    pub reclaim_after_secs: u64,
    /// Per-replica resources sized from usage (VPA-like), by resource name
    /// (`cpu_millicores`, `memory_mib`, ...). Default none.
    pub resources: BTreeMap<String, ResourcePolicy>,
    /// Parameters tuned online, by parameter name. Default none.
    pub tunables: BTreeMap<String, Tunable>,
}

impl Default for TargetPolicy {
    fn default() -> Self {
        TargetPolicy {
            pool: None,
            replicas: 2,
            min_replicas: 1,
            max_replicas: 10,
            utilization_metric: "cpu_utilization".into(),
            utilization_goal: 0.6,
            tolerance: 0.1,
            scale_in_after: 3,
            latency_metric: "latency_p99_ms".into(),
            replicas_metric: "replicas".into(),
            cooldown_secs: 300,
            cooldowns: BTreeMap::new(),
            scale_in_stabilization_secs: 300,
            max_scale_out_step: 10,
            max_scale_in_step: 2,
            max_resource_step: 0.5,
            recommendation_ttl_secs: 600,
            prescale_lead_secs: 900,
            dry_run: false,
            cost_per_replica_hour: 1.0,
            slo_violation_cost_per_hour: 20.0,
            reclaim_ratio: 0.5,
            reclaim_after_secs: 3600,
            resources: BTreeMap::new(),
            tunables: BTreeMap::new(),
        }
    }
}

/// A per-replica resource sized from its usage: the `percentile` of a decaying
/// histogram of usage plus `margin` (VPA's rule), raised further on saturation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResourcePolicy {
    /// Metric of per-replica usage in the resource's unit, e.g. `cpu_millicores_used`.
    pub usage_metric: String,
    /// Metric through which the agent reports the current request (optional).
    pub request_metric: Option<String>,
    /// The request when no `request_metric` has been seen.
    pub current: f64,
    /// Smallest request allowed.
    pub min: f64,
    /// Largest request allowed.
    pub max: f64,
    /// Usage percentile sized for. Default 0.9.
    pub percentile: f64,
    /// Safety margin over the percentile. Default 0.15.
    pub margin: f64,
    /// Half-life of the usage histogram's weights (event time). Default 86 400 s.
    pub half_life_secs: u64,
    /// No change while the sized value is within this fraction of the request. Default 0.15.
    pub tolerance: f64,
    /// Cost of one unit for one hour (per replica). Default 0.
    pub cost_per_unit_hour: f64,
    /// Unit shown in recommendations. Default empty.
    pub unit: String,
}

impl Default for ResourcePolicy {
    fn default() -> Self {
        ResourcePolicy {
            usage_metric: String::new(),
            request_metric: None,
            current: 0.0,
            min: 0.0,
            max: f64::MAX,
            percentile: 0.9,
            margin: 0.15,
            half_life_secs: 86_400,
            tolerance: 0.15,
            cost_per_unit_hour: 0.0,
            unit: String::new(),
        }
    }
}

/// A parameter tuned online: the agent reports its value through `metric`, and the
/// `objective` metric judges each value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tunable {
    /// Metric through which the agent reports the parameter's current value.
    pub metric: String,
    /// Metric the parameter should improve.
    pub objective: String,
    /// Lower objective is better (latency); false for throughput. Default true.
    pub minimize: bool,
    /// Smallest value allowed.
    pub min: f64,
    /// Largest value allowed.
    pub max: f64,
    /// First step of the search, in the parameter's unit. Default (max − min) / 4.
    pub step: Option<f64>,
    /// Smallest step worth trying; the search stops below it. Default (max − min) / 64.
    pub min_step: Option<f64>,
    /// Objective observations needed to judge a value. Default 5.
    pub settle_points: u32,
    /// Values are whole numbers (batch and pool sizes). Default true.
    pub integer: bool,
}

impl Default for Tunable {
    fn default() -> Self {
        Tunable {
            metric: String::new(),
            objective: String::new(),
            minimize: true,
            min: 0.0,
            max: 0.0,
            step: None,
            min_step: None,
            settle_points: 5,
            integer: true,
        }
    }
}

impl TargetPolicy {
    /// The cooldown of an action kind.
    pub fn cooldown_ms(&self, kind: ActionKind) -> i64 {
        let secs = self
            .cooldowns
            .get(kind.as_str())
            .copied()
            .unwrap_or(self.cooldown_secs);
        (secs * 1000) as i64
    }

    /// Bounds of a resource (`replicas`, a sized resource or a tunable).
    pub fn bounds(&self, resource: &str) -> (f64, f64) {
        if resource == crate::event::REPLICAS {
            return (f64::from(self.min_replicas), f64::from(self.max_replicas));
        }
        if let Some(r) = self.resources.get(resource) {
            return (r.min, r.max);
        }
        if let Some(t) = self.tunables.get(resource) {
            return (t.min, t.max);
        }
        (f64::MIN, f64::MAX)
    }

    /// Cost per hour of one unit of a resource, for all replicas (replicas: per replica).
    pub fn unit_cost_per_hour(&self, resource: &str, replicas: f64) -> f64 {
        if resource == crate::event::REPLICAS {
            return self.cost_per_replica_hour;
        }
        self.resources
            .get(resource)
            .map_or(0.0, |r| r.cost_per_unit_hour * replicas.max(1.0))
    }

    pub(crate) fn check(&self, name: &str) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(format!("target policy {name}: {m}")));
        if self.min_replicas < 0 || self.min_replicas > self.max_replicas {
            return bad(format!(
                "min_replicas {} must be ≥ 0 and ≤ max_replicas {}",
                self.min_replicas, self.max_replicas
            ));
        }
        if !(self.utilization_goal > 0.0 && self.utilization_goal.is_finite()) {
            return bad(format!(
                "utilization_goal {} must be > 0",
                self.utilization_goal
            ));
        }
        if !(0.0..1.0).contains(&self.tolerance) {
            return bad(format!("tolerance {} must be in [0, 1)", self.tolerance));
        }
        if self.replicas < 1 {
            return bad(format!("replicas {} must be ≥ 1", self.replicas));
        }
        if self.max_scale_out_step < 1 || self.max_scale_in_step < 1 {
            return bad("max_scale_out_step and max_scale_in_step must be ≥ 1".into());
        }
        if !(self.max_resource_step > 0.0 && self.max_resource_step.is_finite()) {
            return bad(format!(
                "max_resource_step {} must be > 0",
                self.max_resource_step
            ));
        }
        for kind in self.cooldowns.keys() {
            if !KIND_NAMES.contains(&kind.as_str()) {
                return bad(format!(
                    "cooldowns: unknown action kind {kind:?} (one of {})",
                    KIND_NAMES.join(", ")
                ));
            }
        }
        for (cost, what) in [
            (self.cost_per_replica_hour, "cost_per_replica_hour"),
            (
                self.slo_violation_cost_per_hour,
                "slo_violation_cost_per_hour",
            ),
        ] {
            if !(cost >= 0.0 && cost.is_finite()) {
                return bad(format!("{what} {cost} must be ≥ 0"));
            }
        }
        if !(self.reclaim_ratio > 0.0 && self.reclaim_ratio < 1.0) {
            return bad(format!(
                "reclaim_ratio {} must be in (0, 1)",
                self.reclaim_ratio
            ));
        }
        for (r, p) in &self.resources {
            if p.usage_metric.is_empty() {
                return bad(format!("resources.{r}: usage_metric is required"));
            }
            if !(p.min >= 0.0 && p.min <= p.max && p.current > 0.0) {
                return bad(format!(
                    "resources.{r}: need 0 ≤ min ≤ max and current > 0 (min {}, max {}, current {})",
                    p.min, p.max, p.current
                ));
            }
            if !(p.percentile > 0.0 && p.percentile < 1.0 && p.margin >= 0.0) {
                return bad(format!(
                    "resources.{r}: percentile must be in (0, 1) and margin ≥ 0"
                ));
            }
        }
        for (t, p) in &self.tunables {
            if p.metric.is_empty() || p.objective.is_empty() {
                return bad(format!("tunables.{t}: metric and objective are required"));
            }
            if !(p.min < p.max && p.min.is_finite() && p.max.is_finite()) {
                return bad(format!(
                    "tunables.{t}: min {} must be below max {}",
                    p.min, p.max
                ));
            }
        }
        Ok(())
    }
}

/// Action kind names as written in `cooldowns` (the kinds' own names).
pub const KIND_NAMES: [&str; 7] = {
    let mut names = [""; 7];
    let mut i = 0;
    while i < names.len() {
        names[i] = ActionKind::ALL[i].as_str();
        i += 1;
    }
    names
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cooldown_names_are_the_kinds_own_names() {
        assert_eq!(KIND_NAMES.len(), ActionKind::ALL.len());
        for (name, kind) in KIND_NAMES.iter().zip(ActionKind::ALL) {
            assert_eq!(*name, kind.as_str());
        }
        assert_eq!(KIND_NAMES[4], "capacity_warning");
    }
}
