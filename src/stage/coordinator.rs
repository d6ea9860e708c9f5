//! Coordinator core: arbitrates the recommendations of one pool.
//!
//! Recommendations are collected in a decision window per pool (event time). When the
//! window closes — a recommendation arrives past its end, the pool has been idle for
//! `idle_flush_ms` of wall time, or it holds `max_pending` — every recommendation in it
//! gets exactly one decision:
//!
//! | rule       | verdict  | when |
//! |------------|----------|------|
//! | `expired`  | REJECTED | the recommendation expired before the window closed |
//! | `cooldown` | REJECTED | the target changed less than its cooldown ago |
//! | `bounds`   | REJECTED | min/max replicas leave nothing to do in that direction |
//! | `conflict` | REJECTED | a scale-in while a scale-out for the target is in the window (scale-out wins) |
//! | `merge`    | MERGED   | same direction as a larger step approved in the window |
//! | `approve`  | APPROVED | the largest step in its direction, clamped to min/max |
//!
//! Recommendations held in an open window are reported through `held_offset`, so the
//! runner never commits past them; redelivered ids are recognised and not decided twice.

use super::{RecordMeta, Stage};
use crate::config::{ConfigError, Policies};
use crate::event::{ActionKind, Decision, Recommendation, Verdict};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

/// Coordinator settings (`[coordinator]` in the config file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinatorConfig {
    /// Event-time length of a decision window. Default 60 s.
    pub decision_window_secs: u64,
    /// Wall time without input after which a pool's open window is decided. Default 2000 ms.
    pub idle_flush_ms: u64,
    /// Most recommendations held per pool before the window is decided early. Default 1000.
    pub max_pending: usize,
    /// Recommendation ids remembered to recognise redelivery. Default 100 000.
    pub dedupe_capacity: usize,
    /// Report decisions but mark them dry-run: nothing should act on them. Default false.
    pub dry_run: bool,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            decision_window_secs: 60,
            idle_flush_ms: 2000,
            max_pending: 1000,
            dedupe_capacity: 100_000,
            dry_run: false,
        }
    }
}

impl CoordinatorConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.max_pending == 0 || self.dedupe_capacity == 0 {
            return Err(ConfigError::Invalid(
                "coordinator: max_pending and dedupe_capacity must be ≥ 1".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Pending {
    rec: Recommendation,
    offset: i64,
}

#[derive(Debug, Clone, Default)]
struct TargetState {
    replicas: Option<i32>,
    last_change_ms: Option<i64>,
}

#[derive(Debug, Clone, Default)]
struct PoolState {
    partition: i32,
    pending: Vec<Pending>,
    window_start: Option<i64>,
    last_input_wall_ms: i64,
    targets: HashMap<String, TargetState>,
}

/// The coordinator stage core.
#[derive(Debug)]
pub struct Coordinator {
    cfg: CoordinatorConfig,
    policies: Policies,
    pools: HashMap<String, PoolState>,
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
    duplicates: u64,
}

impl Coordinator {
    /// A coordinator with validated settings.
    pub fn new(cfg: CoordinatorConfig, policies: Policies) -> Result<Self, ConfigError> {
        cfg.check()?;
        Ok(Coordinator {
            cfg,
            policies,
            pools: HashMap::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            duplicates: 0,
        })
    }

    /// Redelivered recommendations that were recognised and skipped.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    fn remember(&mut self, id: &str) {
        self.seen.insert(id.to_string());
        self.seen_order.push_back(id.to_string());
        while self.seen_order.len() > self.cfg.dedupe_capacity {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
    }

    /// Takes one recommendation; returns the decisions of a window it closed.
    pub fn offer(
        &mut self,
        rec: Recommendation,
        partition: i32,
        offset: i64,
        now_ms: i64,
        out: &mut Vec<Decision>,
    ) {
        if self.seen.contains(&rec.id) {
            self.duplicates += 1;
            return;
        }
        self.remember(&rec.id);
        let window_ms = (self.cfg.decision_window_secs * 1000) as i64;
        let pool = self.pools.entry(rec.pool.clone()).or_default();
        pool.partition = partition;
        if let Some(start) = pool.window_start {
            if rec.created_ms >= start + window_ms {
                decide_window(pool, &self.policies, &self.cfg, out);
            }
        }
        pool.window_start.get_or_insert(rec.created_ms);
        pool.pending.push(Pending { rec, offset });
        pool.last_input_wall_ms = now_ms;
        if pool.pending.len() >= self.cfg.max_pending {
            decide_window(pool, &self.policies, &self.cfg, out);
        }
    }
}

fn decision(
    rec: &Recommendation,
    verdict: Verdict,
    rule: &str,
    reason: String,
    decided_ms: i64,
    dry_run: bool,
) -> Decision {
    Decision {
        id: format!("dec-{}", rec.id.trim_start_matches("rec-")),
        recommendation_id: rec.id.clone(),
        target: rec.target.clone(),
        pool: rec.pool.clone(),
        kind: rec.kind,
        verdict,
        rule: rule.to_string(),
        reason,
        current_replicas: rec.current_replicas,
        proposed_replicas: rec.proposed_replicas,
        final_replicas: None,
        merged_into: None,
        decided_ms,
        dry_run,
    }
}

/// Decides every pending recommendation of a pool and empties its window.
fn decide_window(
    pool: &mut PoolState,
    policies: &Policies,
    cfg: &CoordinatorConfig,
    out: &mut Vec<Decision>,
) {
    let pending = std::mem::take(&mut pool.pending);
    pool.window_start = None;
    let Some(decided_ms) = pending.iter().map(|p| p.rec.created_ms).max() else {
        return;
    };
    let mut by_target: BTreeMap<String, Vec<Recommendation>> = BTreeMap::new();
    for p in pending {
        by_target
            .entry(p.rec.target.clone())
            .or_default()
            .push(p.rec);
    }
    let dry = cfg.dry_run;
    for (target, mut recs) in by_target {
        // Highest priority first, then by id so the order never depends on arrival.
        recs.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.id.cmp(&b.id)));
        let policy = policies.get(&target);
        let state = pool.targets.entry(target.clone()).or_default();
        let cooldown_ms = (policy.cooldown_secs * 1000) as i64;
        let mut candidates: Vec<(Recommendation, i32)> = Vec::new();
        for rec in recs {
            let current = state.replicas.unwrap_or(rec.current_replicas);
            if rec.expires_ms < decided_ms {
                let reason = format!(
                    "expired {} s before the decision window closed",
                    (decided_ms - rec.expires_ms) / 1000
                );
                out.push(decision(
                    &rec,
                    Verdict::Rejected,
                    "expired",
                    reason,
                    decided_ms,
                    dry,
                ));
                continue;
            }
            if let Some(last) = state.last_change_ms {
                if rec.created_ms < last + cooldown_ms {
                    let reason = format!(
                        "{target} changed {} s ago; its cooldown of {} s has {} s to run",
                        (rec.created_ms - last) / 1000,
                        policy.cooldown_secs,
                        (last + cooldown_ms - rec.created_ms) / 1000
                    );
                    out.push(decision(
                        &rec,
                        Verdict::Rejected,
                        "cooldown",
                        reason,
                        decided_ms,
                        dry,
                    ));
                    continue;
                }
            }
            let bounded = rec
                .proposed_replicas
                .clamp(policy.min_replicas, policy.max_replicas);
            let useful = match rec.kind {
                ActionKind::ScaleOut => bounded > current,
                ActionKind::ScaleIn => bounded < current,
            };
            if !useful {
                let reason = format!(
                    "{target} runs {current} replicas; bounds {}..={} leave no {} to do (proposed {})",
                    policy.min_replicas,
                    policy.max_replicas,
                    rec.kind.as_str().replace('_', "-"),
                    rec.proposed_replicas
                );
                out.push(decision(
                    &rec,
                    Verdict::Rejected,
                    "bounds",
                    reason,
                    decided_ms,
                    dry,
                ));
                continue;
            }
            candidates.push((rec, bounded));
        }
        let has_out = candidates
            .iter()
            .any(|(r, _)| r.kind == ActionKind::ScaleOut);
        if has_out {
            let (losers, kept): (Vec<_>, Vec<_>) = candidates
                .into_iter()
                .partition(|(r, _)| r.kind == ActionKind::ScaleIn);
            for (rec, _) in losers {
                let reason =
                    format!("a scale-out of {target} in the same window wins over this scale-in");
                out.push(decision(
                    &rec,
                    Verdict::Rejected,
                    "conflict",
                    reason,
                    decided_ms,
                    dry,
                ));
            }
            candidates = kept;
        }
        // The largest step in the (now single) direction wins; ties go to priority,
        // which the sort already put first.
        let winner_idx = candidates
            .iter()
            .enumerate()
            .max_by(|(ia, (a, ba)), (ib, (_, bb))| {
                let step = |b: i32| match a.kind {
                    ActionKind::ScaleOut => b,
                    ActionKind::ScaleIn => -b,
                };
                step(*ba).cmp(&step(*bb)).then(ib.cmp(ia))
            })
            .map(|(i, _)| i);
        let Some(w) = winner_idx else { continue };
        let (winner, final_replicas) = candidates[w].clone();
        let current = state.replicas.unwrap_or(winner.current_replicas);
        for (i, (rec, _)) in candidates.iter().enumerate() {
            if i == w {
                continue;
            }
            let mut d = decision(
                rec,
                Verdict::Merged,
                "merge",
                format!(
                    "merged into {}, which sets {target} to {final_replicas} replicas",
                    winner.id
                ),
                decided_ms,
                dry,
            );
            d.merged_into = Some(winner.id.clone());
            out.push(d);
        }
        let clamped = if final_replicas == winner.proposed_replicas {
            String::new()
        } else {
            format!(
                " (proposed {}, bounded by {}..={})",
                winner.proposed_replicas, policy.min_replicas, policy.max_replicas
            )
        };
        let mut d = decision(
            &winner,
            Verdict::Approved,
            "approve",
            format!(
                "{} {target} from {current} to {final_replicas} replicas{clamped}: {}",
                winner.kind.as_str().replace('_', " "),
                winner.reason
            ),
            decided_ms,
            dry,
        );
        d.current_replicas = current;
        d.final_replicas = Some(final_replicas);
        out.push(d);
        state.replicas = Some(final_replicas);
        state.last_change_ms = Some(decided_ms);
    }
}

impl Stage for Coordinator {
    type Input = Recommendation;
    type Output = Decision;

    fn name(&self) -> &'static str {
        "coordinator"
    }

    fn process(&mut self, input: Recommendation, meta: &RecordMeta, out: &mut Vec<Decision>) {
        self.offer(input, meta.partition, meta.offset, meta.now_ms, out);
    }

    fn tick(&mut self, now_ms: i64, out: &mut Vec<Decision>) {
        let idle = self.cfg.idle_flush_ms as i64;
        for pool in self.pools.values_mut() {
            if !pool.pending.is_empty() && now_ms - pool.last_input_wall_ms >= idle {
                decide_window(pool, &self.policies, &self.cfg, out);
            }
        }
    }

    fn partitions_revoked(&mut self, partitions: &[i32]) {
        let dropped: Vec<String> = self
            .pools
            .values()
            .filter(|p| partitions.contains(&p.partition))
            .flat_map(|p| p.pending.iter().map(|x| x.rec.id.clone()))
            .collect();
        // Held recommendations were never committed: the new owner decides them, and
        // this instance must not skip them should the partition come back.
        for id in dropped {
            self.seen.remove(&id);
        }
        self.pools.retain(|_, p| !partitions.contains(&p.partition));
    }

    fn held_offset(&self, partition: i32) -> Option<i64> {
        self.pools
            .values()
            .filter(|p| p.partition == partition)
            .flat_map(|p| p.pending.iter().map(|x| x.offset))
            .min()
    }

    fn active_series(&self) -> usize {
        self.pools.values().map(|p| p.targets.len()).sum()
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![("redelivered_skipped", self.duplicates)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(
        id: &str,
        target: &str,
        kind: ActionKind,
        current: i32,
        proposed: i32,
        at: i64,
    ) -> Recommendation {
        Recommendation {
            id: id.into(),
            target: target.into(),
            pool: "pool".into(),
            kind,
            current_replicas: current,
            proposed_replicas: proposed,
            confidence: 0.9,
            priority: 50,
            reason: "because".into(),
            expected_effect: "better".into(),
            evidence: vec![],
            created_ms: at,
            expires_ms: at + 600_000,
        }
    }

    fn run(recs: Vec<Recommendation>) -> Vec<Decision> {
        let mut c = Coordinator::new(CoordinatorConfig::default(), Policies::default()).unwrap();
        let mut out = Vec::new();
        for (i, r) in recs.into_iter().enumerate() {
            c.offer(r, 0, i as i64, 0, &mut out);
        }
        c.tick(10_000, &mut out);
        out
    }

    fn verdicts(ds: &[Decision]) -> Vec<(String, Verdict, String)> {
        let mut v: Vec<_> = ds
            .iter()
            .map(|d| (d.recommendation_id.clone(), d.verdict, d.rule.clone()))
            .collect();
        v.sort();
        v
    }

    use ActionKind::{ScaleIn, ScaleOut};
    use Verdict::{Approved, Merged, Rejected};

    #[test]
    fn arbitration_table() {
        let s = |a: &str, v: Verdict, r: &str| (a.to_string(), v, r.to_string());
        type Expected = Vec<(String, Verdict, String)>;
        let cases: Vec<(&str, Vec<Recommendation>, Expected)> = vec![
            (
                "single scale-out approved",
                vec![rec("a", "t", ScaleOut, 2, 4, 0)],
                vec![s("a", Approved, "approve")],
            ),
            (
                "scale-out beats scale-in",
                vec![
                    rec("a", "t", ScaleIn, 4, 2, 0),
                    rec("b", "t", ScaleOut, 4, 6, 1_000),
                ],
                vec![s("a", Rejected, "conflict"), s("b", Approved, "approve")],
            ),
            (
                "same direction merges to the larger step",
                vec![
                    rec("a", "t", ScaleOut, 2, 3, 0),
                    rec("b", "t", ScaleOut, 2, 5, 1_000),
                ],
                vec![s("a", Merged, "merge"), s("b", Approved, "approve")],
            ),
            (
                "already at max",
                vec![rec("a", "t", ScaleOut, 10, 12, 0)],
                vec![s("a", Rejected, "bounds")],
            ),
            (
                "already at min",
                vec![rec("a", "t", ScaleIn, 1, 0, 0)],
                vec![s("a", Rejected, "bounds")],
            ),
            (
                "cooldown after a change in an earlier window",
                vec![
                    rec("a", "t", ScaleOut, 2, 4, 0),
                    rec("b", "t", ScaleOut, 4, 6, 120_000),
                ],
                vec![s("a", Approved, "approve"), s("b", Rejected, "cooldown")],
            ),
            (
                "after the cooldown a change is allowed again",
                vec![
                    rec("a", "t", ScaleOut, 2, 4, 0),
                    rec("b", "t", ScaleOut, 4, 6, 400_000),
                ],
                vec![s("a", Approved, "approve"), s("b", Approved, "approve")],
            ),
            (
                "expired before the window closed",
                vec![
                    Recommendation {
                        expires_ms: 10,
                        ..rec("a", "t", ScaleOut, 2, 4, 0)
                    },
                    rec("b", "u", ScaleOut, 2, 4, 50_000),
                ],
                vec![s("a", Rejected, "expired"), s("b", Approved, "approve")],
            ),
            (
                "different targets do not conflict",
                vec![
                    rec("a", "t", ScaleIn, 4, 2, 0),
                    rec("b", "u", ScaleOut, 4, 6, 0),
                ],
                vec![s("a", Approved, "approve"), s("b", Approved, "approve")],
            ),
        ];
        for (name, recs, want) in cases {
            assert_eq!(verdicts(&run(recs)), want, "{name}");
        }
    }

    #[test]
    fn approved_is_clamped_and_carries_the_action() {
        let ds = run(vec![rec("a", "t", ScaleOut, 4, 50, 0)]);
        assert_eq!(ds[0].final_replicas, Some(10));
        assert!(ds[0].reason.contains("bounded"), "{}", ds[0].reason);
        let merged = run(vec![
            rec("a", "t", ScaleOut, 2, 3, 0),
            rec("b", "t", ScaleOut, 2, 5, 0),
        ]);
        let m = merged.iter().find(|d| d.verdict == Merged).unwrap();
        assert_eq!(m.merged_into.as_deref(), Some("b"));
        assert_eq!(m.final_replicas, None);
    }

    #[test]
    fn held_offsets_and_redelivery() {
        let mut c = Coordinator::new(CoordinatorConfig::default(), Policies::default()).unwrap();
        let mut out = Vec::new();
        c.offer(rec("a", "t", ScaleOut, 2, 4, 0), 3, 17, 0, &mut out);
        c.offer(rec("b", "t", ScaleOut, 2, 4, 1), 3, 18, 0, &mut out);
        assert!(out.is_empty());
        assert_eq!(c.held_offset(3), Some(17));
        assert_eq!(c.held_offset(2), None);
        c.tick(1_000, &mut out);
        assert!(out.is_empty(), "not idle long enough");
        c.tick(5_000, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(c.held_offset(3), None);
        c.offer(rec("a", "t", ScaleOut, 2, 4, 0), 3, 17, 6_000, &mut out);
        c.tick(60_000, &mut out);
        assert_eq!(
            out.len(),
            2,
            "a redelivered recommendation is not decided twice"
        );
        assert_eq!(c.duplicates(), 1);
    }

    #[test]
    fn revoked_pending_is_forgotten_so_it_can_be_decided_later() {
        let mut c = Coordinator::new(CoordinatorConfig::default(), Policies::default()).unwrap();
        let mut out = Vec::new();
        c.offer(rec("a", "t", ScaleOut, 2, 4, 0), 1, 5, 0, &mut out);
        c.partitions_revoked(&[1]);
        assert_eq!(c.held_offset(1), None);
        c.offer(rec("a", "t", ScaleOut, 2, 4, 0), 1, 5, 0, &mut out);
        c.tick(10_000, &mut out);
        assert_eq!(out.len(), 1);
    }
}
