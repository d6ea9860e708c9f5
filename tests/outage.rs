//! A broker that is away for longer than a delivery timeout (3 minutes, frozen with SIGSTOP)
//! does not stop an at-least-once stage: its deliveries wait and are retried, it reports
//! itself unhealthy while they wait, and afterwards it reads on and has lost nothing.
//! Before, the stage exited after 30 s ("delivery to the state topic failed:
//! MessageTimedOut"). Starts a broker of its own (in a temp directory, on a free port),
//! so it runs where real Kafka is available — when `PERFPILOT_TEST_BOOTSTRAP` is set, as
//! `.ci/run` does — and says SKIPPED otherwise.

mod common;

use common::{produce_lines, OwnBroker};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The test's stage, killed however the test ends (before its broker is stopped).
struct Stage(Option<Child>);

impl Drop for Stage {
    fn drop(&mut self) {
        if let Some(mut s) = self.0.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

fn signal(name: &str, pid: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid)
        .status()
        .is_ok_and(|s| s.success())
}

fn perfpilot() -> Command {
    Command::new(env!("CARGO_BIN_EXE_perfpilot"))
}

fn produce(kafka: &[&str], from: usize, n: usize) {
    let mut lines = String::new();
    for i in from..from + n {
        lines.push_str(&format!(
            "{{\"target\":\"svc-{}\",\"metric\":\"latency\",\"value\":{}}}\n",
            i % 50,
            100 + i % 7
        ));
    }
    produce_lines(kafka, lines.as_bytes());
}

/// The value of the first sample of `metric` with the detector's label, if served.
fn scrape(addr: &str, metric: &str) -> Option<f64> {
    let body = common::scrape(addr)?;
    let prefix = format!("{metric}{{stage=\"detector\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A broker of the test's own with the stage's topics (2 partitions) and `backlog`
/// events on `metrics`, and a free address for the stage's metrics; `None` (SKIPPED)
/// without real Kafka.
struct Setup {
    broker: OwnBroker,
    bootstrap: String,
    prefix: &'static str,
    metrics: String,
    /// Held until the broker is gone (fields drop in order).
    _turn: std::sync::MutexGuard<'static, ()>,
}

/// The tests here run one at a time: each freezes a broker of its own and times what
/// follows, which two brokers and two stages at once on a 2-core machine would skew.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Setup {
    fn new(test: &str, name: &str, prefix: &'static str, backlog: usize) -> Option<Setup> {
        let turn = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (broker, bootstrap) = OwnBroker::start_if_real_kafka(test, name)?;
        let setup = Setup {
            broker,
            bootstrap,
            prefix,
            metrics: format!("127.0.0.1:{}", common::free_port()),
            _turn: turn,
        };
        let created = perfpilot()
            .args(["topics", "create", "--partitions", "2"])
            .args(setup.kafka())
            .output()
            .unwrap();
        assert!(
            created.status.success(),
            "{}",
            String::from_utf8_lossy(&created.stderr)
        );
        produce(&setup.kafka(), 0, backlog);
        Some(setup)
    }

    fn kafka(&self) -> [&str; 4] {
        [
            "--bootstrap-servers",
            self.bootstrap.as_str(),
            "--topic-prefix",
            self.prefix,
        ]
    }
}

#[test]
fn a_broker_away_longer_than_the_delivery_timeout_does_not_stop_a_stage() {
    // A backlog, so the stage is still working through what it fetched when the broker
    // freezes, and a checkpoint every second, so its state writes are in flight then.
    let backlog = 100_000;
    let Some(setup) = Setup::new(
        "outage",
        "a_broker_away_longer_than_the_delivery_timeout_does_not_stop_a_stage",
        "outage-",
        backlog,
    ) else {
        return;
    };
    let (broker, kafka, metrics) = (&setup.broker, setup.kafka(), &setup.metrics);
    let mut stage = Stage(None);
    stage.0 = Some(
        perfpilot()
            .args(["run", "detector", "--commit-interval", "1s"])
            .args(["--metrics-addr", metrics.as_str()])
            .args(kafka)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let consumed = || scrape(metrics, "perfpilot_records_in_total").unwrap_or(0.0);
    wait_for("the stage to be working", Duration::from_secs(90), || {
        consumed() >= 5_000.0
    });

    // The broker freezes for 3 minutes: six times the 30 s a delivery used to be given.
    let pid = broker.pid();
    let before = consumed();
    assert!(signal("STOP", &pid), "cannot stop broker {pid}");
    let frozen = Instant::now();
    let mut unhealthy = false;
    while frozen.elapsed() < Duration::from_secs(180) {
        std::thread::sleep(Duration::from_secs(1));
        unhealthy |= scrape(metrics, "perfpilot_healthy") == Some(0.0);
        let exited = stage.0.as_mut().unwrap().try_wait().unwrap();
        assert!(
            exited.is_none(),
            "the stage exited during the outage: {exited:?}"
        );
    }
    assert!(signal("CONT", &pid));
    assert!(
        before < backlog as f64,
        "the backlog was read before the freeze ({before}): nothing was in flight"
    );
    assert!(
        unhealthy,
        "the stage did not report itself unhealthy while it waited"
    );

    // Then it reads on: the rest of the backlog and what comes after.
    wait_for(
        "the backlog after the outage",
        Duration::from_secs(180),
        || consumed() >= backlog as f64,
    );
    produce(&kafka, backlog, 2000);
    wait_for(
        "records produced after the outage",
        Duration::from_secs(120),
        || consumed() >= (backlog + 2000) as f64,
    );
    wait_for(
        "the stage to be healthy again",
        Duration::from_secs(60),
        || scrape(metrics, "perfpilot_healthy") == Some(1.0),
    );
    let mut child = stage.0.take().unwrap();
    assert!(
        child.try_wait().unwrap().is_none(),
        "the stage is still running"
    );
    assert!(signal("TERM", &child.id().to_string()));
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "clean shutdown after the outage: {status:?}"
    );
}

/// An exactly-once stage asked to stop while its broker is frozen stops by itself
/// within its shutdown deadline plus the time to close its clients. Its transactional
/// call blocked on the frozen broker (librdkafka holds `send_offsets_to_transaction`
/// and the commit until the broker's request times out, 60 s, whatever timeout they are
/// given) is left behind once the deadline has passed; a new producer cannot fence the
/// old one with the broker away (it tries for a few seconds), so the stop is not clean
/// (exit 1: the transaction stays open until the broker aborts it on its timeout; its
/// inputs are re-read). Before, the stage waited inside the call until its watchdog
/// ended it, 20 s past the deadline.
#[test]
fn an_exactly_once_stage_asked_to_stop_while_its_broker_is_frozen_stops_in_time() {
    let backlog = 100_000;
    let Some(setup) = Setup::new(
        "outage-stop",
        "an_exactly_once_stage_asked_to_stop_while_its_broker_is_frozen_stops_in_time",
        "outage-stop-",
        backlog,
    ) else {
        return;
    };
    let (broker, kafka, metrics) = (&setup.broker, setup.kafka(), &setup.metrics);
    let mut stage = Stage(None);
    let log =
        std::env::temp_dir().join(format!("perfpilot-outage-stop-{}.log", std::process::id()));
    stage.0 = Some(
        perfpilot()
            .args(["run", "detector", "--processing-guarantee", "exactly-once"])
            .args(["--commit-interval", "100ms", "--shutdown-timeout", "1s"])
            .args(["--metrics-addr", metrics.as_str()])
            .args(kafka)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let consumed = || scrape(metrics, "perfpilot_records_in_total").unwrap_or(0.0);
    wait_for("the stage to be working", Duration::from_secs(90), || {
        consumed() >= 5_000.0
    });
    let pid = broker.pid();
    assert!(signal("STOP", &pid), "cannot stop broker {pid}");
    // Long enough for a commit (every 100 ms) to be in flight, blocked on the frozen
    // broker: librdkafka gives it up after 15 s.
    std::thread::sleep(Duration::from_millis(500));
    let mut child = stage.0.take().unwrap();
    let asked = Instant::now();
    assert!(signal("TERM", &child.id().to_string()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if asked.elapsed() > Duration::from_secs(40) {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = asked.elapsed();
    assert!(signal("CONT", &pid));
    let tail = std::fs::read_to_string(&log).unwrap_or_default();
    let tail: Vec<&str> = tail.lines().rev().take(15).collect();
    let tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
    // The 1 s deadline, a new producer's try at fencing the old one (at most 6 s), then
    // closing the clients with the broker away (3–5 s): 10.3 s measured. Waiting for the
    // blocked call took 15 s from its start, 15.3 s after the signal (the watchdog would
    // end the stage 21 s after it).
    assert!(
        took < Duration::from_millis(12_500) && tail.contains("stage stopped"),
        "stopped after {took:?} with {status:?}, not by itself; its log ends:\n{tail}"
    );
    assert_eq!(
        status.code(),
        Some(1),
        "the transaction could not be ended with the broker away: not a clean stop\n{tail}"
    );
    assert!(
        tail.contains("left behind"),
        "no blocked call was left behind (stopped after {took:?}): the test did not catch one in flight\n{tail}"
    );
    eprintln!("stopped {took:?} after SIGTERM with the broker frozen: {status:?}");
}
