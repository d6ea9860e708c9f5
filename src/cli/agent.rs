//! `perfpilot agent --synthetic`: the demo's synthetic services, live, against a cluster.

use super::{parse_duration, KafkaArgs};
use crate::agent::publish::MetricPublisher;
use crate::agent::synthetic::SyntheticFleet;
use crate::event::{decode, Decision, Verdict, REPLICAS};
use crate::runtime::{now_ms, Shutdown};
use clap::Args;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use std::process::ExitCode;
use std::time::Duration;
use tokio::sync::mpsc;

/// Arguments of `agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Publish the synthetic services (five services in two pools with incidents).
    /// Required: it is the only kind of agent so far.
    #[arg(long, required = true)]
    synthetic: bool,
    /// Event time between two samples of a series (and wall time, unless --ticks-per-second).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    step: Duration,
    /// Samples per second of wall time (default: one per --step, i.e. live).
    #[arg(long)]
    ticks_per_second: Option<f64>,
    /// Stop after this many ticks (default: run until SIGINT/SIGTERM).
    #[arg(long)]
    ticks: Option<u64>,
    /// Background hosts publishing one noisy metric each.
    #[arg(long, default_value_t = 0)]
    fleet: usize,
    /// Seed of the workload.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Do not apply approved decisions to the synthetic services.
    #[arg(long)]
    open_loop: bool,
}

pub(super) async fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let kafka = args.kafka.options();
    let topics = args.kafka.topics();
    let step_ms = args.step.as_millis().max(1) as i64;
    let incident_span = args.ticks.unwrap_or(2000);
    let mut fleet = SyntheticFleet::demo(now_ms(), step_ms, incident_span, args.fleet, args.seed);
    let mut publisher = MetricPublisher::new(&kafka, topics.metrics())?;
    let shutdown = Shutdown::new();
    tokio::spawn(shutdown.clone().on_signals());
    let (tx, mut rx) = mpsc::channel::<(String, i32)>(1024);
    if !args.open_loop {
        let consumer: StreamConsumer = kafka
            .consumer_config(&format!("{}agent", topics.prefix))
            .create()?;
        consumer.subscribe(&[&topics.decisions()])?;
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let m = tokio::select! { _ = stop.wait() => break, m = consumer.recv() => m };
                let Ok(m) = m else { continue };
                if let Ok(d) = decode::<Decision>(m.payload().unwrap_or(&[])) {
                    if let (Verdict::Approved, false, Some(r), true) =
                        (d.verdict, d.dry_run, d.final_value, d.resource == REPLICAS)
                    {
                        let _ = tx.try_send((d.target, r.round() as i32));
                    }
                }
            }
        });
    }
    let period = match args.ticks_per_second {
        Some(r) if r > 0.0 => Duration::from_secs_f64(1.0 / r),
        _ => args.step,
    };
    let mut interval = tokio::time::interval(period);
    let mut n = 0u64;
    while args.ticks.is_none_or(|t| n < t) {
        tokio::select! { _ = shutdown.wait() => break, _ = interval.tick() => {} }
        while let Ok((target, replicas)) = rx.try_recv() {
            tracing::info!(%target, replicas, "applying decision");
            fleet.apply_replicas(&target, replicas);
        }
        for e in fleet.next_tick() {
            publisher.publish(&e).await?;
        }
        n += 1;
    }
    let sent = publisher.flush().await?;
    shutdown.trigger();
    eprintln!("published {sent} events in {n} ticks");
    Ok(ExitCode::SUCCESS)
}
