//! The arbitration of one pool's decision window: the rules of the coordinator, applied
//! to the recommendations of the window and the pool's remembered state. No I/O.
//!
//! Three passes: each recommendation alone (expired, advisory, deny, freeze, cooldown,
//! step limits and bounds); each resource of a target (conflict, stabilization, merge);
//! the pool (concurrency, budget, approve), serving the winners by priority and then by
//! expected benefit per unit of cost.

use super::{access, Pending, Rules};
use crate::event::{show, ActionKind, Decision, Recommendation, Verdict, REPLICAS};
use crate::policy::TargetPolicy;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Most proposals remembered per resource for the stabilization window.
const HISTORY: usize = 128;

/// Values closer than this are the same value.
const EPS: f64 = 1e-9;

/// What the coordinator knows of one resource of one target.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct ResourceState {
    /// Newest value a recommendation reported as current, and its event time.
    reported: Option<(f64, i64)>,
    /// Last approved (not dry-run) value, its decision time (event time), and the event
    /// time the decision was made at (when the window closed; the change starts then).
    approved: Option<(f64, i64, i64)>,
    /// Recent proposals (event time, value), for stabilization.
    proposals: VecDeque<(i64, f64)>,
}

impl ResourceState {
    /// The value believed current: the last approved one, until a report made after
    /// the change had `change_ms` to take effect says otherwise (a report made sooner
    /// may still show the value from before the change).
    fn current(&self, change_ms: i64, fallback: f64) -> f64 {
        match (self.approved, self.reported) {
            (Some((v, _, from)), Some((r, rt))) => {
                if rt >= from + change_ms {
                    r
                } else {
                    v
                }
            }
            (Some((v, _, _)), None) => v,
            (None, Some((r, _))) => r,
            (None, None) => fallback,
        }
    }

    fn report(&mut self, value: f64, at: i64) {
        if self.reported.is_none_or(|(_, t)| at >= t) {
            self.reported = Some((value, at));
        }
    }

    fn propose(&mut self, at: i64, value: f64) {
        self.proposals.push_back((at, value));
        while self.proposals.len() > HISTORY {
            self.proposals.pop_front();
        }
    }

    /// The highest proposal in `[from, to]`.
    fn highest_since(&self, from: i64, to: i64) -> Option<(i64, f64)> {
        self.proposals
            .iter()
            .filter(|(t, _)| (from..=to).contains(t))
            .copied()
            .max_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
    }
}

/// A pool: its open window and what it remembers between windows. Only the memory
/// (resources, changes in progress) is checkpointed: the open window's
/// recommendations are not committed yet, so a new owner reads them again.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct PoolState {
    #[serde(skip)]
    pub partition: i32,
    #[serde(skip)]
    pub pending: Vec<Pending>,
    #[serde(skip)]
    pub window_start: Option<i64>,
    #[serde(skip)]
    pub last_input_wall_ms: i64,
    /// (target, resource) → state.
    #[serde(with = "crate::stage::snapshot::pairs")]
    resources: BTreeMap<(String, String), ResourceState>,
    /// Event times of approved changes (pruned to those still in progress).
    in_progress: VecDeque<i64>,
}

impl crate::stage::snapshot::Partitioned for PoolState {
    fn partition(&self) -> i32 {
        self.partition
    }
    fn set_partition(&mut self, partition: i32) {
        self.partition = partition;
    }
}

/// A recommendation that passed the individual rules.
struct Candidate {
    rec: Recommendation,
    current: f64,
    final_value: f64,
    notes: Vec<String>,
    dry: bool,
}

fn decision(
    rec: &Recommendation,
    verdict: Verdict,
    rule: &str,
    reason: String,
    current: f64,
    decided_ms: i64,
    dry_run: bool,
) -> Decision {
    Decision {
        id: format!("dec-{}", rec.id.trim_start_matches("rec-")),
        recommendation_id: rec.id.clone(),
        target: rec.target.clone(),
        pool: rec.pool.clone(),
        kind: rec.kind,
        resource: rec.resource.clone(),
        verdict,
        rule: rule.to_string(),
        reason,
        current,
        proposed: rec.proposed,
        final_value: None,
        merged_into: None,
        decided_ms,
        dry_run,
    }
}

/// The proposal after the per-action step limit and the bounds, with notes on what
/// limited it.
fn limited(policy: &TargetPolicy, rec: &Recommendation, current: f64) -> (f64, Vec<String>) {
    let mut notes = Vec::new();
    let mut v = rec.proposed;
    let replicas = rec.resource == REPLICAS;
    let step_cap = match (rec.kind, replicas) {
        (ActionKind::ScaleOut, _) | (ActionKind::Raise, true) => {
            Some(current + f64::from(policy.max_scale_out_step))
        }
        (ActionKind::ScaleIn, _) | (ActionKind::Lower, true) => {
            Some(current - f64::from(policy.max_scale_in_step))
        }
        (ActionKind::Raise, false) => Some(current * (1.0 + policy.max_resource_step)),
        (ActionKind::Lower, false) => Some((current * (1.0 - policy.max_resource_step)).max(0.0)),
        _ => None,
    };
    if let Some(cap) = step_cap {
        let capped = if rec.kind.adds_capacity() {
            v.min(cap)
        } else {
            v.max(cap)
        };
        if (capped - v).abs() > EPS {
            notes.push(format!(
                "step limited to {} (proposed {})",
                show(capped, &rec.unit),
                show(v, &rec.unit)
            ));
            v = capped;
        }
    }
    let (lo, hi) = policy.bounds(&rec.resource);
    let bounded = v.clamp(lo, hi);
    if (bounded - v).abs() > EPS {
        notes.push(format!(
            "bounded by {}..={}",
            show(lo, &rec.unit),
            show(hi, &rec.unit)
        ));
        v = bounded;
    }
    if replicas {
        v = v.round();
    }
    (v, notes)
}

fn useful(kind: ActionKind, current: f64, value: f64) -> bool {
    if kind.adds_capacity() {
        value > current + EPS
    } else if kind.removes_capacity() {
        value < current - EPS
    } else {
        (value - current).abs() > EPS
    }
}

impl PoolState {
    /// Resources tracked.
    pub fn resources(&self) -> usize {
        self.resources.len()
    }

    /// Replicas of a target as believed at `at` (its policy's default when unknown).
    fn replicas_of(&self, target: &str, policy: &TargetPolicy, change_ms: i64) -> f64 {
        self.resources
            .get(&(target.to_string(), REPLICAS.to_string()))
            .map_or(f64::from(policy.replicas), |s| {
                s.current(change_ms, f64::from(policy.replicas))
            })
    }

    /// Replicas and cost per hour of every target the pool knows: those it has had
    /// recommendations for, and those the configuration places in it (at their
    /// configured replicas until heard of).
    fn usage(&self, rules: &Rules, pool: &str, change_ms: i64) -> (f64, f64) {
        let (mut replicas, mut cost) = (0.0, 0.0);
        for (target, policy) in rules.policies.targets() {
            let heard = self
                .resources
                .contains_key(&(target.clone(), REPLICAS.to_string()));
            if policy.pool.as_deref() == Some(pool) && !heard {
                let n = f64::from(policy.replicas);
                replicas += n;
                cost += n * policy.cost_per_replica_hour;
            }
        }
        for ((target, resource), s) in &self.resources {
            let policy = rules.policies.get(target);
            let n = self.replicas_of(target, policy, change_ms);
            if resource == REPLICAS {
                let v = s.current(change_ms, n);
                replicas += v;
                cost += v * policy.cost_per_replica_hour;
            } else if let Some(r) = policy.resources.get(resource) {
                cost += s.current(change_ms, r.current) * r.cost_per_unit_hour * n;
            }
        }
        (replicas, cost)
    }

    /// Decides every pending recommendation and empties the window. `closing_ms` is the
    /// event time that closed it (the newer recommendation that arrived), if known.
    pub fn decide(&mut self, rules: &Rules, closing_ms: Option<i64>, out: &mut Vec<Decision>) {
        let pending = std::mem::take(&mut self.pending);
        self.window_start = None;
        let Some(at) = pending.iter().map(|p| p.rec.created_ms).max() else {
            return;
        };
        let effective = closing_ms.unwrap_or(at).max(at);
        let change_ms = (rules.cfg.change_duration_secs * 1000) as i64;
        let mut recs: Vec<Recommendation> = pending.into_iter().map(|p| p.rec).collect();
        // The order never depends on arrival: target, resource, priority, id.
        recs.sort_by(|a, b| {
            (&a.target, &a.resource)
                .cmp(&(&b.target, &b.resource))
                .then(b.priority.cmp(&a.priority))
                .then_with(|| a.id.cmp(&b.id))
        });
        let pool_name = recs[0].pool.clone();
        let pool = rules.policies.pool(&pool_name);
        let pool_dry = rules.cfg.dry_run || pool.policy.dry_run;
        for r in recs.iter().filter(|r| !r.kind.advisory()) {
            self.resources
                .entry((r.target.clone(), r.resource.clone()))
                .or_default()
                .report(r.current, r.created_ms);
        }

        // Pass 1: each recommendation on its own.
        let mut groups: BTreeMap<(String, String), Vec<Candidate>> = BTreeMap::new();
        for rec in recs {
            let policy = rules.policies.get(&rec.target);
            let dry = pool_dry || policy.dry_run;
            let key = (rec.target.clone(), rec.resource.clone());
            let state = self.resources.get(&key);
            let current = state.map_or(rec.current, |s| s.current(change_ms, rec.current));
            let reject = |verdict, rule: &str, reason: String| {
                decision(&rec, verdict, rule, reason, current, at, dry)
            };
            if rec.expires_ms < at {
                out.push(reject(
                    Verdict::Expired,
                    "expired",
                    format!(
                        "expired {} s before its decision window closed",
                        (at - rec.expires_ms) / 1000
                    ),
                ));
                continue;
            }
            if rec.kind.advisory() {
                let mut d = reject(
                    Verdict::Approved,
                    "advisory",
                    format!("reported for operators, nothing to actuate: {}", rec.reason),
                );
                d.current = rec.current;
                d.final_value = Some(rec.proposed);
                out.push(d);
                continue;
            }
            if let Some(why) = access::refusal(&rules.allow, &rules.deny, &rec.target, rec.kind) {
                out.push(reject(Verdict::Rejected, "deny", why));
                continue;
            }
            if let Some(note) = pool.frozen_at(at) {
                out.push(reject(
                    Verdict::Deferred,
                    "freeze",
                    format!("pool {pool_name} is frozen ({note}); proposed again after it if still needed"),
                ));
                continue;
            }
            let state = self.resources.entry(key.clone()).or_default();
            if rec.kind != ActionKind::Tune {
                state.propose(rec.created_ms, rec.proposed);
            }
            if let Some((_, last, _)) = state.approved {
                let cooldown = policy.cooldown_ms(rec.kind);
                if rec.created_ms < last + cooldown {
                    let since = if rec.created_ms >= last {
                        format!(
                            "changed {} s before it was made",
                            (rec.created_ms - last) / 1000
                        )
                    } else {
                        "changed after it was made".to_string()
                    };
                    out.push(reject(
                        Verdict::Rejected,
                        "cooldown",
                        format!(
                            "{} {} {since}; the {} cooldown of {} s had {} s to run",
                            rec.target,
                            rec.resource,
                            rec.kind.as_str(),
                            cooldown / 1000,
                            (last + cooldown - rec.created_ms) / 1000
                        ),
                    ));
                    continue;
                }
            }
            if !useful(rec.kind, current, rec.proposed) {
                out.push(reject(
                    Verdict::Rejected,
                    "noop",
                    format!(
                        "{} already has {} {} (proposed {}): nothing to do",
                        rec.target,
                        show(current, ""),
                        rec.resource,
                        show(rec.proposed, "")
                    ),
                ));
                continue;
            }
            let (final_value, notes) = limited(policy, &rec, current);
            if !useful(rec.kind, current, final_value) {
                let (lo, hi) = policy.bounds(&rec.resource);
                out.push(reject(
                    Verdict::Rejected,
                    "bounds",
                    format!(
                        "{} has {} {}; bounds {}..={} leave no {} to do (proposed {})",
                        rec.target,
                        show(current, ""),
                        rec.resource,
                        show(lo, ""),
                        show(hi, ""),
                        rec.kind.as_str().replace('_', "-"),
                        show(rec.proposed, "")
                    ),
                ));
                continue;
            }
            groups.entry(key).or_default().push(Candidate {
                rec,
                current,
                final_value,
                notes,
                dry,
            });
        }

        // Pass 2: per resource of a target — conflict, stabilization, merge.
        let mut winners: Vec<Candidate> = Vec::new();
        for (key, mut cands) in groups {
            let decided = |c: &Candidate, verdict, rule: &str, reason: String| {
                decision(&c.rec, verdict, rule, reason, c.current, at, c.dry)
            };
            if cands.iter().any(|c| c.rec.kind.adds_capacity()) {
                let (losers, kept): (Vec<_>, Vec<_>) = cands
                    .into_iter()
                    .partition(|c| c.rec.kind.removes_capacity());
                for c in losers {
                    out.push(decided(
                        &c,
                        Verdict::Rejected,
                        "conflict",
                        format!(
                            "an addition to {} {} in the same window wins over this removal",
                            key.0, key.1
                        ),
                    ));
                }
                cands = kept;
            } else if cands.iter().any(|c| c.rec.kind.removes_capacity()) {
                let policy = rules.policies.get(&key.0);
                let window = (policy.scale_in_stabilization_secs * 1000) as i64;
                // The floor never leaves the bounds (a proposal may have).
                let (lo, hi) = policy.bounds(&key.1);
                let highest = self
                    .resources
                    .get(&key)
                    .and_then(|s| s.highest_since(at - window, at))
                    .map(|(t, v)| (t, v.clamp(lo, hi)));
                let mut kept = Vec::new();
                for mut c in cands {
                    let floor = highest.map(|(_, v)| v).filter(|&v| v > c.final_value + EPS);
                    if let (Some(floor), Some((when, _))) = (floor, highest) {
                        let floor = if key.1 == REPLICAS {
                            floor.round()
                        } else {
                            floor
                        };
                        if floor >= c.current - EPS {
                            out.push(decided(
                                &c,
                                Verdict::Deferred,
                                "stabilization",
                                format!(
                                    "{} was proposed {} s ago; within the {} s stabilization window {} {} does not go below it (now {})",
                                    show(floor, &c.rec.unit),
                                    (at - when) / 1000,
                                    window / 1000,
                                    key.0,
                                    key.1,
                                    show(c.current, &c.rec.unit)
                                ),
                            ));
                            continue;
                        }
                        c.notes.push(format!(
                            "stabilized at {}, the highest proposal of the last {} s",
                            show(floor, &c.rec.unit),
                            window / 1000
                        ));
                        c.final_value = floor;
                    }
                    kept.push(c);
                }
                cands = kept;
            }
            // The strongest proposal in the (now single) direction wins; ties go to
            // priority, which the sort already put first.
            let strength = |c: &Candidate| {
                if c.rec.kind.removes_capacity() {
                    -c.final_value
                } else if c.rec.kind.adds_capacity() {
                    c.final_value
                } else {
                    0.0
                }
            };
            let Some(w) = (0..cands.len()).reduce(|best, i| {
                if strength(&cands[i]) > strength(&cands[best]) + EPS {
                    i
                } else {
                    best
                }
            }) else {
                continue;
            };
            let winner = cands.swap_remove(w);
            for c in cands {
                let mut d = decided(
                    &c,
                    Verdict::Merged,
                    "merge",
                    format!(
                        "merged into {}, which sets {} {} to {}",
                        winner.rec.id,
                        key.0,
                        key.1,
                        show(winner.final_value, &winner.rec.unit)
                    ),
                );
                d.merged_into = Some(winner.rec.id.clone());
                out.push(d);
            }
            winners.push(winner);
        }

        // Pass 3: the pool — concurrency and budget, by priority then benefit per cost.
        let per_unit =
            |c: &Candidate| c.rec.expected_benefit / c.rec.cost_delta_per_hour.abs().max(1e-9);
        winners.sort_by(|a, b| {
            b.rec
                .priority
                .cmp(&a.rec.priority)
                .then(per_unit(b).total_cmp(&per_unit(a)))
                .then_with(|| a.rec.id.cmp(&b.rec.id))
        });
        while self
            .in_progress
            .front()
            .is_some_and(|&t| t + change_ms <= at)
        {
            self.in_progress.pop_front();
        }
        let limit = pool
            .policy
            .max_concurrent_changes
            .unwrap_or(rules.cfg.max_concurrent_changes);
        let mut active = self.in_progress.len();
        let (mut replicas_total, mut cost_total) = self.usage(rules, &pool_name, change_ms);
        for mut c in winners {
            let policy = rules.policies.get(&c.rec.target);
            let key = (c.rec.target.clone(), c.rec.resource.clone());
            let unit = c.rec.unit.clone();
            let decided = |c: &Candidate, verdict, rule: &str, reason: String| {
                decision(&c.rec, verdict, rule, reason, c.current, at, c.dry)
            };
            if limit > 0 && active >= limit as usize {
                out.push(decided(
                    &c,
                    Verdict::Deferred,
                    "concurrency",
                    format!(
                        "pool {pool_name} already has {active} change(s) in progress, its maximum"
                    ),
                ));
                continue;
            }
            let replicas = self.replicas_of(&key.0, policy, change_ms);
            let unit_cost = policy.unit_cost_per_hour(&key.1, replicas);
            let delta = c.final_value - c.current;
            let mut rule = "approve";
            if delta > EPS {
                // Room left in the pool, in units of this resource.
                let mut room = f64::INFINITY;
                let mut limits = Vec::new();
                if key.1 == REPLICAS {
                    if let Some(max) = pool.policy.max_replicas_total {
                        room = room.min(max as f64 - replicas_total);
                        limits.push(format!("{max} replicas"));
                    }
                }
                if let Some(max) = pool.policy.max_cost_per_hour {
                    if unit_cost > 0.0 {
                        room = room.min((max - cost_total) / unit_cost);
                        limits.push(format!("{} per hour", show(max, "")));
                    }
                }
                if key.1 == REPLICAS {
                    room = room.floor();
                }
                if room < delta - EPS {
                    if room <= EPS {
                        out.push(decided(
                            &c,
                            Verdict::Deferred,
                            "budget",
                            format!(
                                "pool {pool_name} has no room left in its budget ({}); now {} replicas, {} per hour",
                                limits.join(", "),
                                show(replicas_total, ""),
                                show(cost_total, "")
                            ),
                        ));
                        continue;
                    }
                    c.final_value = c.current + room;
                    c.notes.push(format!(
                        "granted {} of {} by the pool budget ({})",
                        show(room, &unit),
                        show(delta, &unit),
                        limits.join(", ")
                    ));
                    rule = "budget";
                }
            }
            let applied = c.final_value - c.current;
            if key.1 == REPLICAS {
                replicas_total += applied;
            }
            cost_total += applied * unit_cost;
            active += 1;
            let notes = if c.notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", c.notes.join("; "))
            };
            // "scale out checkout from 2 to 4 replicas", "raise api cpu_millicores from
            // 500 to 750 millicores".
            let what = if key.1 == unit || key.1 == REPLICAS {
                key.0.clone()
            } else {
                format!("{} {}", key.0, key.1)
            };
            let mut d = decided(
                &c,
                Verdict::Approved,
                rule,
                format!(
                    "{} {what} from {} to {}{notes}: {}",
                    c.rec.kind.as_str().replace('_', " "),
                    show(c.current, ""),
                    show(c.final_value, if unit.is_empty() { &key.1 } else { &unit }),
                    c.rec.reason
                ),
            );
            d.final_value = Some(c.final_value);
            out.push(d);
            if !c.dry {
                if let Some(s) = self.resources.get_mut(&key) {
                    s.approved = Some((c.final_value, at, effective));
                }
                self.in_progress.push_back(at);
            }
        }
    }
}
