//! `perfpilot agent`: scraped Prometheus endpoints (`--scrape`), or the demo's
//! synthetic services (`--synthetic`), published live to a cluster.

use super::{parse_duration, KafkaArgs};
use crate::agent::publish::MetricPublisher;
use crate::agent::synthetic::SyntheticFleet;
use crate::config::Config;
use crate::event::{decode, Decision, Verdict, REPLICAS};
use crate::ingest::mapping::Mapping;
use crate::ingest::scrape::{Endpoint, Scraper};
use crate::runtime::{now_ms, Shutdown};
use clap::Args;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::sync::mpsc;

/// Arguments of `agent`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["synthetic", "scrape"])))]
pub struct AgentArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Publish the synthetic services (five services in two pools with incidents).
    #[arg(long)]
    synthetic: bool,
    /// Scrape these Prometheus/OpenMetrics endpoints (http://host:port[/path], the path
    /// defaults to /metrics) every --interval; repeat or separate with commas.
    #[arg(long, value_name = "URL", value_delimiter = ',', num_args = 1..)]
    scrape: Vec<String>,
    /// Time between two scrapes of an endpoint.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    interval: Duration,
    /// Longest wait for an endpoint's answer [default: the interval, at most 10s].
    #[arg(long, value_parser = parse_duration)]
    scrape_timeout: Option<Duration>,
    /// The job label of scraped samples (as Prometheus' job_name).
    #[arg(long, default_value = "perfpilot-agent")]
    job: String,
    /// Configuration file (TOML) whose [ingest] table holds the label rules for
    /// scraped samples.
    #[arg(long, env = "PERFPILOT_CONFIG")]
    config: Option<PathBuf>,
    /// Synthetic: event time between two samples of a series (and wall time, unless --ticks-per-second).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    step: Duration,
    /// Samples per second of wall time (default: one per --step, i.e. live).
    #[arg(long)]
    ticks_per_second: Option<f64>,
    /// Stop after this many ticks or scrape rounds (default: run until SIGINT/SIGTERM).
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
    if !args.scrape.is_empty() {
        return scrape(args).await;
    }
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

/// `agent --scrape`: every interval, scrape each endpoint at once and publish what the
/// label rules make of its samples. An endpoint that fails is logged and counted; the
/// others go on.
async fn scrape(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(args.config.as_deref())?;
    let endpoints = args
        .scrape
        .iter()
        .map(|u| Endpoint::parse(u))
        .collect::<Result<Vec<_>, _>>()?;
    let mapping = std::sync::Arc::new(std::sync::Mutex::new(Mapping::new(
        config.ingest,
        "perfpilot-agent",
    )?));
    let timeout = args
        .scrape_timeout
        .unwrap_or_else(|| args.interval.min(Duration::from_secs(10)));
    let scraper = std::sync::Arc::new(Scraper::new(timeout, args.job.clone()));
    let kafka = args.kafka.options();
    let mut publisher = MetricPublisher::new(&kafka, args.kafka.topics().metrics())?;
    let shutdown = Shutdown::new();
    tokio::spawn(shutdown.clone().on_signals());
    let mut interval = tokio::time::interval(args.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut rounds, mut failures, mut lost) = (0u64, 0u64, 0u64);
    while args.ticks.is_none_or(|t| rounds < t) {
        tokio::select! { _ = shutdown.wait() => break, _ = interval.tick() => {} }
        let now = now_ms();
        let mut jobs = tokio::task::JoinSet::new();
        for endpoint in endpoints.iter().cloned() {
            let (scraper, mapping) = (scraper.clone(), mapping.clone());
            jobs.spawn(async move {
                let round = scraper.scrape(&endpoint, &mapping, now).await;
                (endpoint, round)
            });
        }
        while let Some(done) = jobs.join_next().await {
            let (endpoint, round) = done?;
            match round {
                Ok(round) => {
                    for bad in round.bad_lines.iter().take(3) {
                        tracing::warn!(url = %endpoint.url, %bad, "a line of the endpoint could not be read");
                    }
                    tracing::debug!(url = %endpoint.url, samples = round.samples, events = round.events.len(), "scraped");
                    let mut failed = 0u64;
                    for e in &round.events {
                        if let Err(error) = publisher.publish(e).await {
                            if failed == 0 {
                                tracing::warn!(%error, "publishing failed; the samples are counted as failed and the agent goes on");
                            }
                            failed += 1;
                        }
                    }
                    crate::ingest::Tally::new("scrape").add("failed", failed);
                    lost += failed;
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, "scrape failed; trying again next round");
                }
            }
        }
        rounds += 1;
    }
    let flushed = publisher.flush().await;
    shutdown.trigger();
    let sent = publisher.sent();
    eprintln!(
        "published {sent} events from {} endpoint(s) in {rounds} rounds ({failures} failed scrapes, {lost} events not published)",
        endpoints.len()
    );
    if let Err(e) = flushed {
        eprintln!("the last events were not all acknowledged: {e}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(if lost == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
