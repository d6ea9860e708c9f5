//! Produce → anomaly latency of the detector stage at a fixed offered load.
//!
//! A publisher offers `rate` events per second over `series` series (one simulated
//! minute of event time per round); after the warm-up, one series per round carries a
//! spike. A consumer on the anomalies topic records when each spike's anomaly arrives;
//! the latency is from the moment the spike was handed to the producer to that arrival,
//! through the broker, the detector's runner and the broker again.

use super::throughput::BenchError;
use crate::agent::publish::MetricPublisher;
use crate::config::Config;
use crate::event::{decode, Anomaly, MetricEvent};
use crate::runtime::{run_stage, KafkaOptions, RunnerConfig, Shutdown, Topics};
use crate::stage::detector::Detector;
use hdrhistogram::Histogram;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Latency {
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

/// Runs the detector and measures produce → anomaly latency at `rate` events/s.
pub async fn run(
    kafka: &KafkaOptions,
    topics: &Topics,
    config: &Config,
    rate: u64,
    series: u64,
    rounds: u64,
) -> Result<Latency, BenchError> {
    let kafka_err = |e: String| BenchError::Kafka(e);
    let warmup = u64::from(config.detector.warmup_points) + 10;
    let rounds = rounds.max(warmup + 5);
    // The detector.
    let shutdown = Shutdown::new();
    let det = Detector::new(config.detector.clone()).map_err(|e| kafka_err(e.to_string()))?;
    let runner = RunnerConfig::new(
        format!("{}bench-latency-detector", topics.prefix),
        vec![topics.metrics()],
        topics.anomalies(),
        topics.deadletter(),
    );
    let stage = {
        let (kafka, shutdown) = (kafka.clone(), shutdown.clone());
        tokio::spawn(async move { run_stage(det, &kafka, runner, shutdown).await })
    };
    // The watcher of anomalies: arrival time per (target, event time).
    let arrivals: Arc<Mutex<HashMap<(String, i64), Instant>>> = Arc::default();
    let consumer: StreamConsumer = kafka
        .consumer_config(&format!("{}bench-latency-watch", topics.prefix))
        .create()
        .map_err(|e| kafka_err(e.to_string()))?;
    consumer
        .subscribe(&[&topics.anomalies()])
        .map_err(|e| kafka_err(e.to_string()))?;
    let watcher = {
        let (arrivals, shutdown) = (arrivals.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                let m = tokio::select! { _ = shutdown.wait() => break, m = consumer.recv() => m };
                let Ok(m) = m else { continue };
                if let Ok(a) = decode::<Anomaly>(m.payload().unwrap_or(&[])) {
                    if let Ok(mut map) = arrivals.lock() {
                        map.entry((a.target, a.timestamp_ms))
                            .or_insert_with(Instant::now);
                    }
                }
            }
        })
    };
    // Give both consumers time to join before the clock starts.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut publisher =
        MetricPublisher::new(kafka, topics.metrics()).map_err(|e| kafka_err(e.to_string()))?;
    let start_ts = crate::runtime::now_ms() - rounds as i64 * 60_000;
    let mut sent: HashMap<(String, i64), Instant> = HashMap::new();
    let per_event = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let began = Instant::now();
    let mut n = 0u64;
    for round in 0..rounds {
        let ts = start_ts + round as i64 * 60_000;
        let spiked = (round >= warmup).then_some(round % series);
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
            let spike = spiked == Some(i);
            let value = if spike { base * 10.0 } else { base };
            let e = MetricEvent::sample("bench", &target, "latency_p99_ms", ts, value);
            if spike {
                sent.insert((target, ts), Instant::now());
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
    // Let the last anomalies arrive.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let arrived = arrivals.lock().map(|m| m.len()).unwrap_or(0);
        if arrived >= sent.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.trigger();
    let _ = stage.await;
    let _ = watcher.await;

    let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
        .map_err(|e| kafka_err(e.to_string()))?;
    let arrivals = arrivals.lock().map(|m| m.clone()).unwrap_or_default();
    for (key, at) in &sent {
        if let Some(got) = arrivals.get(key) {
            let micros = got.saturating_duration_since(*at).as_micros() as u64;
            let _ = h.record(micros.max(1));
        }
    }
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok(Latency {
        measured: h.len(),
        sent: sent.len() as u64,
        p50: ms(0.5),
        p95: ms(0.95),
        p99: ms(0.99),
        max: h.max() as f64 / 1000.0,
    })
}
