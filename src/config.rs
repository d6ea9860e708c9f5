//! The perfpilot configuration file (TOML): target policies with documented defaults,
//! and the settings of each stage core. Validated once when loaded.
//!
//! ```toml
//! [defaults]                 # applies to every target not listed below
//! replicas = 2
//! max_replicas = 10
//!
//! [targets.checkout]         # any default can be overridden per target
//! pool = "shop"
//! replicas = 3
//! utilization_goal = 0.5
//!
//! [detector]
//! threshold = 4.0
//!
//! [coordinator]
//! dry_run = true
//! ```

use crate::stage::{
    coordinator::CoordinatorConfig, detector::DetectorConfig, forecaster::ForecasterConfig,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// Path given.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("invalid config {origin}: {message}")]
    Parse {
        /// File or section.
        origin: String,
        /// Parser's message (names the key and line).
        message: String,
    },
    /// A value is out of its allowed range.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// How one target is scaled. Every field has a default; `[defaults]` changes them for
/// all targets and `[targets.NAME]` for one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetPolicy {
    /// Pool (budget unit) of the target; when unset, the pool the agent reported, or the
    /// target itself.
    pub pool: Option<String>,
    /// Replicas the target runs when no `replicas_metric` has been seen. Default 2.
    pub replicas: i32,
    /// Fewest replicas allowed. Default 1.
    pub min_replicas: i32,
    /// Most replicas allowed. Default 10.
    pub max_replicas: i32,
    /// Metric holding per-replica utilization as a ratio (0..1). Default `cpu_utilization`.
    pub utilization_metric: String,
    /// Utilization to keep the forecast peak at. Default 0.6.
    pub utilization_goal: f64,
    /// No action while the forecast peak is within this fraction of the goal (HPA's
    /// tolerance). Default 0.1.
    pub tolerance: f64,
    /// Consecutive low forecasts before a scale-in is proposed. Default 3.
    pub scale_in_after: u32,
    /// Latency metric whose upward anomalies call for a scale-out. Default `latency_p99_ms`.
    pub latency_metric: String,
    /// Metric through which an agent reports the current replica count. Default `replicas`.
    pub replicas_metric: String,
    /// Minimum event time between two approved actions on the target. Default 300 s.
    pub cooldown_secs: u64,
    /// How long a recommendation stays actionable (event time). Default 600 s.
    pub recommendation_ttl_secs: u64,
}

impl Default for TargetPolicy {
    fn default() -> Self {
        TargetPolicy {
            pool: None,
            replicas: 2,
            min_replicas: 1,
            max_replicas: 10,
            utilization_metric: "cpu_utilization".into(),
            utilization_goal: 0.6,
            tolerance: 0.1,
            scale_in_after: 3,
            latency_metric: "latency_p99_ms".into(),
            replicas_metric: "replicas".into(),
            cooldown_secs: 300,
            recommendation_ttl_secs: 600,
        }
    }
}

impl TargetPolicy {
    fn check(&self, name: &str) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(format!("target policy {name}: {m}")));
        if self.min_replicas < 0 || self.min_replicas > self.max_replicas {
            return bad(format!(
                "min_replicas {} must be ≥ 0 and ≤ max_replicas {}",
                self.min_replicas, self.max_replicas
            ));
        }
        if !(self.utilization_goal > 0.0 && self.utilization_goal.is_finite()) {
            return bad(format!(
                "utilization_goal {} must be > 0",
                self.utilization_goal
            ));
        }
        if !(0.0..1.0).contains(&self.tolerance) {
            return bad(format!("tolerance {} must be in [0, 1)", self.tolerance));
        }
        if self.replicas < 1 {
            return bad(format!("replicas {} must be ≥ 1", self.replicas));
        }
        Ok(())
    }
}

/// Policies of all targets: the defaults and per-target overrides, resolved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policies {
    defaults: TargetPolicy,
    targets: BTreeMap<String, TargetPolicy>,
}

impl Policies {
    /// The policy of a target (its own, or the defaults).
    pub fn get(&self, target: &str) -> &TargetPolicy {
        self.targets.get(target).unwrap_or(&self.defaults)
    }

    /// The defaults applied to targets without a section of their own.
    pub fn defaults(&self) -> &TargetPolicy {
        &self.defaults
    }

    /// Targets with a policy of their own.
    pub fn targets(&self) -> impl Iterator<Item = (&String, &TargetPolicy)> {
        self.targets.iter()
    }

    /// Builds policies from defaults and per-target overrides given as TOML tables.
    pub fn from_tables(
        defaults: Option<toml::Table>,
        targets: BTreeMap<String, toml::Table>,
    ) -> Result<Self, ConfigError> {
        let parse = |origin: String, table: toml::Table| -> Result<TargetPolicy, ConfigError> {
            TargetPolicy::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Parse {
                origin,
                message: e.to_string(),
            })
        };
        let default_table = defaults.unwrap_or_default();
        let defaults = parse("[defaults]".into(), default_table.clone())?;
        defaults.check("[defaults]")?;
        let mut resolved = BTreeMap::new();
        for (name, overrides) in targets {
            let mut merged = default_table.clone();
            merged.extend(overrides);
            let p = parse(format!("[targets.{name}]"), merged)?;
            p.check(&name)?;
            resolved.insert(name, p);
        }
        Ok(Policies {
            defaults,
            targets: resolved,
        })
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Target policies.
    pub policies: Policies,
    /// Detector settings.
    pub detector: DetectorConfig,
    /// Forecaster settings.
    pub forecaster: ForecasterConfig,
    /// Coordinator settings.
    pub coordinator: CoordinatorConfig,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    defaults: Option<toml::Table>,
    #[serde(default)]
    targets: BTreeMap<String, toml::Table>,
    #[serde(default)]
    detector: DetectorConfig,
    #[serde(default)]
    forecaster: ForecasterConfig,
    #[serde(default)]
    coordinator: CoordinatorConfig,
}

impl Config {
    /// Parses configuration text; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        let cfg = Config {
            policies: Policies::from_tables(raw.defaults, raw.targets)?,
            detector: raw.detector,
            forecaster: raw.forecaster,
            coordinator: raw.coordinator,
        };
        cfg.detector.check()?;
        cfg.forecaster.check()?;
        cfg.coordinator.check()?;
        Ok(cfg)
    }

    /// Loads a file, or the defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            None => Ok(Config::default()),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                Config::parse(&text, &p.display().to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_merge_onto_defaults() {
        let cfg = Config::parse(
            r#"
            [defaults]
            max_replicas = 20
            [targets.checkout]
            pool = "shop"
            replicas = 3
            "#,
            "test",
        )
        .unwrap();
        let p = cfg.policies.get("checkout");
        assert_eq!(
            (p.replicas, p.max_replicas, p.pool.as_deref()),
            (3, 20, Some("shop"))
        );
        assert_eq!(cfg.policies.get("unknown").max_replicas, 20);
        assert_eq!(cfg.policies.get("unknown").replicas, 2);
    }

    #[test]
    fn unknown_keys_and_bad_ranges_are_errors() {
        let e = Config::parse("[targets.a]\nreplica = 3\n", "t").unwrap_err();
        assert!(e.to_string().contains("replica"), "{e}");
        let e = Config::parse("[defaults]\nmin_replicas = 5\nmax_replicas = 2\n", "t").unwrap_err();
        assert!(e.to_string().contains("min_replicas"), "{e}");
        assert!(Config::parse("[detektor]\n", "t").is_err());
    }
}
