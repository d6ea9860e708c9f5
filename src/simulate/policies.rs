//! The autoscaling policies compared by `perfpilot simulate`: perfpilot itself (its
//! cores, without Kafka), an HPA-style reactive policy, and static peak provisioning.

use super::world::{Sample, ServiceSpec, MINUTE_MS};
use crate::config::Config;
use crate::event::{MetricEvent, Verdict, REPLICAS};
use crate::stage::coordinator::Coordinator;
use crate::stage::detector::Detector;
use crate::stage::forecaster::Forecaster;
use crate::stage::recommender::Recommender;
use crate::stage::Insight;
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Replicas never go below or above these in any policy.
pub const MIN_REPLICAS: u32 = 1;
/// See [`MIN_REPLICAS`].
pub const MAX_REPLICAS: u32 = 40;

/// An autoscaling policy: sees each minute of every service, returns replica changes.
pub trait Autoscaler {
    /// Its name in the table.
    fn name(&self) -> &'static str;
    /// The minute starting at `now_ms`; returns (service, replicas) to set now.
    fn step(&mut self, now_ms: i64, samples: &[(&str, Sample)]) -> Vec<(String, u32)>;
}

/// Static provisioning for the peak: each service gets the replicas its highest load
/// of the whole run needs at the utilization goal (an oracle no operator has).
pub struct Static {
    replicas: Vec<(String, u32)>,
    done: bool,
}

impl Static {
    /// Sized from the loads' true peaks over `minutes` from `start_ms`.
    pub fn new(specs: &[ServiceSpec], start_ms: i64, minutes: i64, goal: f64) -> Self {
        let replicas = specs
            .iter()
            .map(|s| {
                let peak = (0..minutes)
                    .map(|m| s.load.clean(start_ms + m * MINUTE_MS) * (1.0 + 2.0 * s.load.noise()))
                    .fold(0.0, f64::max);
                let n = (peak / (s.capacity * goal)).ceil() as u32;
                (s.name.clone(), n.clamp(MIN_REPLICAS, MAX_REPLICAS))
            })
            .collect();
        Static {
            replicas,
            done: false,
        }
    }
}

impl Autoscaler for Static {
    fn name(&self) -> &'static str {
        "static peak"
    }

    fn step(&mut self, _now_ms: i64, _samples: &[(&str, Sample)]) -> Vec<(String, u32)> {
        if std::mem::replace(&mut self.done, true) {
            return Vec::new();
        }
        self.replicas.clone()
    }
}

/// Kubernetes' HPA algorithm: desired = ceil(replicas × utilization / target), no
/// change within the 10 % tolerance, scale-down to the highest desired count of the
/// last 5 minutes (stabilization), utilization measured over the serving replicas.
pub struct Hpa {
    target: f64,
    tolerance: f64,
    stabilization_ms: i64,
    recent: HashMap<String, VecDeque<(i64, u32)>>,
}

impl Hpa {
    /// HPA with its defaults and the given utilization target.
    pub fn new(target: f64) -> Self {
        Hpa {
            target,
            tolerance: 0.1,
            stabilization_ms: 5 * MINUTE_MS,
            recent: HashMap::new(),
        }
    }
}

impl Autoscaler for Hpa {
    fn name(&self) -> &'static str {
        "HPA-style reactive"
    }

    fn step(&mut self, now_ms: i64, samples: &[(&str, Sample)]) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        for (name, s) in samples {
            let ratio = s.utilization / self.target;
            let current = s.replicas;
            let desired = if (ratio - 1.0).abs() <= self.tolerance {
                current
            } else {
                ((f64::from(current) * ratio).ceil() as u32).clamp(MIN_REPLICAS, MAX_REPLICAS)
            };
            let recent = self.recent.entry(name.to_string()).or_default();
            recent.push_back((now_ms, desired));
            while recent
                .front()
                .is_some_and(|(t, _)| *t < now_ms - self.stabilization_ms)
            {
                recent.pop_front();
            }
            let floor = recent.iter().map(|r| r.1).max().unwrap_or(desired);
            let next = if desired < current {
                floor.min(current)
            } else {
                desired
            };
            if next != current {
                out.push((name.to_string(), next));
            }
        }
        out
    }
}

/// perfpilot: the detector, forecaster, recommender and coordinator cores wired as in
/// the Kafka pipeline, fed the services' metrics every minute.
pub struct Perfpilot {
    detector: Detector,
    forecaster: Forecaster,
    recommender: Recommender,
    coordinator: Coordinator,
    offset: i64,
    /// Decisions by verdict.
    pub verdicts: BTreeMap<Verdict, u64>,
    /// Recommendations by recommender.
    pub recommenders: BTreeMap<String, u64>,
    /// Also follow decisions marked dry-run (the shadow of `simulate`'s dry-run row).
    pub follow_dry_run: bool,
}

impl Perfpilot {
    /// The cores with the given configuration.
    pub fn new(config: &Config) -> Result<Self, crate::config_error::ConfigError> {
        Ok(Perfpilot {
            detector: Detector::new(config.detector.clone())?,
            forecaster: Forecaster::new(config.forecaster.clone())?,
            recommender: Recommender::new(config.policies.clone()),
            coordinator: Coordinator::new(config.coordinator.clone(), config.policies.clone())?,
            offset: 0,
            verdicts: BTreeMap::new(),
            recommenders: BTreeMap::new(),
            follow_dry_run: false,
        })
    }
}

impl Autoscaler for Perfpilot {
    fn name(&self) -> &'static str {
        "perfpilot"
    }

    fn step(&mut self, now_ms: i64, samples: &[(&str, Sample)]) -> Vec<(String, u32)> {
        let mut insights = Vec::new();
        for (name, s) in samples {
            // The replicas that served the minute first: a change of them explains the
            // utilization and latency that follow (the detector's scaling log).
            for (metric, value) in [
                ("replicas", f64::from(s.replicas)),
                ("cpu_utilization", s.utilization),
                ("latency_p99_ms", s.latency_ms),
            ] {
                let e = MetricEvent::sample("simulate", name, metric, now_ms, value);
                if let Some(a) = self.detector.observe(&e, 0) {
                    insights.push(Insight::Anomaly(a));
                }
                if let Some(f) = self.forecaster.observe(&e, 0) {
                    insights.push(Insight::Forecast(f));
                }
            }
        }
        let mut decisions = Vec::new();
        for i in &insights {
            for rec in self.recommender.observe(i, 0) {
                *self
                    .recommenders
                    .entry(rec.recommender.clone())
                    .or_default() += 1;
                self.offset += 1;
                self.coordinator
                    .offer(rec, 0, self.offset, now_ms, &mut decisions);
            }
        }
        // The simulation's clock is the coordinator's wall clock too; a second later the
        // minute's windows are idle and decided (as the 2 s idle flush does live).
        crate::stage::Stage::tick(&mut self.coordinator, now_ms + 1_000, &mut decisions);
        let mut out = Vec::new();
        for d in decisions {
            *self.verdicts.entry(d.verdict).or_default() += 1;
            if d.verdict == Verdict::Approved
                && (!d.dry_run || self.follow_dry_run)
                && d.resource == REPLICAS
            {
                if let Some(v) = d.final_value {
                    out.push((
                        d.target,
                        (v.round().max(0.0) as u32).clamp(MIN_REPLICAS, MAX_REPLICAS),
                    ));
                }
            }
        }
        out
    }
}

/// The replicas the services ran with, as recorded (`simulate --replicas-column`):
/// what really happened, in the same service model.
pub struct AsRecorded {
    specs: Vec<ServiceSpec>,
    current: HashMap<String, u32>,
}

impl AsRecorded {
    /// Follows each service's recorded replicas.
    pub fn new(specs: &[ServiceSpec]) -> Self {
        AsRecorded {
            current: specs.iter().map(|s| (s.name.clone(), s.initial)).collect(),
            specs: specs.to_vec(),
        }
    }
}

impl Autoscaler for AsRecorded {
    fn name(&self) -> &'static str {
        "recorded replicas"
    }

    fn step(&mut self, now_ms: i64, _samples: &[(&str, Sample)]) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        for spec in &self.specs {
            let Some(r) = spec.recorded_at(now_ms) else {
                continue;
            };
            let r = r.clamp(MIN_REPLICAS, MAX_REPLICAS);
            if self.current.insert(spec.name.clone(), r) != Some(r) {
                out.push((spec.name.clone(), r));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::SIM_CONFIG;

    /// A service that follows perfpilot at once: `load(minute)` requests/s on replicas of
    /// 100 requests/s each, p99 latency 100 ms / (1 − utilization) with a little jitter.
    fn run(
        pp: &mut Perfpilot,
        replicas: &mut u32,
        minutes: std::ops::Range<i64>,
        load: impl Fn(i64) -> f64,
    ) {
        for m in minutes {
            let load = load(m);
            let utilization = load / (f64::from(*replicas) * 100.0);
            let sample = Sample {
                load,
                utilization,
                latency_ms: 100.0 / (1.0 - utilization.min(0.95)) * (1.0 + 0.01 * (m as f64).sin()),
                replicas: *replicas,
                ready: *replicas,
            };
            for (_, n) in pp.step(m * MINUTE_MS, &[("svc", sample)]) {
                *replicas = n;
            }
        }
    }

    #[test]
    fn its_own_scale_in_is_not_undone_by_the_latency_rise_it_explains() {
        let config = Config::parse(SIM_CONFIG, "test").unwrap();
        let mut pp = Perfpilot::new(&config).unwrap();
        let mut replicas = 8;
        // A day at 59 % (inside the band: nothing to do), then the load falls slowly to
        // 280 requests/s over six hours: perfpilot scales in step by step, and each
        // scale-in lifts the latency at once.
        run(&mut pp, &mut replicas, 0..1440, |_| 470.0);
        assert_eq!(replicas, 8, "nothing to do inside the band");
        let mut seen = vec![replicas];
        let falling = |m: i64| 470.0 - 190.0 * ((m - 1440) as f64 / 360.0).min(1.0);
        for hour in 0..8 {
            let start = 1440 + hour * 60;
            run(&mut pp, &mut replicas, start..start + 60, falling);
            seen.push(replicas);
        }
        assert!(replicas <= 6, "280 requests/s at the 60 % goal: {seen:?}");
        assert!(
            seen.windows(2).all(|w| w[1] <= w[0]),
            "a scale-in was undone: {seen:?}"
        );
        assert_eq!(
            pp.recommenders.get("latency_anomaly"),
            None,
            "the latency its own scale-in caused drove a recommendation: {:?}",
            pp.recommenders
        );
    }
}
