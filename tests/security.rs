//! SASL against a real broker: PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 authenticate with
//! settings given by -X and by the environment; a wrong password stops a command with
//! the cause at once; the password never appears in any output.
//!
//! Needs `PERFPILOT_TEST_SASL_BOOTSTRAP`: the SASL_PLAINTEXT listener of the broker that
//! `scripts/kafka.sh start` runs (`scripts/kafka.sh sasl-bootstrap`; user perfpilot,
//! password perfpilot-secret). `.ci/run` sets it; without it the tests say SKIPPED.

use perfpilot::event::{encode, MetricEvent};
use perfpilot::runtime::{now_ms, KafkaOptions};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const SASL_ENV: &str = "PERFPILOT_TEST_SASL_BOOTSTRAP";
const USER: &str = "perfpilot";
const PASSWORD: &str = "perfpilot-secret";

fn bootstrap(test: &str) -> Option<String> {
    let b = std::env::var(SASL_ENV).ok();
    if b.is_none() {
        eprintln!(
            "SKIPPED {test}: {SASL_ENV} is not set (scripts/kafka.sh sasl-bootstrap prints it; .ci/run sets it)"
        );
    }
    b
}

fn perfpilot(args: &[&str], password_env: Option<&str>) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_perfpilot"));
    c.args(args).env("RUST_LOG", "debug");
    if let Some(p) = password_env {
        c.env("PERFPILOT_KAFKA_X_SASL_PASSWORD", p);
    }
    c
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn prefix(test: &str) -> String {
    format!("sasl-{test}-{}-{}.", std::process::id(), now_ms())
}

#[test]
fn plain_and_scram_authenticate_with_the_password_in_the_environment() {
    let Some(b) = bootstrap("plain_and_scram") else {
        return;
    };
    for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let p = prefix(&mechanism.to_lowercase());
        let out = perfpilot(
            &[
                "topics",
                "create",
                "--bootstrap-servers",
                &b,
                "--topic-prefix",
                &p,
                "--partitions",
                "2",
                "--replication-factor",
                "1",
                "-X",
                "security.protocol=SASL_PLAINTEXT",
                "-X",
                &format!("sasl.mechanism={mechanism}"),
                "-X",
                &format!("sasl.username={USER}"),
            ],
            Some(PASSWORD),
        )
        .output()
        .unwrap();
        let t = text(&out);
        assert!(out.status.success(), "{mechanism}: {t}");
        assert!(t.contains(&format!("{p}metrics")), "{mechanism}: {t}");
        assert!(
            !t.contains(PASSWORD),
            "{mechanism}: the password was printed"
        );
    }
}

#[test]
fn a_wrong_password_stops_at_once_with_the_cause_and_is_never_printed() {
    let Some(b) = bootstrap("wrong_password") else {
        return;
    };
    let wrong = "wrong-hunter2-secret";
    for (args, what) in [
        (
            vec!["topics", "create", "--partitions", "1"],
            "topics create",
        ),
        (
            vec!["run", "detector", "--metrics-addr", "127.0.0.1:0"],
            "run detector",
        ),
    ] {
        let p = prefix("wrong");
        let started = Instant::now();
        let mut all = args.clone();
        all.extend([
            "--bootstrap-servers",
            &b,
            "--topic-prefix",
            &p,
            "-X",
            "security.protocol=SASL_PLAINTEXT",
            "-X",
            "sasl.mechanism=SCRAM-SHA-256",
            "-X",
            "sasl.username=perfpilot",
        ]);
        let pw = format!("sasl.password={wrong}");
        all.extend(["-X", &pw]);
        let out = perfpilot(&all, None).output().unwrap();
        let t = text(&out);
        assert!(!out.status.success(), "{what}: {t}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what} took {:?}",
            started.elapsed()
        );
        assert!(t.to_lowercase().contains("authentication"), "{what}: {t}");
        assert!(!t.contains(wrong), "{what}: the password was printed:\n{t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_runs_over_scram_sha_512() {
    let Some(b) = bootstrap("stage_over_scram") else {
        return;
    };
    let p = prefix("stage");
    let sasl = |o: KafkaOptions| {
        o.with("security.protocol", "SASL_PLAINTEXT")
            .with("sasl.mechanism", "SCRAM-SHA-512")
            .with("sasl.username", USER)
            .with("sasl.password", PASSWORD)
    };
    let kafka = sasl(KafkaOptions::new(b.clone()));
    perfpilot::runtime::topics::create_all(
        &kafka,
        &perfpilot::runtime::Topics::with_prefix(p.clone()),
        2,
        1,
    )
    .await
    .unwrap();
    let mut child = perfpilot(
        &[
            "run",
            "detector",
            "--bootstrap-servers",
            &b,
            "--topic-prefix",
            &p,
            "--metrics-addr",
            "127.0.0.1:0",
            "--commit-interval",
            "500ms",
            "-X",
            "security.protocol=SASL_PLAINTEXT",
            "-X",
            "sasl.mechanism=SCRAM-SHA-512",
            "-X",
            "sasl.username=perfpilot",
        ],
        Some(PASSWORD),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let producer: FutureProducer = kafka.producer_config().create().unwrap();
    let now = now_ms();
    for i in 0..200 {
        let e = MetricEvent::sample(
            "sasl",
            &format!("svc-{}", i % 4),
            "cpu",
            now - (200 - i) * 60_000,
            0.5,
        );
        let bytes = encode(&e).unwrap();
        producer
            .send(
                FutureRecord::to(&format!("{p}metrics"))
                    .key(&e.target)
                    .payload(&bytes),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the stage did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("detector: consumed 200,"), "{t}");
    assert!(!t.contains(PASSWORD), "the password was printed");
}
