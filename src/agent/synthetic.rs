//! Synthetic agents: services whose utilization and latency follow a daily-like cycle
//! with noise, plus scheduled incidents (spikes, a level shift, a slow ramp toward
//! saturation). Pure and seeded, so tests get the same stream every run; replica
//! changes can be fed back (`apply_replicas`) to close the loop.

use crate::event::{Labels, MetricEvent};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// What kind of incident is injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentKind {
    /// Latency multiplied for a few ticks.
    Spike,
    /// Latency multiplied from `start` on (a slower dependency).
    LevelShift,
    /// Load growing steadily from `start` to `end` (toward saturation).
    Ramp,
}

impl IncidentKind {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentKind::Spike => "spike",
            IncidentKind::LevelShift => "level shift",
            IncidentKind::Ramp => "ramp",
        }
    }
}

/// One injected incident, with its window in ticks and event time.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    /// Kind.
    pub kind: IncidentKind,
    /// Target affected.
    pub target: String,
    /// Metric affected.
    pub metric: String,
    /// First tick.
    pub start_tick: u64,
    /// Last tick (inclusive).
    pub end_tick: u64,
    /// Factor (spike, level shift) or total load growth (ramp).
    pub magnitude: f64,
}

/// A synthetic service.
#[derive(Debug, Clone)]
pub struct Service {
    /// Target name.
    pub target: String,
    /// Pool name.
    pub pool: String,
    /// Mean load, in units of one replica's capacity (2.4 = 2.4 replicas fully busy).
    pub base_load: f64,
    /// Replicas running now.
    pub replicas: i32,
    /// Latency when idle, ms.
    pub base_latency_ms: f64,
    /// Phase of the daily cycle, in ticks.
    pub phase: u64,
}

/// A set of services and background hosts, stepping one tick at a time.
#[derive(Debug)]
pub struct SyntheticFleet {
    services: Vec<Service>,
    incidents: Vec<Incident>,
    background: usize,
    tick: u64,
    start_ms: i64,
    step_ms: i64,
    day_ticks: u64,
    rng: SmallRng,
}

/// The metrics every service reports, in the order it reports them each tick: its
/// capacity first, then the load it carries (so a scale change is known before its
/// effect is scored, see `explained_after_scaling_secs`).
pub const SERVICE_METRICS: [&str; 3] = ["replicas", "cpu_utilization", "latency_p99_ms"];

impl SyntheticFleet {
    /// An empty fleet whose first tick is at `start_ms`, one tick every `step_ms`, with a
    /// daily cycle of `day_ticks` ticks.
    pub fn new(start_ms: i64, step_ms: i64, day_ticks: u64, seed: u64) -> Self {
        SyntheticFleet {
            services: Vec::new(),
            incidents: Vec::new(),
            background: 0,
            tick: 0,
            start_ms,
            step_ms,
            day_ticks: day_ticks.max(2),
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// The demo's fleet: five services in two pools, incidents spread over `ticks`,
    /// plus `background` hosts that report one noisy, seasonal metric each.
    pub fn demo(start_ms: i64, step_ms: i64, ticks: u64, background: usize, seed: u64) -> Self {
        let day = (ticks / 2).clamp(40, 240);
        let mut f = SyntheticFleet::new(start_ms, step_ms, day, seed);
        let svc = |t: &str, p: &str, load: f64, replicas: i32, lat: f64, phase: u64| Service {
            target: t.into(),
            pool: p.into(),
            base_load: load,
            replicas,
            base_latency_ms: lat,
            phase,
        };
        f.services = vec![
            svc("checkout", "shop", 1.6, 3, 80.0, 0),
            svc("cart", "shop", 1.0, 2, 40.0, day / 6),
            svc("search", "shop", 1.5, 3, 120.0, day / 3),
            svc("encoder", "media", 1.1, 2, 300.0, day / 2),
            svc("thumbnails", "media", 0.5, 2, 60.0, 2 * day / 3),
        ];
        // Incidents fall after the detector's warm-up (30 samples) whenever the run is
        // long enough for that.
        let warm = if ticks >= 80 { 40 } else { 0 };
        let at = |frac: f64| warm + ((ticks - warm) as f64 * frac) as u64;
        f.incidents = vec![
            Incident {
                kind: IncidentKind::Spike,
                target: "cart".into(),
                metric: "latency_p99_ms".into(),
                start_tick: at(0.30),
                end_tick: at(0.30) + 1,
                magnitude: 5.0,
            },
            Incident {
                kind: IncidentKind::Spike,
                target: "thumbnails".into(),
                metric: "latency_p99_ms".into(),
                start_tick: at(0.70),
                end_tick: at(0.70) + 1,
                magnitude: 4.0,
            },
            Incident {
                kind: IncidentKind::LevelShift,
                target: "search".into(),
                metric: "latency_p99_ms".into(),
                start_tick: at(0.50),
                end_tick: ticks,
                // Latency here is noisy (load noise amplified by queueing near 66 %
                // utilization): ×2.5 is an unmistakable incident, ×1.8 was borderline.
                magnitude: 2.5,
            },
            Incident {
                kind: IncidentKind::Ramp,
                target: "encoder".into(),
                metric: "cpu_utilization".into(),
                start_tick: at(0.25),
                end_tick: at(0.75),
                magnitude: 1.5,
            },
        ];
        f.background = background;
        f
    }

    /// Adds a service.
    pub fn add_service(&mut self, s: Service) {
        self.services.push(s);
    }

    /// Adds an incident.
    pub fn add_incident(&mut self, i: Incident) {
        self.incidents.push(i);
    }

    /// The services.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// The incidents injected.
    pub fn incidents(&self) -> &[Incident] {
        &self.incidents
    }

    /// Event time of a tick.
    pub fn time_of(&self, tick: u64) -> i64 {
        self.start_ms + tick as i64 * self.step_ms
    }

    /// The next tick's number.
    pub fn tick(&self) -> u64 {
        self.tick
    }

    /// Closes the loop: a decision changed a target's replicas.
    pub fn apply_replicas(&mut self, target: &str, replicas: i32) {
        if let Some(s) = self.services.iter_mut().find(|s| s.target == target) {
            s.replicas = replicas.max(1);
        }
    }

    fn gaussian(&mut self) -> f64 {
        // Box–Muller.
        let u1: f64 = self.rng.random::<f64>().max(1e-12);
        let u2: f64 = self.rng.random::<f64>();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    fn factor(&self, target: &str, metric: &str, kind: IncidentKind, tick: u64) -> f64 {
        let mut f = 1.0;
        for i in &self.incidents {
            if i.kind != kind || i.target != target || i.metric != metric || tick < i.start_tick {
                continue;
            }
            f *= match kind {
                IncidentKind::Spike | IncidentKind::LevelShift if tick <= i.end_tick => i.magnitude,
                IncidentKind::Ramp => {
                    let span = (i.end_tick - i.start_tick).max(1) as f64;
                    let done = ((tick - i.start_tick) as f64 / span).min(1.0);
                    1.0 + (i.magnitude - 1.0) * done
                }
                _ => 1.0,
            };
        }
        f
    }

    /// Produces every event of the next tick.
    pub fn next_tick(&mut self) -> Vec<MetricEvent> {
        let tick = self.tick;
        let ts = self.time_of(tick);
        let mut out = Vec::with_capacity(self.services.len() * 3 + self.background);
        let day = self.day_ticks as f64;
        for i in 0..self.services.len() {
            let s = self.services[i].clone();
            let cycle = (2.0 * std::f64::consts::PI * ((tick + s.phase) as f64) / day).sin();
            let ramp = self.factor(&s.target, "cpu_utilization", IncidentKind::Ramp, tick);
            let load = s.base_load * (1.0 + 0.3 * cycle) * ramp * (1.0 + 0.03 * self.gaussian());
            let util = (load / f64::from(s.replicas)).clamp(0.0, 1.0);
            // Latency grows as utilization nears saturation (M/M/1-like), plus incidents.
            let queueing = 1.0 / (1.0 - util.min(0.95));
            let spike = self.factor(&s.target, "latency_p99_ms", IncidentKind::Spike, tick);
            let shift = self.factor(&s.target, "latency_p99_ms", IncidentKind::LevelShift, tick);
            let latency =
                s.base_latency_ms * queueing * spike * shift * (1.0 + 0.04 * self.gaussian());
            let mk = |metric: &str, value: f64, unit: &str| MetricEvent {
                source: format!("agent-{}", s.target),
                target: s.target.clone(),
                pool: Some(s.pool.clone()),
                metric: metric.into(),
                labels: Labels::new(),
                timestamp_ms: ts,
                value,
                unit: unit.into(),
            };
            out.push(mk("replicas", f64::from(s.replicas), "count"));
            out.push(mk("cpu_utilization", util, "ratio"));
            out.push(mk("latency_p99_ms", latency.max(0.0), "ms"));
        }
        for h in 0..self.background {
            let cycle = (2.0 * std::f64::consts::PI * ((tick + h as u64 * 7) as f64) / day).sin();
            let value = 500.0 * (1.0 + 0.2 * cycle) + 10.0 * self.gaussian();
            let host = format!("host-{h:04}");
            out.push(MetricEvent {
                source: host.clone(),
                target: host,
                pool: Some("fleet".into()),
                metric: "requests_per_s".into(),
                labels: Labels::new(),
                timestamp_ms: ts,
                value,
                unit: "1/s".into(),
            });
        }
        self.tick += 1;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_incidents_show() {
        let mut a = SyntheticFleet::demo(0, 60_000, 200, 3, 7);
        let mut b = SyntheticFleet::demo(0, 60_000, 200, 3, 7);
        let mut cart_latency = Vec::new();
        for _ in 0..200 {
            let ea = a.next_tick();
            assert_eq!(ea, b.next_tick());
            assert_eq!(ea.len(), 5 * 3 + 3);
            cart_latency.extend(
                ea.iter()
                    .filter(|e| e.target == "cart" && e.metric == "latency_p99_ms")
                    .map(|e| e.value),
            );
        }
        let spike = a.incidents().iter().find(|i| i.target == "cart").unwrap();
        let during = cart_latency[spike.start_tick as usize];
        let before = cart_latency[spike.start_tick as usize - 5];
        assert!(during > 3.0 * before, "spike {during} vs {before}");
    }

    #[test]
    fn more_replicas_lower_utilization() {
        let mut f = SyntheticFleet::demo(0, 60_000, 100, 0, 1);
        let util = |evs: &[MetricEvent]| {
            evs.iter()
                .find(|e| e.target == "checkout" && e.metric == "cpu_utilization")
                .unwrap()
                .value
        };
        let before = util(&f.next_tick());
        f.apply_replicas("checkout", 12);
        let after = util(&f.next_tick());
        assert!(after < before / 2.0, "{before} → {after}");
    }
}
