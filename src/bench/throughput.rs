//! Throughput of the metric stages against the no-op relay, on one broker, in one run.

use super::process::cpu_seconds;
use super::relay::Relay;
use crate::agent::publish::MetricPublisher;
use crate::config::Config;
use crate::event::MetricEvent;
use crate::runtime::{run_stage, Guarantee, KafkaOptions, RunnerConfig, Shutdown, Topics};
use crate::stage::detector::Detector;
use crate::stage::forecaster::Forecaster;
use crate::stage::Stage;
use std::time::{Duration, Instant};

/// What one run of one stage achieved.
#[derive(Debug, Clone, PartialEq)]
pub struct StageThroughput {
    /// relay, detector or forecaster.
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
/// minute of event time, ending now) to the metrics topic.
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
        let value = 50.0 + 10.0 * ((n as f64) * 0.37).sin();
        let e = MetricEvent::sample(
            "bench",
            &format!("svc-{:06}", i / 2),
            ["cpu_utilization", "latency_p99_ms"][(i % 2) as usize],
            ts,
            value,
        );
        p.publish(&e)
            .await
            .map_err(|e| BenchError::Kafka(e.to_string()))?;
    }
    p.flush()
        .await
        .map_err(|e| BenchError::Kafka(e.to_string()))?;
    Ok(())
}

/// Runs `core` from the beginning of the metrics topic with a fresh group until it has
/// read `expected` events; times it from its first record.
pub async fn time_stage<S: Stage>(
    core: S,
    stage: &'static str,
    kafka: &KafkaOptions,
    topics: &Topics,
    expected: u64,
    timeout: Duration,
    delivery: Delivery,
) -> Result<StageThroughput, BenchError> {
    // The relay writes to a topic nothing else reads in this run.
    let output = match stage {
        "detector" => topics.anomalies(),
        "forecaster" => topics.forecasts(),
        _ => topics.recommendations(),
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
    let progress = runner.progress.clone();
    let shutdown = Shutdown::new();
    let kafka_run = kafka.clone().with_consumer("auto.offset.reset", "earliest");
    let handle = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { run_stage(core, &kafka_run, runner, shutdown).await })
    };
    let deadline = Instant::now() + timeout;
    let mut first: Option<(Instant, f64)> = None;
    loop {
        let read = progress.consumed();
        if first.is_none() && read > 0 {
            first = Some((Instant::now(), cpu_seconds().unwrap_or(0.0)));
        }
        if read >= expected {
            break;
        }
        if Instant::now() > deadline {
            shutdown.trigger();
            let _ = handle.await;
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
    let report = match handle.await {
        Ok(Ok(report)) => report,
        Ok(Err(e)) => return Err(BenchError::Kafka(e.to_string())),
        Err(e) => return Err(BenchError::Kafka(e.to_string())),
    };
    let (t0, c0) = first.unwrap_or(end);
    Ok(StageThroughput {
        stage,
        events: expected,
        seconds: (end.0 - t0).as_secs_f64(),
        cpu_seconds: end.1 - c0,
        state_writes: report.state_writes,
    })
}

/// Relay, detector and forecaster over the same `events` events.
pub async fn run(
    kafka: &KafkaOptions,
    topics: &Topics,
    config: &Config,
    events: u64,
    series: u64,
    timeout: Duration,
    delivery: Delivery,
) -> Result<Vec<StageThroughput>, BenchError> {
    publish(kafka, topics, events, series).await?;
    let mut out = Vec::new();
    out.push(time_stage(Relay, "relay", kafka, topics, events, timeout, delivery).await?);
    let det =
        Detector::new(config.detector.clone()).map_err(|e| BenchError::Kafka(e.to_string()))?;
    out.push(time_stage(det, "detector", kafka, topics, events, timeout, delivery).await?);
    let fc =
        Forecaster::new(config.forecaster.clone()).map_err(|e| BenchError::Kafka(e.to_string()))?;
    out.push(time_stage(fc, "forecaster", kafka, topics, events, timeout, delivery).await?);
    Ok(out)
}
