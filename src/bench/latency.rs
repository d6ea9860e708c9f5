//! Produce → anomaly latency of the detector stage, or produce → decision latency
//! through all four stages, at a fixed offered load.
//!
//! A publisher offers `rate` events per second over `series` series (one simulated
//! minute of event time per round); after the warm-up, five series per round carry a
//! latency spike (each series at most once: `rounds` ≤ warm-up + `series` / 5). A consumer on
//! the anomalies (or decisions) topic records when each spike's anomaly (or the decision
//! on the scale-out it caused) arrives; the latency is from the moment the spike was
//! handed to the producer to that arrival, through the broker and every stage's runner.

use super::throughput::BenchError;
use crate::agent::publish::MetricPublisher;
use crate::config::Config;
use crate::event::{AnyRecord, MetricEvent};
use crate::pipeline::run_kind;
use crate::pipeline::StageKind;
use crate::runtime::{
    run_stage, KafkaOptions, RunnerConfig, SharedProducer, Shutdown, Topics,
    DEFAULT_MAX_RECORD_BYTES,
};
use crate::stage::detector::Detector;
use hdrhistogram::Histogram;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Latency percentiles in milliseconds, end to end and (through decisions) per hop.
#[derive(Debug, Clone, PartialEq)]
pub struct Latency {
    /// Through decisions: produce → anomaly, anomaly → recommendation and
    /// recommendation → decision, each between first arrivals on those topics (where the
    /// time goes).
    pub hops: Vec<(&'static str, Percentiles)>,
    /// Spikes whose anomaly arrived.
    pub measured: u64,
    /// Spikes sent.
    pub sent: u64,
    /// p50, p95, p99 and max in ms.
    pub p50: f64,
    /// See `p50`.
    pub p95: f64,
    /// See `p50`.
    pub p99: f64,
    /// See `p50`.
    pub max: f64,
}

/// p50, p95, p99 and max of one hop, in ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// See the struct.
    pub p50: f64,
    /// See the struct.
    pub p95: f64,
    /// See the struct.
    pub p99: f64,
    /// See the struct.
    pub max: f64,
}

impl Percentiles {
    fn of(samples: impl IntoIterator<Item = Duration>) -> Result<Self, BenchError> {
        let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
            .map_err(|e| BenchError::Kafka(e.to_string()))?;
        for d in samples {
            let _ = h.record((d.as_micros() as u64).max(1));
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Ok(Percentiles {
            count: h.len(),
            p50: ms(0.5),
            p95: ms(0.95),
            p99: ms(0.99),
            max: h.max() as f64 / 1000.0,
        })
    }
}

/// What a watched record is, for the arrival map: the spike's anomaly (target and event
/// time), or the first recommendation or decision about a target (each target is spiked
/// once and is otherwise healthy).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Arrival {
    Anomaly(String, i64),
    Recommendation(String),
    Decision(String),
}

/// Series spiked per round after the warm-up.
pub const SPIKES_PER_ROUND: u64 = 5;

/// Where the latency is measured to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Through {
    /// The anomalies topic, through the detector alone.
    Anomalies,
    /// The decisions topic, through detector, forecaster, recommender and coordinator.
    Decisions,
}

/// How the four stages of `--through decisions` produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Producers {
    /// One producer for all four (see `runtime::SharedProducer`).
    Shared,
    /// A producer per stage, as separate processes have.
    PerStage,
}

/// Runs the detector (or the whole pipeline) and measures the latency at `rate`
/// events/s.
pub async fn run(
    kafka: &KafkaOptions,
    topics: &Topics,
    config: &Config,
    (through, producers): (Through, Producers),
    load: (u64, u64, u64),
) -> Result<Latency, BenchError> {
    let (rate, series, rounds) = load;
    let kafka_err = |e: String| BenchError::Kafka(e);
    let warmup = u64::from(config.detector.warmup_points) + 10;
    // Spikes per round: every series is spiked at most once, the spiked ones spread
    // over the partitions, and p99 rests on some hundreds of samples.
    let stride = (series / SPIKES_PER_ROUND).max(1);
    let rounds = rounds.clamp(warmup + 1, warmup + stride);
    let shutdown = Shutdown::new();
    let mut stages = Vec::new();
    let watched = match through {
        Through::Anomalies => {
            let det =
                Detector::new(config.detector.clone()).map_err(|e| kafka_err(e.to_string()))?;
            let runner = RunnerConfig::new(
                format!("{}bench-latency-detector", topics.prefix),
                vec![topics.metrics()],
                topics.anomalies(),
                topics.deadletter(),
            );
            let (kafka, shutdown) = (kafka.clone(), shutdown.clone());
            stages.push(tokio::spawn(async move {
                run_stage(det, &kafka, runner, shutdown)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }));
            topics.anomalies()
        }
        Through::Decisions => {
            let shared = match producers {
                Producers::Shared => Some(
                    SharedProducer::new(kafka, DEFAULT_MAX_RECORD_BYTES)
                        .map_err(|e| kafka_err(e.to_string()))?,
                ),
                Producers::PerStage => None,
            };
            for kind in StageKind::ALL {
                let mut runner = kind.runner_config(topics, None);
                runner.shared_producer = shared.clone();
                let (kafka, shutdown, config) = (kafka.clone(), shutdown.clone(), config.clone());
                stages.push(tokio::spawn(async move {
                    run_kind(kind, &config, &kafka, runner, shutdown)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }));
            }
            topics.decisions()
        }
    };
    // The watcher: first arrival of each spike's anomaly, and through decisions of the
    // first recommendation and decision per target.
    let arrivals: Arc<Mutex<HashMap<Arrival, Instant>>> = Arc::default();
    let consumer: StreamConsumer = kafka
        .consumer_config(&format!("{}bench-latency-watch", topics.prefix))
        .create()
        .map_err(|e| kafka_err(e.to_string()))?;
    let mut subscribed = vec![watched];
    if through == Through::Decisions {
        subscribed.extend([topics.anomalies(), topics.recommendations()]);
    }
    let subscribed: Vec<&str> = subscribed.iter().map(String::as_str).collect();
    consumer
        .subscribe(&subscribed)
        .map_err(|e| kafka_err(e.to_string()))?;
    let watcher = {
        let (arrivals, shutdown) = (arrivals.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                let m = tokio::select! { _ = shutdown.wait() => break, m = consumer.recv() => m };
                let Ok(m) = m else { continue };
                let key = match AnyRecord::decode(m.payload().unwrap_or(&[])) {
                    Ok(AnyRecord::Anomaly(a)) => Arrival::Anomaly(a.target, a.timestamp_ms),
                    Ok(AnyRecord::Recommendation(r)) => Arrival::Recommendation(r.target),
                    Ok(AnyRecord::Decision(d)) => Arrival::Decision(d.target),
                    _ => continue,
                };
                if let Ok(mut map) = arrivals.lock() {
                    map.entry(key).or_insert_with(Instant::now);
                }
            }
        })
    };
    // Give both consumers time to join before the clock starts.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut publisher =
        MetricPublisher::new(kafka, topics.metrics()).map_err(|e| kafka_err(e.to_string()))?;
    let start_ts = crate::runtime::now_ms() - rounds as i64 * 60_000;
    // Per spike: when it was handed to the producer, and its target and event time.
    let mut sent: Vec<(Instant, String, i64)> = Vec::new();
    let per_event = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let began = Instant::now();
    let mut n = 0u64;
    for round in 0..rounds {
        let ts = start_ts + round as i64 * 60_000;
        let spiked = |i: u64| round >= warmup && i % stride == (round - warmup) % stride;
        for i in 0..series {
            // Hold the offered rate.
            let due = began + per_event * n as u32;
            let now = Instant::now();
            if due > now {
                tokio::time::sleep(due - now).await;
            }
            n += 1;
            let target = format!("lat-{i:05}");
            let base = 100.0 + 5.0 * ((n as f64) * 0.7).sin();
            let spike = spiked(i);
            let value = if spike { base * 10.0 } else { base };
            let e = MetricEvent::sample("bench", &target, "latency_p99_ms", ts, value);
            if spike {
                sent.push((Instant::now(), target, ts));
            }
            publisher
                .publish(&e)
                .await
                .map_err(|e| kafka_err(e.to_string()))?;
        }
    }
    publisher
        .flush()
        .await
        .map_err(|e| kafka_err(e.to_string()))?;
    // Let the last outputs arrive (a decision waits for its window to close).
    let last = |(_, target, ts): &(Instant, String, i64)| match through {
        Through::Anomalies => Arrival::Anomaly(target.clone(), *ts),
        Through::Decisions => Arrival::Decision(target.clone()),
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let arrived = arrivals
            .lock()
            .map(|m| sent.iter().filter(|s| m.contains_key(&last(s))).count())
            .unwrap_or(0);
        if arrived >= sent.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.trigger();
    for stage in stages {
        if let Ok(Err(e)) = stage.await {
            return Err(kafka_err(e));
        }
    }
    let _ = watcher.await;

    let arrivals = arrivals.lock().map(|m| m.clone()).unwrap_or_default();
    let at = |key: Arrival| arrivals.get(&key).copied();
    let end_to_end = Percentiles::of(
        sent.iter()
            .filter_map(|s| at(last(s)).map(|got| got.saturating_duration_since(s.0))),
    )?;
    let mut hops = Vec::new();
    if through == Through::Decisions {
        // Each hop between first arrivals, for spikes that made it through all three.
        let chain: Vec<[Instant; 4]> = sent
            .iter()
            .filter_map(|(t0, target, ts)| {
                Some([
                    *t0,
                    at(Arrival::Anomaly(target.clone(), *ts))?,
                    at(Arrival::Recommendation(target.clone()))?,
                    at(Arrival::Decision(target.clone()))?,
                ])
            })
            .collect();
        for (i, name) in [
            "produce → anomaly",
            "anomaly → recommendation",
            "recommendation → decision",
        ]
        .into_iter()
        .enumerate()
        {
            let p = Percentiles::of(
                chain
                    .iter()
                    .map(|c| c[i + 1].saturating_duration_since(c[i])),
            )?;
            hops.push((name, p));
        }
    }
    Ok(Latency {
        hops,
        measured: end_to_end.count,
        sent: sent.len() as u64,
        p50: end_to_end.p50,
        p95: end_to_end.p95,
        p99: end_to_end.p99,
        max: end_to_end.max,
    })
}
