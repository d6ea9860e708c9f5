//! Metrics in from the real programs teams run, on real Kafka: Debian's
//! `prometheus-node-exporter` scraped by `perfpilot agent --scrape`, and Debian's
//! `prometheus` remote-writing to `perfpilot ingest prometheus`. The samples are checked
//! on the metrics topic against what the machine says (/proc/meminfo, CPU time that adds
//! up to one second per second per CPU).

mod common;

use common::{free_port, read_all, scrape, TestCluster};
use perfpilot::event::{AnyRecord, MetricEvent};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NODE_EXPORTER: &str = "prometheus-node-exporter";

/// Kills the child process when dropped (also when an assertion fails).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn skipped_without(programs: &[&str], test: &str) -> bool {
    let missing: Vec<&&str> = programs.iter().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return false;
    }
    eprintln!(
        "SKIPPED {test}: {missing:?} not installed (apt-get install prometheus \
         prometheus-node-exporter; .ci/run installs them)"
    );
    true
}

/// Waits until `addr` answers `GET /metrics`.
fn wait_serving(addr: &str, child: &mut KillOnDrop) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while scrape(addr)
        .is_none_or(|r| !r.starts_with("HTTP/1.1 200") && !r.starts_with("HTTP/1.0 200"))
    {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("the program behind {addr} exited: {status}");
        }
        assert!(Instant::now() < deadline, "{addr} does not serve /metrics");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// node_exporter on a free loopback port, with the collectors the checks use.
fn node_exporter() -> (KillOnDrop, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(NODE_EXPORTER)
        .arg(format!("--web.listen-address={addr}"))
        .args([
            "--collector.disable-defaults",
            "--collector.cpu",
            "--collector.meminfo",
            "--collector.loadavg",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("node_exporter starts");
    let mut child = KillOnDrop(child);
    wait_serving(&addr, &mut child);
    (child, addr)
}

fn mem_total_bytes() -> f64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("MemTotal in /proc/meminfo");
    kb * 1024.0
}

async fn metric_events(c: &TestCluster) -> Vec<MetricEvent> {
    read_all(&c.kafka, &c.topics.metrics(), Duration::from_secs(3))
        .await
        .into_iter()
        .map(|r| match r {
            AnyRecord::MetricEvent(e) => e,
            other => panic!("not a metric event: {other:?}"),
        })
        .collect()
}

/// The checks both ways in share: one target (the exporter's host:port), memory to the
/// byte, load as a gauge, and CPU counters turned into rates that add up to about one
/// second per second for each CPU.
fn check_node_events(events: &[MetricEvent], exporter: &str, job: &str) {
    assert!(!events.is_empty(), "nothing on the metrics topic");
    let targets: std::collections::BTreeSet<&str> =
        events.iter().map(|e| e.target.as_str()).collect();
    assert_eq!(
        targets,
        [exporter].into(),
        "one target: the exporter's instance"
    );
    assert!(events
        .iter()
        .all(|e| e.labels.get("job").map(String::as_str) == Some(job)));

    let memory: Vec<f64> = events
        .iter()
        .filter(|e| e.metric == "node_memory_MemTotal_bytes")
        .map(|e| e.value)
        .collect();
    assert!(!memory.is_empty(), "no node_memory_MemTotal_bytes");
    assert!(
        memory.iter().all(|&v| v == mem_total_bytes()),
        "MemTotal {memory:?} vs /proc/meminfo {}",
        mem_total_bytes()
    );
    assert!(events
        .iter()
        .any(|e| e.metric == "node_load1" && e.unit.is_empty() && e.value >= 0.0));
    assert!(
        !events.iter().any(|e| e.metric == "node_cpu_seconds_total"),
        "counters are published as rates"
    );

    // Per (time, cpu): the rates of every mode add up to the seconds per second of one CPU.
    let mut per_cpu: BTreeMap<(i64, String), (f64, usize)> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e.metric == "node_cpu_seconds_per_second")
    {
        assert_eq!(e.unit, "per_second");
        let cpu = e.labels.get("cpu").expect("cpu label").clone();
        assert!(e.labels.contains_key("mode"), "{e:?}");
        let slot = per_cpu.entry((e.timestamp_ms, cpu)).or_default();
        slot.0 += e.value;
        slot.1 += 1;
    }
    assert!(!per_cpu.is_empty(), "no CPU rates");
    for ((t, cpu), (sum, modes)) in &per_cpu {
        assert!(*modes >= 4, "cpu {cpu} at {t}: {modes} modes");
        assert!(
            (0.7..=1.3).contains(sum),
            "cpu {cpu} at {t}: the modes add up to {sum} s/s, not about 1"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_exporter_scraped_by_the_agent_lands_on_the_metrics_topic() {
    let test = "scrape";
    if skipped_without(&[NODE_EXPORTER], test) {
        return;
    }
    let Some(c) = TestCluster::real(test, 2).await else {
        return;
    };
    let (_exporter, addr) = node_exporter();
    let bootstrap = std::env::var(common::REAL_KAFKA_ENV).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_perfpilot"))
        .args(["agent", "--bootstrap-servers", &bootstrap])
        .args(["--topic-prefix", &c.topics.prefix])
        .args(["--scrape", &format!("http://{addr}/metrics")])
        .args(["--interval", "1s", "--ticks", "4", "--job", "node"])
        .output()
        .expect("agent runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("in 4 rounds (0 failed scrapes, 0 events not published)"),
        "{stderr}"
    );
    let events = metric_events(&c).await;
    check_node_events(&events, &addr, "node");
    // Four rounds: the gauges of each, the counters' rates from the second on.
    let rounds: std::collections::BTreeSet<i64> = events
        .iter()
        .filter(|e| e.metric == "node_load1")
        .map(|e| e.timestamp_ms)
        .collect();
    assert_eq!(rounds.len(), 4, "{rounds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_remote_writes_through_the_receiver_to_the_metrics_topic() {
    let test = "remote-write";
    if skipped_without(&["prometheus", NODE_EXPORTER], test) {
        return;
    }
    let Some(c) = TestCluster::real(test, 2).await else {
        return;
    };
    let (_exporter, exporter) = node_exporter();
    let bootstrap = std::env::var(common::REAL_KAFKA_ENV).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let receiver_metrics = format!("127.0.0.1:{}", free_port());
    let dir = std::env::temp_dir().join(format!("perfpilot-rw-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("perfpilot.toml");
    // Only the node_* metrics and `up`: Prometheus' own series stay out.
    std::fs::write(&config, "[ingest]\nkeep = [\"node_*\", \"up\"]\n").unwrap();
    let receiver = Command::new(env!("CARGO_BIN_EXE_perfpilot"))
        .args(["ingest", "prometheus", "--bootstrap-servers", &bootstrap])
        .args(["--topic-prefix", &c.topics.prefix])
        .args(["--listen", &listen, "--metrics-addr", &receiver_metrics])
        .arg("--config")
        .arg(&config)
        .stderr(std::fs::File::create(dir.join("receiver.log")).unwrap())
        .spawn()
        .expect("receiver starts");
    let mut receiver = KillOnDrop(receiver);
    wait_serving(&receiver_metrics, &mut receiver);

    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['{exporter}']\n\
             remote_write:\n  - url: http://{listen}/api/v1/write\n    queue_config:\n      batch_send_deadline: 1s\n"
        ),
    )
    .unwrap();
    let prometheus = Command::new("prometheus")
        .current_dir(&dir)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{}", free_port()))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus starts");
    let _prometheus = KillOnDrop(prometheus);

    // Until several scrapes have been written: `up` and the CPU rates need more than one.
    let published = |body: &str| -> f64 {
        body.lines()
            .find(|l| {
                l.starts_with("perfpilot_ingest_samples_total")
                    && l.contains("outcome=\"published\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut body = String::new();
    while Instant::now() < deadline {
        body = scrape(&receiver_metrics).unwrap_or_default();
        if published(&body) >= 200.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // Let the last scrapes arrive, then stop Prometheus so the topic stays put.
    std::thread::sleep(Duration::from_secs(4));
    drop(_prometheus);
    let log = || std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
    assert!(
        published(&body) >= 200.0,
        "samples published: {}\nreceiver: {body}\nprometheus: {}",
        published(&body),
        log()
    );
    let body = scrape(&receiver_metrics).unwrap_or_default();
    assert!(
        body.contains("perfpilot_ingest_requests_total{ingest=\"remote_write\",status=\"204\"}"),
        "{body}"
    );
    for refused in ["status=\"400\"", "status=\"503\"", "outcome=\"failed\""] {
        assert!(!body.contains(refused), "{refused}: {body}");
    }
    assert!(
        body.contains("outcome=\"not_kept\""),
        "Prometheus' own series are left out, and counted: {body}"
    );

    let events = metric_events(&c).await;
    check_node_events(&events, &exporter, "node");
    let up: Vec<&MetricEvent> = events.iter().filter(|e| e.metric == "up").collect();
    assert!(up.len() >= 3, "{} `up` samples", up.len());
    assert!(up.iter().all(|e| e.value == 1.0));
    assert!(
        events
            .iter()
            .all(|e| e.metric == "up" || e.metric.starts_with("node_")),
        "only what [ingest] keeps"
    );
}
