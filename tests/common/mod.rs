//! Shared test support: the two brokers, unique topics per test, and readers that
//! collect what a topic holds.
#![allow(dead_code)]

pub mod cluster;

use perfpilot::demo::embedded_client_options;
use perfpilot::event::{encode, Anomaly, AnyRecord, MetricEvent};
use perfpilot::runtime::embedded::EmbeddedBroker;
use perfpilot::runtime::{now_ms, KafkaOptions, Topics};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The environment variable that points the tests at a real Apache Kafka.
pub const REAL_KAFKA_ENV: &str = "PERFPILOT_TEST_BOOTSTRAP";

/// A broker for one test, with topics under a prefix of its own.
pub struct TestCluster {
    _embedded: Option<EmbeddedBroker>,
    pub kafka: KafkaOptions,
    pub topics: Topics,
    pub kind: &'static str,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique_prefix(test: &str) -> String {
    format!(
        "t-{test}-{}-{}-{}.",
        std::process::id(),
        now_ms(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl TestCluster {
    /// librdkafka's mock cluster, in this process.
    pub fn embedded(test: &str, partitions: i32) -> Self {
        let broker = EmbeddedBroker::start(1).expect("mock cluster starts");
        let topics = Topics::with_prefix(unique_prefix(test));
        broker
            .create_topics(&topics, partitions)
            .expect("topics created");
        let kafka = embedded_client_options(&broker.bootstrap_servers());
        TestCluster {
            _embedded: Some(broker),
            kafka,
            topics,
            kind: "embedded",
        }
    }

    /// The real Apache Kafka named by PERFPILOT_TEST_BOOTSTRAP, or `None` (and a line
    /// saying the test is skipped) when it is not set.
    pub async fn real(test: &str, partitions: i32) -> Option<Self> {
        let Ok(bootstrap) = std::env::var(REAL_KAFKA_ENV) else {
            eprintln!(
                "SKIPPED {test} on real Kafka: {REAL_KAFKA_ENV} is not set \
                 (scripts/kafka.sh start prints an address; .ci/run sets it)"
            );
            return None;
        };
        let topics = Topics::with_prefix(unique_prefix(test));
        let kafka = KafkaOptions::new(bootstrap)
            .with_consumer("session.timeout.ms", "6000")
            .with_consumer("heartbeat.interval.ms", "500");
        perfpilot::runtime::topics::create_all(&kafka, &topics, partitions, 1)
            .await
            .expect("topics created on the real broker");
        Some(TestCluster {
            _embedded: None,
            kafka,
            topics,
            kind: "real",
        })
    }
}

impl TestCluster {
    /// The embedded broker, when the test runs on it.
    pub fn embedded_broker(&self) -> Option<&EmbeddedBroker> {
        self._embedded.as_ref()
    }

    /// Another fresh set of topics on the same broker.
    pub async fn more_topics(&self, test: &str, partitions: i32) -> Topics {
        let topics = Topics::with_prefix(unique_prefix(test));
        match &self._embedded {
            Some(broker) => broker
                .create_topics(&topics, partitions)
                .expect("topics created"),
            None => {
                perfpilot::runtime::topics::create_all(&self.kafka, &topics, partitions, 1)
                    .await
                    .expect("topics created on the real broker");
            }
        }
        topics
    }
}

/// A CPU-utilization point of `target` (source "test", pool "p").
pub fn event(target: &str, ts: i64, value: f64) -> MetricEvent {
    MetricEvent {
        source: "test".into(),
        target: target.into(),
        pool: Some("p".into()),
        metric: "cpu_utilization".into(),
        labels: Default::default(),
        timestamp_ms: ts,
        value,
        unit: "ratio".into(),
    }
}

/// Everything on `topic` from the beginning, as (key, partition, offset, raw bytes),
/// until nothing new arrived for `idle`.
pub async fn read_all_raw(
    kafka: &KafkaOptions,
    topic: &str,
    idle: Duration,
) -> Vec<(Option<Vec<u8>>, i32, i64, Vec<u8>)> {
    let group = format!("reader-{}", unique_prefix("r"));
    let consumer: StreamConsumer = kafka.consumer_config(&group).create().expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    // The first assignment can take a few seconds on the mock cluster.
    let mut wait = idle + Duration::from_secs(8);
    while let Ok(m) = tokio::time::timeout(wait, consumer.recv()).await {
        // A broker that is down shows as a transient error; the client reconnects.
        let Ok(m) = m else { continue };
        out.push((
            m.key().map(<[u8]>::to_vec),
            m.partition(),
            m.offset(),
            m.payload().unwrap_or(&[]).to_vec(),
        ));
        wait = idle;
    }
    out
}

/// Decoded records of `topic`.
pub async fn read_all(kafka: &KafkaOptions, topic: &str, idle: Duration) -> Vec<AnyRecord> {
    read_all_raw(kafka, topic, idle)
        .await
        .into_iter()
        .map(|(_, p, o, bytes)| {
            AnyRecord::decode(&bytes)
                .unwrap_or_else(|e| panic!("{topic}/{p}@{o} does not decode: {e}"))
        })
        .collect()
}

/// Polls `cond` every 100 ms until it holds or `timeout` passes; returns whether it held.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cond()
}

/// Malformed records, each with the dead-letter reason it must get.
pub fn poison(now: i64) -> Vec<(&'static str, Vec<u8>)> {
    let good = MetricEvent {
        source: "test".into(),
        target: "checkout".into(),
        pool: Some("p".into()),
        metric: "cpu_utilization".into(),
        labels: Default::default(),
        timestamp_ms: now - 1000,
        value: 0.5,
        unit: "ratio".into(),
    };
    let good_bytes = encode(&good).unwrap();
    let mut unknown = good_bytes.clone();
    unknown[2..10].copy_from_slice(&[0xAB; 8]);
    let anomaly = Anomaly {
        id: "x".into(),
        target: "checkout".into(),
        pool: "p".into(),
        metric: "m".into(),
        labels: Default::default(),
        timestamp_ms: now,
        value: 1.0,
        expected: 1.0,
        lower: 0.0,
        upper: 2.0,
        score: 0.9,
        severity: perfpilot::event::Severity::Warning,
        direction: perfpilot::event::Direction::Up,
        detectors: vec![],
        reason: "r".into(),
    };
    vec![
        ("bad_marker", br#"{"target":"checkout","value":1}"#.to_vec()),
        ("truncated", vec![0xC3, 0x01, 0x00]),
        ("truncated", Vec::new()),
        ("unknown_fingerprint", unknown),
        ("wrong_record_type", encode(&anomaly).unwrap()),
        ("bad_body", good_bytes[..good_bytes.len() - 4].to_vec()),
        (
            "non_finite_value",
            encode(&MetricEvent {
                value: f64::NAN,
                ..good.clone()
            })
            .unwrap(),
        ),
        (
            "non_finite_value",
            encode(&MetricEvent {
                value: f64::NEG_INFINITY,
                ..good.clone()
            })
            .unwrap(),
        ),
        (
            "empty_target",
            encode(&MetricEvent {
                target: String::new(),
                ..good.clone()
            })
            .unwrap(),
        ),
        (
            "empty_metric",
            encode(&MetricEvent {
                metric: " ".into(),
                ..good.clone()
            })
            .unwrap(),
        ),
        (
            "future_timestamp",
            encode(&MetricEvent {
                timestamp_ms: now + 10 * 86_400_000,
                ..good.clone()
            })
            .unwrap(),
        ),
        (
            "negative_timestamp",
            encode(&MetricEvent {
                timestamp_ms: -5,
                ..good.clone()
            })
            .unwrap(),
        ),
        (
            "too_many_labels",
            encode(&MetricEvent {
                labels: (0..100).map(|i| (format!("l{i}"), "v".into())).collect(),
                ..good.clone()
            })
            .unwrap(),
        ),
        // Valid, but its series key (one 900 000-byte label) would make every state
        // record and output of the series larger than the broker accepts.
        (
            "series_key_too_long",
            encode(&MetricEvent {
                labels: [("pod".to_string(), "x".repeat(900_000))].into(),
                ..good.clone()
            })
            .unwrap(),
        ),
        // A poison pill as large as a producer sends by default (1 000 000 bytes with its
        // key): its dead letter
        // (payload plus metadata) would not fit whole and is cut to fit.
        ("bad_marker", vec![0x5A; 999_950]),
    ]
}

/// Runs `scripts/kafka.sh <verb>` for a broker of the test's own, in `dir`, on a free port.
pub fn kafka_script(dir: &std::path::Path, verb: &str) -> std::process::Output {
    std::process::Command::new("bash")
        .arg(std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka.sh"))
        .arg(verb)
        .env("PERFPILOT_KAFKA_DIR", dir)
        .env_remove("PERFPILOT_KAFKA_PORT")
        .output()
        .unwrap()
}

/// A broker of the test's own (see [`kafka_script`]), stopped and its directory removed
/// however the test ends.
pub struct OwnBroker(pub std::path::PathBuf);

impl OwnBroker {
    /// [`OwnBroker::start`] where real Kafka is available (`PERFPILOT_TEST_BOOTSTRAP`
    /// set, as in CI); otherwise `None`, and test `name` says it is SKIPPED.
    pub fn start_if_real_kafka(test: &str, name: &str) -> Option<(OwnBroker, String)> {
        if std::env::var_os(REAL_KAFKA_ENV).is_none() {
            eprintln!("SKIPPED {name}: needs real Kafka ({REAL_KAFKA_ENV})");
            return None;
        }
        Some(OwnBroker::start(test))
    }

    /// Starts one in a fresh temp directory named after `test`; its bootstrap address.
    pub fn start(test: &str) -> (OwnBroker, String) {
        let dir = std::env::temp_dir().join(format!("perfpilot-{test}-{}", std::process::id()));
        let broker = OwnBroker(dir);
        let started = kafka_script(&broker.0, "start");
        assert!(
            started.status.success(),
            "{}",
            String::from_utf8_lossy(&started.stderr)
        );
        let bootstrap = String::from_utf8_lossy(&started.stdout).trim().to_string();
        (broker, bootstrap)
    }

    /// The broker process's pid.
    pub fn pid(&self) -> String {
        std::fs::read_to_string(self.0.join("pid"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        // A frozen broker (SIGSTOP) must be thawed to stop.
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.pid()])
            .status();
        let _ = kafka_script(&self.0, "stop");
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Publishes JSON lines with `perfpilot produce` (the binary under test) and asserts it
/// succeeded.
pub fn produce_lines(kafka: &[&str], lines: &[u8]) {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_perfpilot"))
        .arg("produce")
        .args(kafka)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(lines).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A free port on loopback (for a `--metrics-addr`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The whole HTTP response to `GET /metrics` from `addr`, if served.
pub fn scrape(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    Some(response)
}
