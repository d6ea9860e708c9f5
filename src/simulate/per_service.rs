//! The comparison per service (`simulate --per-service FILE.csv`): the table's columns
//! for each service and policy, so an operator sees which services a policy wins or
//! loses, and by how much, not only the total.

use super::Outcome;
use std::io::Write;

/// What one policy achieved on one service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceTally {
    /// Minutes with p99 latency above the SLO.
    pub slo_violation_minutes: u64,
    /// Sum over minutes of provisioned − used replicas.
    pub slack_replica_minutes: f64,
    /// Sum over minutes of provisioned replicas.
    pub replica_minutes: f64,
    /// Minutes simulated.
    pub minutes: u64,
    /// Replica changes applied.
    pub changes: u64,
    /// Changes reversing the previous one within the flip-flop window.
    pub flip_flops: u64,
}

impl ServiceTally {
    /// Counts one minute: `replicas` paid for, `slack` of them beyond the load's need.
    pub(super) fn account(&mut self, replicas: u32, slack: f64, violated: bool) {
        self.minutes += 1;
        self.replica_minutes += f64::from(replicas);
        self.slack_replica_minutes += slack;
        if violated {
            self.slo_violation_minutes += 1;
        }
    }

    /// Counts one change of replicas, and whether it reversed the previous one.
    pub(super) fn changed(&mut self, flip_flop: bool) {
        self.changes += 1;
        if flip_flop {
            self.flip_flops += 1;
        }
    }

    /// Mean provisioned − used replicas.
    pub fn average_slack(&self) -> f64 {
        self.slack_replica_minutes / self.minutes.max(1) as f64
    }

    /// Cost at `per_replica_hour`.
    pub fn cost(&self, per_replica_hour: f64) -> f64 {
        self.replica_minutes / 60.0 * per_replica_hour
    }
}

/// Writes one row per service and policy: `service,policy,slo_violation_minutes,
/// avg_slack,cost,changes,flip_flops`, services in name order, policies in the table's.
pub fn write_csv(
    outcomes: &[Outcome],
    cost_per_replica_hour: f64,
    w: &mut impl Write,
) -> std::io::Result<()> {
    writeln!(
        w,
        "service,policy,slo_violation_minutes,avg_slack,cost,changes,flip_flops"
    )?;
    let mut services: Vec<&String> = outcomes.iter().flat_map(|o| o.services.keys()).collect();
    services.sort();
    services.dedup();
    for service in services {
        for o in outcomes {
            let t = o.services.get(service).cloned().unwrap_or_default();
            let policy = o.policy.split(" (").next().unwrap_or(&o.policy);
            writeln!(
                w,
                "{},{},{},{:.3},{:.1},{},{}",
                quoted(service),
                quoted(policy),
                t.slo_violation_minutes,
                t.average_slack(),
                t.cost(cost_per_replica_hour),
                t.changes,
                t.flip_flops
            )?;
        }
    }
    Ok(())
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
fn quoted(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::{recorded, Comparison};
    use std::collections::BTreeMap;

    #[test]
    fn the_services_add_up_to_the_total_and_each_has_a_row_per_policy() {
        // Two days, every 5 minutes: a steady service and one with an hourly burst.
        let points = |burst: bool| -> Vec<(i64, f64)> {
            (0..2 * 288)
                .map(|i: i64| {
                    let v = if burst && i % 12 == 0 { 600.0 } else { 100.0 };
                    (i * 300_000, v)
                })
                .collect()
        };
        let series = BTreeMap::from([
            ("steady".to_string(), points(false)),
            ("bursty, \"b\"".to_string(), points(true)),
        ]);
        let opts = recorded::TraceOptions {
            capacity_per_replica: Some(50.0),
            ..recorded::TraceOptions::default()
        };
        let t = recorded::services(series, &opts).unwrap();
        let outcomes = Comparison::recorded(t.specs, t.span, None)
            .unwrap()
            .run()
            .unwrap();
        for o in &outcomes {
            let sum = |f: fn(&ServiceTally) -> f64| o.services.values().map(f).sum::<f64>();
            assert_eq!(o.services.len(), 2, "{}", o.policy);
            assert_eq!(
                sum(|t| t.slo_violation_minutes as f64),
                o.total.slo_violation_minutes as f64
            );
            assert_eq!(sum(|t| t.minutes as f64), o.total.minutes as f64);
            assert_eq!(sum(|t| t.changes as f64), o.total.changes as f64);
            assert_eq!(sum(|t| t.flip_flops as f64), o.total.flip_flops as f64);
            assert!((sum(|t| t.replica_minutes) - o.total.replica_minutes).abs() < 1e-6);
            assert!(
                (sum(|t| t.slack_replica_minutes) - o.total.slack_replica_minutes).abs() < 1e-6
            );
        }
        let burst_changes = |o: &Outcome| o.services["bursty, \"b\""].changes;
        assert!(
            burst_changes(&outcomes[1]) > outcomes[1].services["steady"].changes,
            "HPA follows the bursts"
        );
        let mut csv = Vec::new();
        write_csv(&outcomes, 1.0, &mut csv).unwrap();
        let csv = String::from_utf8(csv).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 1 + 2 * outcomes.len(), "{csv}");
        assert_eq!(
            lines[0],
            "service,policy,slo_violation_minutes,avg_slack,cost,changes,flip_flops"
        );
        assert!(
            lines[1].starts_with("\"bursty, \"\"b\"\"\",perfpilot,"),
            "{}",
            lines[1]
        );
        let hpa = &outcomes[1];
        let row = format!(
            "steady,HPA-style reactive,{},",
            hpa.services["steady"].slo_violation_minutes
        );
        assert!(lines.iter().any(|l| l.starts_with(&row)), "{csv}");
    }
}
