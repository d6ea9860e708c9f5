//! Confluent Schema Registry framing against the real programs, on real Kafka: a registry
//! with Confluent's REST API (Apicurio, started by scripts/schema-registry.sh) and
//! Confluent's own Python client (confluent-kafka's AvroSerializer and
//! AvroDeserializer). A team's producer writes with its own evolved schema; the detector
//! reads it through the registry, registers perfpilot's schemas and writes its outputs
//! in Confluent framing, which Confluent's deserializer reads back. A registry that
//! stops answering is waited for, then the record is dead-lettered with its own reason;
//! the stage never stops.
//!
//! Needs PERFPILOT_TEST_BOOTSTRAP, PERFPILOT_TEST_SCHEMA_REGISTRY (the URL `start`
//! prints) and PERFPILOT_TEST_PYTHON (`scripts/schema-registry.sh python`); .ci/run sets
//! all three.

mod common;

use common::{free_port, TestCluster};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The tests share one registry; the one that cuts it off runs alone.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Setup {
    cluster: TestCluster,
    bootstrap: String,
    registry: String,
    python: String,
}

async fn setup(test: &str) -> Option<Setup> {
    let registry = std::env::var("PERFPILOT_TEST_SCHEMA_REGISTRY");
    let python = std::env::var("PERFPILOT_TEST_PYTHON");
    let (Ok(registry), Ok(python)) = (registry, python) else {
        eprintln!(
            "SKIPPED {test}: PERFPILOT_TEST_SCHEMA_REGISTRY and PERFPILOT_TEST_PYTHON are not set \
             (scripts/schema-registry.sh start, scripts/schema-registry.sh python; .ci/run sets them)"
        );
        return None;
    };
    let cluster = TestCluster::real(test, 2).await?;
    let bootstrap = std::env::var(common::REAL_KAFKA_ENV).ok()?;
    Some(Setup {
        cluster,
        bootstrap,
        registry,
        python,
    })
}

fn script(name: &str) -> String {
    format!("{}/tests/confluent/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn python(s: &Setup, args: &[&str]) -> Output {
    let out = Command::new(&s.python)
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "python {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Publishes `points` events with Confluent's serializer; the writer schema's id.
fn produce(s: &Setup, target: &str, points: usize, extra_field: &str, poison: bool) -> u32 {
    let out = python(
        s,
        &[
            &script("produce.py"),
            &s.bootstrap,
            &s.cluster.topics.metrics(),
            &s.registry,
            target,
            &points.to_string(),
            extra_field,
            if poison { "1" } else { "0" },
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect("produce.py prints JSON");
    v["schema_id"].as_u64().expect("a schema id") as u32
}

/// Every record of `topic` as Confluent's deserializer reads it: (schema id, record).
fn consume(s: &Setup, topic: &str) -> Vec<(u32, serde_json::Value)> {
    let out = python(
        s,
        &[&script("consume.py"), &s.bootstrap, topic, &s.registry, "3"],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            (v["schema_id"].as_u64().unwrap() as u32, v["record"].clone())
        })
        .collect()
}

/// GET on the registry; the JSON answer.
fn registry_get(url: &str, path: &str) -> serde_json::Value {
    let rest = url
        .strip_prefix("http://")
        .expect("an http:// registry URL");
    let (addr, base) = rest.split_once('/').map_or((rest, ""), |(a, b)| (a, b));
    let mut c = TcpStream::connect(addr).unwrap();
    write!(
        c,
        "GET /{base}{path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {answer}"))
}

struct Stage {
    child: Child,
    log: std::path::PathBuf,
}

impl Stage {
    fn start(s: &Setup, registry_url: &str, extra: &[&str]) -> Stage {
        let log = std::env::temp_dir().join(format!(
            "perfpilot-registry-{}-{}.log",
            std::process::id(),
            free_port()
        ));
        let child = Command::new(env!("CARGO_BIN_EXE_perfpilot"))
            .args(["run", "detector", "--bootstrap-servers", &s.bootstrap])
            .args(["--topic-prefix", &s.cluster.topics.prefix])
            .args(["--schema-registry", registry_url])
            .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port())])
            .args(["--commit-interval", "500ms"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the detector starts");
        Stage { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for(&mut self, what: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(what) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the stage exited ({status}) before {what:?}:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {what:?} within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then the summary line it prints.
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        let log = self.log();
        assert!(status.success(), "the stage ended with {status}:\n{log}");
        log.lines()
            .find(|l| l.starts_with("detector: consumed"))
            .unwrap_or_else(|| panic!("no summary:\n{log}"))
            .to_string()
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confluent_producer_is_read_through_the_registry_and_its_consumers_read_the_outputs() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(s) = setup("confluent").await else {
        return;
    };
    let topics = &s.cluster.topics;
    let mut stage = Stage::start(&s, &s.registry, &[]);
    stage.wait_for("partitions assigned", Duration::from_secs(60));

    // The team's evolved schema (another namespace, no `unit`, a field of its own), and
    // one record whose id the registry does not have.
    let writer_id = produce(&s, "checkout", 400, "datacenter", true);

    // Confluent's deserializer reads what the stage wrote: the spike as an anomaly, and
    // the unknown id as a dead letter with its reason.
    let anomalies = consume(&s, &topics.anomalies());
    let deadletters = consume(&s, &topics.deadletter());
    let summary = stage.stop();
    assert!(
        summary.contains("consumed 401, processed 400, dead-lettered 1"),
        "{summary}"
    );

    let subjects = registry_get(&s.registry, "/subjects");
    for topic in [
        topics.metrics(),
        topics.anomalies(),
        topics.forecasts(),
        topics.recommendations(),
        topics.decisions(),
        topics.deadletter(),
    ] {
        let subject = format!("{topic}-value");
        assert!(
            subjects
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v.as_str() == Some(&subject)),
            "{subject} is not registered: {subjects}"
        );
    }
    let id_of = |topic: &str| {
        registry_get(
            &s.registry,
            &format!("/subjects/{topic}-value/versions/latest"),
        )["id"]
            .as_u64()
            .unwrap() as u32
    };

    assert_eq!(anomalies.len(), 1, "{anomalies:?}");
    let (id, anomaly) = &anomalies[0];
    assert_eq!(*id, id_of(&topics.anomalies()));
    assert_eq!(anomaly["target"], "checkout");
    assert_eq!(anomaly["value"], 1000.0);
    assert_eq!(anomaly["direction"], "UP");
    assert_ne!(*id, writer_id);

    // perfpilot's own `tail` reads them through the registry too, and without it says
    // what the framing is.
    let tail = |registry: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_perfpilot"));
        c.args(["tail", "anomalies", "--bootstrap-servers", &s.bootstrap])
            .args(["--topic-prefix", &topics.prefix, "--from-beginning"])
            .args(["--idle-timeout", "5s"]);
        if let Some(r) = registry {
            c.args(["--schema-registry", r]);
        }
        c.output().expect("tail runs")
    };
    let through = tail(Some(&s.registry));
    let line = String::from_utf8_lossy(&through.stdout);
    assert!(
        line.contains("\"type\":\"Anomaly\"") && line.contains("\"target\":\"checkout\""),
        "{line}\n{}",
        String::from_utf8_lossy(&through.stderr)
    );
    let without = tail(None);
    let err = String::from_utf8_lossy(&without.stderr);
    assert!(
        err.contains("Confluent Schema Registry framing") && err.contains("--schema-registry"),
        "{err}"
    );

    assert_eq!(deadletters.len(), 1, "{deadletters:?}");
    let (id, dl) = &deadletters[0];
    assert_eq!(*id, id_of(&topics.deadletter()));
    assert_eq!(dl["reason"], "unknown_schema_id");
    assert_eq!(dl["source_offset"].as_i64().map(|o| o >= 0), Some(true));
    assert!(dl["detail"].as_str().unwrap().contains("987654"), "{dl}");
}

/// A TCP relay to the registry that the test can cut: while cut, connections are taken
/// and never answered (a registry that hangs, the worst case for a client).
struct Relay {
    addr: String,
    open: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(upstream: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let open = Arc::new(AtomicBool::new(true));
        let live = Arc::new(Mutex::new(Vec::<TcpStream>::new()));
        let (up, gate, conns) = (upstream.to_string(), open.clone(), live.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (up, gate) = (up.clone(), gate.clone());
                if let Ok(c) = client.try_clone() {
                    conns.lock().unwrap().push(c);
                }
                std::thread::spawn(move || {
                    if !gate.load(Ordering::SeqCst) {
                        // Hold it unanswered until the client gives up.
                        let mut sink = [0u8; 1024];
                        let mut c = client;
                        let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
                        while matches!(c.read(&mut sink), Ok(n) if n > 0) {}
                        return;
                    }
                    let Ok(server) = TcpStream::connect(&up) else {
                        return;
                    };
                    let (mut c1, mut s1) =
                        (client.try_clone().unwrap(), server.try_clone().unwrap());
                    let (mut c2, mut s2) = (client, server);
                    let t = std::thread::spawn(move || {
                        let _ = std::io::copy(&mut c1, &mut s1);
                        let _ = s1.shutdown(std::net::Shutdown::Write);
                    });
                    let _ = std::io::copy(&mut s2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Write);
                    let _ = t.join();
                });
            }
        });
        Relay { addr, open, live }
    }

    /// From now on nothing answers: open connections (a client's pooled keep-alive
    /// ones) are closed and new ones hang.
    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for c in self.live.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Answers again; the connections left hanging are closed, so the client's next
    /// try is a new one.
    fn mend(&self) {
        self.open.store(true, Ordering::SeqCst);
        for c in self.live.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_stops_answering_is_waited_for_then_its_records_are_dead_lettered() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(s) = setup("registry-away").await else {
        return;
    };
    let rest = s.registry.strip_prefix("http://").unwrap();
    let (upstream, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let relay = Relay::start(upstream);
    let through_relay = format!("http://{}/{path}", relay.addr);
    let mut stage = Stage::start(&s, &through_relay, &["--schema-registry-timeout", "20s"]);
    stage.wait_for("partitions assigned", Duration::from_secs(60));

    // 1. Cut while a new writer schema arrives: the stage waits, then reads it.
    relay.cut();
    produce(&s, "api", 30, "region", false);
    stage.wait_for(
        "fetching a writer schema; trying again",
        Duration::from_secs(30),
    );
    std::thread::sleep(Duration::from_secs(3));
    relay.mend();
    stage.wait_for("writer schema fetched", Duration::from_secs(30));

    // 2. Cut for longer than --schema-registry-timeout: the record with the new schema
    //    is dead-lettered as schema_registry_unavailable and the stage goes on; records
    //    of the schema it knows are still read.
    relay.cut();
    let started = Instant::now();
    produce(&s, "web", 1, "rack", false);
    produce(&s, "api", 5, "region", false);
    stage.wait_for("the schema registry stayed away", Duration::from_secs(60));
    let waited = started.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let summary = stage.stop();
    assert!(
        summary.contains("consumed 36, processed 35, dead-lettered 1"),
        "{summary}"
    );
    assert!(
        waited >= Duration::from_secs(15),
        "dead-lettered after {waited:?}, before --schema-registry-timeout"
    );
    relay.mend();
    let deadletters = consume(&s, &s.cluster.topics.deadletter());
    assert_eq!(deadletters.len(), 1, "{deadletters:?}");
    assert_eq!(deadletters[0].1["reason"], "schema_registry_unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_registry_is_reached_with_its_ca_and_refused_without() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(s) = setup("registry-tls").await else {
        return;
    };
    let (Ok(tls_url), Ok(ca)) = (
        std::env::var("PERFPILOT_TEST_SCHEMA_REGISTRY_TLS"),
        std::env::var("PERFPILOT_TEST_SCHEMA_REGISTRY_CA"),
    ) else {
        panic!(
            "PERFPILOT_TEST_SCHEMA_REGISTRY_TLS and PERFPILOT_TEST_SCHEMA_REGISTRY_CA must be set \
             with the registry (scripts/schema-registry.sh tls-url, ca)"
        );
    };
    // Without the CA the self-signed certificate is refused, and the log says so.
    let mut untrusting = Stage::start(&s, &tls_url, &[]);
    untrusting.wait_for("certificate verify failed", Duration::from_secs(30));
    drop(untrusting);

    let mut stage = Stage::start(&s, &tls_url, &["--schema-registry-ca-location", &ca]);
    stage.wait_for("partitions assigned", Duration::from_secs(60));
    produce(&s, "tls", 20, "site", false);
    stage.wait_for("writer schema fetched", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    let summary = stage.stop();
    assert!(
        summary.contains("consumed 20, processed 20, dead-lettered 0"),
        "{summary}"
    );
}
