//! The 3-node cluster harness shared by `durability.rs` and `faults.rs`: topics per
//! scenario, the standard stream and its in-process reference, a paced producer, stage
//! instances as processes, the group's lag, and the comparison of outputs with the
//! reference.

use super::{poison, read_all_raw};
use perfpilot::event::{decode, encode, Anomaly, MetricEvent};
use perfpilot::runtime::{now_ms, KafkaOptions, Topics};
use perfpilot::stage::detector::{Detector, DetectorConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const CLUSTER_ENV: &str = "PERFPILOT_TEST_CLUSTER";
pub const PARTITIONS: i32 = 6;
pub const STEP_MS: i64 = 60_000;

pub struct Cluster {
    pub bootstrap: String,
    pub kafka: KafkaOptions,
    pub topics: Topics,
    pub name: String,
}

pub async fn cluster(test: &str) -> Option<Cluster> {
    let Ok(bootstrap) = std::env::var(CLUSTER_ENV) else {
        eprintln!(
            "SKIPPED {test}: {CLUSTER_ENV} is not set (scripts/kafka.sh cluster-start prints \
             the bootstrap list; .ci/run sets it)"
        );
        return None;
    };
    let name = format!("{test}-{}-{}", std::process::id(), now_ms());
    let topics = Topics::with_prefix(format!("d-{name}."));
    let kafka = KafkaOptions::new(bootstrap.clone());
    perfpilot::runtime::topics::create_all(&kafka, &topics, PARTITIONS, 3)
        .await
        .expect("topics created on the cluster");
    Some(Cluster {
        bootstrap,
        kafka,
        topics,
        name,
    })
}

pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka.sh")
}

/// Starts a node again when dropped, so a failing test leaves the cluster whole.
pub struct Revive(pub u8);

impl Drop for Revive {
    fn drop(&mut self) {
        broker("node-start", self.0);
    }
}

pub fn broker(action: &str, node: u8) {
    let out = Command::new("bash")
        .arg(script())
        .args([action, &node.to_string()])
        .output()
        .expect("kafka.sh runs");
    assert!(
        out.status.success(),
        "kafka.sh {action} {node}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `series` series of `points` points each, one minute apart, ending now, in time
/// order: a daily-ish wave with noise, and spikes, dips and a level shift at points
/// that differ per series.
pub fn stream(series: usize, points: usize) -> Vec<MetricEvent> {
    let start = now_ms() - points as i64 * STEP_MS;
    let mut out = Vec::with_capacity(series * points);
    for i in 0..points {
        for s in 0..series {
            let phase = (i as f64 + s as f64 * 7.0) / 60.0;
            let noise = (((i * 7919 + s * 104_729) % 1000) as f64 / 1000.0 - 0.5) * 4.0;
            let mut value = 100.0 + 20.0 * phase.sin() + noise;
            let k = (i + s * 13) % 97;
            if i > 150 && k == 0 {
                value += 120.0;
            }
            if i > 150 && k == 50 {
                value -= 70.0;
            }
            if i > 250 + s % 50 {
                value += 60.0;
            }
            out.push(MetricEvent {
                source: "durability".into(),
                target: format!("svc-{:02}", s / 2),
                pool: Some(format!("pool-{}", s % 3)),
                metric: if s % 2 == 0 {
                    "latency_p99_ms"
                } else {
                    "cpu_utilization"
                }
                .into(),
                labels: Default::default(),
                timestamp_ms: start + i as i64 * STEP_MS,
                value,
                unit: "ms".into(),
            });
        }
    }
    out
}

/// What one instance that never failed emits: the events through the core.
pub fn reference(events: &[MetricEvent]) -> BTreeMap<String, Anomaly> {
    let mut d = Detector::new(DetectorConfig::default()).unwrap();
    let mut out = BTreeMap::new();
    for e in events {
        if let Some(a) = d.observe(e, 0) {
            assert!(out.insert(a.id.clone(), a).is_none(), "ids are unique");
        }
    }
    assert!(
        out.len() >= 50,
        "the stream has anomalies to find: {}",
        out.len()
    );
    out
}

/// Produces `events` (keyed by target, like an agent) at `rate` per second, with the
/// poison records spread through the stream; counts what was acknowledged.
pub async fn produce(
    kafka: KafkaOptions,
    topic: String,
    events: Vec<MetricEvent>,
    poison: Vec<Vec<u8>>,
    rate: f64,
    acked: Arc<AtomicUsize>,
) {
    let producer: FutureProducer = kafka.producer_config().create().unwrap();
    let started = Instant::now();
    let every = (events.len() / (poison.len() + 1)).max(1);
    let mut poison = poison.into_iter();
    let mut pending = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if i % every == every - 1 {
            if let Some(p) = poison.next() {
                let r = FutureRecord::to(&topic).key("checkout").payload(&p);
                pending.push(producer.send_result(r).map_err(|(e, _)| e).unwrap());
            }
        }
        let bytes = encode(e).unwrap();
        loop {
            let r = FutureRecord::to(&topic).key(&e.target).payload(&bytes);
            match producer.send_result(r) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
        let due = started + Duration::from_secs_f64(i as f64 / rate);
        if pending.len() >= 200 || due > Instant::now() {
            for f in pending.drain(..) {
                f.await
                    .unwrap()
                    .map_err(|(e, _)| e)
                    .expect("event acknowledged");
                acked.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep_until(due.into()).await;
        }
    }
    for p in poison {
        let r = FutureRecord::to(&topic).key("checkout").payload(&p);
        pending.push(producer.send_result(r).map_err(|(e, _)| e).unwrap());
    }
    for f in pending {
        f.await
            .unwrap()
            .map_err(|(e, _)| e)
            .expect("event acknowledged");
        acked.fetch_add(1, Ordering::Relaxed);
    }
}

/// Produces `events` as fast as the client goes (encoded beforehand); returns the rate.
pub async fn flood(kafka: &KafkaOptions, topic: &str, events: &[MetricEvent]) -> f64 {
    let encoded: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|e| (e.target.clone(), encode(e).unwrap()))
        .collect();
    let producer: FutureProducer = kafka
        .producer_config()
        .set("queue.buffering.max.messages", "1000000")
        .set("linger.ms", "20")
        .create()
        .unwrap();
    let started = Instant::now();
    let mut pending = Vec::with_capacity(encoded.len());
    for (key, bytes) in &encoded {
        loop {
            match producer.send_result(FutureRecord::to(topic).key(key).payload(bytes)) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
    }
    for f in pending {
        f.await
            .unwrap()
            .map_err(|(e, _)| e)
            .expect("event acknowledged");
    }
    events.len() as f64 / started.elapsed().as_secs_f64()
}

/// The standard run: 48 series × 420 points (20 160 events) with `poison` spread
/// through them, produced in the background at `rate`.
pub struct Run {
    pub reference: BTreeMap<String, Anomaly>,
    /// Records to be produced, poison included.
    pub total: usize,
    pub acked: Arc<AtomicUsize>,
    pub producer: tokio::task::JoinHandle<()>,
}

pub fn start_run(c: &Cluster, poison: Vec<Vec<u8>>, rate: f64) -> Run {
    start_run_of(c, c.kafka.clone(), stream(48, 420), poison, rate)
}

/// Like [`start_run`], with the events given and the producer made from `kafka`.
pub fn start_run_of(
    c: &Cluster,
    kafka: KafkaOptions,
    events: Vec<MetricEvent>,
    poison: Vec<Vec<u8>>,
    rate: f64,
) -> Run {
    let reference = reference(&events);
    let total = events.len() + poison.len();
    let acked = Arc::new(AtomicUsize::new(0));
    let producer = tokio::spawn(produce(
        kafka,
        c.topics.metrics(),
        events,
        poison,
        rate,
        acked.clone(),
    ));
    Run {
        reference,
        total,
        acked,
        producer,
    }
}

/// One `perfpilot run detector` process.
pub struct Instance {
    pub id: String,
    pub child: Child,
}

impl Instance {
    pub fn start(c: &Cluster, id: &str, guarantee: &str) -> Instance {
        Instance::start_with(c, id, guarantee, &[])
    }

    pub fn start_with(c: &Cluster, id: &str, guarantee: &str, extra: &[&str]) -> Instance {
        let log = std::fs::File::create(std::env::temp_dir().join(format!("{}-{id}.log", c.name)))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_perfpilot"))
            .args(["run", "detector", "--bootstrap-servers", &c.bootstrap])
            .args(["--topic-prefix", &c.topics.prefix])
            .args(["--processing-guarantee", guarantee, "--instance-id", id])
            .args(["--metrics-addr", "127.0.0.1:0", "--commit-interval", "1s"])
            .args([
                "-X",
                "session.timeout.ms=6000",
                "-X",
                "heartbeat.interval.ms=500",
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("perfpilot starts");
        Instance {
            id: id.to_string(),
            child,
        }
    }

    pub fn log(&self, c: &Cluster) -> String {
        std::fs::read_to_string(std::env::temp_dir().join(format!("{}-{}.log", c.name, self.id)))
            .unwrap_or_default()
    }

    /// Sends `signal` (STOP, CONT, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot send SIG{signal} to instance {}", self.id);
    }

    /// Every thread's stack, from gdb when it is installed (to see where a stuck
    /// instance waits); a note saying why not otherwise.
    pub fn stacks(&self) -> String {
        match Command::new("gdb")
            .args(["-p", &self.child.id().to_string(), "-batch", "-nx"])
            .args(["-ex", "set pagination off", "-ex", "thread apply all bt 40"])
            .output()
        {
            Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
            Err(e) => format!("(no stacks: gdb: {e})"),
        }
    }

    /// How the process ended, if it has.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        // The stage's own watchdog ends it 30 s after the signal (10 s deadline + 20 s);
        // past 15 s its threads' stacks are kept, to see where a slow stop waits.
        let started = Instant::now();
        let mut stacks = None;
        while started.elapsed() < Duration::from_secs(45) {
            if let Ok(Some(status)) = self.child.try_wait() {
                let note = stacks
                    .as_ref()
                    .map_or(String::new(), |p: &std::path::PathBuf| {
                        format!(" (stacks at 15 s in {})", p.display())
                    });
                assert!(
                    status.success(),
                    "instance {} stopped uncleanly: {status}{note}",
                    self.id
                );
                return;
            }
            if stacks.is_none() && started.elapsed() > Duration::from_secs(15) {
                let path = std::env::temp_dir()
                    .join(format!("perfpilot-stop-{}-stacks.txt", self.child.id()));
                let _ = std::fs::write(&path, self.stacks());
                stacks = Some(path);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.child.kill().unwrap();
        panic!("instance {} did not stop within 45 s of SIGTERM", self.id);
    }
}

/// Resident memory of a process.
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Input records the group has not committed yet.
pub fn lag(kafka: &KafkaOptions, group: &str, topic: &str) -> Option<i64> {
    let consumer: BaseConsumer = kafka
        .consumer_config(group)
        .set("isolation.level", "read_committed")
        .create()
        .ok()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .ok()?;
    let offsets: Vec<(i32, i64)> = committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => (e.partition(), o),
            _ => (e.partition(), 0),
        })
        .collect();
    drop(committed);
    let mut lag = 0;
    for (p, at) in offsets {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .ok()?;
        lag += (high - at).max(0);
    }
    Some(lag)
}

pub async fn wait_caught_up(c: &Cluster, timeout: Duration) {
    let group = format!("{}detector", c.topics.prefix);
    let deadline = Instant::now() + timeout;
    loop {
        let l = lag(&c.kafka, &group, &c.topics.metrics());
        if l == Some(0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the group did not catch up: lag {l:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The anomalies on the output topic (read_committed), by id, with how often each came.
pub async fn outputs(c: &Cluster) -> BTreeMap<String, (Anomaly, usize)> {
    let mut out: BTreeMap<String, (Anomaly, usize)> = BTreeMap::new();
    for (_, p, o, bytes) in
        read_all_raw(&c.kafka, &c.topics.anomalies(), Duration::from_secs(3)).await
    {
        let a: Anomaly = decode(&bytes).unwrap_or_else(|e| panic!("anomaly {p}@{o}: {e}"));
        out.entry(a.id.clone()).or_insert((a, 0)).1 += 1;
    }
    out
}

pub struct Verdict {
    pub lost: Vec<String>,
    pub duplicated: usize,
    pub unexpected: Vec<String>,
    pub differing: Vec<String>,
}

impl Verdict {
    /// Exactly the reference: nothing lost, repeated, unexpected or different.
    pub fn assert_exact(&self) {
        assert!(self.lost.is_empty(), "lost: {:?}", self.lost);
        assert_eq!(self.duplicated, 0, "repeated outputs");
        assert!(
            self.unexpected.is_empty(),
            "not in the reference: {:?}",
            self.unexpected
        );
        assert!(
            self.differing.is_empty(),
            "differ from the reference: {:?}",
            self.differing
        );
    }
}

pub fn compare(
    reference: &BTreeMap<String, Anomaly>,
    got: &BTreeMap<String, (Anomaly, usize)>,
) -> Verdict {
    let lost = reference
        .keys()
        .filter(|k| !got.contains_key(*k))
        .cloned()
        .collect();
    let unexpected = got
        .keys()
        .filter(|k| !reference.contains_key(*k))
        .cloned()
        .collect();
    let duplicated = got.values().map(|(_, n)| n - 1).sum();
    let differing: Vec<String> = reference
        .iter()
        .filter(|(k, a)| got.get(*k).is_some_and(|(b, _)| b != *a))
        .map(|(k, _)| k.clone())
        .collect();
    // The first few in full, to see what differs.
    for k in differing.iter().take(3) {
        if let (Some(a), Some((b, _))) = (reference.get(k), got.get(k)) {
            eprintln!("{k} differs:\n  reference {a:?}\n  got       {b:?}");
        }
    }
    Verdict {
        lost,
        duplicated,
        unexpected,
        differing,
    }
}

pub fn poison_payloads() -> Vec<Vec<u8>> {
    poison(now_ms()).into_iter().map(|(_, b)| b).collect()
}
