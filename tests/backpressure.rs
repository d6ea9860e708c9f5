//! A stage whose producer queue is full: every send waits, in order, none is dropped,
//! and the wait blocks neither the stage's thread nor anything sharing it.
//!
//! The producer is given room for a single record, and the detector reads nothing but
//! garbage, so each record read is one dead letter to send. The stage runs on a
//! single-threaded runtime beside a ticker that should wake every millisecond: a stage
//! that slept while it waited for room would hold the thread for a whole batch.
//! Runs on the embedded broker always, and on real Apache Kafka when
//! PERFPILOT_TEST_BOOTSTRAP is set.

mod common;

use common::{read_all, TestCluster};
use perfpilot::agent::publish::MetricPublisher;
use perfpilot::config::Config;
use perfpilot::event::AnyRecord;
use perfpilot::pipeline::{run_kind, StageKind};
use perfpilot::runtime::{Guarantee, Shutdown};
use std::time::{Duration, Instant};

const RECORDS: usize = 3_000;

async fn a_full_queue_loses_nothing_and_blocks_nothing(c: TestCluster, guarantee: Guarantee) {
    let kafka = c.kafka.clone().with("queue.buffering.max.messages", "1");
    let mut publisher = MetricPublisher::new(&c.kafka, c.topics.metrics()).unwrap();
    for i in 0..RECORDS {
        let key = format!("host-{}", i % 7);
        let garbage = format!("not avro {i}");
        publisher
            .publish_raw(key.as_bytes(), garbage.as_bytes())
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();

    let config = Config::default();
    let shutdown = Shutdown::new();
    let mut runner = StageKind::Detector.runner_config(&c.topics, None);
    runner.guarantee = guarantee;
    let progress = runner.progress.clone();
    let stage = {
        let (kafka, stop) = (kafka.clone(), shutdown.clone());
        tokio::spawn(
            async move { run_kind(StageKind::Detector, &config, &kafka, runner, stop).await },
        )
    };

    // The ticker shares the stage's only thread.
    let started = Instant::now();
    let mut last = Instant::now();
    let mut longest = Duration::ZERO;
    while progress.dead_lettered() < RECORDS as u64 || progress.in_flight() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "[{}] stuck: {} of {RECORDS} dead-lettered, {} in flight",
            c.kind,
            progress.dead_lettered(),
            progress.in_flight()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
        // Measured once the stage reads (its start-up, the group join and the restore
        // inside the assignment callback, block by design).
        if progress.dead_lettered() > 0 {
            longest = longest.max(last.elapsed());
        }
        last = Instant::now();
    }
    shutdown.trigger();
    let report = stage.await.unwrap().unwrap();

    assert_eq!(report.dead_lettered, RECORDS as u64, "[{}]", c.kind);
    assert!(
        report.queue_full_waits > 0,
        "[{}] the producer's queue was never full: the test proves nothing",
        c.kind
    );
    // A stage that slept on its thread for room held it for a batch (500 records, 2 ms
    // each): 1.3–1.5 s here before the backlog. One that waits asynchronously gives it
    // back between records: 12 ms at-least-once, 130 ms exactly-once (whose transaction
    // commit blocks for a broker round trip by design).
    assert!(
        longest < Duration::from_millis(400),
        "[{}] the stage held its thread for {longest:?} while its queue was full",
        c.kind
    );

    // Every record is in the dead-letter topic once, and each partition's in the order
    // it was read.
    let letters = read_all(&c.kafka, &c.topics.deadletter(), Duration::from_secs(3)).await;
    let mut by_partition: std::collections::BTreeMap<i32, Vec<i64>> = Default::default();
    for r in &letters {
        let AnyRecord::DeadLetter(d) = r else {
            panic!("[{}] not a dead letter: {r:?}", c.kind)
        };
        by_partition
            .entry(d.source_partition)
            .or_default()
            .push(d.source_offset);
    }
    let total: usize = by_partition.values().map(Vec::len).sum();
    assert_eq!(total, RECORDS, "[{}] dead letters", c.kind);
    for (p, offsets) in &by_partition {
        let expected: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(
            offsets, &expected,
            "[{}] partition {p}: dead letters lost, repeated or out of order",
            c.kind
        );
    }
    println!(
        "[{}] {:?}: {RECORDS} dead letters, {} sends waited for room, the thread was held at most {longest:?}",
        c.kind, guarantee, report.queue_full_waits
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_producer_queue_at_least_once_embedded() {
    let c = TestCluster::embedded("backpressure-alo", 3);
    a_full_queue_loses_nothing_and_blocks_nothing(c, Guarantee::AtLeastOnce).await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_producer_queue_at_least_once_real_kafka() {
    let Some(c) = TestCluster::real("backpressure-alo", 3).await else {
        return;
    };
    a_full_queue_loses_nothing_and_blocks_nothing(c, Guarantee::AtLeastOnce).await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_producer_queue_exactly_once_real_kafka() {
    let Some(c) = TestCluster::real("backpressure-eos", 3).await else {
        return;
    };
    a_full_queue_loses_nothing_and_blocks_nothing(c, Guarantee::ExactlyOnce).await;
}
