//! Tests of the recommenders.

use super::*;
use crate::event::{Anomaly, Direction, Forecast, ForecastPoint, Severity};
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
fn reported_replicas_are_used_as_current() {
    let mut r = Recommender::new(Policies::default());
    r.observe(&Insight::Forecast(forecast("replicas", 5.0, 0)), 0);
    let rec = one(r.observe(&Insight::Forecast(forecast("cpu_utilization", 0.9, 0)), 0));
    assert_eq!((rec.current, rec.proposed), (5.0, 8.0));
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
