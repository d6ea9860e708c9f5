//! `perfpilot demo`: the whole pipeline with synthetic agents, on the embedded broker
//! (or a real cluster), printing what happens and a summary at the end.

mod report;

pub use report::{DemoSummary, Observed};

use crate::agent::publish::MetricPublisher;
use crate::agent::synthetic::SyntheticFleet;
use crate::config::Config;
use crate::event::{encode, AnyRecord, MetricEvent, Verdict, REPLICAS};
use crate::pipeline::run_kind;
use crate::pipeline::StageKind;
use crate::runtime::embedded::EmbeddedBroker;
use crate::runtime::{now_ms, KafkaOptions, Shutdown, Topics};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use std::net::SocketAddr;
use std::path::PathBuf;
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
idle_flush_ms = 1000
"#;

/// What a demo run does (the `demo` command line's options).
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// How long the whole demo runs (agents, then draining the pipeline).
    pub duration: Duration,
    /// Run against this Kafka cluster instead of the embedded broker (topics get a
    /// fresh prefix per run, so earlier runs do not interfere). Only this option picks a
    /// cluster: PERFPILOT_BOOTSTRAP_SERVERS, which the stages read, is ignored here.
    pub bootstrap_servers: Option<String>,
    /// With --bootstrap-servers: extra librdkafka property, key=value (repeatable), e.g.
    /// -X security.protocol=SASL_SSL -X sasl.mechanism=SCRAM-SHA-256. Secrets are better
    /// passed as PERFPILOT_KAFKA_X_<KEY> (see `run --help`); -X wins over them.
    pub property: Vec<(String, String)>,
    /// Simulated minutes per second of wall time.
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
    let mut stages = Vec::new();
    for kind in StageKind::ALL {
        let mut runner = kind.runner_config(topics, None);
        // Stages tick often so the coordinator's idle windows close promptly.
        runner.tick_interval = Duration::from_millis(250);
        let (cfg, kafka, stop) = (config.clone(), kafka.clone(), shutdown.clone());
        stages.push((
            kind,
            tokio::spawn(async move { run_kind(kind, &cfg, &kafka, runner, stop).await }),
        ));
    }

    let agent_time = args
        .duration
        .saturating_sub(Duration::from_secs(6))
        .max(Duration::from_secs(4));
    let ticks = (agent_time.as_secs_f64() * f64::from(args.ticks_per_second.max(1))) as u64;
    let step_ms = 60_000;
    let start_ms = now_ms() - ticks as i64 * step_ms;
    let fleet = SyntheticFleet::demo(start_ms, step_ms, ticks, args.fleet, args.seed);
    let incidents = fleet.incidents().to_vec();

    // Approved decisions flow back to the agents (closed loop), through a bounded channel.
    let (feedback_tx, feedback_rx) = mpsc::channel::<(String, i32)>(1024);
    let watcher_stop = Shutdown::new();
    let watcher = tokio::spawn(watch(
        kafka.clone(),
        topics.clone(),
        // Lines wait for 5 s of simulated time to pass (one tick is a minute), which
        // covers the stages' hops; they then print in event-time order.
        report::Printer::new(
            start_ms,
            config.policies.clone(),
            args.quiet,
            i64::from(args.ticks_per_second.max(1)) * 5 * 60_000,
        ),
        feedback_tx,
        watcher_stop.clone(),
    ));

    let started = Instant::now();
    let produced = tokio::select! {
        r = agents(fleet, ticks, args, kafka, topics, feedback_rx) => r?,
        _ = signals.wait() => 0,
    };
    let agent_secs = started.elapsed().as_secs_f64();

    // Let the pipeline drain: wait until the watcher has seen nothing new for a while.
    let drain_until = started + args.duration.max(agent_time + Duration::from_secs(2));
    while Instant::now() < drain_until && !signals.is_triggered() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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

/// The synthetic agents: one tick per 1/ticks_per_second, applying fed-back decisions.
async fn agents(
    mut fleet: SyntheticFleet,
    ticks: u64,
    args: &DemoOptions,
    kafka: &KafkaOptions,
    topics: &Topics,
    mut feedback: mpsc::Receiver<(String, i32)>,
) -> anyhow::Result<u64> {
    let mut publisher = MetricPublisher::new(kafka, topics.metrics())?;
    let period = Duration::from_secs_f64(1.0 / f64::from(args.ticks_per_second.max(1)));
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let poison_at: Vec<u64> = (1..=u64::from(args.poison))
        .map(|i| i * ticks / (u64::from(args.poison) + 1))
        .collect();
    let mut produced = 0u64;
    for tick in 0..ticks {
        interval.tick().await;
        while let Ok((target, replicas)) = feedback.try_recv() {
            fleet.apply_replicas(&target, replicas);
        }
        for e in fleet.next_tick() {
            publisher.publish(&e).await?;
            produced += 1;
        }
        if let Some(i) = poison_at.iter().position(|&t| t == tick) {
            let (key, bytes) = poison_record(i, fleet.time_of(tick))?;
            publisher.publish_raw(key.as_bytes(), &bytes).await?;
        }
    }
    publisher.flush().await?;
    Ok(produced)
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
        _ => (
            String::new(),
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
    feedback: mpsc::Sender<(String, i32)>,
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
            continue;
        };
        if let AnyRecord::Decision(d) = &record {
            if d.verdict == Verdict::Approved && !d.dry_run && d.resource == REPLICAS {
                if let Some(r) = d.final_value.map(|v| v.round() as i32) {
                    // The channel is bounded; if the agents fall behind, the decision is
                    // reported and the loop simply stays open for that one. Once the
                    // agents have finished, the channel is closed and nothing is applied.
                    if let Err(mpsc::error::TrySendError::Full(_)) =
                        feedback.try_send((d.target.clone(), r))
                    {
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
    }
    printer.flush();
    for line in printer.take_ready() {
        println!("{line}");
    }
    Ok(observed)
}
