//! `perfpilot demo`: the whole pipeline with synthetic agents, on the embedded broker
//! (or a real cluster), printing what happens and a summary at the end.

mod lockstep;
mod report;

use lockstep::Lockstep;

pub use report::{DemoSummary, Observed};

use crate::agent::publish::MetricPublisher;
use crate::agent::synthetic::SyntheticFleet;
use crate::config::Config;
use crate::event::{encode, AnyRecord, MetricEvent, Verdict, REPLICAS};
use crate::pipeline::run_kind;
use crate::pipeline::StageKind;
use crate::runtime::embedded::EmbeddedBroker;
use crate::runtime::{now_ms, KafkaOptions, Shutdown, Topics};

const DAY_MS: i64 = 86_400_000;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The demo's configuration: compressed time (one tick = one simulated minute), so
/// cooldowns and windows are in simulated minutes.
pub const DEMO_CONFIG: &str = r#"
[defaults]
replicas = 2
min_replicas = 1
max_replicas = 8
utilization_goal = 0.6
cooldown_secs = 1200          # 20 simulated minutes
recommendation_ttl_secs = 900

[targets.checkout]
min_replicas = 2

[targets.search]                # pinned: its proposals meet the bounds rule
min_replicas = 3
max_replicas = 3

[detector]
warmup_points = 30
ignore_metrics = ["replicas"]   # changed by the pipeline itself

[forecaster]
emit_every_events = 5
horizon = 15
thresholds = { cpu_utilization = 0.9 }   # early warning before saturation

[coordinator]
decision_window_secs = 300
idle_flush_ms = 1000            # in simulated time: a window idle for a tick closes at the next
"#;

/// What a demo run does (the `demo` command line's options).
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// How long the demo runs: the agents publish (this − 6 s) × `ticks_per_second`
    /// simulated minutes, in lockstep with the pipeline (longer on a slow machine).
    pub duration: Duration,
    /// Run against this Kafka cluster instead of the embedded broker (topics get a
    /// fresh prefix per run, so earlier runs do not interfere). Only this option picks a
    /// cluster: PERFPILOT_BOOTSTRAP_SERVERS, which the stages read, is ignored here.
    pub bootstrap_servers: Option<String>,
    /// With --bootstrap-servers: extra librdkafka property, key=value (repeatable), e.g.
    /// -X security.protocol=SASL_SSL -X sasl.mechanism=SCRAM-SHA-256. Secrets are better
    /// passed as `PERFPILOT_KAFKA_X_<KEY>` (see `run --help`); -X wins over them.
    pub property: Vec<(String, String)>,
    /// Simulated minutes per second of wall time, at most.
    pub ticks_per_second: u32,
    /// Background hosts that each report one noisy seasonal metric (adds load).
    pub fleet: usize,
    /// Malformed records to slip into the metrics stream (they must be dead-lettered).
    pub poison: u32,
    /// Seed of the synthetic workload.
    pub seed: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics while the demo runs.
    pub metrics_addr: Option<SocketAddr>,
    /// Configuration file to use instead of the demo's built-in one.
    pub config: Option<PathBuf>,
    /// Print only the summary.
    pub quiet: bool,
    /// Partitions per topic.
    pub partitions: i32,
}

/// Runs the demo: on the embedded broker unless a cluster was given. The caller prints
/// the summary.
pub async fn run_demo(args: DemoOptions) -> anyhow::Result<DemoSummary> {
    let config = match &args.config {
        Some(p) => Config::load(Some(p))?,
        None => Config::parse(DEMO_CONFIG, "the built-in demo config")?,
    };
    let summary = match &args.bootstrap_servers {
        Some(bootstrap) => {
            let topics = Topics::with_prefix(format!("perfpilot-demo-{}.", now_ms()));
            let mut kafka = KafkaOptions::new(bootstrap.clone());
            kafka.properties = crate::runtime::kafka::properties_from_env(std::env::vars());
            kafka.properties.extend(args.property.iter().cloned());
            crate::runtime::topics::create_all(&kafka, &topics, args.partitions, 1).await?;
            println!(
                "perfpilot demo on Kafka at {bootstrap}, topics {}*",
                topics.prefix
            );
            run(&args, &config, &kafka, &topics).await?
        }
        None => {
            // The mock cluster is not Send: it stays on this task; stages get its address.
            let broker = EmbeddedBroker::start(1)?;
            let topics = Topics::default();
            broker.create_topics(&topics, args.partitions)?;
            let kafka = embedded_client_options(&broker.bootstrap_servers());
            println!(
                "perfpilot demo on the embedded broker at {}",
                broker.bootstrap_servers()
            );
            let s = run(&args, &config, &kafka, &topics).await?;
            drop(broker);
            s
        }
    };
    Ok(summary)
}

/// Client settings that make the mock cluster's group rebalances take seconds, not a
/// minute (see KAFKA-NOTES.md).
pub fn embedded_client_options(bootstrap: &str) -> KafkaOptions {
    KafkaOptions {
        // The mock cluster does not answer DescribeConfigs (each try waited 10 s).
        describes_configs: false,
        ..KafkaOptions::new(bootstrap)
    }
    .with_consumer("session.timeout.ms", "6000")
    .with_consumer("heartbeat.interval.ms", "500")
    // The mock answers a fetch only when its wait is over, even once data has come:
    // the default 500 ms wait made every hop of the demo's lockstep that long.
    .with_consumer("fetch.wait.max.ms", "5")
}

/// Runs the demo against a broker whose topics exist, and returns its summary.
pub async fn run(
    args: &DemoOptions,
    config: &Config,
    kafka: &KafkaOptions,
    topics: &Topics,
) -> anyhow::Result<DemoSummary> {
    let shutdown = Shutdown::new();
    let signals = Shutdown::new();
    tokio::spawn(signals.clone().on_signals());

    let agent_time = args
        .duration
        .saturating_sub(Duration::from_secs(6))
        .max(Duration::from_secs(4));
    let ticks = (agent_time.as_secs_f64() * f64::from(args.ticks_per_second.max(1))) as u64;
    let step_ms = 60_000;
    // Simulated time starts at a midnight (UTC), so the detector's daily routine sees
    // the same times of day in every run; the last tick is still in the past.
    let start_ms = (now_ms() - ticks as i64 * step_ms).div_euclid(DAY_MS) * DAY_MS;
    let fleet = SyntheticFleet::demo(start_ms, step_ms, ticks, args.fleet, args.seed);
    let incidents = fleet.incidents().to_vec();

    let lockstep = Lockstep::new(start_ms, signals.clone());
    let mut stages = Vec::new();
    for (kind, progress) in StageKind::ALL.into_iter().zip(&lockstep.progress) {
        let mut runner = kind.runner_config(topics, None);
        runner.tick_interval = lockstep::TICK_INTERVAL;
        runner.clock = lockstep.stage_clock.clone();
        runner.progress = progress.clone();
        if kind == StageKind::Detector {
            runner.gate = Some(lockstep.detector_gate.clone());
        }
        let (cfg, kafka, stop) = (config.clone(), kafka.clone(), shutdown.clone());
        stages.push((
            kind,
            tokio::spawn(async move { run_kind(kind, &cfg, &kafka, runner, stop).await }),
        ));
    }

    // Approved decisions flow back to the agents (closed loop), through a bounded channel.
    let (feedback_tx, feedback_rx) = mpsc::channel::<Actuation>(1024);
    let watcher_stop = Shutdown::new();
    let watcher = tokio::spawn(watch(
        kafka.clone(),
        topics.clone(),
        // Lines wait for 5 minutes of simulated time to pass, which covers the stages'
        // hops; they then print in event-time order.
        report::Printer::new(start_ms, config.policies.clone(), args.quiet, 5 * 60_000),
        feedback_tx,
        lockstep.watched.clone(),
        watcher_stop.clone(),
    ));

    let started = Instant::now();
    let rollout_ms = (config.coordinator.change_duration_secs * 1000) as i64;
    let run = agents(
        fleet,
        ticks,
        args,
        (kafka, topics),
        (feedback_rx, rollout_ms),
        &lockstep,
    )
    .await;
    let agent_secs = started.elapsed().as_secs_f64();
    shutdown.trigger();
    let mut reports = Vec::new();
    for (kind, handle) in stages {
        match handle.await {
            Ok(Ok(r)) => reports.push((kind, r)),
            Ok(Err(e)) => anyhow::bail!("{} failed: {e}", kind.as_str()),
            Err(e) => anyhow::bail!("{} task failed: {e}", kind.as_str()),
        }
    }
    watcher_stop.trigger();
    let observed = watcher.await??;
    let produced = match run {
        Ok(n) => n,
        // Ctrl-C: the summary of what was done so far.
        Err(_) if signals.is_triggered() => lockstep.progress[0].consumed(),
        Err(e) => return Err(e),
    };
    Ok(DemoSummary {
        produced,
        poison: u64::from(args.poison),
        agent_secs,
        ticks,
        step_ms,
        start_ms,
        incidents,
        reports,
        observed,
    })
}

/// The synthetic agents, in lockstep with the pipeline: each tick (one simulated
/// minute, at most `ticks_per_second` a second) is published once the pipeline has
/// worked through the one before and its decisions are fed back. Returns the events
/// published.
async fn agents(
    mut fleet: SyntheticFleet,
    ticks: u64,
    args: &DemoOptions,
    (kafka, topics): (&KafkaOptions, &Topics),
    (mut feedback, rollout_ms): (mpsc::Receiver<Actuation>, i64),
    lockstep: &Lockstep,
) -> anyhow::Result<u64> {
    let mut publisher = MetricPublisher::new(kafka, topics.metrics())?;
    let period = Duration::from_secs_f64(1.0 / f64::from(args.ticks_per_second.max(1)));
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let poison_at: Vec<u64> = (1..=u64::from(args.poison))
        .map(|i| i * ticks / (u64::from(args.poison) + 1))
        .collect();
    let mut produced = 0u64;
    let mut records = 0u64;
    let mut rolling_out: Vec<Actuation> = Vec::new();
    for tick in 0..ticks {
        interval.tick().await;
        lockstep.advance(fleet.time_of(tick), records).await?;
        // An approved change takes effect once rolled out (the coordinator's
        // `change_duration_secs`), like pods that take a while to start.
        while let Ok(a) = feedback.try_recv() {
            rolling_out.push(a);
        }
        let now = fleet.time_of(tick);
        rolling_out.retain(|a| {
            let done = a.decided_ms + rollout_ms <= now;
            if done {
                fleet.apply_replicas(&a.target, a.replicas);
            }
            !done
        });
        lockstep.hold_detector();
        for e in fleet.next_tick() {
            publisher.publish(&e).await?;
            produced += 1;
            records += 1;
        }
        if let Some(i) = poison_at.iter().position(|&t| t == tick) {
            let (key, bytes) = poison_record(i, fleet.time_of(tick))?;
            publisher.publish_raw(key.as_bytes(), &bytes).await?;
            records += 1;
        }
        publisher.flush().await?;
        lockstep.work_through(records).await?;
    }
    // The end: time moves on past every open decision window, which closes them.
    lockstep
        .advance(fleet.time_of(ticks) + DAY_MS, records)
        .await?;
    Ok(produced)
}

/// An approved replica change on its way to the agents.
#[derive(Debug)]
struct Actuation {
    target: String,
    replicas: i32,
    decided_ms: i64,
}

/// The i-th malformed record the demo slips in: not Avro, a NaN value, an empty target.
pub fn poison_record(i: usize, ts: i64) -> anyhow::Result<(String, Vec<u8>)> {
    let base = MetricEvent {
        source: "demo-poison".into(),
        target: "checkout".into(),
        pool: Some("shop".into()),
        metric: "cpu_utilization".into(),
        labels: Default::default(),
        timestamp_ms: ts,
        value: 0.5,
        unit: "ratio".into(),
    };
    Ok(match i % 3 {
        0 => (
            "checkout".into(),
            br#"{"target":"checkout","value":"oops"}"#.to_vec(),
        ),
        1 => (
            "checkout".into(),
            encode(&MetricEvent {
                value: f64::NAN,
                ..base
            })?,
        ),
        // Keyed like the others (an unkeyed record lands on a random partition).
        _ => (
            "checkout".into(),
            encode(&MetricEvent {
                target: String::new(),
                ..base
            })?,
        ),
    })
}

/// Subscribes to the output topics, prints what arrives and feeds approved decisions
/// back to the agents.
async fn watch(
    kafka: KafkaOptions,
    topics: Topics,
    mut printer: report::Printer,
    feedback: mpsc::Sender<Actuation>,
    watched: Arc<AtomicU64>,
    stop: Shutdown,
) -> anyhow::Result<Observed> {
    let consumer: StreamConsumer = kafka
        .consumer_config(&format!("{}demo-watcher", topics.prefix))
        .create()?;
    let names = [
        topics.anomalies(),
        topics.forecasts(),
        topics.recommendations(),
        topics.decisions(),
        topics.deadletter(),
    ];
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    consumer.subscribe(&refs)?;
    let mut observed = Observed::default();
    loop {
        let m = tokio::select! {
            _ = stop.wait() => break,
            m = consumer.recv() => m,
        };
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "demo watcher: consumer error");
                continue;
            }
        };
        let Ok(record) = AnyRecord::decode(m.payload().unwrap_or(&[])) else {
            watched.fetch_add(1, Ordering::Release);
            continue;
        };
        if let AnyRecord::Decision(d) = &record {
            if d.verdict == Verdict::Approved && !d.dry_run && d.resource == REPLICAS {
                if let Some(r) = d.final_value.map(|v| v.round() as i32) {
                    // The channel is bounded; if the agents fall behind, the decision is
                    // reported and the loop simply stays open for that one. Once the
                    // agents have finished, the channel is closed and nothing is applied.
                    if let Err(mpsc::error::TrySendError::Full(_)) = feedback.try_send(Actuation {
                        target: d.target.clone(),
                        replicas: r,
                        decided_ms: d.decided_ms,
                    }) {
                        tracing::warn!(target = %d.target, "demo feedback channel full; decision not applied");
                    }
                }
            }
        }
        printer.print(&record);
        for line in printer.take_ready() {
            println!("{line}");
        }
        observed.record(record);
        // Last: once the lockstep sees it counted, its decision is in the channel.
        watched.fetch_add(1, Ordering::Release);
    }
    printer.flush();
    for line in printer.take_ready() {
        println!("{line}");
    }
    Ok(observed)
}
