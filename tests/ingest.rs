//! The remote-write receiver over HTTP, in this process, on the embedded broker: what a
//! request becomes on the metrics topic, the answers Prometheus acts on (204, 400, 404,
//! 405, 503), and samples left out counted by reason. The real Prometheus and
//! node_exporter are in tests/prometheus.rs.

mod common;

use common::{read_all, TestCluster};
use perfpilot::event::{AnyRecord, MetricEvent};
use perfpilot::ingest::mapping::{Mapping, MappingConfig};
use perfpilot::ingest::receiver::Receiver;
use perfpilot::ingest::remote_write::{self, Label, Sample, TimeSeries, WriteRequest};
use perfpilot::runtime::{now_ms, KafkaOptions, Shutdown};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

/// One HTTP/1.1 request; the status and body of the answer.
fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Encoding: snappy\r\n\
         Content-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn series(name: &str, labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
    TimeSeries {
        labels: std::iter::once(("__name__", name))
            .chain(labels.iter().copied())
            .map(|(n, v)| Label {
                name: n.into(),
                value: v.into(),
            })
            .collect(),
        samples: samples
            .iter()
            .map(|&(timestamp, value)| Sample { value, timestamp })
            .collect(),
    }
}

async fn start(
    kafka: &KafkaOptions,
    topic: String,
    publish_timeout: Duration,
) -> (String, Shutdown) {
    let config = MappingConfig {
        pool: vec!["{namespace}".into()],
        ..MappingConfig::default()
    };
    let receiver = Arc::new(
        Receiver::new(
            kafka,
            topic,
            Mapping::new(config, "test").unwrap(),
            publish_timeout,
        )
        .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let shutdown = Shutdown::new();
    tokio::spawn(receiver.serve(listener, shutdown.clone(), Duration::from_secs(5)));
    (addr, shutdown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_write_request_is_acknowledged_once_its_events_are_on_the_metrics_topic() {
    let c = TestCluster::embedded("ingest", 2);
    let (addr, shutdown) = start(&c.kafka, c.topics.metrics(), Duration::from_secs(30)).await;
    let t0 = now_ms() - 60_000;
    let pod = [
        ("namespace", "shop"),
        ("deployment", "checkout"),
        ("instance", "10.0.0.7:8080"),
    ];
    let request = WriteRequest {
        timeseries: vec![
            series(
                "cpu_utilization_ratio",
                &pod,
                &[(t0, 0.25), (t0 + 15_000, 0.5)],
            ),
            // A counter: the first sample only starts the rate; 30 in 15 s is 2/s.
            series(
                "http_requests_total",
                &pod,
                &[(t0, 100.0), (t0 + 15_000, 130.0)],
            ),
            // No target label at all, and no name: left out, counted.
            series("orphan", &[("zone", "a")], &[(t0, 1.0)]),
            TimeSeries {
                labels: vec![Label {
                    name: "instance".into(),
                    value: "x".into(),
                }],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: t0,
                }],
            },
        ],
        metadata: vec![],
    };
    let body = remote_write::encode(&request);
    let (status, text) = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || http(&addr, "POST", "/api/v1/write", &body)
    })
    .await
    .unwrap();
    assert_eq!(status, 204, "{text}");

    let events: Vec<MetricEvent> = read_all(&c.kafka, &c.topics.metrics(), Duration::from_secs(2))
        .await
        .into_iter()
        .map(|r| match r {
            AnyRecord::MetricEvent(e) => e,
            other => panic!("not a metric event: {other:?}"),
        })
        .collect();
    let mut got: Vec<(String, Option<String>, String, i64, f64)> = events
        .iter()
        .map(|e| {
            (
                e.target.clone(),
                e.pool.clone(),
                e.metric.clone(),
                e.timestamp_ms - t0,
                e.value,
            )
        })
        .collect();
    got.sort_by(|a, b| (a.2.as_str(), a.3).cmp(&(b.2.as_str(), b.3)));
    let shop = || Some("shop".to_string());
    assert_eq!(
        got,
        vec![
            (
                "shop/checkout".into(),
                shop(),
                "cpu_utilization_ratio".into(),
                0,
                0.25
            ),
            (
                "shop/checkout".into(),
                shop(),
                "cpu_utilization_ratio".into(),
                15_000,
                0.5
            ),
            (
                "shop/checkout".into(),
                shop(),
                "http_requests_per_second".into(),
                15_000,
                2.0
            ),
        ]
    );
    assert!(events.iter().all(|e| e.source == "10.0.0.7:8080"));

    // What Prometheus must not retry is refused with 400; other paths and methods say
    // what they are.
    let cases = [
        (
            "POST",
            "/api/v1/write",
            b"not snappy at all".to_vec(),
            400,
            "snappy",
        ),
        ("GET", "/api/v1/write", vec![], 405, "POST"),
        ("POST", "/elsewhere", vec![], 404, "/api/v1/write"),
        ("GET", "/health", vec![], 200, "ok"),
    ];
    for (method, path, body, want, says) in cases {
        let addr = addr.clone();
        let (status, text) = tokio::task::spawn_blocking(move || http(&addr, method, path, &body))
            .await
            .unwrap();
        assert_eq!(status, want, "{method} {path}: {text}");
        assert!(text.contains(says), "{method} {path}: {text}");
    }
    shutdown.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_kafka_does_not_take_is_answered_503_so_prometheus_retries_it() {
    // Nothing listens on this port: no broker will acknowledge.
    let port = common::free_port();
    let kafka = KafkaOptions::new(format!("127.0.0.1:{port}"));
    let (addr, shutdown) = start(&kafka, "nowhere.metrics".into(), Duration::from_secs(2)).await;
    let t = now_ms();
    let body = remote_write::encode(&WriteRequest {
        timeseries: vec![series("load", &[("instance", "h:9100")], &[(t, 0.5)])],
        metadata: vec![],
    });
    let started = std::time::Instant::now();
    let (status, text) =
        tokio::task::spawn_blocking(move || http(&addr, "POST", "/api/v1/write", &body))
            .await
            .unwrap();
    assert_eq!(status, 503, "{text}");
    assert!(text.starts_with("kafka:"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered after {:?}, --publish-timeout is 2 s",
        started.elapsed()
    );
    shutdown.trigger();
}
