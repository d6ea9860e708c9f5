//! The simulated world: services whose utilization and latency follow their load and
//! their replicas, and the load traces that drive them.
//!
//! A replica serves `capacity` requests per second at 100 % utilization. Latency grows
//! like a queue's, `base / (1 − u)`, and explodes past saturation. New replicas serve
//! only after `startup`; removed replicas stop at once (the pessimistic side for both).

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

/// One minute, the simulation step.
pub const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;

/// A load trace: a daily cycle, a weekend dip, slow growth, bursts and noise.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Requests per second at the daily mean, on day 0.
    pub base: f64,
    /// Daily swing as a fraction of the mean (peak at 15:00 UTC).
    pub daily: f64,
    /// Weekend load as a fraction of the weekday load.
    pub weekend: f64,
    /// Growth per day (fraction).
    pub growth: f64,
    /// Bursts: (start minute, length in minutes, load factor).
    pub bursts: Vec<(i64, i64, f64)>,
    /// Scheduled daily load (a nightly job, a morning batch): (minute of the day,
    /// length in minutes, load factor), every weekday.
    pub scheduled: Vec<(i64, i64, f64)>,
    /// Noise as a fraction of the load (standard deviation).
    pub noise: f64,
}

impl Trace {
    /// The load at `t_ms` without noise.
    pub fn clean(&self, t_ms: i64) -> f64 {
        let day_phase = (t_ms.rem_euclid(DAY_MS) as f64 / DAY_MS as f64 - 15.0 / 24.0)
            * 2.0
            * std::f64::consts::PI;
        // Day 0 is a Monday: days 5 and 6 are the weekend.
        let weekend = if t_ms.div_euclid(DAY_MS).rem_euclid(7) >= 5 {
            self.weekend
        } else {
            1.0
        };
        let days = t_ms as f64 / DAY_MS as f64;
        let minute = t_ms / MINUTE_MS;
        let burst = self
            .bursts
            .iter()
            .filter(|(s, len, _)| (*s..*s + *len).contains(&minute))
            .map(|b| b.2)
            .fold(1.0, f64::max);
        let minute_of_day = minute.rem_euclid(1440);
        let scheduled = if weekend < 1.0 {
            1.0
        } else {
            self.scheduled
                .iter()
                .filter(|(s, len, _)| (*s..*s + *len).contains(&minute_of_day))
                .map(|b| b.2)
                .fold(1.0, f64::max)
        };
        let burst = burst * scheduled;
        self.base
            * (1.0 + self.growth * days)
            * (1.0 + self.daily * day_phase.cos())
            * weekend
            * burst
    }
}

/// A recorded load: requests per second at known times (ms, ascending), linear between
/// them and held flat before the first and after the last.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    points: Arc<[(i64, f64)]>,
}

impl Recorded {
    /// From (time, demand) points; sorted here, a repeated time keeps its last value.
    /// `None` when there is no point.
    pub fn new(mut points: Vec<(i64, f64)>) -> Option<Self> {
        points.sort_by_key(|p| p.0);
        let mut deduped: Vec<(i64, f64)> = Vec::with_capacity(points.len());
        for p in points {
            match deduped.last_mut() {
                Some(last) if last.0 == p.0 => *last = p,
                _ => deduped.push(p),
            }
        }
        (!deduped.is_empty()).then(|| Recorded {
            points: deduped.into(),
        })
    }

    /// The demand at `t_ms`.
    pub fn at(&self, t_ms: i64) -> f64 {
        let i = self.points.partition_point(|p| p.0 <= t_ms);
        match (i.checked_sub(1).map(|j| self.points[j]), self.points.get(i)) {
            (Some((t0, v0)), Some(&(t1, v1))) => {
                v0 + (v1 - v0) * (t_ms - t0) as f64 / (t1 - t0) as f64
            }
            (Some((_, v)), None) => v,
            (None, Some(&(_, v))) => v,
            (None, None) => 0.0,
        }
    }

    /// The first and last times.
    pub fn span(&self) -> (i64, i64) {
        let first = self.points.first().map_or(0, |p| p.0);
        let last = self.points.last().map_or(0, |p| p.0);
        (first, last)
    }

    /// The times of consecutive points.
    pub fn steps(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.points.windows(2).map(|w| (w[0].0, w[1].0))
    }

    /// The demand values, in time order.
    pub fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.points.iter().map(|p| p.1)
    }
}

/// What drives a service: the built-in synthetic trace, or a recorded one.
#[derive(Debug, Clone, PartialEq)]
pub enum Load {
    /// The generator's daily cycle, bursts, growth and noise.
    Synthetic(Trace),
    /// Demand recorded from a real service (no noise added).
    Recorded(Recorded),
}

impl Load {
    /// The load at `t_ms` without noise.
    pub fn clean(&self, t_ms: i64) -> f64 {
        match self {
            Load::Synthetic(t) => t.clean(t_ms),
            Load::Recorded(r) => r.at(t_ms),
        }
    }

    /// Noise as a fraction of the load (standard deviation).
    pub fn noise(&self) -> f64 {
        match self {
            Load::Synthetic(t) => t.noise,
            Load::Recorded(_) => 0.0,
        }
    }
}

/// A service of the simulation.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    /// Its name (the target).
    pub name: String,
    /// Requests per second one replica serves at 100 % utilization.
    pub capacity: f64,
    /// Latency with no queueing, ms.
    pub base_latency_ms: f64,
    /// The latency objective, ms.
    pub slo_ms: f64,
    /// Time a new replica takes to serve.
    pub startup_ms: i64,
    /// Replicas at the start.
    pub initial: u32,
    /// Its load.
    pub load: Load,
    /// The replicas it ran with, as recorded (time ms, replicas), in time order; empty
    /// for demand-only traces and the built-in services.
    pub recorded_replicas: Vec<(i64, u32)>,
}

impl ServiceSpec {
    /// Utilization (capped at 1) and p99 latency with `ready` replicas serving `load`:
    /// M/M/1-like growth towards saturation, and a queue that grows for the whole
    /// minute beyond it.
    pub fn respond(&self, load: f64, ready: u32) -> (f64, f64) {
        let demand = load / (f64::from(ready.max(1)) * self.capacity);
        let latency_ms = if ready == 0 || demand >= 1.0 {
            self.base_latency_ms * 50.0 * demand.max(1.0)
        } else {
            self.base_latency_ms / (1.0 - demand)
        };
        (demand.min(1.0), latency_ms)
    }

    /// The recorded replicas at `t_ms` (the last recorded at or before it).
    pub fn recorded_at(&self, t_ms: i64) -> Option<u32> {
        let i = self.recorded_replicas.partition_point(|(t, _)| *t <= t_ms);
        match i {
            0 => self.recorded_replicas.first().map(|r| r.1),
            i => Some(self.recorded_replicas[i - 1].1),
        }
    }
}

/// What a service reports for one minute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Load in requests per second.
    pub load: f64,
    /// Per-replica utilization of the serving replicas (capped at 1, like CPU).
    pub utilization: f64,
    /// p99 latency, ms.
    pub latency_ms: f64,
    /// Replicas paid for (serving and starting).
    pub replicas: u32,
    /// Replicas serving.
    pub ready: u32,
}

/// A running service.
#[derive(Debug, Clone)]
pub struct Service {
    /// Its description.
    pub spec: ServiceSpec,
    /// When each replica is (or was) ready, oldest first.
    ready_at: Vec<i64>,
    rng: SmallRng,
}

impl Service {
    /// The service at time 0 with its initial replicas ready.
    pub fn new(spec: ServiceSpec, seed: u64) -> Self {
        Service {
            ready_at: vec![i64::MIN; spec.initial.max(1) as usize],
            rng: SmallRng::seed_from_u64(seed),
            spec,
        }
    }

    /// Replicas paid for.
    pub fn replicas(&self) -> u32 {
        self.ready_at.len() as u32
    }

    /// Sets the replica count at `now_ms`: new replicas start, removed ones stop (the
    /// newest first, so starting ones go before serving ones).
    pub fn set_replicas(&mut self, n: u32, now_ms: i64) {
        let n = n.max(1) as usize;
        while self.ready_at.len() < n {
            self.ready_at.push(now_ms + self.spec.startup_ms);
        }
        self.ready_at.truncate(n);
    }

    /// The service during the minute starting at `now_ms`.
    pub fn sample(&mut self, now_ms: i64) -> Sample {
        let clean = self.spec.load.clean(now_ms);
        let noise: f64 = {
            let u1: f64 = self.rng.random::<f64>().max(1e-12);
            let u2: f64 = self.rng.random::<f64>();
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        };
        let load = (clean * (1.0 + self.spec.load.noise() * noise)).max(0.0);
        let ready = self.ready_at.iter().filter(|&&t| t <= now_ms).count() as u32;
        let (utilization, latency_ms) = self.spec.respond(load, ready);
        Sample {
            load,
            utilization,
            latency_ms,
            replicas: self.replicas(),
            ready,
        }
    }
}

/// The services of a simulation run: a web front end with a strong daily cycle and
/// bursts, an API that grows steadily, and a batch-like service with a weekly pattern
/// and long bursts. Burst times are drawn from `seed`.
pub fn services(days: u32, seed: u64) -> Vec<ServiceSpec> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let minutes = i64::from(days) * 1440;
    let mut bursts = |n: usize, len: (i64, i64), factor: (f64, f64)| -> Vec<(i64, i64, f64)> {
        (0..n)
            .map(|_| {
                (
                    rng.random_range(1440.min(minutes - 1)..minutes.max(1441)),
                    rng.random_range(len.0..len.1),
                    rng.random_range(factor.0..factor.1),
                )
            })
            .collect()
    };
    let per_day = (days as usize).max(1);
    vec![
        ServiceSpec {
            name: "web".into(),
            capacity: 100.0,
            base_latency_ms: 40.0,
            slo_ms: 160.0,
            startup_ms: 3 * MINUTE_MS,
            initial: 4,
            recorded_replicas: Vec::new(),
            load: Load::Synthetic(Trace {
                base: 300.0,
                daily: 0.6,
                weekend: 0.7,
                growth: 0.0,
                bursts: bursts(per_day, (10, 40), (1.3, 1.7)),
                scheduled: vec![],
                noise: 0.04,
            }),
        },
        ServiceSpec {
            name: "api".into(),
            capacity: 50.0,
            base_latency_ms: 25.0,
            slo_ms: 100.0,
            startup_ms: 2 * MINUTE_MS,
            initial: 4,
            recorded_replicas: Vec::new(),
            load: Load::Synthetic(Trace {
                base: 100.0,
                daily: 0.35,
                weekend: 0.9,
                growth: 0.05,
                bursts: bursts(per_day / 2 + 1, (5, 20), (1.4, 2.0)),
                // A partner's daily sync at 09:00.
                scheduled: vec![(540, 45, 1.8)],
                noise: 0.05,
            }),
        },
        ServiceSpec {
            name: "worker".into(),
            capacity: 20.0,
            base_latency_ms: 200.0,
            slo_ms: 800.0,
            startup_ms: 5 * MINUTE_MS,
            initial: 4,
            recorded_replicas: Vec::new(),
            load: Load::Synthetic(Trace {
                base: 60.0,
                daily: 0.2,
                weekend: 0.4,
                growth: 0.02,
                bursts: bursts(per_day / 3 + 1, (60, 180), (1.3, 1.6)),
                // The nightly batch at 02:00.
                scheduled: vec![(120, 90, 2.0)],
                noise: 0.06,
            }),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_follows_utilization_and_new_replicas_take_time() {
        let spec = ServiceSpec {
            name: "s".into(),
            capacity: 10.0,
            base_latency_ms: 10.0,
            slo_ms: 40.0,
            startup_ms: 3 * MINUTE_MS,
            initial: 2,
            recorded_replicas: Vec::new(),
            load: Load::Synthetic(Trace {
                base: 15.0,
                daily: 0.0,
                weekend: 1.0,
                growth: 0.0,
                bursts: vec![],
                scheduled: vec![],
                noise: 0.0,
            }),
        };
        let mut s = Service::new(spec, 1);
        let a = s.sample(0);
        assert!((a.utilization - 0.75).abs() < 1e-9 && (a.latency_ms - 40.0).abs() < 1e-9);
        s.set_replicas(4, 0);
        let b = s.sample(MINUTE_MS);
        assert_eq!(
            (b.replicas, b.ready),
            (4, 2),
            "starting replicas do not serve yet"
        );
        let c = s.sample(3 * MINUTE_MS);
        assert_eq!(c.ready, 4);
        assert!((c.utilization - 0.375).abs() < 1e-9);
        s.set_replicas(1, 4 * MINUTE_MS);
        let d = s.sample(4 * MINUTE_MS);
        assert!(d.utilization == 1.0 && d.latency_ms > 40.0 * 10.0, "{d:?}");
    }
}
