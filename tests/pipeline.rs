//! The four stages over a broker: end to end with injected incidents and poison
//! records, every input accounted for, and resumption from committed offsets.
//! Each scenario runs on the embedded broker always, and on real Apache Kafka when
//! PERFPILOT_TEST_BOOTSTRAP is set.

mod common;

use common::{event, eventually, poison, read_all, read_all_raw, TestCluster};
use perfpilot::agent::publish::MetricPublisher;
use perfpilot::agent::synthetic::{IncidentKind, SyntheticFleet};
use perfpilot::cli::StageKind;
use perfpilot::config::Config;
use perfpilot::event::{decode, ActionKind, Anomaly, AnyRecord, DeadLetter};
use perfpilot::pipeline::run_kind;
use perfpilot::runtime::{now_ms, RunReport, Shutdown};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

fn count_reasons<'a>(reasons: impl Iterator<Item = &'a str>) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for r in reasons {
        *m.entry(r.to_string()).or_default() += 1;
    }
    m
}

async fn end_to_end(c: TestCluster) {
    let config = Config::parse(perfpilot::demo::DEMO_CONFIG, "demo config").unwrap();
    let shutdown = Shutdown::new();
    let mut progress = HashMap::new();
    let mut handles = Vec::new();
    for kind in StageKind::ALL {
        let mut runner = kind.runner_config(&c.topics, None);
        runner.tick_interval = Duration::from_millis(100);
        progress.insert(kind, runner.progress.clone());
        let (cfg, kafka, stop) = (config.clone(), c.kafka.clone(), shutdown.clone());
        handles.push((
            kind,
            tokio::spawn(async move { run_kind(kind, &cfg, &kafka, runner, stop).await }),
        ));
    }

    // A known stream: five services with a spike, a level shift and a ramp, plus a few
    // background hosts; then the poison.
    let ticks = 240u64;
    let step = 60_000;
    let start = now_ms() - ticks as i64 * step;
    let mut fleet = SyntheticFleet::demo(start, step, ticks, 4, 7);
    let incidents = fleet.incidents().to_vec();
    let mut publisher = MetricPublisher::new(&c.kafka, c.topics.metrics()).unwrap();
    let mut produced = 0u64;
    for _ in 0..ticks {
        for e in fleet.next_tick() {
            publisher.publish(&e).await.unwrap();
            produced += 1;
        }
    }
    let poison = poison(now_ms());
    for (_, bytes) in &poison {
        publisher.publish_raw(b"checkout", bytes).await.unwrap();
    }
    publisher.flush().await.unwrap();
    let total = produced + poison.len() as u64;

    let p = |k: StageKind| progress[&k].clone();
    let (det, fc, rec, coord) = (
        p(StageKind::Detector),
        p(StageKind::Forecaster),
        p(StageKind::Recommender),
        p(StageKind::Coordinator),
    );
    assert!(
        eventually(Duration::from_secs(90), || det.consumed() == total
            && fc.consumed() == total)
        .await,
        "[{}] detector/forecaster consumed {}/{} of {total}",
        c.kind,
        det.consumed(),
        fc.consumed()
    );
    assert!(
        eventually(Duration::from_secs(60), || {
            rec.consumed() == det.produced() + fc.produced()
                && coord.consumed() == rec.produced()
                && coord.produced() == coord.consumed()
        })
        .await,
        "[{}] pipeline did not settle: recommender {} of {}, coordinator {} → {}",
        c.kind,
        rec.consumed(),
        det.produced() + fc.produced(),
        coord.consumed(),
        coord.produced()
    );
    shutdown.trigger();
    let mut reports: HashMap<StageKind, RunReport> = HashMap::new();
    for (kind, h) in handles {
        reports.insert(
            kind,
            h.await
                .unwrap()
                .unwrap_or_else(|e| panic!("{} failed: {e}", kind.as_str())),
        );
    }

    // Every input accounted for: processed or dead-lettered, with the right reason.
    let expected_reasons = count_reasons(poison.iter().map(|(r, _)| *r));
    for kind in [StageKind::Detector, StageKind::Forecaster] {
        let r = &reports[&kind];
        assert_eq!(r.consumed, total, "{}", kind.as_str());
        assert_eq!(r.processed, produced, "{}", kind.as_str());
        assert_eq!(r.dead_lettered, poison.len() as u64, "{}", kind.as_str());
        assert_eq!(r.dead_letter_reasons, expected_reasons, "{}", kind.as_str());
    }
    for (kind, r) in &reports {
        assert!(
            r.clean_shutdown,
            "{} did not shut down cleanly",
            kind.as_str()
        );
        assert!(
            r.consumed == r.processed + r.dead_lettered,
            "{}: {r:?}",
            kind.as_str()
        );
    }

    // The dead letters carry the original bytes, where they came from, and the reason;
    // the 999 950-byte poison pill's is cut to fit (before, its delivery failed with
    // MessageSizeTooLarge and the stage exited, again on every restart).
    let dead = read_all_raw(&c.kafka, &c.topics.deadletter(), Duration::from_secs(2)).await;
    assert_eq!(dead.len(), 2 * poison.len());
    let mut seen_reasons = Vec::new();
    let mut cut = 0;
    for (key, _, _, bytes) in &dead {
        let d: DeadLetter = decode(bytes).unwrap();
        assert_eq!(key.as_deref(), Some(&b"checkout"[..]));
        assert_eq!(d.source_topic, c.topics.metrics());
        let kept = d.payload.clone().unwrap_or_default();
        let original = poison.iter().find(|(r, b)| {
            *r == d.reason
                && match d.original_size {
                    // Cut to fit the record limit: a prefix, the size and a hash.
                    Some(size) => {
                        size as usize == b.len()
                            && b.starts_with(&kept)
                            && d.original_hash.is_some()
                    }
                    None => *b == kept,
                }
        });
        assert!(
            original.is_some(),
            "dead letter {} does not carry its original payload (or its size and a prefix)",
            d.reason
        );
        // Every dead letter fits the producer's and broker's default record limit.
        assert!(
            bytes.len() <= 1_000_000,
            "{}: {} bytes",
            d.reason,
            bytes.len()
        );
        assert!(!d.detail.is_empty());
        cut += usize::from(d.original_size.is_some());
        seen_reasons.push(d.reason);
    }
    assert_eq!(cut, 2, "the large poison pill, once per metric stage");
    assert_eq!(
        count_reasons(seen_reasons.iter().map(String::as_str))
            .values()
            .sum::<u64>(),
        2 * poison.len() as u64
    );

    // The injected incidents are found.
    let anomalies: Vec<Anomaly> = read_all(&c.kafka, &c.topics.anomalies(), Duration::from_secs(2))
        .await
        .into_iter()
        .filter_map(|r| {
            if let AnyRecord::Anomaly(a) = r {
                Some(a)
            } else {
                None
            }
        })
        .collect();
    for a in &anomalies {
        assert!((0.5..=1.0).contains(&a.score), "{a:?}");
        assert!(a.lower <= a.expected && a.expected <= a.upper, "{a:?}");
        assert!(!a.reason.is_empty() && !a.detectors.is_empty());
    }
    for i in incidents.iter().filter(|i| i.kind != IncidentKind::Ramp) {
        let from = start + i.start_tick as i64 * step;
        let until = start + (i.end_tick as i64 + 5) * step;
        assert!(
            anomalies.iter().any(|a| a.target == i.target
                && a.metric == i.metric
                && (from..=until).contains(&a.timestamp_ms)),
            "[{}] {:?} on {} {} not detected",
            c.kind,
            i.kind,
            i.target,
            i.metric
        );
    }

    // Recommendations explain themselves and are keyed by pool; the ramp leads to a scale-out.
    let raw_recs = read_all_raw(
        &c.kafka,
        &c.topics.recommendations(),
        Duration::from_secs(2),
    )
    .await;
    let mut rec_ids = Vec::new();
    let mut encoder_out = false;
    for (key, _, _, bytes) in &raw_recs {
        let r: perfpilot::event::Recommendation = decode(bytes).unwrap();
        assert_eq!(key.as_deref(), Some(r.pool.as_bytes()));
        assert!(!r.evidence.is_empty() && !r.reason.is_empty() && r.expires_ms > r.created_ms);
        assert!((0.0..=1.0).contains(&r.confidence));
        encoder_out |= r.target == "encoder" && r.kind == ActionKind::ScaleOut;
        rec_ids.push(r.id);
    }
    assert!(
        encoder_out,
        "[{}] the encoder ramp led to no scale-out",
        c.kind
    );

    // Every recommendation has exactly one decision.
    let decisions: Vec<perfpilot::event::Decision> =
        read_all(&c.kafka, &c.topics.decisions(), Duration::from_secs(2))
            .await
            .into_iter()
            .filter_map(|r| {
                if let AnyRecord::Decision(d) = r {
                    Some(d)
                } else {
                    None
                }
            })
            .collect();
    let mut decided: Vec<String> = decisions
        .iter()
        .map(|d| d.recommendation_id.clone())
        .collect();
    decided.sort();
    rec_ids.sort();
    assert_eq!(
        decided, rec_ids,
        "[{}] decisions do not match recommendations one to one",
        c.kind
    );
    for d in &decisions {
        let policy = config.policies.get(&d.target);
        assert!(!d.rule.is_empty() && !d.reason.is_empty());
        if let (Some(f), true) = (d.final_value, d.resource == "replicas") {
            assert!(
                (f64::from(policy.min_replicas)..=f64::from(policy.max_replicas)).contains(&f),
                "{d:?}"
            );
        }
    }
    eprintln!(
        "[{}] end to end: {total} inputs ({} poison), {} anomalies, {} recommendations, {} decisions",
        c.kind,
        poison.len(),
        anomalies.len(),
        rec_ids.len(),
        decisions.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn end_to_end_embedded() {
    end_to_end(TestCluster::embedded("e2e", 4)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn end_to_end_real_kafka() {
    if let Some(c) = TestCluster::real("e2e", 4).await {
        end_to_end(c).await;
    }
}

/// A detector stopped cleanly and started again reads only what arrived after its
/// last commit.
async fn restart_resumes(c: TestCluster) {
    let config = Config::default();
    let mut publisher = MetricPublisher::new(&c.kafka, c.topics.metrics()).unwrap();
    let base = now_ms() - 3_600_000;
    let produce = |from: i64, n: i64| {
        (from..from + n).map(move |i| event(&format!("svc-{}", i % 10), base + i * 1000, 0.5))
    };
    for e in produce(0, 400) {
        publisher.publish(&e).await.unwrap();
    }
    publisher.flush().await.unwrap();

    let run = |expect: u64| {
        let (cfg, kafka, topics) = (config.clone(), c.kafka.clone(), c.topics.clone());
        async move {
            let runner = StageKind::Detector.runner_config(&topics, None);
            let progress = runner.progress.clone();
            let stop = Shutdown::new();
            let stop2 = stop.clone();
            let h = tokio::spawn(async move {
                run_kind(StageKind::Detector, &cfg, &kafka, runner, stop2).await
            });
            assert!(
                eventually(Duration::from_secs(60), || progress.consumed() >= expect).await,
                "consumed {}",
                progress.consumed()
            );
            // Give a wrongly resumed consumer time to re-read old records.
            tokio::time::sleep(Duration::from_secs(2)).await;
            stop.trigger();
            h.await.unwrap().unwrap()
        }
    };
    let first = run(400).await;
    assert_eq!(first.consumed, 400);
    assert!(first.clean_shutdown && first.commits > 0);

    for e in produce(400, 250) {
        publisher.publish(&e).await.unwrap();
    }
    publisher.flush().await.unwrap();
    let second = run(250).await;
    assert_eq!(
        second.consumed, 250,
        "[{}] the restarted stage re-read committed records",
        c.kind
    );
    assert!(second.clean_shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_resumes_from_committed_offsets_embedded() {
    restart_resumes(TestCluster::embedded("restart", 4)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_resumes_from_committed_offsets_real_kafka() {
    if let Some(c) = TestCluster::real("restart", 4).await {
        restart_resumes(c).await;
    }
}
