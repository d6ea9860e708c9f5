//! Coordinator core: arbitrates the recommendations of each pool.
//!
//! Recommendations are collected in a decision window per pool (event time). When the
//! window closes — a recommendation arrives past its end, the pool has been idle for
//! `idle_flush_ms` of wall time, or it holds `max_pending` — every recommendation in it
//! gets exactly one decision. The rules, in the order they apply (see `arbitrate`):
//!
//! | rule            | verdict  | when |
//! |-----------------|----------|------|
//! | `expired`       | EXPIRED  | the recommendation expired before its window closed |
//! | `advisory`      | APPROVED | capacity warnings and reclaim reports: passed on for people, nothing to actuate |
//! | `deny`          | REJECTED | a deny rule matches, or allow rules exist and none matches |
//! | `freeze`        | DEFERRED | the pool is in a freeze (maintenance) window |
//! | `cooldown`      | REJECTED | the resource changed less than the kind's cooldown ago |
//! | `noop`          | REJECTED | the resource is already at (or past) the proposal |
//! | `bounds`        | REJECTED | step limits and min/max leave nothing to do in that direction |
//! | `stabilization` | DEFERRED | a removal that a higher proposal of the stabilization window holds back |
//! | `conflict`      | REJECTED | a removal while the window holds an addition for the same resource (safety first) |
//! | `merge`         | MERGED   | same direction as a stronger proposal in the window |
//! | `concurrency`   | DEFERRED | the pool already has its maximum of changes in progress |
//! | `budget`        | DEFERRED / APPROVED | the pool budget (replicas, cost) has no room / room for part of it |
//! | `approve`       | APPROVED | everything else: the proposal after step limits and bounds |
//!
//! Under a budget, the window's winners are served by priority, then by expected benefit
//! per unit of cost, so the budget goes where it helps most and is never exceeded.
//! Dry-run (global, per pool or per target) decides the same way and marks the decision;
//! it does not change what the coordinator believes is running.
//!
//! Recommendations held in an open window are reported through `held_offset`, so the
//! runner never commits past them; redelivered ids are recognised and not decided twice.

mod access;
mod arbitrate;

use super::{KeyedMap, KeyedState, RecordMeta, Stage};
use crate::config_error::ConfigError;
use crate::event::{Decision, Recommendation};
use crate::policy::Policies;
use access::Rule;
use arbitrate::PoolState;
use serde::{Deserialize, Serialize};
use std::collections::{HashSet, VecDeque};

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
    /// Most changes in progress per pool at once; 0 is no limit. Pools may set their
    /// own. Default 0.
    pub max_concurrent_changes: u32,
    /// How long an approved change counts as in progress (event time); after it, the
    /// value the agents report is trusted over the approved one. Default 120 s.
    pub change_duration_secs: u64,
    /// Only targets matching one of these may act (`glob` or `glob:kind`). Default: all.
    pub allow: Vec<String>,
    /// Targets matching one of these never act (`glob` or `glob:kind`). Default none.
    pub deny: Vec<String>,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            decision_window_secs: 60,
            idle_flush_ms: 2000,
            max_pending: 1000,
            dedupe_capacity: 100_000,
            dry_run: false,
            max_concurrent_changes: 0,
            change_duration_secs: 120,
            allow: Vec::new(),
            deny: Vec::new(),
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
        for r in self.allow.iter().chain(&self.deny) {
            if let Some(kind) = Rule::parse(r).kind() {
                if !crate::policy::target::KIND_NAMES.contains(&kind) {
                    return Err(ConfigError::Invalid(format!(
                        "coordinator: rule {r:?} names unknown action kind {kind:?}"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Settings the arbitration reads, parsed once.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub cfg: CoordinatorConfig,
    pub policies: Policies,
    pub allow: Vec<Rule>,
    pub deny: Vec<Rule>,
}

#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub rec: Recommendation,
    pub offset: i64,
}

/// Pools whose state a coordinator holds at most (see [`Coordinator::with_max_pools`]).
pub const MAX_POOLS: usize = 100_000;

/// The coordinator stage core.
#[derive(Debug)]
pub struct Coordinator {
    rules: Rules,
    pools: KeyedMap<PoolState>,
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
    duplicates: u64,
    /// Decisions made, by verdict (in `Verdict` order).
    decided: [u64; 5],
}

/// Counter names of the decisions by verdict, in `Verdict` order.
const DECIDED: [&str; 5] = [
    "decided_approved",
    "decided_merged",
    "decided_deferred",
    "decided_rejected",
    "decided_expired",
];

impl Coordinator {
    /// A coordinator with validated settings, holding at most [`MAX_POOLS`] pools.
    pub fn new(cfg: CoordinatorConfig, policies: Policies) -> Result<Self, ConfigError> {
        Self::with_max_pools(cfg, policies, MAX_POOLS)
    }

    /// A coordinator holding the state of at most `max_pools` pools: a new one past it
    /// evicts the least recently heard of (counted as `pools_evicted`), never one that
    /// holds recommendations not yet decided.
    pub fn with_max_pools(
        cfg: CoordinatorConfig,
        policies: Policies,
        max_pools: usize,
    ) -> Result<Self, ConfigError> {
        cfg.check()?;
        let allow = cfg.allow.iter().map(|r| Rule::parse(r)).collect();
        let deny = cfg.deny.iter().map(|r| Rule::parse(r)).collect();
        Ok(Coordinator {
            rules: Rules {
                cfg,
                policies,
                allow,
                deny,
            },
            pools: KeyedMap::new(max_pools).keeping(|p: &PoolState| !p.pending.is_empty()),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            duplicates: 0,
            decided: [0; 5],
        })
    }

    fn count(&mut self, decisions: &[Decision]) {
        for d in decisions {
            self.decided[d.verdict as usize] += 1;
        }
    }

    /// Redelivered recommendations that were recognised and skipped.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    fn remember(&mut self, id: &str) {
        self.seen.insert(id.to_string());
        self.seen_order.push_back(id.to_string());
        while self.seen_order.len() > self.rules.cfg.dedupe_capacity {
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
        let before = out.len();
        if self.seen.contains(&rec.id) {
            self.duplicates += 1;
            return;
        }
        self.remember(&rec.id);
        let window_ms = (self.rules.cfg.decision_window_secs * 1000) as i64;
        let pool = self.pools.entry(&rec.pool, partition);
        if let Some(start) = pool.window_start {
            if rec.created_ms >= start + window_ms {
                pool.decide(&self.rules, Some(rec.created_ms), out);
            }
        }
        pool.window_start.get_or_insert(rec.created_ms);
        pool.pending.push(Pending { rec, offset });
        pool.last_input_wall_ms = now_ms;
        if pool.pending.len() >= self.rules.cfg.max_pending {
            pool.decide(&self.rules, None, out);
        }
        self.count(&out[before..]);
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
        let before = out.len();
        let idle = self.rules.cfg.idle_flush_ms as i64;
        let rules = &self.rules;
        self.pools.update_each(|_, pool| {
            let due = !pool.pending.is_empty() && now_ms - pool.last_input_wall_ms >= idle;
            if due {
                pool.decide(rules, None, out);
            }
            due
        });
        self.count(&out[before..]);
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
        self.pools.drop_partitions(partitions);
    }

    fn held_offset(&self, partition: i32) -> Option<i64> {
        self.pools
            .values()
            .filter(|p| p.partition == partition)
            .flat_map(|p| p.pending.iter().map(|x| x.offset))
            .min()
    }

    fn active_series(&self) -> usize {
        self.pools.values().map(PoolState::resources).sum()
    }

    fn state(&mut self) -> Option<&mut dyn KeyedState> {
        Some(&mut self.pools)
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let mut c = vec![
            ("redelivered_skipped", self.duplicates),
            ("pools_evicted", self.pools.evicted()),
        ];
        c.extend(DECIDED.iter().copied().zip(self.decided));
        c
    }
}

#[cfg(test)]
mod tests;
