//! The coordinator's rules, one table case per rule, its plumbing (windows, held
//! offsets, redelivery, revocation) and property tests of its invariants.

use super::*;
use crate::event::{ActionKind, Decision, Recommendation, Verdict, REPLICAS};
use crate::policy::{FreezeWindow, PoolPolicy, TargetPolicy};
use ActionKind::{Raise, ScaleIn, ScaleOut};
use Verdict::{Approved, Deferred, Expired, Merged, Rejected};

fn rec(
    id: &str,
    target: &str,
    kind: ActionKind,
    current: f64,
    proposed: f64,
    at: i64,
) -> Recommendation {
    let resource = match kind {
        ScaleOut | ScaleIn => REPLICAS,
        ActionKind::Tune => "batch_size",
        ActionKind::CapacityWarning => "disk_used_ratio",
        _ => "cpu_millicores",
    };
    Recommendation {
        id: id.into(),
        target: target.into(),
        pool: "pool".into(),
        kind,
        resource: resource.into(),
        unit: String::new(),
        current,
        proposed,
        recommender: "test".into(),
        confidence: 0.9,
        priority: 50,
        reason: "because".into(),
        expected_effect: "better".into(),
        expected_benefit: 1.0,
        cost_delta_per_hour: proposed - current,
        evidence: vec![],
        created_ms: at,
        expires_ms: at + 600_000,
    }
}

fn with(r: Recommendation, f: impl FnOnce(&mut Recommendation)) -> Recommendation {
    let mut r = r;
    f(&mut r);
    r
}

fn run_with(
    cfg: CoordinatorConfig,
    policies: Policies,
    recs: Vec<Recommendation>,
) -> Vec<Decision> {
    let mut c = Coordinator::new(cfg, policies).unwrap();
    let mut out = Vec::new();
    for (i, r) in recs.into_iter().enumerate() {
        c.offer(r, 0, i as i64, 0, &mut out);
    }
    c.tick(10_000, &mut out);
    out
}

fn run(recs: Vec<Recommendation>) -> Vec<Decision> {
    run_with(CoordinatorConfig::default(), Policies::default(), recs)
}

fn verdicts(ds: &[Decision]) -> Vec<(String, Verdict, String)> {
    let mut v: Vec<_> = ds
        .iter()
        .map(|d| (d.recommendation_id.clone(), d.verdict, d.rule.clone()))
        .collect();
    v.sort();
    v
}

fn policies(target: TargetPolicy, pool: Option<PoolPolicy>) -> Policies {
    let mut p = Policies::default();
    p.set_target("t", target.clone());
    p.set_target("u", target);
    if let Some(pool) = pool {
        p.set_pool("pool", pool).unwrap();
    }
    p
}

type Expected = Vec<(&'static str, Verdict, &'static str)>;

struct Case {
    name: &'static str,
    cfg: CoordinatorConfig,
    policies: Policies,
    recs: Vec<Recommendation>,
    want: Expected,
}

fn case(name: &'static str, recs: Vec<Recommendation>, want: Expected) -> Case {
    Case {
        name,
        cfg: CoordinatorConfig::default(),
        policies: Policies::default(),
        recs,
        want,
    }
}

#[test]
fn arbitration_table_covers_every_rule() {
    let quick = TargetPolicy {
        cooldown_secs: 0,
        ..TargetPolicy::default()
    };
    let cases = vec![
        case(
            "approve: a single scale-out",
            vec![rec("a", "t", ScaleOut, 2.0, 4.0, 0)],
            vec![("a", Approved, "approve")],
        ),
        case(
            "conflict: scale-out beats scale-in",
            vec![
                rec("a", "t", ScaleIn, 4.0, 2.0, 0),
                rec("b", "t", ScaleOut, 4.0, 6.0, 1_000),
            ],
            vec![("a", Rejected, "conflict"), ("b", Approved, "approve")],
        ),
        case(
            "merge: same direction merges to the strongest",
            vec![
                rec("a", "t", ScaleOut, 2.0, 3.0, 0),
                rec("b", "t", ScaleOut, 2.0, 5.0, 1_000),
            ],
            vec![("a", Merged, "merge"), ("b", Approved, "approve")],
        ),
        case(
            "bounds: already at max",
            vec![rec("a", "t", ScaleOut, 10.0, 12.0, 0)],
            vec![("a", Rejected, "bounds")],
        ),
        case(
            "noop: already where the proposal wants it",
            vec![rec("a", "t", ScaleIn, 2.0, 3.0, 0)],
            vec![("a", Rejected, "noop")],
        ),
        case(
            "bounds: already at min",
            vec![rec("a", "t", ScaleIn, 1.0, 0.0, 0)],
            vec![("a", Rejected, "bounds")],
        ),
        case(
            "cooldown: a change in an earlier window",
            vec![
                rec("a", "t", ScaleOut, 2.0, 4.0, 0),
                rec("b", "t", ScaleOut, 4.0, 6.0, 120_000),
            ],
            vec![("a", Approved, "approve"), ("b", Rejected, "cooldown")],
        ),
        case(
            "cooldown: over after it has run",
            vec![
                rec("a", "t", ScaleOut, 2.0, 4.0, 0),
                rec("b", "t", ScaleOut, 4.0, 6.0, 400_000),
            ],
            vec![("a", Approved, "approve"), ("b", Approved, "approve")],
        ),
        Case {
            policies: policies(
                TargetPolicy {
                    cooldowns: [("scale_out".to_string(), 60)].into(),
                    ..TargetPolicy::default()
                },
                None,
            ),
            ..case(
                "cooldown: per action kind (scale_out 60 s)",
                vec![
                    rec("a", "t", ScaleOut, 2.0, 4.0, 0),
                    rec("b", "t", ScaleOut, 4.0, 6.0, 120_000),
                ],
                vec![("a", Approved, "approve"), ("b", Approved, "approve")],
            )
        },
        case(
            "expired: before the window closed",
            vec![
                with(rec("a", "t", ScaleOut, 2.0, 4.0, 0), |r| r.expires_ms = 10),
                rec("b", "u", ScaleOut, 2.0, 4.0, 50_000),
            ],
            vec![("a", Expired, "expired"), ("b", Approved, "approve")],
        ),
        case(
            "no conflict across targets",
            vec![
                rec("a", "t", ScaleIn, 4.0, 2.0, 0),
                rec("b", "u", ScaleOut, 4.0, 6.0, 0),
            ],
            vec![("a", Approved, "approve"), ("b", Approved, "approve")],
        ),
        Case {
            cfg: CoordinatorConfig {
                deny: vec!["t".into()],
                ..CoordinatorConfig::default()
            },
            ..case(
                "deny: a deny rule, and advisory reports pass anyway",
                vec![
                    rec("a", "t", ScaleOut, 2.0, 4.0, 0),
                    rec("b", "t", ActionKind::CapacityWarning, 0.7, 0.9, 0),
                ],
                vec![("a", Rejected, "deny"), ("b", Approved, "advisory")],
            )
        },
        Case {
            cfg: CoordinatorConfig {
                allow: vec!["u:scale_out".into()],
                ..CoordinatorConfig::default()
            },
            ..case(
                "deny: allow rules exist and none covers it",
                vec![
                    rec("a", "t", ScaleOut, 2.0, 4.0, 0),
                    rec("b", "u", ScaleOut, 2.0, 4.0, 0),
                ],
                vec![("a", Rejected, "deny"), ("b", Approved, "approve")],
            )
        },
        Case {
            policies: policies(
                TargetPolicy::default(),
                Some(PoolPolicy {
                    freeze: vec![FreezeWindow {
                        daily: Some("00:00-01:00".into()),
                        ..FreezeWindow::default()
                    }],
                    ..PoolPolicy::default()
                }),
            ),
            ..case(
                "freeze: a daily maintenance window",
                vec![
                    rec("a", "t", ScaleOut, 2.0, 4.0, 0),
                    rec("b", "t", ScaleOut, 2.0, 4.0, 3_700_000),
                ],
                vec![("a", Deferred, "freeze"), ("b", Approved, "approve")],
            )
        },
        Case {
            policies: policies(quick.clone(), None),
            ..case(
                "stabilization: a scale-in held by a recent higher proposal, then let go",
                vec![
                    rec("a", "t", ScaleOut, 4.0, 5.0, 0),
                    rec("b", "t", ScaleIn, 5.0, 3.0, 200_000),
                    rec("c", "t", ScaleIn, 5.0, 3.0, 400_000),
                ],
                vec![
                    ("a", Approved, "approve"),
                    ("b", Deferred, "stabilization"),
                    ("c", Approved, "approve"),
                ],
            )
        },
        Case {
            cfg: CoordinatorConfig {
                max_concurrent_changes: 1,
                ..CoordinatorConfig::default()
            },
            ..case(
                "concurrency: one change at a time, the higher priority first",
                vec![
                    rec("a", "t", ScaleOut, 2.0, 4.0, 0),
                    with(rec("b", "u", ScaleOut, 2.0, 4.0, 0), |r| r.priority = 80),
                ],
                vec![("a", Deferred, "concurrency"), ("b", Approved, "approve")],
            )
        },
        Case {
            policies: policies(
                TargetPolicy::default(),
                Some(PoolPolicy {
                    max_replicas_total: Some(10),
                    ..PoolPolicy::default()
                }),
            ),
            ..case(
                "budget: the higher priority gets the room, the other waits",
                vec![
                    with(rec("a", "t", ScaleOut, 4.0, 6.0, 0), |r| r.priority = 80),
                    rec("b", "u", ScaleOut, 4.0, 6.0, 0),
                ],
                vec![("a", Approved, "approve"), ("b", Deferred, "budget")],
            )
        },
        Case {
            policies: policies(
                TargetPolicy::default(),
                Some(PoolPolicy {
                    max_replicas_total: Some(9),
                    ..PoolPolicy::default()
                }),
            ),
            ..case(
                "budget: part of a request granted",
                vec![
                    with(rec("a", "t", ScaleOut, 4.0, 6.0, 0), |r| r.priority = 80),
                    rec("b", "u", ScaleOut, 4.0, 6.0, 0),
                ],
                vec![("a", Approved, "budget"), ("b", Deferred, "budget")],
            )
        },
        Case {
            policies: policies(
                TargetPolicy::default(),
                Some(PoolPolicy {
                    max_replicas_total: Some(10),
                    ..PoolPolicy::default()
                }),
            ),
            ..case(
                "budget: equal priority, more benefit per unit of cost first",
                vec![
                    with(rec("a", "t", ScaleOut, 4.0, 6.0, 0), |r| {
                        r.expected_benefit = 2.0
                    }),
                    with(rec("b", "u", ScaleOut, 4.0, 6.0, 0), |r| {
                        r.expected_benefit = 9.0
                    }),
                ],
                vec![("a", Deferred, "budget"), ("b", Approved, "approve")],
            )
        },
    ];
    for c in cases {
        let got = verdicts(&run_with(c.cfg, c.policies, c.recs));
        let want: Vec<(String, Verdict, String)> = {
            let mut w: Vec<_> = c
                .want
                .iter()
                .map(|(a, v, r)| (a.to_string(), *v, r.to_string()))
                .collect();
            w.sort();
            w
        };
        assert_eq!(got, want, "{}", c.name);
    }
}

#[test]
fn approved_values_are_limited_and_explained() {
    // Bounds.
    let ds = run(vec![rec("a", "t", ScaleOut, 4.0, 50.0, 0)]);
    assert_eq!(ds[0].final_value, Some(10.0));
    assert!(
        ds[0].reason.contains("bounded by 1..=10"),
        "{}",
        ds[0].reason
    );
    // Step limit.
    let p = policies(
        TargetPolicy {
            max_scale_out_step: 3,
            max_replicas: 50,
            ..TargetPolicy::default()
        },
        None,
    );
    let ds = run_with(
        CoordinatorConfig::default(),
        p,
        vec![rec("a", "t", ScaleOut, 2.0, 12.0, 0)],
    );
    assert_eq!(ds[0].final_value, Some(5.0));
    assert!(
        ds[0].reason.contains("step limited to 5"),
        "{}",
        ds[0].reason
    );
    // Resource step: at most +50 % per action by default.
    let ds = run(vec![rec("a", "t", Raise, 500.0, 1000.0, 0)]);
    assert_eq!((ds[0].verdict, ds[0].final_value), (Approved, Some(750.0)));
    // Merged decisions name the winner and carry no action.
    let merged = run(vec![
        rec("a", "t", ScaleOut, 2.0, 3.0, 0),
        rec("b", "t", ScaleOut, 2.0, 5.0, 0),
    ]);
    let m = merged.iter().find(|d| d.verdict == Merged).unwrap();
    assert_eq!((m.merged_into.as_deref(), m.final_value), (Some("b"), None));
    // A partial budget grant says how much.
    let p = policies(
        TargetPolicy::default(),
        Some(PoolPolicy {
            max_replicas_total: Some(9),
            ..PoolPolicy::default()
        }),
    );
    let ds = run_with(
        CoordinatorConfig::default(),
        p,
        vec![
            rec("a", "t", ScaleOut, 4.0, 6.0, 0),
            rec("b", "u", ScaleIn, 4.0, 4.0, 0),
        ],
    );
    let a = ds.iter().find(|d| d.recommendation_id == "a").unwrap();
    assert_eq!(a.final_value, Some(5.0), "{}", a.reason);
    assert!(a.reason.contains("granted 1 of 2"), "{}", a.reason);
}

/// Runs `recs` with no cooldown and room for large removals, so only stabilization holds
/// a scale-in back.
fn run_for_stabilization(recs: Vec<Recommendation>) -> Vec<Decision> {
    let p = policies(
        TargetPolicy {
            cooldown_secs: 0,
            max_scale_in_step: 10,
            ..TargetPolicy::default()
        },
        None,
    );
    run_with(CoordinatorConfig::default(), p, recs)
}

#[test]
fn stabilization_settles_a_scale_in_at_the_highest_recent_proposal() {
    let ds = run_for_stabilization(vec![
        rec("a", "t", ScaleIn, 8.0, 6.0, 0),
        rec("b", "t", ScaleIn, 6.0, 3.0, 120_000),
    ]);
    let b = ds.iter().find(|d| d.recommendation_id == "b").unwrap();
    // "a" (8 → 6) was approved; 120 s later 3 is proposed, but 6 was proposed within
    // the 300 s stabilization window: nothing to do below 6 → deferred.
    assert_eq!(
        (b.verdict, b.rule.as_str()),
        (Deferred, "stabilization"),
        "{}",
        b.reason
    );
}

#[test]
fn dry_run_decides_but_does_not_change_what_is_believed() {
    for (cfg, pols) in [
        (
            CoordinatorConfig {
                dry_run: true,
                ..CoordinatorConfig::default()
            },
            Policies::default(),
        ),
        (
            CoordinatorConfig::default(),
            policies(
                TargetPolicy {
                    dry_run: true,
                    ..TargetPolicy::default()
                },
                None,
            ),
        ),
        (
            CoordinatorConfig::default(),
            policies(
                TargetPolicy::default(),
                Some(PoolPolicy {
                    dry_run: true,
                    ..PoolPolicy::default()
                }),
            ),
        ),
    ] {
        let ds = run_with(
            cfg,
            pols,
            vec![
                rec("a", "t", ScaleOut, 2.0, 4.0, 0),
                rec("b", "t", ScaleOut, 2.0, 4.0, 120_000),
            ],
        );
        assert!(ds.iter().all(|d| d.dry_run));
        // No cooldown: the first was never applied.
        assert_eq!(
            verdicts(&ds),
            vec![
                ("a".into(), Approved, "approve".into()),
                ("b".into(), Approved, "approve".into())
            ]
        );
    }
}

#[test]
fn tuning_and_advisory_kinds() {
    let mut p = Policies::default();
    p.set_target(
        "t",
        TargetPolicy {
            tunables: [(
                "batch_size".to_string(),
                crate::policy::Tunable {
                    metric: "batch".into(),
                    objective: "latency".into(),
                    min: 1.0,
                    max: 100.0,
                    ..crate::policy::Tunable::default()
                },
            )]
            .into(),
            ..TargetPolicy::default()
        },
    );
    let ds = run_with(
        CoordinatorConfig::default(),
        p,
        vec![
            rec("a", "t", ActionKind::Tune, 10.0, 500.0, 0),
            rec("b", "t", ActionKind::Reclaim, 6.0, 3.0, 0),
        ],
    );
    let a = ds.iter().find(|d| d.recommendation_id == "a").unwrap();
    assert_eq!(
        (a.verdict, a.final_value),
        (Approved, Some(100.0)),
        "{}",
        a.reason
    );
    let b = ds.iter().find(|d| d.recommendation_id == "b").unwrap();
    assert_eq!(
        (b.verdict, b.rule.as_str(), b.final_value),
        (Approved, "advisory", Some(3.0))
    );
}

#[test]
fn held_offsets_and_redelivery() {
    let mut c = Coordinator::new(CoordinatorConfig::default(), Policies::default()).unwrap();
    let mut out = Vec::new();
    c.offer(rec("a", "t", ScaleOut, 2.0, 4.0, 0), 3, 17, 0, &mut out);
    c.offer(rec("b", "t", ScaleOut, 2.0, 4.0, 1), 3, 18, 0, &mut out);
    assert!(out.is_empty());
    assert_eq!(c.held_offset(3), Some(17));
    assert_eq!(c.held_offset(2), None);
    c.tick(1_000, &mut out);
    assert!(out.is_empty(), "not idle long enough");
    c.tick(5_000, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(c.held_offset(3), None);
    c.offer(rec("a", "t", ScaleOut, 2.0, 4.0, 0), 3, 17, 6_000, &mut out);
    c.tick(60_000, &mut out);
    assert_eq!(
        out.len(),
        2,
        "a redelivered recommendation is not decided twice"
    );
    assert_eq!(c.duplicates(), 1);
    let counters: std::collections::HashMap<_, _> = c.counters().into_iter().collect();
    assert_eq!(
        (counters["decided_approved"], counters["decided_merged"]),
        (1, 1)
    );
    assert_eq!(counters["redelivered_skipped"], 1);
}

#[test]
fn revoked_pending_is_forgotten_so_it_can_be_decided_later() {
    let mut c = Coordinator::new(CoordinatorConfig::default(), Policies::default()).unwrap();
    let mut out = Vec::new();
    c.offer(rec("a", "t", ScaleOut, 2.0, 4.0, 0), 1, 5, 0, &mut out);
    c.partitions_revoked(&[1]);
    assert_eq!(c.held_offset(1), None);
    c.offer(rec("a", "t", ScaleOut, 2.0, 4.0, 0), 1, 5, 0, &mut out);
    c.tick(10_000, &mut out);
    assert_eq!(out.len(), 1);
}

#[test]
fn a_restored_coordinator_remembers_cooldowns_and_nothing_of_the_open_window() {
    let mut a = Coordinator::new(CoordinatorConfig::default(), Policies::default()).unwrap();
    let mut out = Vec::new();
    a.offer(rec("a", "t", ScaleOut, 2.0, 4.0, 0), 2, 0, 0, &mut out);
    a.tick(10_000, &mut out);
    assert_eq!(verdicts(&out)[0].1, Approved);
    // An open window: not part of the checkpoint (its input is not committed).
    a.offer(
        rec("b", "t", ScaleOut, 4.0, 6.0, 120_000),
        2,
        1,
        10_000,
        &mut out,
    );
    let mut changes = Vec::new();
    a.state().unwrap().take_changes(&mut changes).unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!((changes[0].partition, changes[0].key.as_str()), (2, "pool"));
    a.state().unwrap().take_changes(&mut changes).unwrap();
    assert_eq!(changes.len(), 1, "nothing changed since");

    let mut b = Coordinator::new(CoordinatorConfig::default(), Policies::default()).unwrap();
    let bytes = changes[0].bytes.as_deref().unwrap();
    b.state().unwrap().restore(2, "pool", bytes).unwrap();
    assert_eq!(b.held_offset(2), None);
    // The new owner reads "b" again and rejects it for the cooldown, as "a" would have.
    let mut decided = Vec::new();
    b.offer(
        rec("b", "t", ScaleOut, 4.0, 6.0, 120_000),
        2,
        1,
        0,
        &mut decided,
    );
    b.tick(10_000, &mut decided);
    assert_eq!(
        verdicts(&decided),
        vec![("b".into(), Rejected, "cooldown".into())]
    );
    b.state().unwrap().forget("pool");
    assert_eq!(b.active_series(), 0);
    assert!(b.state().unwrap().restore(2, "pool", b"\x01{").is_err());
}

mod properties {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, HashMap};

    const TARGETS: [&str; 4] = ["a", "b", "c", "d"];
    const BUDGET: i64 = 16;

    /// One generated intent: a target, a proposed replica count, a time step, a
    /// priority, and whether the previous record is delivered again.
    fn intents() -> impl Strategy<Value = Vec<(usize, i32, i64, i32, bool)>> {
        prop::collection::vec(
            (
                0..4usize,
                0..14i32,
                0..150_000i64,
                0..100i32,
                prop::bool::weighted(0.1),
            ),
            1..120,
        )
    }

    fn setup(cooldown: u64) -> (CoordinatorConfig, Policies) {
        let mut p = Policies::default();
        for t in TARGETS {
            p.set_target(
                t,
                TargetPolicy {
                    pool: Some("pool".into()),
                    replicas: 3,
                    min_replicas: 1,
                    max_replicas: 9,
                    cooldown_secs: cooldown,
                    cooldowns: [("scale_out".to_string(), cooldown / 2)].into(),
                    max_scale_out_step: 4,
                    ..TargetPolicy::default()
                },
            );
        }
        p.set_pool(
            "pool",
            PoolPolicy {
                max_replicas_total: Some(BUDGET),
                max_concurrent_changes: Some(2),
                ..PoolPolicy::default()
            },
        )
        .unwrap();
        (CoordinatorConfig::default(), p)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Budget never exceeded, bounds never violated, no two changes of a target
        /// inside the cooldown of the later one (so no flip-flop), every recommendation
        /// decided exactly once, redelivery decided never again.
        #[test]
        fn coordinator_invariants(intents in intents(), cooldown in 0..600u64) {
            let (cfg, policies) = setup(cooldown);
            let mut c = Coordinator::new(cfg, policies.clone()).unwrap();
            // What is really running: the actuator applies approved decisions at once.
            let mut running: BTreeMap<String, f64> = TARGETS.iter().map(|t| (t.to_string(), 3.0)).collect();
            let mut now = 0i64;
            let mut out = Vec::new();
            let mut offered: Vec<Recommendation> = Vec::new();
            let mut applied = 0usize;
            let mut changes: HashMap<String, Vec<(i64, ActionKind)>> = HashMap::new();
            let mut apply = |out: &Vec<Decision>, running: &mut BTreeMap<String, f64>, applied: &mut usize| {
                for d in &out[*applied..] {
                    if d.verdict == Approved && !d.dry_run {
                        let v = d.final_value.unwrap();
                        let p = policies.get(&d.target);
                        prop_assert!(v >= f64::from(p.min_replicas) && v <= f64::from(p.max_replicas), "bounds: {d:?}");
                        running.insert(d.target.clone(), v);
                        let total: f64 = running.values().sum();
                        prop_assert!(total <= BUDGET as f64 + 1e-9, "budget exceeded: {total} after {d:?}");
                        changes.entry(d.target.clone()).or_default().push((d.decided_ms, d.kind));
                    }
                }
                *applied = out.len();
                Ok(())
            };
            for (i, &(t, proposed, dt, priority, redeliver)) in intents.iter().enumerate() {
                now += dt;
                if redeliver {
                    if let Some(prev) = offered.last().cloned() {
                        c.offer(prev, 0, i as i64, now, &mut out);
                    }
                }
                let target = TARGETS[t];
                let current = running[target];
                let proposed = f64::from(proposed);
                if (proposed - current).abs() < 0.5 {
                    continue;
                }
                let kind = if proposed > current { ScaleOut } else { ScaleIn };
                let r = Recommendation {
                    priority,
                    pool: "pool".into(),
                    ..rec(&format!("r{i}"), target, kind, current, proposed, now)
                };
                offered.push(r.clone());
                c.offer(r, 0, i as i64, now, &mut out);
                apply(&out, &mut running, &mut applied)?;
            }
            c.tick(now + 1_000_000, &mut out);
            apply(&out, &mut running, &mut applied)?;

            let mut decided: HashMap<&str, usize> = HashMap::new();
            for d in &out {
                *decided.entry(d.recommendation_id.as_str()).or_default() += 1;
            }
            prop_assert_eq!(decided.len(), offered.len());
            prop_assert!(decided.values().all(|&n| n == 1), "a recommendation decided twice");
            for (target, list) in &changes {
                let p = policies.get(target);
                for w in list.windows(2) {
                    let gap = w[1].0 - w[0].0;
                    prop_assert!(gap >= p.cooldown_ms(w[1].1), "{target}: changes {gap} ms apart: {list:?}");
                }
            }
        }
    }
}

#[test]
fn pools_past_the_limit_evict_the_least_recent_but_never_one_holding_recommendations() {
    let mut c =
        Coordinator::with_max_pools(CoordinatorConfig::default(), Policies::default(), 2).unwrap();
    let mut out = Vec::new();
    let in_pool = |id: &str, pool: &str| {
        with(rec(id, "t", ScaleOut, 2.0, 4.0, 0), |r| {
            r.pool = pool.into()
        })
    };
    // Pool "a" is heard of first but its recommendation stays undecided (offset 5); "b"
    // is heard of later and decided once idle. So "a" is the least recent, and held.
    c.offer(in_pool("1", "a"), 0, 5, 20_000, &mut out);
    c.offer(in_pool("2", "b"), 0, 6, 0, &mut out);
    c.tick(21_000, &mut out);
    assert_eq!(out.len(), 1, "b is decided, a still waits");
    c.offer(in_pool("3", "c"), 0, 7, 21_000, &mut out);
    let counters: std::collections::HashMap<_, _> = c.counters().into_iter().collect();
    assert_eq!(counters["pools_evicted"], 1);
    assert_eq!(
        c.held_offset(0),
        Some(5),
        "the pool holding offset 5 was evicted"
    );
    let mut changes = Vec::new();
    c.state().unwrap().take_changes(&mut changes).unwrap();
    assert!(
        changes.iter().any(|ch| ch.key == "b" && ch.bytes.is_none()),
        "the evicted pool's changelog entry is a tombstone"
    );
}

#[test]
fn a_scale_in_soon_after_a_scale_out_is_held_whichever_recommender_proposes_it() {
    let ds = run_for_stabilization(vec![
        with(rec("out", "t", ScaleOut, 4.0, 8.0, 0), |r| {
            r.recommender = "forecast-replicas".into()
        }),
        with(rec("in", "t", ScaleIn, 8.0, 5.0, 120_000), |r| {
            r.recommender = "usage".into()
        }),
    ]);
    let get = |id: &str| ds.iter().find(|d| d.recommendation_id == id).unwrap();
    assert_eq!(get("out").verdict, Approved, "{}", get("out").reason);
    // HPA's scale-down stabilization, for the whole target: another recommender's
    // scale-in two minutes after the scale-out is a flip-flop and is held.
    let held = get("in");
    assert_eq!(
        (held.verdict, held.rule.as_str()),
        (Deferred, "stabilization"),
        "{}",
        held.reason
    );
}
