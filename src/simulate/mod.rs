//! `perfpilot simulate`: a closed loop without Kafka. Synthetic services respond to
//! their load and replicas (with start-up delay for new replicas); a load trace with
//! daily cycles, weekends, bursts and slow growth drives them; each policy's decisions
//! are applied back. The same trace (same seed) runs under perfpilot, an HPA-style
//! reactive policy and static peak provisioning, and one table compares them.

pub mod per_service;
pub mod plot;
pub mod policies;
pub mod recorded;
pub mod world;

use crate::config::{Config, ConfigError};
use policies::{AsRecorded, Autoscaler, Hpa, Perfpilot, Static};
use std::collections::BTreeMap;
use std::io::Write;
use world::{Service, ServiceSpec, MINUTE_MS};

/// The configuration perfpilot runs with in the simulation (the goal matches HPA's
/// target, so the comparison is like for like).
pub const SIM_CONFIG: &str = r#"
[defaults]
replicas = 4
min_replicas = 1
max_replicas = 40
utilization_goal = 0.6
tolerance = 0.1
scale_in_after = 3
cooldown_secs = 300
cooldowns = { scale_out = 120 }
# The flip-flop window the table counts: no removal undoes an addition within it.
scale_in_stabilization_secs = 900
max_scale_out_step = 20
max_scale_in_step = 2

[detector]
ignore_metrics = ["replicas"]

[forecaster]
horizon = 15
emit_every_events = 1

[coordinator]
decision_window_secs = 60
idle_flush_ms = 1000
change_duration_secs = 300
"#;

/// Changes of one service in opposite directions closer than this are a flip-flop.
pub const FLIP_FLOP_MS: i64 = 15 * MINUTE_MS;

/// What one policy achieved over the run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Policy name.
    pub policy: String,
    /// What else the policy reports about its run, one line each (perfpilot: its
    /// recommendations and decisions counted).
    pub notes: Vec<String>,
    /// The table's columns over every service.
    pub total: per_service::ServiceTally,
    /// Per service: SLO-violation minutes.
    pub per_service: BTreeMap<String, u64>,
    /// Per service: every column of the table.
    pub services: BTreeMap<String, per_service::ServiceTally>,
    /// Every change applied: (time ms, service, replicas), in time order.
    pub timeline: Vec<(i64, String, u32)>,
    /// Every minute over the SLO: (time ms, service), in time order.
    pub violations: Vec<(i64, String)>,
}

impl Outcome {
    /// The replicas `service` had at `t_ms` (`initial` before its first change).
    pub fn replicas_at(&self, service: &str, t_ms: i64, initial: u32) -> u32 {
        self.timeline
            .iter()
            .rev()
            .find(|(t, s, _)| s == service && *t <= t_ms)
            .map_or(initial, |c| c.2)
    }
}

impl Outcome {
    /// Counts one service-minute: `replicas` paid for, `load` served at `latency_ms`.
    fn account(
        &mut self,
        now: i64,
        name: &str,
        spec: &ServiceSpec,
        replicas: u32,
        load: f64,
        latency_ms: f64,
    ) {
        let slack = f64::from(replicas) - load / spec.capacity;
        let violated = latency_ms > spec.slo_ms;
        self.total.account(replicas, slack, violated);
        self.tally(name, |t| t.account(replicas, slack, violated));
        if violated {
            *self.per_service.entry(name.to_string()).or_default() += 1;
            self.violations.push((now, name.to_string()));
        }
    }

    /// Counts a change of `name` from `before` to `replicas` decided at `now`, and
    /// whether it reverses the service's previous change (`last`: time and direction).
    fn change(
        &mut self,
        now: i64,
        name: String,
        before: u32,
        replicas: u32,
        last: &mut BTreeMap<String, (i64, i64)>,
    ) {
        self.timeline
            .push((now + MINUTE_MS, name.clone(), replicas));
        let direction = if replicas > before { 1 } else { -1 };
        let flip_flop = last
            .get(&name)
            .is_some_and(|(t, d)| *d != direction && now - t < FLIP_FLOP_MS);
        self.total.changed(flip_flop);
        self.tally(&name, |t| t.changed(flip_flop));
        last.insert(name, (now, direction));
    }

    /// Applies `count` to `name`'s own tally (allocating its name only the first time).
    fn tally(&mut self, name: &str, count: impl FnOnce(&mut per_service::ServiceTally)) {
        match self.services.get_mut(name) {
            Some(t) => count(t),
            None => {
                let mut t = per_service::ServiceTally::default();
                count(&mut t);
                self.services.insert(name.to_string(), t);
            }
        }
    }

    /// Mean provisioned − used replicas per service.
    pub fn average_slack(&self) -> f64 {
        self.total.average_slack()
    }

    /// Cost at `per_replica_hour`.
    pub fn cost(&self, per_replica_hour: f64) -> f64 {
        self.total.cost(per_replica_hour)
    }
}

/// The minutes simulated: `minutes` steps of a minute from `start_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The first minute (ms since the epoch; the synthetic world starts at 0).
    pub start_ms: i64,
    /// Minutes simulated.
    pub minutes: i64,
}

impl Span {
    /// `days` days from time 0 (the synthetic world's start, a Monday).
    pub fn days(days: u32) -> Self {
        Span {
            start_ms: 0,
            minutes: i64::from(days) * 1440,
        }
    }
}

/// Runs one policy over the services for the span.
pub fn run_policy(
    policy: &mut dyn Autoscaler,
    specs: &[ServiceSpec],
    span: Span,
    seed: u64,
) -> Outcome {
    run_policy_with(policy, specs, span, seed, &mut |_| {})
}

/// The services at the start of a run; each one's noise has its own seed from `seed`.
fn start_services(specs: &[ServiceSpec], seed: u64) -> Vec<Service> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| Service::new(s.clone(), seed.wrapping_add(i as u64 * 7919)))
        .collect()
}

/// [`run_policy`], calling `minute_done` after each simulated minute (with the minute's
/// index), for a progress bar.
pub fn run_policy_with(
    policy: &mut dyn Autoscaler,
    specs: &[ServiceSpec],
    span: Span,
    seed: u64,
    minute_done: &mut dyn FnMut(i64),
) -> Outcome {
    let mut services = start_services(specs, seed);
    let mut out = Outcome {
        policy: policy.name().to_string(),
        ..Outcome::default()
    };
    // Last change per service: (time, direction).
    let mut last: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for minute in 0..span.minutes {
        let now = span.start_ms + minute * MINUTE_MS;
        let samples: Vec<(String, world::Sample)> = services
            .iter_mut()
            .map(|s| (s.spec.name.clone(), s.sample(now)))
            .collect();
        for (svc, (name, s)) in services.iter().zip(&samples) {
            out.account(now, name, &svc.spec, s.replicas, s.load, s.latency_ms);
        }
        let view: Vec<(&str, world::Sample)> =
            samples.iter().map(|(n, s)| (n.as_str(), *s)).collect();
        for (name, replicas) in policy.step(now, &view) {
            let Some(svc) = services.iter_mut().find(|s| s.spec.name == name) else {
                continue;
            };
            let before = svc.replicas();
            if replicas == before {
                continue;
            }
            svc.set_replicas(replicas, now + MINUTE_MS);
            out.change(now, name, before, replicas, &mut last);
        }
        minute_done(minute);
    }
    out
}

/// perfpilot in dry run beside `incumbent`, as it would run live in shadow mode: the
/// services follow the incumbent (the recorded replicas, or HPA), perfpilot sees the
/// same minutes and decides without acting. The outcome is that of its decisions as if
/// each took effect at once: from its first decision on, a service has the replicas
/// perfpilot last decided (before it, the incumbent's), and its latency is the model's
/// at the minute's load. Changes and flip-flops are perfpilot's decisions.
pub fn run_dry_run(
    incumbent: &mut dyn Autoscaler,
    shadow: &mut dyn Autoscaler,
    specs: &[ServiceSpec],
    span: Span,
    seed: u64,
    minute_done: &mut dyn FnMut(i64),
) -> Outcome {
    let mut services = start_services(specs, seed);
    let mut out = Outcome {
        policy: "perfpilot dry run".to_string(),
        ..Outcome::default()
    };
    let mut desired: BTreeMap<String, u32> = BTreeMap::new();
    let mut last: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for minute in 0..span.minutes {
        let now = span.start_ms + minute * MINUTE_MS;
        let samples: Vec<(String, world::Sample)> = services
            .iter_mut()
            .map(|s| (s.spec.name.clone(), s.sample(now)))
            .collect();
        for (svc, (name, s)) in services.iter().zip(&samples) {
            let replicas = desired.get(name).copied().unwrap_or(s.replicas);
            let (_, latency_ms) = svc.spec.respond(s.load, replicas);
            out.account(now, name, &svc.spec, replicas, s.load, latency_ms);
        }
        let view: Vec<(&str, world::Sample)> =
            samples.iter().map(|(n, s)| (n.as_str(), *s)).collect();
        for (name, replicas) in shadow.step(now, &view) {
            let seen = view
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(replicas, |(_, s)| s.replicas);
            let before = desired.get(&name).copied().unwrap_or(seen);
            desired.insert(name.clone(), replicas);
            if replicas == before {
                continue;
            }
            out.change(now, name, before, replicas, &mut last);
        }
        for (name, replicas) in incumbent.step(now, &view) {
            if let Some(svc) = services.iter_mut().find(|s| s.spec.name == name) {
                svc.set_replicas(replicas, now + MINUTE_MS);
            }
        }
        minute_done(minute);
    }
    out
}

/// Settings of a comparison run.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The services and their loads.
    pub specs: Vec<ServiceSpec>,
    /// The minutes simulated.
    pub span: Span,
    /// Seed of the services' noise.
    pub seed: u64,
    /// perfpilot's configuration.
    pub config: Config,
    /// Also run perfpilot in dry run beside the incumbent (recorded traces): the
    /// recorded replicas when the trace has them, HPA otherwise.
    pub dry_run: bool,
}

impl Comparison {
    /// The built-in services for `days` days (load seed `seed`), with `config` or
    /// [`SIM_CONFIG`].
    pub fn new(days: u32, seed: u64, config: Option<Config>) -> Result<Self, ConfigError> {
        Ok(Comparison {
            specs: world::services(days, seed),
            span: Span::days(days),
            seed,
            config: Self::config_or_default(config)?,
            dry_run: false,
        })
    }

    /// Recorded services (see [`recorded`]) over their span, with `config` or
    /// [`SIM_CONFIG`].
    pub fn recorded(
        specs: Vec<ServiceSpec>,
        span: Span,
        config: Option<Config>,
    ) -> Result<Self, ConfigError> {
        Ok(Comparison {
            specs,
            span,
            seed: 1,
            config: Self::config_or_default(config)?,
            dry_run: true,
        })
    }

    fn config_or_default(config: Option<Config>) -> Result<Config, ConfigError> {
        match config {
            Some(c) => Ok(c),
            None => Config::parse(SIM_CONFIG, "the simulation's configuration"),
        }
    }

    /// Runs the three policies on the same load.
    pub fn run(&self) -> Result<Vec<Outcome>, ConfigError> {
        self.run_with_progress(&mut |_, _| {})
    }

    /// [`Comparison::run`], calling `progress(done, total)` in simulated service-minutes
    /// of all three policies as it goes (a long trace takes minutes).
    pub fn run_with_progress(
        &self,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Vec<Outcome>, ConfigError> {
        let (specs, span, seed) = (&self.specs, self.span, self.seed);
        let goal = self.config.policies.defaults().utilization_goal;
        let per_policy = span.minutes.max(0) as u64;
        let recorded = specs.iter().any(|s| !s.recorded_replicas.is_empty());
        let runs = 3 + u64::from(self.dry_run) + u64::from(recorded);
        let total = runs * per_policy;
        let mut perfpilot = Perfpilot::new(&self.config)?;
        // Reported every simulated hour: the bar is cheap, not free.
        let mut report = |offset: u64, m: i64| {
            if m % 60 == 59 || m as u64 + 1 == per_policy {
                progress(offset + m as u64 + 1, total)
            }
        };
        let perfpilot_run =
            run_policy_with(&mut perfpilot, specs, span, seed, &mut |m| report(0, m));
        let hpa_run = run_policy_with(&mut Hpa::new(goal), specs, span, seed, &mut |m| {
            report(per_policy, m)
        });
        let mut fixed = Static::new(specs, span.start_ms, span.minutes, goal);
        let static_run = run_policy_with(&mut fixed, specs, span, seed, &mut |m| {
            report(2 * per_policy, m)
        });
        let mut out = vec![perfpilot_run, hpa_run, static_run];
        let mut done = 3;
        if recorded {
            out.push(run_policy_with(
                &mut AsRecorded::new(specs),
                specs,
                span,
                seed,
                &mut |m| report(done * per_policy, m),
            ));
            done += 1;
        }
        if self.dry_run {
            let mut shadow = Perfpilot::new(&self.config)?;
            shadow.follow_dry_run = true;
            let mut incumbent: Box<dyn Autoscaler> = if recorded {
                Box::new(AsRecorded::new(specs))
            } else {
                Box::new(Hpa::new(goal))
            };
            let mut dry = run_dry_run(
                incumbent.as_mut(),
                &mut shadow,
                specs,
                span,
                seed,
                &mut |m| report(done * per_policy, m),
            );
            dry.notes = vec![format!(
                "beside {}: the services followed it; perfpilot decided without acting, and its row is its decisions as if each took effect at once",
                incumbent.name()
            )];
            out.push(dry);
        }
        let by = |counts: Vec<String>| {
            if counts.is_empty() {
                "none".to_string()
            } else {
                counts.join(", ")
            }
        };
        out[0].notes = vec![
            format!(
                "recommendations, by the recommender that made them: {}",
                by(perfpilot
                    .recommenders
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect())
            ),
            format!(
                "decisions, by verdict: {}",
                by(perfpilot
                    .verdicts
                    .iter()
                    .map(|(k, v)| format!("{} {v}", k.as_str()))
                    .collect())
            ),
        ];
        Ok(out)
    }
}

/// Writes the comparison table.
pub fn print_table(
    outcomes: &[Outcome],
    cost_per_replica_hour: f64,
    w: &mut impl Write,
) -> std::io::Result<()> {
    writeln!(
        w,
        "{:<20} {:>14} {:>12} {:>10} {:>8} {:>11}",
        "policy", "SLO-viol. min", "avg slack", "cost", "changes", "flip-flops"
    )?;
    for o in outcomes {
        let name: String = o.policy.split(" (").next().unwrap_or(&o.policy).to_string();
        writeln!(
            w,
            "{:<20} {:>14} {:>12.2} {:>10.1} {:>8} {:>11}",
            name,
            o.total.slo_violation_minutes,
            o.average_slack(),
            o.cost(cost_per_replica_hour),
            o.total.changes,
            o.total.flip_flops
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recurring_daily_peak_is_prepared_for_and_hpa_only_reacts() {
        // Five days of a service at 100 requests/s that jumps to 400 at 15:00 for an
        // hour every day, every 5 minutes.
        let day: i64 = 86_400_000;
        let points: Vec<(i64, f64)> = (0..5 * 288)
            .map(|i: i64| {
                let t = i * 300_000;
                let hour = t.rem_euclid(day) / 3_600_000;
                (t, if hour == 15 { 400.0 } else { 100.0 })
            })
            .collect();
        let opts = recorded::TraceOptions {
            capacity_per_replica: Some(50.0),
            ..recorded::TraceOptions::default()
        };
        let t = recorded::services(BTreeMap::from([("svc".to_string(), points)]), &opts).unwrap();
        let initial = t.specs[0].initial;
        let outcomes = Comparison::recorded(t.specs, t.span, None)
            .unwrap()
            .run()
            .unwrap();
        let (pp, hpa) = (&outcomes[0], &outcomes[1]);
        // On the last day, five minutes before the peak: the peak needs 14 replicas.
        let before = 4 * day + 15 * 3_600_000 - 5 * 60_000;
        let (pp_n, hpa_n) = (
            pp.replicas_at("svc", before, initial),
            hpa.replicas_at("svc", before, initial),
        );
        eprintln!(
            "5 min before the 5th peak: perfpilot {pp_n}, HPA {hpa_n} replicas; SLO-violation minutes {} vs {}",
            pp.total.slo_violation_minutes, hpa.total.slo_violation_minutes
        );
        assert!(hpa_n <= 4, "HPA cannot know the peak is coming: {hpa_n}");
        assert!(
            pp_n > hpa_n + 2,
            "perfpilot did not prepare for a peak it saw four times: {pp_n} replicas vs HPA's {hpa_n}"
        );
        assert!(
            pp.total.slo_violation_minutes < hpa.total.slo_violation_minutes,
            "{} vs {}",
            pp.total.slo_violation_minutes,
            hpa.total.slo_violation_minutes
        );
    }

    #[test]
    fn perfpilot_beats_reactive_on_slo_with_less_slack_than_static() {
        let outcomes = Comparison::new(4, 1, None).unwrap().run().unwrap();
        let mut table = Vec::new();
        print_table(&outcomes, 1.0, &mut table).unwrap();
        let table = String::from_utf8_lossy(&table);
        let (pp, hpa, stat) = (&outcomes[0], &outcomes[1], &outcomes[2]);
        assert!(
            pp.total.slo_violation_minutes < hpa.total.slo_violation_minutes,
            "perfpilot should violate the SLO less than the reactive policy\n{table}"
        );
        assert!(
            pp.average_slack() < stat.average_slack(),
            "perfpilot should need less slack than static peak provisioning\n{table}"
        );
        assert_eq!(stat.total.changes, 3, "static sets each service once");
        assert_eq!(pp.total.minutes, 4 * 1440 * 3);
    }

    #[test]
    fn progress_is_reported_hourly_in_order_and_ends_at_the_total() {
        let c = Comparison::new(1, 3, None).unwrap();
        let mut seen = Vec::new();
        let outcomes = c
            .run_with_progress(&mut |done, total| seen.push((done, total)))
            .unwrap();
        assert_eq!(outcomes.len(), 3);
        // Three policies, one day each, one report per simulated hour.
        assert_eq!(seen.len(), 3 * 24);
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "not in order");
        assert_eq!(seen.last(), Some(&(3 * 1440, 3 * 1440)));
    }
}
