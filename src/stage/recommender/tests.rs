//! Tests of the recommenders.

use super::*;
use crate::event::{Anomaly, Direction, Forecast, ForecastPoint, Severity};
use crate::stage::snapshot::RestoreError;
use crate::stage::Insight;

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

fn one(mut v: Vec<Recommendation>) -> Recommendation {
    assert_eq!(v.len(), 1, "{v:?}");
    v.remove(0)
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
    let rec = one(r.observe(&Insight::Forecast(forecast("cpu_utilization", 0.9, 0)), 0));
    assert_eq!(
        (
            rec.kind,
            rec.current,
            rec.proposed,
            rec.recommender.as_str()
        ),
        (ActionKind::ScaleOut, 2.0, 3.0, "forecast_hpa")
    );
    assert_eq!(rec.resource, "replicas");
    assert!(rec.cost_delta_per_hour > 0.0 && rec.expected_benefit > 0.0);
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
        .is_empty());
    // ...but is after it.
    assert!(!r
        .observe(
            &Insight::Forecast(forecast("cpu_utilization", 0.9, 400_000)),
            0
        )
        .is_empty());
}

#[test]
fn within_tolerance_no_action_and_scale_in_needs_a_sustained_low() {
    let mut r = Recommender::new(Policies::default());
    assert!(r
        .observe(&Insight::Forecast(forecast("cpu_utilization", 0.64, 0)), 0)
        .is_empty());
    let low: Vec<_> = (0..3)
        .flat_map(|i| {
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
    assert_eq!((low[0].kind, low[0].proposed), (ActionKind::ScaleIn, 1.0));
    assert!(low[0].cost_delta_per_hour < 0.0);
}

#[test]
fn over_the_band_now_scales_out_even_when_the_forecast_expects_relief() {
    // 4 replicas at 70 % now (over the 66 % edge of the band); the forecast expects
    // 65 % at most over its horizon. Both rules want 5 replicas, but only the present
    // is over the band: waiting for the forecast's relief is an SLO risk now.
    let mut r = Recommender::new(Policies::default());
    r.observe(&Insight::Forecast(forecast("replicas", 4.0, 0)), 0);
    let mut f = forecast("cpu_utilization", 0.65, 0);
    f.last_value = 0.70;
    let rec = one(r.observe(&Insight::Forecast(f), 0));
    assert_eq!(
        (
            rec.kind,
            rec.current,
            rec.proposed,
            rec.recommender.as_str()
        ),
        (ActionKind::ScaleOut, 4.0, 5.0, "reactive_hpa"),
        "{}",
        rec.reason
    );
    // Inside the band now and in the forecast: nothing to do.
    let mut f = forecast("cpu_utilization", 0.65, 60_000);
    f.last_value = 0.64;
    assert!(r.observe(&Insight::Forecast(f), 0).is_empty());
}

#[test]
fn reported_replicas_are_used_as_current() {
    let mut r = Recommender::new(Policies::default());
    r.observe(&Insight::Forecast(forecast("replicas", 5.0, 0)), 0);
    let rec = one(r.observe(&Insight::Forecast(forecast("cpu_utilization", 0.9, 0)), 0));
    assert_eq!((rec.current, rec.proposed), (5.0, 8.0));
}

#[test]
fn a_recurring_peak_is_prepared_for_at_the_top_of_the_tolerance_band() {
    // Ten replicas at 30 % (3 replicas' worth of work), and 80 % (8 replicas' worth)
    // every day from 15:00 to 16:00. At the goal of 60 % the peak needs 14 replicas;
    // inside the 10 % band (up to 66 %), 13.
    let day = 86_400_000;
    let minute = 60_000;
    let mut r = Recommender::new(Policies::default());
    let mut prepared = Vec::new();
    for m in 0..(2 * 1440 + 15 * 60 - 10) {
        let t = m * minute;
        feed(&mut r, forecast("replicas", 10.0, t));
        let hour = t % day / 3_600_000;
        let util = if hour == 15 { 0.8 } else { 0.3 };
        prepared.extend(
            feed(&mut r, forecast("cpu_utilization", util, t))
                .into_iter()
                .filter(|rec| rec.recommender == "recurring_peak"),
        );
    }
    let rec = prepared
        .last()
        .expect("the third day's peak was not prepared for");
    assert_eq!((rec.current, rec.proposed), (10.0, 13.0), "{}", rec.reason);
    assert!(rec.reason.contains("15:00"), "{}", rec.reason);
    assert!(
        prepared
            .iter()
            .all(|p| p.created_ms >= 2 * day + 14 * 3_600_000),
        "prepared before two days had been seen, or hours early"
    );
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
        let got = r
            .observe(&Insight::Anomaly(anomaly(metric, sev, dir)), 0)
            .pop();
        assert_eq!(
            got.as_ref().map(|g| g.priority),
            want,
            "{metric} {sev:?} {dir:?}"
        );
        if let Some(g) = got {
            assert_eq!(g.proposed, 4.0, "value/expected capped at 2×");
            assert_eq!(g.recommender, "latency_anomaly");
        }
    }
}

fn with_policy(policy: TargetPolicy) -> Recommender {
    let mut p = Policies::default();
    p.set_target("api", policy);
    Recommender::new(p)
}

fn feed(r: &mut Recommender, f: Forecast) -> Vec<Recommendation> {
    r.observe(&Insight::Forecast(f), 0)
}

#[test]
fn usage_histogram_sizes_requests_and_raises_on_saturation() {
    use crate::policy::ResourcePolicy;
    let mut r = with_policy(TargetPolicy {
        resources: [(
            "cpu_millicores".to_string(),
            ResourcePolicy {
                usage_metric: "cpu_millicores_used".into(),
                current: 1000.0,
                min: 100.0,
                max: 4000.0,
                unit: "millicores".into(),
                cost_per_unit_hour: 0.001,
                ..ResourcePolicy::default()
            },
        )]
        .into(),
        ..TargetPolicy::default()
    });
    let mut lowered = Vec::new();
    for i in 0..40 {
        let usage = 250.0 + f64::from(i % 10) * 10.0;
        lowered.extend(feed(
            &mut r,
            forecast("cpu_millicores_used", usage, i64::from(i) * 60_000),
        ));
    }
    // Sized from the 20th sample on, repeated once per cooldown (300 s) while it stands.
    assert_eq!(lowered.len(), 5, "{lowered:?}");
    assert!(lowered.iter().all(|l| l.proposed == lowered[0].proposed));
    let l = &lowered[0];
    assert_eq!(
        (l.kind, l.resource.as_str(), l.recommender.as_str()),
        (ActionKind::Lower, "cpu_millicores", "usage_histogram")
    );
    // p90 of 250..340 is about 340; +15 % margin.
    assert!((360.0..=420.0).contains(&l.proposed), "{}", l.proposed);
    assert!(l.cost_delta_per_hour < 0.0 && l.expected_benefit > 0.0);

    // Usage pressing against the request: raised above it, whatever the histogram says.
    let raised = feed(&mut r, forecast("cpu_millicores_used", 990.0, 40 * 60_000));
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(
        (raised[0].kind, raised[0].proposed),
        (ActionKind::Raise, 1250.0)
    );
    assert!(raised[0].reason.contains("95%"), "{}", raised[0].reason);
}

#[test]
fn a_forecast_warning_becomes_a_capacity_warning() {
    let mut r = Recommender::new(Policies::default());
    let mut f = forecast("disk_used_ratio", 0.8, 0);
    f.warning = Some(crate::event::EarlyWarning {
        threshold: 0.9,
        eta_ms: 30 * 60_000,
        probability: 0.8,
    });
    let recs = feed(&mut r, f);
    assert_eq!(recs.len(), 1);
    let w = &recs[0];
    assert_eq!(
        (w.kind, w.resource.as_str(), w.proposed, w.confidence),
        (ActionKind::CapacityWarning, "disk_used_ratio", 0.9, 0.8)
    );
    assert_eq!(w.priority, 65, "the sooner, the higher");
    assert!(w.reason.contains("30 min"), "{}", w.reason);
}

#[test]
fn sustained_over_provisioning_is_reported_ranked_by_savings() {
    let reclaim = |replicas: f64| {
        let mut r = Recommender::new(Policies::default());
        feed(&mut r, forecast("replicas", replicas, 0));
        let mut out = Vec::new();
        for i in 0..80 {
            out.extend(
                feed(&mut r, forecast("cpu_utilization", 0.1, i * 60_000))
                    .into_iter()
                    .filter(|x| x.kind == ActionKind::Reclaim),
            );
        }
        out
    };
    let small = reclaim(4.0);
    let large = reclaim(10.0);
    assert_eq!(small.len(), 1, "once per sustain period: {small:?}");
    assert_eq!(large.len(), 1);
    assert!(
        small[0].created_ms >= 3_600_000,
        "only after an hour of low use"
    );
    assert_eq!(large[0].proposed, 3.0, "ceil(10 × 0.15 / 0.6)");
    assert!(large[0].expected_benefit > small[0].expected_benefit);
    assert!(large[0].priority > small[0].priority, "ranked by savings");
}

#[test]
fn the_tuner_searches_a_parameter_from_its_objective() {
    use crate::policy::Tunable;
    let mut r = with_policy(TargetPolicy {
        tunables: [(
            "batch_size".to_string(),
            Tunable {
                metric: "batch_size".into(),
                objective: "latency_p99_ms".into(),
                min: 1.0,
                max: 256.0,
                settle_points: 3,
                ..Tunable::default()
            },
        )]
        .into(),
        ..TargetPolicy::default()
    });
    let mut batch = 8.0;
    let mut t = 0;
    let mut proposals = Vec::new();
    for _ in 0..400 {
        t += 60_000;
        feed(&mut r, forecast("batch_size", batch, t));
        // Latency is lowest at a batch size of 100.
        let latency = 20.0 + ((batch - 100.0) / 10.0).powi(2);
        for rec in feed(&mut r, forecast("latency_p99_ms", latency, t)) {
            assert_eq!(
                (rec.kind, rec.recommender.as_str()),
                (ActionKind::Tune, "tuner")
            );
            batch = rec.proposed;
            proposals.push(rec);
        }
    }
    assert!((batch - 100.0).abs() <= 8.0, "ended at {batch}");
    assert!(proposals.iter().all(|p| p.evidence[0].kind == "outcome"));
}

#[test]
fn adaptive_selection_follows_the_recommender_that_was_right() {
    // The forecast keeps predicting a peak of 0.95 that never comes: utilization stays
    // at 0.58. At first the forecast is followed (scale out); once its error is known,
    // the reactive rule — which was right — is followed, and nothing is proposed.
    let mut r = Recommender::new(Policies::default());
    let mut first = Vec::new();
    let mut later = Vec::new();
    for i in 0..60 {
        let mut f = forecast("cpu_utilization", 0.95, i * 400_000);
        f.last_value = 0.58;
        let recs = feed(&mut r, f);
        if i < 2 {
            first.extend(recs);
        } else if i > 10 {
            later.extend(recs);
        }
    }
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(first.iter().all(|f| f.recommender == "forecast_hpa"));
    assert!(
        later.is_empty(),
        "{} proposals after the errors were known",
        later.len()
    );
    let state = r.targets.get("api").unwrap();
    let errors = state.accuracy.errors().unwrap();
    assert!(errors[0] > errors[1], "{errors:?}");
}

#[test]
fn a_restored_recommender_continues_where_the_original_was() {
    let mut a = Recommender::new(Policies::default());
    let low = |i: i64| Insight::Forecast(forecast("cpu_utilization", 0.2, i * 60_000));
    assert!(a.observe(&low(0), 4).is_empty());
    assert!(a.observe(&low(1), 4).is_empty());
    let mut changes = Vec::new();
    a.state().unwrap().take_changes(&mut changes).unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!((changes[0].partition, changes[0].key.as_str()), (4, "api"));
    let mut b = Recommender::new(Policies::default());
    b.state()
        .unwrap()
        .restore(4, "api", changes[0].bytes.as_deref().unwrap())
        .unwrap();
    // The low streak survived: the third low forecast proposes, in both.
    let (x, y) = (a.observe(&low(2), 4), b.observe(&low(2), 4));
    assert_eq!(x.len(), 1);
    assert_eq!(x, y);
    b.partitions_revoked(&[4]);
    assert_eq!(b.active_series(), 0);
    assert!(b.state().unwrap().restore(4, "api", &[9, b'{']).is_err());
}

/// A recommender that has seen a day and a half of forecasts of three metrics, and its
/// one changelog record.
fn seasoned() -> (Recommender, Vec<u8>) {
    let mut r = Recommender::new(Policies::default());
    for i in 0..2_000i64 {
        let level = 0.3 + 0.3 * ((i as f64) / 60.0).sin().abs();
        for metric in ["cpu_utilization", "memory_bytes", "replicas"] {
            let value = if metric == "memory_bytes" {
                level * 1e9
            } else {
                level
            };
            r.observe(&Insight::Forecast(forecast(metric, value, i * 60_000)), 0);
        }
    }
    let mut changes = Vec::new();
    r.state().unwrap().take_changes(&mut changes).unwrap();
    let bytes = changes.pop().and_then(|c| c.bytes).unwrap();
    (r, bytes)
}

#[test]
fn a_state_with_a_missing_bin_is_refused_not_indexed() {
    let (r, bytes) = seasoned();
    let state = r.targets.get("api").unwrap();
    // 288 bins per day, stored as byte strings: binary state is compact.
    assert!(bytes.len() < 4000, "{} bytes", bytes.len());
    let mut short = state.clone();
    short.demand = serde_json::from_value({
        let mut v = serde_json::to_value(&state.demand).unwrap();
        v["last"].as_array_mut().unwrap().pop();
        v
    })
    .unwrap();
    let mut b = Recommender::new(Policies::default());
    let encoded = crate::stage::snapshot::encode(&short).unwrap();
    assert!(matches!(
        b.state().unwrap().restore(0, "api", &encoded),
        Err(RestoreError::Decode(e)) if e.contains("well formed")
    ));
    assert_eq!(b.active_series(), 0);
    b.state().unwrap().restore(0, "api", &bytes).unwrap();
    assert_eq!(b.active_series(), 1);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// Whatever a damaged changelog record decodes to, the recommender refuses it or
    /// goes on working with it: it never panics.
    #[test]
    fn damaged_state_never_panics(flips in proptest::collection::vec((0usize..4000, 0u8..8), 1..4)) {
        let (_, bytes) = seasoned_once();
        let mut damaged = bytes.clone();
        for (at, bit) in flips {
            let i = at % damaged.len();
            damaged[i] ^= 1 << bit;
        }
        let mut r = Recommender::new(Policies::default());
        if r.state().unwrap().restore(0, "api", &damaged).is_ok() {
            for i in 2_000..2_100i64 {
                for metric in ["cpu_utilization", "memory_bytes", "replicas"] {
                    r.observe(&Insight::Forecast(forecast(metric, 0.5, i * 60_000)), 0);
                }
            }
        }
    }
}

fn seasoned_once() -> &'static (Recommender, Vec<u8>) {
    static SEASONED: std::sync::OnceLock<(Recommender, Vec<u8>)> = std::sync::OnceLock::new();
    SEASONED.get_or_init(seasoned)
}

#[test]
fn targets_past_the_limit_evict_the_least_recently_heard_of() {
    let mut r = Recommender::with_max_targets(Policies::default(), 2);
    for (i, target) in ["a", "b", "a", "c"].into_iter().enumerate() {
        let mut f = forecast("cpu_utilization", 0.5, i as i64 * 60_000);
        f.target = target.into();
        r.observe(&Insight::Forecast(f), 0);
    }
    assert_eq!(r.active_series(), 2);
    assert!(
        r.targets.get("b").is_none(),
        "b was heard of least recently"
    );
    assert!(r.counters().contains(&("targets_evicted", 1)));
}
