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
//! [pools.shop]              # budgets, concurrency and freeze windows per pool
//! max_replicas_total = 40
//! freeze = [{ daily = "22:00-06:00" }]
//!
//! [coordinator]
//! dry_run = true
//! ```

pub use crate::ingest::mapping::MappingConfig;
pub use crate::policy::{Policies, PoolPolicy, TargetPolicy};
use crate::stage::{
    coordinator::CoordinatorConfig, detector::DetectorConfig, forecaster::ForecasterConfig,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

pub use crate::config_error::ConfigError;

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
    /// Label rules of `ingest prometheus` and `agent --scrape`.
    pub ingest: MappingConfig,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    defaults: Option<toml::Table>,
    #[serde(default)]
    targets: BTreeMap<String, toml::Table>,
    #[serde(default)]
    pools: BTreeMap<String, toml::Table>,
    #[serde(default)]
    detector: DetectorConfig,
    #[serde(default)]
    forecaster: ForecasterConfig,
    #[serde(default)]
    coordinator: CoordinatorConfig,
    #[serde(default)]
    ingest: MappingConfig,
}

impl Config {
    /// Parses configuration text; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        let cfg = Config {
            policies: Policies::from_tables(raw.defaults, raw.targets, raw.pools)?,
            detector: raw.detector,
            forecaster: raw.forecaster,
            coordinator: raw.coordinator,
            ingest: raw.ingest,
        };
        cfg.detector.check()?;
        cfg.forecaster.check()?;
        cfg.coordinator.check()?;
        crate::ingest::mapping::Mapping::new(cfg.ingest.clone(), "check")
            .map_err(|e| ConfigError::Invalid(format!("[ingest] {e}")))?;
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
