//! Invariants of the coordinator, for any stream of recommendations (proptest):
//! every recommendation is decided exactly once, approved actions stay within the
//! target's bounds, and no target changes twice within its cooldown.

use perfpilot::config::Config;
use perfpilot::event::{ActionKind, Recommendation, Verdict, REPLICAS};
use perfpilot::stage::coordinator::Coordinator;
use perfpilot::stage::{RecordMeta, Stage};
use proptest::prelude::*;
use std::collections::HashMap;

const CONFIG: &str = r#"
[defaults]
min_replicas = 2
max_replicas = 6
cooldown_secs = 300
[targets.b]
min_replicas = 1
max_replicas = 12
cooldown_secs = 60
[coordinator]
decision_window_secs = 30
idle_flush_ms = 500
max_pending = 7
"#;

fn arb_rec() -> impl Strategy<Value = (usize, bool, i32, i32, i64, i32, bool)> {
    // target, scale-out?, current, proposed, time step, priority, redelivered?
    (
        0usize..3,
        any::<bool>(),
        1i32..10,
        0i32..20,
        0i64..120_000,
        0i32..100,
        prop::bool::weighted(0.1),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn decided_once_within_bounds_and_cooldowns(inputs in prop::collection::vec(arb_rec(), 1..80)) {
        let cfg = Config::parse(CONFIG, "test").unwrap();
        let mut c = Coordinator::new(cfg.coordinator.clone(), cfg.policies.clone()).unwrap();
        let targets = ["a", "b", "c"];
        let mut out = Vec::new();
        let mut sent: Vec<Recommendation> = Vec::new();
        let mut t = 0i64;
        let mut wall = 0i64;
        for (i, (target, out_dir, current, proposed, dt, priority, redeliver)) in inputs.into_iter().enumerate() {
            t += dt;
            wall += 100;
            let rec = if redeliver && !sent.is_empty() {
                sent[i % sent.len()].clone()
            } else {
                let r = Recommendation {
                    id: format!("rec-{i}"),
                    target: targets[target].into(),
                    pool: "pool".into(),
                    kind: if out_dir { ActionKind::ScaleOut } else { ActionKind::ScaleIn },
                    resource: REPLICAS.into(),
                    unit: "replicas".into(),
                    current: f64::from(current),
                    proposed: f64::from(proposed),
                    recommender: "test".into(),
                    confidence: 0.5,
                    priority,
                    reason: "r".into(),
                    expected_effect: "e".into(),
                    expected_benefit: 1.0,
                    cost_delta_per_hour: f64::from(proposed - current),
                    evidence: vec![],
                    created_ms: t,
                    expires_ms: t + 200_000,
                };
                sent.push(r.clone());
                r
            };
            let meta = RecordMeta { partition: 0, offset: i as i64, now_ms: wall };
            c.process(rec, &meta, &mut out);
            if i % 5 == 0 {
                c.tick(wall, &mut out);
            }
        }
        c.tick(wall + 10_000, &mut out);
        prop_assert_eq!(c.held_offset(0), None);

        // Exactly one decision per distinct recommendation.
        let mut count: HashMap<&str, usize> = HashMap::new();
        for d in &out {
            *count.entry(d.recommendation_id.as_str()).or_default() += 1;
        }
        prop_assert_eq!(count.len(), sent.len());
        prop_assert!(count.values().all(|&n| n == 1));

        // Approved actions are within bounds, and changes on a target respect its cooldown.
        let mut last_change: HashMap<&str, i64> = HashMap::new();
        for d in out.iter().filter(|d| d.verdict == Verdict::Approved) {
            let p = cfg.policies.get(&d.target);
            let f = d.final_value.unwrap();
            prop_assert!(f >= f64::from(p.min_replicas) && f <= f64::from(p.max_replicas), "{:?}", d);
            prop_assert_eq!(f, f.round(), "replicas are whole");
            match d.kind {
                ActionKind::ScaleOut => prop_assert!(f > d.current),
                ActionKind::ScaleIn => prop_assert!(f < d.current),
                _ => prop_assert!(false, "only scaling was recommended"),
            }
            if let Some(prev) = last_change.insert(d.target.as_str(), d.decided_ms) {
                prop_assert!(d.decided_ms - prev >= p.cooldown_ms(d.kind), "flip within cooldown: {:?}", d);
            }
        }
        // A merged decision points at an approved one.
        for d in out.iter().filter(|d| d.verdict == Verdict::Merged) {
            let into = d.merged_into.as_deref().unwrap();
            prop_assert!(out.iter().any(|a| a.recommendation_id == into && a.verdict == Verdict::Approved));
        }
    }
}
