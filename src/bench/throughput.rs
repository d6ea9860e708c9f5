//! Throughput of the metric stages against the no-op relay and the consume-only sink, on
//! one broker, in one run.

use super::process::cpu_seconds;
use super::relay::{Relay, Sink};
use crate::agent::publish::MetricPublisher;
use crate::config::Config;
use crate::event::MetricEvent;
use crate::pipeline::run_kind;
use crate::pipeline::StageKind;
use crate::runtime::{
    run_stage, Guarantee, KafkaOptions, Progress, RunnerConfig, Shutdown, Topics,
};
use crate::stage::detector::Detector;
use crate::stage::forecaster::Forecaster;
use crate::stage::Stage;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one run of one stage achieved.
#[derive(Debug, Clone, PartialEq)]
pub struct StageThroughput {
    /// sink, relay, detector, forecaster or pipeline.
    pub stage: &'static str,
    /// Events read.
    pub events: u64,
    /// Seconds from the first record read to the last.
    pub seconds: f64,
    /// CPU seconds of the whole process during that time.
    pub cpu_seconds: f64,
    /// State records written to the changelog.
    pub state_writes: u64,
}

/// One stage over several runs: the median run's rate and CPU, and the spread.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The stage.
    pub stage: &'static str,
    /// Median events per second.
    pub rate: f64,
    /// Slowest and fastest run.
    pub min_rate: f64,
    /// Fastest run.
    pub max_rate: f64,
    /// CPU seconds per million events of the median run.
    pub cpu_per_million: f64,
    /// State writes of the median run.
    pub state_writes: u64,
}

impl Summary {
    /// Per stage, in the order of the first run, the median of `runs` (each the rows of
    /// one [`run`]); a stage missing from some runs is summarised over the others.
    pub fn of(runs: &[Vec<StageThroughput>]) -> Vec<Summary> {
        let Some(first) = runs.first() else {
            return Vec::new();
        };
        first
            .iter()
            .map(|r| {
                let mut same: Vec<&StageThroughput> = runs
                    .iter()
                    .flat_map(|run| run.iter().filter(|x| x.stage == r.stage))
                    .collect();
                same.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
                let median = same[same.len() / 2];
                Summary {
                    stage: r.stage,
                    rate: median.rate(),
                    min_rate: same[0].rate(),
                    max_rate: same[same.len() - 1].rate(),
                    cpu_per_million: median.cpu_per_million(),
                    state_writes: median.state_writes,
                }
            })
            .collect()
    }
}

/// How the stages run: the delivery guarantee and the commit (checkpoint) interval,
/// as `perfpilot run` would. The detector and forecaster keep their changelogs.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    /// At-least-once or exactly-once.
    pub guarantee: Guarantee,
    /// Time between commits.
    pub commit_interval: Duration,
}

impl From<Guarantee> for Delivery {
    fn from(guarantee: Guarantee) -> Self {
        Delivery {
            guarantee,
            commit_interval: guarantee.default_commit_interval(),
        }
    }
}

impl StageThroughput {
    /// Events per second.
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.seconds.max(1e-9)
    }

    /// CPU seconds per million events.
    pub fn cpu_per_million(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.events.max(1) as f64
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Kafka client or topic creation.
    #[error("kafka: {0}")]
    Kafka(String),
    /// A stage did not read everything in time.
    #[error("{stage} read {read} of {expected} events within {timeout:?}")]
    Timeout {
        /// Stage.
        stage: &'static str,
        /// Read.
        read: u64,
        /// Expected.
        expected: u64,
        /// Limit.
        timeout: Duration,
    },
}

/// Publishes `events` metric events over `series` series (one point per series per
/// minute of event time, ending now) to the metrics topic: half CPU utilisation, half
/// p99 latency, each with a wave around a healthy level.
pub async fn publish(
    kafka: &KafkaOptions,
    topics: &Topics,
    events: u64,
    series: u64,
) -> Result<(), BenchError> {
    let mut p = MetricPublisher::new(kafka, topics.metrics())
        .map_err(|e| BenchError::Kafka(e.to_string()))?;
    let rounds = events.div_ceil(series.max(1));
    let start = crate::runtime::now_ms() - rounds as i64 * 60_000;
    for n in 0..events {
        let (round, i) = (n / series, n % series);
        let ts = start + round as i64 * 60_000;
        // A healthy fleet: utilisation 40-60 %, p99 latency 100-140 ms, so the
        // downstream stages see the usual trickle of recommendations, not a flood.
        let wave = ((n as f64) * 0.37).sin();
        let (metric, value) = match i % 2 {
            0 => ("cpu_utilization", 0.5 + 0.1 * wave),
            _ => ("latency_p99_ms", 120.0 + 20.0 * wave),
        };
        let e = MetricEvent::sample("bench", &format!("svc-{:06}", i / 2), metric, ts, value);
        p.publish(&e)
            .await
            .map_err(|e| BenchError::Kafka(e.to_string()))?;
    }
    p.flush()
        .await
        .map_err(|e| BenchError::Kafka(e.to_string()))?;
    Ok(())
}

/// What a timed core is: one of the pipeline's stages, writing where `perfpilot run`
/// has it write, or a baseline (the sink, the relay) writing to a topic nothing reads
/// in this run.
#[derive(Debug, Clone, Copy)]
pub enum Timed {
    /// A stage of the pipeline.
    Stage(StageKind),
    /// A baseline, by name.
    Baseline(&'static str),
}

/// Runs `core` from the beginning of the metrics topic with a fresh group until it has
/// read `expected` events; times it from its first record.
pub async fn time_stage<S: Stage>(
    core: S,
    timed: Timed,
    kafka: &KafkaOptions,
    topics: &Topics,
    expected: u64,
    timeout: Duration,
    delivery: Delivery,
) -> Result<StageThroughput, BenchError> {
    let (stage, output) = match timed {
        Timed::Stage(kind) => (kind.as_str(), kind.runner_config(topics, None).output_topic),
        Timed::Baseline(name) => (name, topics.recommendations()),
    };
    let group = format!(
        "{}bench-{stage}-{}",
        topics.prefix,
        crate::runtime::now_ms()
    );
    let mut runner = RunnerConfig::new(group, vec![topics.metrics()], output, topics.deadletter());
    runner.guarantee = delivery.guarantee;
    runner.commit_interval = delivery.commit_interval;
    runner.state_topic = Some(topics.state(stage));
    let progress = vec![runner.progress.clone()];
    let shutdown = Shutdown::new();
    let kafka_run = kafka.clone().with_consumer("auto.offset.reset", "earliest");
    let handle = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            run_stage(core, &kafka_run, runner, shutdown)
                .await
                .map(|r| r.state_writes)
                .map_err(|e| e.to_string())
        })
    };
    finish(stage, vec![handle], &progress, expected, timeout, shutdown).await
}

/// The whole pipeline — detector, forecaster, recommender and coordinator, each with its
/// own runner as `perfpilot run` starts them, in this process — over the metrics topic
/// of `topics` (fresh: the stages' changelogs must be empty); timed from the first
/// record read until detector and forecaster have both read `expected` events.
pub async fn time_pipeline(
    config: &Config,
    kafka: &KafkaOptions,
    topics: &Topics,
    expected: u64,
    timeout: Duration,
    delivery: Delivery,
) -> Result<StageThroughput, BenchError> {
    let shutdown = Shutdown::new();
    let kafka_run = kafka.clone().with_consumer("auto.offset.reset", "earliest");
    let (mut handles, mut progress) = (Vec::new(), Vec::new());
    for kind in StageKind::ALL {
        let mut runner = kind.runner_config(topics, None);
        runner.guarantee = delivery.guarantee;
        runner.commit_interval = delivery.commit_interval;
        if matches!(kind, StageKind::Detector | StageKind::Forecaster) {
            progress.push(runner.progress.clone());
        }
        let (kafka, shutdown, config) = (kafka_run.clone(), shutdown.clone(), config.clone());
        handles.push(tokio::spawn(async move {
            run_kind(kind, &config, &kafka, runner, shutdown)
                .await
                .map(|r| r.state_writes)
                .map_err(|e| e.to_string())
        }));
    }
    finish("pipeline", handles, &progress, expected, timeout, shutdown).await
}

type StageHandle = tokio::task::JoinHandle<Result<u64, String>>;

/// Waits until every one of `progress` has read `expected` records, then stops the
/// stages; the time and CPU run from the first record any of them read.
async fn finish(
    stage: &'static str,
    handles: Vec<StageHandle>,
    progress: &[Arc<Progress>],
    expected: u64,
    timeout: Duration,
    shutdown: Shutdown,
) -> Result<StageThroughput, BenchError> {
    let deadline = Instant::now() + timeout;
    let mut first: Option<(Instant, f64)> = None;
    loop {
        let read = progress.iter().map(|p| p.consumed()).min().unwrap_or(0);
        let any = progress.iter().map(|p| p.consumed()).max().unwrap_or(0);
        if first.is_none() && any > 0 {
            first = Some((Instant::now(), cpu_seconds().unwrap_or(0.0)));
        }
        if read >= expected {
            break;
        }
        if Instant::now() > deadline {
            shutdown.trigger();
            for h in handles {
                let _ = h.await;
            }
            return Err(BenchError::Timeout {
                stage,
                read,
                expected,
                timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let end = (Instant::now(), cpu_seconds().unwrap_or(0.0));
    shutdown.trigger();
    let mut state_writes = 0;
    for h in handles {
        state_writes += h
            .await
            .map_err(|e| BenchError::Kafka(e.to_string()))?
            .map_err(BenchError::Kafka)?;
    }
    let (t0, c0) = first.unwrap_or(end);
    Ok(StageThroughput {
        stage,
        events: expected,
        seconds: (end.0 - t0).as_secs_f64(),
        cpu_seconds: end.1 - c0,
        state_writes,
    })
}

/// Sink, relay, detector and forecaster over the same `events` events on `topics`; then,
/// with `pipeline_topics` (a second fresh set), the same events through the whole
/// pipeline.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    kafka: &KafkaOptions,
    topics: &Topics,
    pipeline_topics: Option<&Topics>,
    config: &Config,
    events: u64,
    series: u64,
    timeout: Duration,
    delivery: Delivery,
) -> Result<Vec<StageThroughput>, BenchError> {
    publish(kafka, topics, events, series).await?;
    let mut out = Vec::new();
    let (sink, relay) = (Timed::Baseline("sink"), Timed::Baseline("relay"));
    out.push(time_stage(Sink, sink, kafka, topics, events, timeout, delivery).await?);
    out.push(time_stage(Relay, relay, kafka, topics, events, timeout, delivery).await?);
    let det =
        Detector::new(config.detector.clone()).map_err(|e| BenchError::Kafka(e.to_string()))?;
    let timed = Timed::Stage(StageKind::Detector);
    out.push(time_stage(det, timed, kafka, topics, events, timeout, delivery).await?);
    let fc =
        Forecaster::new(config.forecaster.clone()).map_err(|e| BenchError::Kafka(e.to_string()))?;
    let timed = Timed::Stage(StageKind::Forecaster);
    out.push(time_stage(fc, timed, kafka, topics, events, timeout, delivery).await?);
    if let Some(topics) = pipeline_topics {
        publish(kafka, topics, events, series).await?;
        out.push(time_pipeline(config, kafka, topics, events, timeout, delivery).await?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(stage: &'static str, seconds: f64) -> StageThroughput {
        StageThroughput {
            stage,
            events: 1000,
            seconds,
            cpu_seconds: seconds / 2.0,
            state_writes: 0,
        }
    }

    #[test]
    fn a_summary_is_the_median_run_with_the_spread() {
        let runs = vec![
            vec![row("sink", 1.0), row("detector", 4.0)],
            vec![row("sink", 2.0), row("detector", 1.0)],
            vec![row("sink", 4.0), row("detector", 2.0)],
        ];
        let s = Summary::of(&runs);
        assert_eq!(
            s.iter().map(|r| r.stage).collect::<Vec<_>>(),
            ["sink", "detector"]
        );
        assert_eq!(
            (s[0].rate, s[0].min_rate, s[0].max_rate),
            (500.0, 250.0, 1000.0)
        );
        assert_eq!(s[1].rate, 500.0);
        assert_eq!(s[1].cpu_per_million, 1000.0); // the 2 s run: 1 CPU s per 1000 events
        assert!(Summary::of(&[]).is_empty());
    }
}
