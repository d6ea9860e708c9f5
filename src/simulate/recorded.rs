//! Services driven by recorded demand (`simulate --trace`): each series of a trace
//! becomes a service of the same model as the built-in ones — capacity per replica,
//! latency that grows with utilization, replicas that take a while to start.

use super::world::{Load, Recorded, ServiceSpec, MINUTE_MS};
use super::Span;
use std::collections::BTreeMap;

/// How recorded series become services.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceOptions {
    /// Requests per second one replica serves at 100 % utilization; `None`: per service,
    /// so that its typical demand needs [`AUTO_REPLICAS`] replicas at the goal (see
    /// [`typical_demand`]).
    pub capacity_per_replica: Option<f64>,
    /// The utilization goal (sizes the first replicas and the automatic capacity).
    pub goal: f64,
    /// Latency with no queueing, ms (the SLO is 4× it).
    pub base_latency_ms: f64,
    /// Time a new replica takes to serve.
    pub startup_ms: i64,
    /// Only points at or after this time (ms).
    pub from_ms: Option<i64>,
    /// Only points before this time (ms).
    pub to_ms: Option<i64>,
}

impl Default for TraceOptions {
    fn default() -> Self {
        TraceOptions {
            capacity_per_replica: None,
            goal: 0.6,
            base_latency_ms: 100.0,
            startup_ms: 2 * MINUTE_MS,
            from_ms: None,
            to_ms: None,
        }
    }
}

/// Replicas the typical demand needs at the goal, with an automatic capacity.
pub const AUTO_REPLICAS: f64 = 4.0;

/// A series whose median is below this share of its mean idles most of the time.
pub const IDLE_MEDIAN: f64 = 0.1;

/// The demand an automatic capacity is sized for: the median, or the mean for a series
/// that idles most of the time (a disk or network counter at 0 between bursts), whose
/// median would make each burst need thousands of replicas. The flag says which.
pub fn typical_demand(values: &[f64]) -> (f64, bool) {
    let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
    let median = median(values.to_vec());
    if median < IDLE_MEDIAN * mean {
        (mean, true)
    } else {
        (median, false)
    }
}

/// Why a trace cannot be simulated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TraceError {
    /// Nothing is left in the period asked for.
    #[error("the trace has no point{0}")]
    Empty(String),
    /// A series' demand is negative somewhere (not a request rate).
    #[error("series {series}: demand {value} at {ts_ms} ms is negative; a trace holds request rates (or utilization with replicas)")]
    Negative {
        /// The series.
        series: String,
        /// Its time.
        ts_ms: i64,
        /// The value.
        value: f64,
    },
    /// A capacity that cannot size anything.
    #[error("--capacity-per-replica must be a positive number, not {0}")]
    Capacity(f64),
}

/// A gap in a series: more than three of its usual steps without a point.
#[derive(Debug, Clone, PartialEq)]
pub struct Gap {
    /// The series.
    pub series: String,
    /// The last point before the gap and the first after it (ms).
    pub between: (i64, i64),
}

/// The services of a recorded trace, the span they cover, and the gaps bridged.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceServices {
    /// One service per series, by name.
    pub specs: Vec<ServiceSpec>,
    /// From the first point (floored to the minute) to the last.
    pub span: Span,
    /// Gaps, interpolated across (linear).
    pub gaps: Vec<Gap>,
    /// Services idle most of the time, whose automatic capacity is sized for their mean
    /// demand rather than their median.
    pub sized_by_mean: Vec<String>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Builds the services from `series` (name → (time ms, demand) points).
pub fn services(
    series: BTreeMap<String, Vec<(i64, f64)>>,
    opts: &TraceOptions,
) -> Result<TraceServices, TraceError> {
    if let Some(c) = opts.capacity_per_replica {
        if !(c.is_finite() && c > 0.0) {
            return Err(TraceError::Capacity(c));
        }
    }
    let mut specs = Vec::new();
    let mut gaps = Vec::new();
    let mut sized_by_mean = Vec::new();
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for (name, points) in series {
        let points: Vec<(i64, f64)> = points
            .into_iter()
            .filter(|(t, _)| opts.from_ms.is_none_or(|f| *t >= f))
            .filter(|(t, _)| opts.to_ms.is_none_or(|to| *t < to))
            .collect();
        if let Some(&(ts_ms, value)) = points.iter().find(|p| p.1 < 0.0) {
            return Err(TraceError::Negative {
                series: name,
                ts_ms,
                value,
            });
        }
        let Some(recorded) = Recorded::new(points) else {
            continue;
        };
        let (a, b) = recorded.span();
        first = first.min(a);
        last = last.max(b);
        gaps.extend(gaps_of(&name, &recorded));
        let capacity = match opts.capacity_per_replica {
            Some(c) => c,
            None => {
                let values: Vec<f64> = recorded.values().collect();
                let (typical, by_mean) = typical_demand(&values);
                if by_mean {
                    sized_by_mean.push(name.clone());
                }
                (typical / (opts.goal * AUTO_REPLICAS)).max(1e-9)
            }
        };
        let initial = (recorded.at(a) / (capacity * opts.goal)).ceil().max(1.0);
        specs.push(ServiceSpec {
            name,
            capacity,
            base_latency_ms: opts.base_latency_ms,
            slo_ms: 4.0 * opts.base_latency_ms,
            startup_ms: opts.startup_ms,
            initial: initial.min(f64::from(super::policies::MAX_REPLICAS)) as u32,
            load: Load::Recorded(recorded),
            recorded_replicas: Vec::new(),
        });
    }
    if specs.is_empty() {
        let period = match (opts.from_ms, opts.to_ms) {
            (None, None) => String::new(),
            _ => " in the period asked for (--from/--to)".to_string(),
        };
        return Err(TraceError::Empty(period));
    }
    let start_ms = first.div_euclid(MINUTE_MS) * MINUTE_MS;
    Ok(TraceServices {
        specs,
        span: Span {
            start_ms,
            minutes: (last - start_ms) / MINUTE_MS + 1,
        },
        gaps,
        sized_by_mean,
    })
}

/// Recorded series of a utilization with the replicas that ran: name → (time ms,
/// utilization as a ratio of one replica's capacity, replicas).
pub type UtilizationPoints = BTreeMap<String, Vec<(i64, f64, u32)>>;

/// Builds the services from utilization at known replicas (`--replicas-column`): the
/// demand is utilization × replicas × capacity (capacity 1 per replica unless
/// given), and each service starts with, and remembers, the replicas it ran with.
pub fn services_from_utilization(
    series: UtilizationPoints,
    opts: &TraceOptions,
) -> Result<TraceServices, TraceError> {
    let capacity = opts.capacity_per_replica.unwrap_or(1.0);
    let mut replicas: BTreeMap<String, Vec<(i64, u32)>> = BTreeMap::new();
    let demand = series
        .into_iter()
        .map(|(name, points)| {
            let mut kept: Vec<(i64, u32)> = points
                .iter()
                .filter(|(t, _, _)| opts.from_ms.is_none_or(|f| *t >= f))
                .filter(|(t, _, _)| opts.to_ms.is_none_or(|to| *t < to))
                .map(|(t, _, r)| (*t, *r))
                .collect();
            kept.sort_by_key(|(t, _)| *t);
            replicas.insert(name.clone(), kept);
            let demand = points
                .into_iter()
                .map(|(t, u, r)| (t, u * f64::from(r) * capacity))
                .collect();
            (name, demand)
        })
        .collect();
    let mut t = services(
        demand,
        &TraceOptions {
            capacity_per_replica: Some(capacity),
            ..opts.clone()
        },
    )?;
    for spec in &mut t.specs {
        spec.recorded_replicas = replicas.remove(&spec.name).unwrap_or_default();
        if let Some(&(_, first)) = spec.recorded_replicas.first() {
            spec.initial = first.clamp(1, super::policies::MAX_REPLICAS);
        }
    }
    Ok(t)
}

/// The gaps of a series: steps longer than three times its median step.
fn gaps_of(name: &str, r: &Recorded) -> Vec<Gap> {
    let steps: Vec<(i64, i64)> = r.steps().collect();
    let usual = median(steps.iter().map(|(a, b)| (b - a) as f64).collect());
    steps
        .into_iter()
        .filter(|(a, b)| (b - a) as f64 > 3.0 * usual)
        .map(|between| Gap {
            series: name.to_string(),
            between,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hourly(values: &[f64]) -> Vec<(i64, f64)> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (i as i64 * 3_600_000, *v))
            .collect()
    }

    #[test]
    fn recorded_demand_is_linear_between_points_and_flat_outside() {
        let r = Recorded::new(hourly(&[100.0, 200.0, 50.0])).unwrap();
        assert_eq!(r.at(-5), 100.0);
        assert_eq!(r.at(1_800_000), 150.0);
        assert_eq!(r.at(3_600_000), 200.0);
        assert_eq!(r.at(99 * 3_600_000), 50.0);
    }

    #[test]
    fn series_become_services_with_capacity_for_their_median() {
        let mut series = BTreeMap::new();
        series.insert("a".to_string(), hourly(&[120.0, 240.0, 240.0, 480.0]));
        series.insert("b".to_string(), hourly(&[10.0, 10.0]));
        let t = services(series, &TraceOptions::default()).unwrap();
        assert_eq!(t.span.start_ms, 0);
        assert_eq!(t.span.minutes, 3 * 60 + 1);
        let a = &t.specs[0];
        // Median 240 at 4 replicas of goal 0.6: 100 requests/s each; 120 needs 2.
        assert!((a.capacity - 100.0).abs() < 1e-9, "{}", a.capacity);
        assert_eq!(a.initial, 2);
        assert_eq!(a.slo_ms, 400.0);
        let fixed = services(
            BTreeMap::from([("a".to_string(), hourly(&[120.0, 240.0]))]),
            &TraceOptions {
                capacity_per_replica: Some(50.0),
                ..TraceOptions::default()
            },
        )
        .unwrap();
        assert_eq!(fixed.specs[0].initial, 4);
        assert!(t.sized_by_mean.is_empty());
    }

    #[test]
    fn a_counter_idle_between_bursts_is_sized_for_its_mean_demand() {
        // Idle 9 hours in 10, 1 000 requests/s in the tenth: median 0, mean 100.
        let bursty: Vec<f64> = (0..100)
            .map(|i| if i % 10 == 9 { 1000.0 } else { 0.0 })
            .collect();
        assert_eq!(typical_demand(&bursty), (100.0, true));
        assert_eq!(typical_demand(&[0.0, 0.0, 0.0]), (0.0, false));
        assert_eq!(typical_demand(&[10.0, 20.0, 90.0]), (20.0, false));
        let t = services(
            BTreeMap::from([("disk".to_string(), hourly(&bursty))]),
            &TraceOptions::default(),
        )
        .unwrap();
        // 100 requests/s at 4 replicas of goal 0.6; a burst needs 17, not a billion.
        let capacity = t.specs[0].capacity;
        assert!((capacity - 100.0 / 2.4).abs() < 1e-9, "{capacity}");
        assert_eq!(t.sized_by_mean, vec!["disk".to_string()]);
    }

    #[test]
    fn utilization_at_known_replicas_is_demand_and_the_replicas_are_kept() {
        let hour = 3_600_000;
        let series = BTreeMap::from([(
            "svc".to_string(),
            vec![(0, 0.5, 4), (hour, 0.75, 4), (2 * hour, 0.5, 8)],
        )]);
        let t = services_from_utilization(series, &TraceOptions::default()).unwrap();
        let s = &t.specs[0];
        assert_eq!(s.capacity, 1.0);
        assert_eq!(s.initial, 4, "starts as it ran");
        assert_eq!(s.load.clean(0), 2.0);
        assert_eq!(s.load.clean(hour), 3.0);
        assert_eq!(s.load.clean(2 * hour), 4.0);
        assert_eq!(s.recorded_at(90 * 60_000), Some(4));
        assert_eq!(s.recorded_at(2 * hour), Some(8));
        assert_eq!(
            s.recorded_at(-1),
            Some(4),
            "before the first point: the first"
        );
        let with_capacity = TraceOptions {
            capacity_per_replica: Some(50.0),
            ..TraceOptions::default()
        };
        let series = BTreeMap::from([("svc".to_string(), vec![(0, 0.5, 4), (hour, 0.5, 4)])]);
        let t = services_from_utilization(series, &with_capacity).unwrap();
        assert_eq!(t.specs[0].load.clean(0), 100.0, "requests/s");
    }

    #[test]
    fn a_period_gaps_and_bad_values_are_reported() {
        let mut points = hourly(&[1.0, 1.0, 1.0, 1.0]);
        points.push((10 * 3_600_000, 1.0));
        let series = BTreeMap::from([("a".to_string(), points)]);
        let t = services(series.clone(), &TraceOptions::default()).unwrap();
        assert_eq!(
            t.gaps,
            vec![Gap {
                series: "a".into(),
                between: (3 * 3_600_000, 10 * 3_600_000)
            }]
        );
        let later = TraceOptions {
            from_ms: Some(20 * 3_600_000),
            ..TraceOptions::default()
        };
        assert!(matches!(
            services(series, &later),
            Err(TraceError::Empty(p)) if p.contains("--from")
        ));
        let negative = BTreeMap::from([("n".to_string(), hourly(&[1.0, -2.0]))]);
        assert!(matches!(
            services(negative, &TraceOptions::default()),
            Err(TraceError::Negative { .. })
        ));
    }
}
