//! Wiring of the four stages: which core reads which topics and writes where. Used by
//! `perfpilot run`, the demo and the integration tests, so all run the same pipeline.

use crate::config::Config;
use crate::runtime::{
    run_stage, KafkaOptions, RunReport, RunnerConfig, RuntimeError, Shutdown, Topics,
};
use crate::stage::coordinator::Coordinator;
use crate::stage::detector::Detector;
use crate::stage::forecaster::Forecaster;
use crate::stage::recommender::Recommender;

/// The four stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StageKind {
    /// metrics → anomalies
    Detector,
    /// metrics → forecasts
    Forecaster,
    /// anomalies + forecasts → recommendations
    Recommender,
    /// recommendations → decisions
    Coordinator,
}

impl StageKind {
    /// Every stage, in pipeline order.
    pub const ALL: [StageKind; 4] = [
        StageKind::Detector,
        StageKind::Forecaster,
        StageKind::Recommender,
        StageKind::Coordinator,
    ];

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            StageKind::Detector => "detector",
            StageKind::Forecaster => "forecaster",
            StageKind::Recommender => "recommender",
            StageKind::Coordinator => "coordinator",
        }
    }

    /// The default consumer group of the stage.
    pub fn default_group(self, topics: &Topics) -> String {
        format!("{}{}", topics.prefix, self.as_str())
    }

    /// For each topic a stage reads (full name), the consumer groups that read it: the
    /// stages' default groups, plus `extra` groups on every such topic.
    pub fn readers(
        topics: &Topics,
        extra: &[String],
    ) -> std::collections::HashMap<String, Vec<String>> {
        let mut readers: std::collections::HashMap<String, Vec<String>> = Default::default();
        for kind in StageKind::ALL {
            for input in kind.runner_config(topics, None).input_topics {
                readers
                    .entry(input)
                    .or_default()
                    .push(kind.default_group(topics));
            }
        }
        for groups in readers.values_mut() {
            groups.extend(extra.iter().cloned());
        }
        readers
    }

    /// Runner settings: inputs, output, dead letters, state changelog, group.
    /// The one record type the stage reads, if one: a Confluent writer schema of
    /// another name is read as it.
    pub fn input_record(self) -> Option<&'static str> {
        match self {
            StageKind::Detector | StageKind::Forecaster => Some("MetricEvent"),
            StageKind::Recommender => None,
            StageKind::Coordinator => Some("Recommendation"),
        }
    }

    pub fn runner_config(self, topics: &Topics, group_id: Option<String>) -> RunnerConfig {
        let (inputs, output) = match self {
            StageKind::Detector => (vec![topics.metrics()], topics.anomalies()),
            StageKind::Forecaster => (vec![topics.metrics()], topics.forecasts()),
            StageKind::Recommender => (
                vec![topics.anomalies(), topics.forecasts()],
                topics.recommendations(),
            ),
            StageKind::Coordinator => (vec![topics.recommendations()], topics.decisions()),
        };
        let mut cfg = RunnerConfig::new(
            group_id.unwrap_or_else(|| self.default_group(topics)),
            inputs,
            output,
            topics.deadletter(),
        );
        // Used by the stages that keep per-key state (the runner asks the core).
        cfg.state_topic = Some(topics.state(self.as_str()));
        cfg
    }
}

/// Why a stage could not run.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The configuration is invalid for this stage.
    #[error(transparent)]
    Config(#[from] crate::config_error::ConfigError),
    /// The runner failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Builds the core of `kind` from `config` and runs it until `shutdown`.
pub async fn run_kind(
    kind: StageKind,
    config: &Config,
    kafka: &KafkaOptions,
    runner: RunnerConfig,
    shutdown: Shutdown,
) -> Result<RunReport, PipelineError> {
    Ok(match kind {
        StageKind::Detector => {
            run_stage(
                Detector::new(config.detector.clone())?,
                kafka,
                runner,
                shutdown,
            )
            .await?
        }
        StageKind::Forecaster => {
            run_stage(
                Forecaster::new(config.forecaster.clone())?,
                kafka,
                runner,
                shutdown,
            )
            .await?
        }
        StageKind::Recommender => {
            run_stage(
                Recommender::new(config.policies.clone()),
                kafka,
                runner,
                shutdown,
            )
            .await?
        }
        StageKind::Coordinator => {
            let core = Coordinator::new(config.coordinator.clone(), config.policies.clone())?;
            // An idle window is decided on a tick: tick often enough that the wait adds
            // at most a quarter of `idle_flush_ms`.
            let mut runner = runner;
            let quarter = std::time::Duration::from_millis(config.coordinator.idle_flush_ms / 4);
            runner.tick_interval = runner
                .tick_interval
                .min(quarter.max(std::time::Duration::from_millis(1)));
            run_stage(core, kafka, runner, shutdown).await?
        }
    })
}
