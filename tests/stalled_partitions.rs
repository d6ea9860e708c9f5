//! A partition librdkafka was told to fetch but never started is started again.
//!
//! librdkafka (up to 2.12 at least, issue #5586) leaves an assigned partition unfetched
//! for good when the broker answers the committed-offset query with "not coordinator":
//! the consumer stays in the group, owns the partition and reads nothing from it. The
//! runner watches for that in librdkafka's statistics and assigns again from the
//! offsets it knows.

mod common;

use common::{event, eventually, TestCluster};
use perfpilot::agent::publish::MetricPublisher;
use perfpilot::cli::StageKind;
use perfpilot::config::Config;
use perfpilot::pipeline::run_kind;
use perfpilot::runtime::{now_ms, Shutdown};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_whose_committed_offset_query_was_refused_is_read_all_the_same() {
    let c = TestCluster::embedded("stalled", 4);
    let mut publisher = MetricPublisher::new(&c.kafka, c.topics.metrics()).unwrap();
    let base = now_ms() - 3_600_000;
    for i in 0..400 {
        let e = event(&format!("svc-{}", i % 10), base + i * 1000, 0.5);
        publisher.publish(&e).await.unwrap();
    }
    publisher.flush().await.unwrap();
    // The committed-offset query the assignment sends is refused: librdkafka gives the
    // partitions up and never fetches them.
    c.embedded_broker().unwrap().fail_next_requests(
        RDKafkaApiKey::OffsetFetch,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_COORDINATOR],
    );

    let runner = StageKind::Detector.runner_config(&c.topics, None);
    let progress = runner.progress.clone();
    let stop = Shutdown::new();
    let (cfg, kafka, stop2) = (Config::default(), c.kafka.clone(), stop.clone());
    let started = Instant::now();
    let h =
        tokio::spawn(
            async move { run_kind(StageKind::Detector, &cfg, &kafka, runner, stop2).await },
        );
    let all_read = eventually(Duration::from_secs(60), || progress.consumed() >= 400).await;
    let took = started.elapsed();
    stop.trigger();
    let report = h.await.unwrap().unwrap();
    assert!(
        all_read,
        "the stage read {} of 400 records in 60 s: its partitions were never fetched",
        progress.consumed()
    );
    assert_eq!(report.consumed, 400, "nothing read twice");
    eprintln!(
        "all 400 records read {:.1} s after the stage started",
        took.as_secs_f64()
    );
}
