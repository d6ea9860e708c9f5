//! Policies: per target (how it may change, what it costs) and per pool (budgets,
//! concurrency, freeze windows), resolved from the configuration file.

pub mod pool;
pub mod target;

pub use pool::{Freeze, FreezeWindow, PoolPolicy, ResolvedPool};
pub use target::{ResourcePolicy, TargetPolicy, Tunable};

use crate::config_error::ConfigError;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Policies of all targets and pools: the defaults and the overrides, resolved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policies {
    defaults: TargetPolicy,
    targets: BTreeMap<String, TargetPolicy>,
    pools: BTreeMap<String, ResolvedPool>,
    default_pool: ResolvedPool,
}

impl Policies {
    /// The policy of a target (its own, or the defaults).
    pub fn get(&self, target: &str) -> &TargetPolicy {
        self.targets.get(target).unwrap_or(&self.defaults)
    }

    /// The policy of a pool (its own, `[pools."*"]`, or no limits).
    pub fn pool(&self, pool: &str) -> &ResolvedPool {
        self.pools.get(pool).unwrap_or(&self.default_pool)
    }

    /// The defaults applied to targets without a section of their own.
    pub fn defaults(&self) -> &TargetPolicy {
        &self.defaults
    }

    /// Targets with a policy of their own.
    pub fn targets(&self) -> impl Iterator<Item = (&String, &TargetPolicy)> {
        self.targets.iter()
    }

    /// Replaces the policy of one target (tests and simulations).
    pub fn set_target(&mut self, target: &str, policy: TargetPolicy) {
        self.targets.insert(target.to_string(), policy);
    }

    /// Replaces the policy of one pool (`"*"`: every pool without its own).
    pub fn set_pool(&mut self, pool: &str, policy: PoolPolicy) -> Result<(), ConfigError> {
        let resolved = ResolvedPool::new(pool, policy)?;
        if pool == "*" {
            self.default_pool = resolved;
        } else {
            self.pools.insert(pool.to_string(), resolved);
        }
        Ok(())
    }

    /// Builds policies from defaults, per-target overrides and pools given as TOML tables.
    pub fn from_tables(
        defaults: Option<toml::Table>,
        targets: BTreeMap<String, toml::Table>,
        pools: BTreeMap<String, toml::Table>,
    ) -> Result<Self, ConfigError> {
        fn parse<T: for<'de> Deserialize<'de>>(
            origin: String,
            table: toml::Table,
        ) -> Result<T, ConfigError> {
            T::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Parse {
                origin,
                message: e.to_string(),
            })
        }
        let default_table = defaults.unwrap_or_default();
        let defaults: TargetPolicy = parse("[defaults]".into(), default_table.clone())?;
        defaults.check("[defaults]")?;
        let mut resolved = BTreeMap::new();
        for (name, overrides) in targets {
            let mut merged = default_table.clone();
            merged.extend(overrides);
            let p: TargetPolicy = parse(format!("[targets.{name}]"), merged)?;
            p.check(&name)?;
            resolved.insert(name, p);
        }
        let mut policies = Policies {
            defaults,
            targets: resolved,
            ..Policies::default()
        };
        for (name, table) in pools {
            let p: PoolPolicy = parse(format!("[pools.{name}]"), table)?;
            policies.set_pool(&name, p)?;
        }
        Ok(policies)
    }
}
