//! `perfpilot bench`: throughput against a no-op relay on a Kafka cluster, and memory
//! per series.

use super::KafkaArgs;
use crate::bench::{latency, memory, throughput};
use crate::config::Config;
use crate::runtime::{Guarantee, Topics};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Events/s of the detector and forecaster, and of the whole pipeline, against two
    /// baselines through the same runner — a no-op relay (consume → produce unchanged)
    /// and a sink (consume → drop) — all over the same events on the same broker; each
    /// row the median of --runs runs with their min and max; also CPU seconds per
    /// million events.
    Throughput {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Events to publish and read.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Series they belong to.
        #[arg(long, default_value_t = 10_000)]
        series: u64,
        /// Partitions of the bench's topics.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// Longest a stage may take to read everything.
        #[arg(long, default_value = "300s", value_parser = super::parse_duration)]
        timeout: Duration,
        /// Configuration file ([detector] and [forecaster] apply).
        #[arg(long, env = "PERFPILOT_CONFIG")]
        config: Option<PathBuf>,
        /// Delivery guarantees to measure, each on fresh topics in this run (relay,
        /// detector and forecaster under each), e.g. at-least-once,exactly-once.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "at-least-once"
        )]
        processing_guarantee: Vec<Guarantee>,
        /// Time between commits and state checkpoints [default: per guarantee, as `run`].
        #[arg(long, value_parser = super::parse_duration)]
        commit_interval: Option<Duration>,
        /// Skip the last row: the same events through all four stages at once
        /// (detector, forecaster, recommender, coordinator in this process, on fresh
        /// topics), timed until detector and forecaster have read them all.
        #[arg(long)]
        no_pipeline: bool,
        /// Runs per guarantee, each on fresh topics; a row is their median, with the
        /// slowest and fastest beside it, so the variation shows.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
        runs: u32,
    },
    /// End-to-end latency percentiles at a fixed offered load: spikes are injected after
    /// the warm-up and timed from the producer to the anomalies topic (produce → anomaly
    /// through the detector), or with --through decisions to the decisions topic (through
    /// all four stages).
    Latency {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Offered load, events per second (e.g. half the peak `bench throughput` shows).
        #[arg(long, default_value_t = 20_000)]
        rate: u64,
        /// Series; one round sends one event of each.
        #[arg(long, default_value_t = 2_000)]
        series: u64,
        /// Rounds (simulated minutes); the first warm-up + 10 carry no spike.
        #[arg(long, default_value_t = 120)]
        rounds: u64,
        /// Partitions of the bench's topics.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// Configuration file ([detector]; through decisions, every section applies —
        /// [coordinator] idle_flush_ms sets how long a decision window waits).
        #[arg(long, env = "PERFPILOT_CONFIG")]
        config: Option<PathBuf>,
        /// anomalies: produce → anomaly through the detector; decisions: produce →
        /// decision through all four stages (a spike's anomaly → scale-out → decision).
        #[arg(long, value_enum, default_value = "anomalies")]
        through: latency::Through,
    },
    /// Resident memory per active series of the detector and of the forecaster, each
    /// measured in a fresh process, at the given series counts.
    Memory {
        /// Series counts.
        #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
        series: Vec<usize>,
        /// Internal: measure one core at one size in this process and print the result.
        #[arg(long, hide = true, value_name = "CORE:SERIES")]
        one: Option<String>,
    },
}

pub(super) async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if !matches!(args.what, BenchCommand::Memory { .. }) {
        // Stages pay for their metrics here as in production.
        crate::telemetry::record_without_endpoint();
    }
    match args.what {
        BenchCommand::Memory { series, one } => memory_cmd(series, one),
        BenchCommand::Latency {
            kafka,
            rate,
            series,
            rounds,
            partitions,
            config,
            through,
        } => {
            let config = Config::load(config.as_deref())?;
            let (options, topics) = bench_topics(&kafka, partitions).await?;
            let l =
                latency::run(&options, &topics, &config, through, (rate, series, rounds)).await?;
            let to = match through {
                latency::Through::Anomalies => "anomaly",
                latency::Through::Decisions => "decision",
            };
            println!(
                "produce → {to} at {rate} events/s offered ({series} series, {rounds} rounds): {} of {} spikes measured",
                l.measured, l.sent
            );
            println!(
                "p50 {:.1} ms   p95 {:.1} ms   p99 {:.1} ms   max {:.1} ms",
                l.p50, l.p95, l.p99, l.max
            );
            for (hop, p) in &l.hops {
                println!(
                    "  {hop:<26} p50 {:>6.1} ms   p95 {:>6.1} ms   p99 {:>6.1} ms   max {:>6.1} ms",
                    p.p50, p.p95, p.p99, p.max
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Throughput {
            kafka,
            events,
            series,
            partitions,
            timeout,
            config,
            processing_guarantee,
            commit_interval,
            no_pipeline,
            runs,
        } => {
            let pipeline = !no_pipeline;
            let config = Config::load(config.as_deref())?;
            println!(
                "{events} events of {series} series on {} ({partitions} partitions)",
                kafka.bootstrap_servers
            );
            println!(
                "\n{:<14} {:<11} {:>10} {:>21} {:>8} {:>8} {:>14} {:>13}",
                "guarantee",
                "stage",
                "events/s",
                "(min–max)",
                "of sink",
                "of relay",
                "CPU s / 1M ev",
                "state writes"
            );
            for guarantee in processing_guarantee {
                let mut delivery = throughput::Delivery::from(guarantee);
                if let Some(interval) = commit_interval {
                    delivery.commit_interval = interval;
                }
                let mut all: Vec<Vec<throughput::StageThroughput>> = Vec::new();
                for _ in 0..runs {
                    let (options, topics) = bench_topics(&kafka, partitions).await?;
                    let pipeline_topics = match pipeline {
                        true => Some(bench_topics(&kafka, partitions).await?.1),
                        false => None,
                    };
                    all.push(
                        throughput::run(
                            &options,
                            &topics,
                            pipeline_topics.as_ref(),
                            &config,
                            events,
                            series,
                            timeout,
                            delivery,
                        )
                        .await?,
                    );
                }
                let rows = throughput::Summary::of(&all);
                let of = |name: &str| rows.iter().find(|r| r.stage == name).map(|r| r.rate);
                let (sink, relay) = (
                    of("sink").unwrap_or(f64::NAN),
                    of("relay").unwrap_or(f64::NAN),
                );
                for r in &rows {
                    println!(
                        "{:<14} {:<11} {:>10.0} {:>21} {:>7.0}% {:>7.0}% {:>14.2} {:>13}",
                        guarantee.as_str(),
                        r.stage,
                        r.rate,
                        format!("({:.0}–{:.0})", r.min_rate, r.max_rate),
                        100.0 * r.rate / sink,
                        100.0 * r.rate / relay,
                        r.cpu_per_million,
                        r.state_writes
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Client options and a fresh set of topics (`<prefix>bench-<ms>.`) for one bench run.
async fn bench_topics(
    kafka: &KafkaArgs,
    partitions: i32,
) -> anyhow::Result<(crate::runtime::KafkaOptions, Topics)> {
    let options = kafka.options();
    let topics = Topics::with_prefix(format!(
        "{}bench-{}.",
        kafka.topic_prefix,
        crate::runtime::now_ms()
    ));
    crate::runtime::topics::create_all(&options, &topics, partitions, 1).await?;
    Ok((options, topics))
}

fn memory_cmd(series: Vec<usize>, one: Option<String>) -> anyhow::Result<ExitCode> {
    if let Some(spec) = one {
        let (core, n) = spec
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("--one wants CORE:SERIES"))?;
        let n: usize = n.parse()?;
        let (per_series, base) = memory::measure(core, n)
            .ok_or_else(|| anyhow::anyhow!("cannot measure {core} here (needs /proc)"))?;
        println!("{per_series:.1} {base}");
        return Ok(ExitCode::SUCCESS);
    }
    let exe = std::env::current_exe()?;
    println!(
        "{:<10} {:>10} {:>16} {:>12}",
        "core", "series", "bytes / series", "base RSS MB"
    );
    for core in memory::CORES {
        for &n in &series {
            let out = std::process::Command::new(&exe)
                .args(["bench", "memory", "--one", &format!("{core}:{n}")])
                .output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            let mut it = text.split_whitespace();
            let (Some(per), Some(base)) = (it.next(), it.next()) else {
                anyhow::bail!(
                    "measuring {core} at {n} series failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            let base_mb = base.parse::<f64>().unwrap_or(0.0) / 1e6;
            println!("{core:<10} {n:>10} {per:>16} {base_mb:>12.1}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
