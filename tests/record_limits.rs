//! Every record a stage writes fits what the topic accepts, as the broker's topic config
//! says (`max.message.bytes`), not only `--max-record-bytes`: on a dead-letter topic that
//! takes 64 KiB, a 300 000-byte poison pill's dead letter is cut to fit (its metadata,
//! a prefix, the original size and hash) and the stage reads on. Before, the dead letter
//! (1 MB limit) was refused with MessageSizeTooLarge and the stage exited, again on
//! every restart. Runs on real Kafka (`PERFPILOT_TEST_BOOTSTRAP`), SKIPPED otherwise.

mod common;

use common::{read_all_raw, TestCluster};
use perfpilot::event::{decode, encode, DeadLetter, MetricEvent};
use perfpilot::runtime::now_ms;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_fit_the_topics_max_message_bytes() {
    let Some(c) = TestCluster::real("record-limit", 1).await else {
        return;
    };
    let deadletter = c.topics.deadletter();
    let admin: AdminClient<DefaultClientContext> = c.kafka.admin_config().create().unwrap();
    let alter =
        AlterConfig::new(ResourceSpecifier::Topic(&deadletter)).set("max.message.bytes", "65536");
    let altered = admin
        .alter_configs([&alter], &AdminOptions::new())
        .await
        .unwrap();
    assert!(altered.iter().all(Result::is_ok), "{altered:?}");

    let bootstrap = std::env::var(common::REAL_KAFKA_ENV).unwrap();
    let log = std::env::temp_dir().join(format!("record-limit-{}.log", std::process::id()));
    let mut stage = Command::new(env!("CARGO_BIN_EXE_perfpilot"))
        .args(["run", "detector", "--bootstrap-servers", &bootstrap])
        .args(["--topic-prefix", &c.topics.prefix])
        .args(["--metrics-addr", "127.0.0.1:0", "--commit-interval", "1s"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();

    let producer: FutureProducer = c.kafka.producer_config().create().unwrap();
    let poison = vec![0x5Au8; 300_000];
    let good = encode(&MetricEvent::sample(
        "test",
        "checkout",
        "latency_p99_ms",
        now_ms(),
        1.0,
    ))
    .unwrap();
    for payload in [&poison, &good] {
        producer
            .send(
                FutureRecord::to(&c.topics.metrics())
                    .key("checkout")
                    .payload(payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    let dead = loop {
        let dead = read_all_raw(&c.kafka, &deadletter, Duration::from_secs(1)).await;
        if !dead.is_empty() || Instant::now() > deadline {
            break dead;
        }
        assert!(
            stage.try_wait().unwrap().is_none(),
            "the stage exited: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    // It reads on: still running a few seconds later.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let running = stage.try_wait().unwrap().is_none();
    let _ = stage.kill();
    let _ = stage.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(running, "the stage exited: {text}");
    assert_eq!(dead.len(), 1, "one dead letter: {text}");
    let (_, _, _, bytes) = &dead[0];
    assert!(bytes.len() <= 65536, "{} bytes", bytes.len());
    let d: DeadLetter = decode(bytes).unwrap();
    assert_eq!(d.reason, "bad_marker");
    assert_eq!(d.original_size, Some(300_000));
    assert!(d.original_hash.is_some());
    let kept = d.payload.unwrap_or_default();
    assert!(!kept.is_empty() && poison.starts_with(&kept));
    assert!(
        text.contains("records are kept within the smallest max.message.bytes"),
        "the stage says which limit it took: {text}"
    );
}
