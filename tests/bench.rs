//! `perfpilot bench`: the throughput harness reads every event through the sink, the relay, both
//! metric stages and the whole pipeline (embedded broker always, real Kafka when configured), and the
//! memory measurement keeps a series of each core within 1 KiB.

mod common;

use common::TestCluster;
use perfpilot::bench::latency::{self, Producers, Through};
use perfpilot::bench::throughput;
use perfpilot::config::Config;
use perfpilot::runtime::Guarantee;
use std::process::Command;
use std::time::Duration;

async fn harness_reads_everything(cluster: TestCluster, guarantee: Guarantee) {
    let pipeline_topics = cluster.more_topics("bench-pipeline", 2).await;
    let results = throughput::run(
        &cluster.kafka,
        &cluster.topics,
        Some(&pipeline_topics),
        &Config::default(),
        3_000,
        300,
        Duration::from_secs(90),
        guarantee.into(),
    )
    .await
    .unwrap();
    let stages: Vec<&str> = results.iter().map(|r| r.stage).collect();
    assert_eq!(
        stages,
        ["sink", "relay", "detector", "forecaster", "pipeline"]
    );
    for r in &results {
        // The stateful stages checkpoint their series (300) to their changelogs; the
        // pipeline's detector and forecaster both do.
        let least = if r.stage == "pipeline" { 600 } else { 300 };
        let stateful = r.stage != "relay" && r.stage != "sink";
        assert_eq!(
            r.state_writes >= least,
            stateful,
            "[{}] {r:?}",
            cluster.kind
        );
        assert_eq!(r.events, 3_000, "[{}] {r:?}", cluster.kind);
        assert!(
            r.rate() > 0.0 && r.seconds > 0.0,
            "[{}] {r:?}",
            cluster.kind
        );
    }
    eprintln!("[{}] {results:?}", cluster.kind);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_harness_embedded() {
    harness_reads_everything(TestCluster::embedded("bench", 2), Guarantee::AtLeastOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_harness_real_kafka() {
    if let Some(c) = TestCluster::real("bench", 2).await {
        harness_reads_everything(c, Guarantee::AtLeastOnce).await;
    }
    // Transactions need the real broker (the embedded one ignores them).
    if let Some(c) = TestCluster::real("bench-eos", 2).await {
        harness_reads_everything(c, Guarantee::ExactlyOnce).await;
    }
}

#[test]
fn memory_per_series_stays_within_a_kibibyte() {
    if !cfg!(target_os = "linux") {
        eprintln!("SKIPPED memory_per_series: needs /proc");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_perfpilot"))
        .args(["bench", "memory", "--series", "50000"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<(String, f64)> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.to_string(), f.get(2)?.parse().ok()?))
        })
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    for (core, bytes) in rows {
        // Debug builds carry the same state; the allocator's overhead is what varies.
        assert!(
            bytes > 200.0 && bytes <= 1024.0,
            "{core}: {bytes} bytes per series\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_harness_times_every_spike_embedded() {
    let c = TestCluster::embedded("latency", 2);
    let l = latency::run(
        &c.kafka,
        &c.topics,
        &Config::default(),
        (Through::Anomalies, Producers::Shared),
        (2_000, 50, 50),
    )
    .await
    .unwrap();
    // Five of the 50 series spiked per round after the warm-up, each once: 10 rounds.
    assert_eq!(l.sent, 50, "{l:?}");
    assert_eq!(l.measured, l.sent, "every spike's anomaly arrived: {l:?}");
    assert!(
        l.p50 > 0.0 && l.p50 <= l.p95 && l.p95 <= l.p99 && l.p99 <= l.max,
        "{l:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn latency_through_all_four_stages_times_every_decision_embedded() {
    // The four stages with one producer between them, and with one each.
    for producers in [Producers::Shared, Producers::PerStage] {
        decisions_timed(producers).await;
    }
}

async fn decisions_timed(producers: Producers) {
    let c = TestCluster::embedded("latency-decisions", 2);
    let mut config = Config::default();
    config.coordinator.idle_flush_ms = 50;
    let l = latency::run(
        &c.kafka,
        &c.topics,
        &config,
        (Through::Decisions, producers),
        (2_000, 20, 50),
    )
    .await
    .unwrap();
    // Five of the 20 series per round, each once: 4 rounds of spikes.
    assert_eq!(l.sent, 20, "{producers:?}: {l:?}");
    let hops: Vec<&str> = l.hops.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        hops,
        [
            "produce → anomaly",
            "anomaly → recommendation",
            "recommendation → decision"
        ]
    );
    for (hop, p) in &l.hops {
        assert!(
            p.count == l.measured && p.max <= l.max,
            "{producers:?} {hop}: {p:?} {l:?}"
        );
    }
    assert_eq!(
        l.measured, l.sent,
        "{producers:?}: every spike led to a decision: {l:?}"
    );
    assert!(
        l.p50 > 0.0 && l.p50 <= l.p95 && l.p95 <= l.p99 && l.p99 <= l.max,
        "{producers:?}: {l:?}"
    );
}

/// `bench peer` starts perfpilot's detector and the Kafka Streams peer
/// (bench/peer-kafka-streams, built by scripts/peer-streams.sh with Maven) each as a
/// process over the same events on real Kafka, and reports both: every event read by
/// each, with a rate, a CPU cost and a peak memory.
#[test]
fn peer_bench_runs_both_applications_over_the_same_events() {
    let Ok(bootstrap) = std::env::var(common::REAL_KAFKA_ENV) else {
        eprintln!(
            "SKIPPED peer_bench_runs_both_applications_over_the_same_events: needs real Kafka ({})",
            common::REAL_KAFKA_ENV
        );
        return;
    };
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(env!("CARGO_BIN_EXE_perfpilot"))
        .current_dir(root)
        .args(["bench", "peer", "--bootstrap-servers", &bootstrap])
        .args([
            "--topic-prefix",
            &format!("peertest{}.", std::process::id()),
        ])
        .args(["--events", "20000", "--series", "200", "--partitions", "2"])
        .args(["--processing-guarantee", "at-least-once,exactly-once"])
        .args(["--timeout", "240s"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    eprintln!("{stdout}");
    for guarantee in ["at-least-once", "exactly-once"] {
        for app in ["perfpilot detector", "Kafka Streams peer"] {
            let row = stdout
                .lines()
                .find(|l| l.starts_with(guarantee) && l.contains(app))
                .unwrap_or_else(|| panic!("no {guarantee} row for {app}:\n{stdout}"));
            let numbers: Vec<f64> = row
                .split(app)
                .nth(1)
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            assert_eq!(numbers.len(), 4, "{row}");
            assert!(numbers.iter().all(|n| *n > 0.0), "{row}");
        }
    }
    assert_eq!(
        stdout.matches("× the events per CPU second").count(),
        2,
        "{stdout}"
    );
}
