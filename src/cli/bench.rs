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
        /// Through decisions: whether each of the four stages has a producer of its own,
        /// as separate processes do, or they share one (`runtime::SharedProducer`).
        #[arg(long, value_enum, default_value = "per-stage")]
        producers: latency::Producers,
    },
    /// perfpilot's detector beside the same job written with Kafka Streams
    /// (bench/peer-kafka-streams: a per-series EWMA z-score in a RocksDB store with its
    /// changelog), each started as a process of its own over the same events: events/s,
    /// events per CPU second and peak resident memory, per guarantee. Needs Java 17 and
    /// Maven for the peer (built once by scripts/peer-streams.sh into a cache).
    Peer {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Events to publish and read.
        #[arg(long, default_value_t = 500_000)]
        events: u64,
        /// Series they belong to.
        #[arg(long, default_value_t = 10_000)]
        series: u64,
        /// Partitions of the bench's topics.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// Longest an application may take to read everything.
        #[arg(long, default_value = "600s", value_parser = super::parse_duration)]
        timeout: Duration,
        /// Delivery guarantees to measure (Kafka Streams: at_least_once, exactly_once_v2).
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "at-least-once,exactly-once"
        )]
        processing_guarantee: Vec<Guarantee>,
        /// Commit interval of both applications (`--commit-interval`, Kafka Streams'
        /// `commit.interval.ms`). Progress is read from their commits, so it is also the
        /// measurement's resolution; each commit writes the state changed since the last.
        #[arg(long, default_value = "1s", value_parser = super::parse_duration)]
        commit_interval: Duration,
        /// The peer's launcher: run as `bash SCRIPT run ARGS...`.
        #[arg(long, default_value = "scripts/peer-streams.sh")]
        peer_script: PathBuf,
        /// The directory of perfpilot's .avsc files, which the peer reads.
        #[arg(long, default_value = "schemas")]
        schemas: PathBuf,
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
        BenchCommand::Peer {
            kafka,
            events,
            series,
            partitions,
            timeout,
            processing_guarantee,
            commit_interval,
            peer_script,
            schemas,
        } => {
            let setup = PeerSetup {
                events,
                series,
                partitions,
                timeout,
                commit_interval,
                peer_script,
                schemas,
            };
            peer_cmd(&kafka, &setup, &processing_guarantee).await
        }
        BenchCommand::Latency {
            kafka,
            rate,
            series,
            rounds,
            partitions,
            config,
            through,
            producers,
        } => {
            let config = Config::load(config.as_deref())?;
            let (options, topics) = bench_topics(&kafka, partitions).await?;
            let l = latency::run(
                &options,
                &topics,
                &config,
                (through, producers),
                (rate, series, rounds),
            )
            .await?;
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

/// What `bench peer` runs with.
struct PeerSetup {
    events: u64,
    series: u64,
    partitions: i32,
    timeout: Duration,
    commit_interval: Duration,
    peer_script: PathBuf,
    schemas: PathBuf,
}

async fn peer_cmd(
    kafka: &KafkaArgs,
    setup: &PeerSetup,
    guarantees: &[Guarantee],
) -> anyhow::Result<ExitCode> {
    use crate::bench::peer::{time_app, App, AppRun};
    anyhow::ensure!(
        setup.schemas.join("MetricEvent.avsc").is_file(),
        "no MetricEvent.avsc in {} (--schemas: the repository's schemas/ directory)",
        setup.schemas.display()
    );
    let built = std::process::Command::new("bash")
        .arg(&setup.peer_script)
        .arg("build")
        .status()
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", setup.peer_script.display()))?;
    anyhow::ensure!(
        built.success(),
        "{} build failed ({built}); it needs Java 17 and Maven",
        setup.peer_script.display()
    );
    let exe = std::env::current_exe()?;
    let logs = std::env::temp_dir();
    println!(
        "{} events of {} series on {} ({} partitions); each application in its own process, committing every {:?}, timed from its group's first assignment to its last commit",
        setup.events, setup.series, kafka.bootstrap_servers, setup.partitions, setup.commit_interval
    );
    println!(
        "\n{:<14} {:<20} {:>10} {:>14} {:>16} {:>14}",
        "guarantee", "application", "events/s", "CPU s / 1M ev", "events / CPU s", "peak RSS MB"
    );
    for &guarantee in guarantees {
        let (options, topics) = bench_topics(kafka, setup.partitions).await?;
        throughput::publish(&options, &topics, setup.events, setup.series).await?;
        let stamp = crate::runtime::now_ms();
        let group = format!("{}peer-bench-perfpilot-{stamp}", topics.prefix);
        let mut perfpilot = std::process::Command::new(&exe);
        perfpilot
            .args(["run", "detector", "--bootstrap-servers"])
            .arg(&kafka.bootstrap_servers)
            .args(["--topic-prefix", &topics.prefix, "--group-id", &group])
            .args(["--processing-guarantee", guarantee.as_str()])
            .arg("--commit-interval")
            .arg(format!("{}ms", setup.commit_interval.as_millis()))
            .args(["--metrics-addr", "127.0.0.1:0"]);
        for (key, value) in &kafka.property {
            perfpilot.arg("-X").arg(format!("{key}={value}"));
        }
        let app_id = format!("{}peer-bench-streams-{stamp}", topics.prefix);
        let mut peer = std::process::Command::new("bash");
        peer.arg(&setup.peer_script)
            .arg("run")
            .arg("--bootstrap-servers")
            .arg(&kafka.bootstrap_servers)
            .args([
                "--input",
                &topics.metrics(),
                "--output",
                &topics.anomalies(),
            ])
            .args(["--application-id", &app_id, "--commit-interval-ms"])
            .arg(setup.commit_interval.as_millis().to_string())
            .arg("--guarantee")
            .arg(match guarantee {
                Guarantee::AtLeastOnce => "at_least_once",
                Guarantee::ExactlyOnce => "exactly_once_v2",
            })
            .arg("--schemas")
            .arg(&setup.schemas)
            .arg("--state-dir")
            .arg(logs.join(format!("peer-bench-state-{stamp}")));
        let apps = [
            App {
                name: "perfpilot detector",
                command: perfpilot,
                group,
                log: logs.join(format!("peer-bench-perfpilot-{stamp}.log")),
            },
            App {
                name: "Kafka Streams peer",
                command: peer,
                group: app_id,
                log: logs.join(format!("peer-bench-streams-{stamp}.log")),
            },
        ];
        let mut rows: Vec<AppRun> = Vec::new();
        for app in apps {
            let (options, metrics) = (options.clone(), topics.metrics());
            let (partitions, events, timeout) = (setup.partitions, setup.events, setup.timeout);
            let run = tokio::task::spawn_blocking(move || {
                time_app(app, &options, &metrics, partitions, events, timeout)
            })
            .await??;
            println!(
                "{:<14} {:<20} {:>10.0} {:>14.2} {:>16.0} {:>14.0}",
                guarantee.as_str(),
                run.app,
                run.rate(),
                run.cpu_seconds * 1e6 / run.events.max(1) as f64,
                run.per_cpu_second(),
                run.peak_rss as f64 / 1e6
            );
            rows.push(run);
        }
        if let [ours, peer] = rows.as_slice() {
            println!(
                "{:<14} perfpilot: {:.1}× the events per CPU second, {:.1}× the events/s, {:.0} % of the memory",
                "",
                ours.per_cpu_second() / peer.per_cpu_second(),
                ours.rate() / peer.rate(),
                100.0 * ours.peak_rss as f64 / peer.peak_rss.max(1) as f64
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
